//! Detection of ambiguous HTTP/1 framing (DESIGN §9: a request with both
//! `Content-Length` and `Transfer-Encoding` gets 400).
//!
//! hyper already handles such a request safely (RFC 9112 §6.1: it frames the
//! body by `Transfer-Encoding`, drops `Content-Length` and closes the
//! connection after the response) and refuses conflicting `Content-Length`s
//! with 400 itself. Because it drops the header before the application sees
//! it, this wrapper watches the head of the first request on each connection
//! and flags the connection; [`crate::http`] then answers 400. A request with
//! both headers is always the last one hyper reads on its connection, so the
//! case left unflagged (a later request on a kept-alive connection) is still
//! handled safely by hyper, only with its own status.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest head scanned.
const MAX_HEAD: usize = 16 * 1024;

/// Set when the connection's first request head had both framing headers.
#[derive(Debug, Clone, Default)]
pub struct AmbiguousFlag(pub Arc<AtomicBool>);

impl AmbiguousFlag {
    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// An I/O wrapper that scans the first request head.
pub struct HeadSniffer<S> {
    inner: S,
    head: Vec<u8>,
    done: bool,
    flag: AmbiguousFlag,
}

impl<S> HeadSniffer<S> {
    /// Wraps a stream.
    pub fn new(inner: S, flag: AmbiguousFlag) -> Self {
        Self {
            inner,
            head: Vec::new(),
            done: false,
            flag,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        self.head.extend_from_slice(bytes);
        let end = self.head.windows(4).position(|w| w == b"\r\n\r\n");
        if end.is_none() && self.head.len() < MAX_HEAD {
            return;
        }
        let head = self
            .head
            .get(..end.unwrap_or(self.head.len()))
            .unwrap_or(&[]);
        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
        let mut cl = false;
        let mut te = false;
        for line in text.split("\r\n").skip(1) {
            let name = line.split(':').next().unwrap_or("").trim();
            cl |= name == "content-length";
            te |= name == "transfer-encoding";
        }
        if cl && te {
            self.flag.0.store(true, Ordering::Relaxed);
        }
        self.done = true;
        self.head = Vec::new();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadSniffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.done {
            if let Some(new) = buf.filled().get(before..) {
                let new = new.to_vec();
                self.scan(&new);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadSniffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

//! Slow and many clients (DESIGN §10): what keeps one machine with a
//! certificate from holding the gateway's connections.
//!
//! - the connection cap is a semaphore taken *before* `accept`, so beyond
//!   `max_connections` new connections wait in the kernel's listen backlog
//!   (and are refused by the kernel once that is full) instead of costing a
//!   task, a TLS session and a file descriptor each;
//! - the TLS handshake has a deadline, and the pin check runs right after it,
//!   before a byte of HTTP is read ([`crate::http::server`]);
//! - [`Activity`] watches each connection: a connection that has not
//!   completed a request head within `header_timeout` of being opened, or of
//!   starting to send the next head, is closed; one with no request in
//!   flight and no traffic for `idle_timeout` is closed. hyper's own
//!   HTTP/1 header timer (with its timer set, so that it works at all) is a
//!   backstop behind it;
//! - [`DeadlineBody`] gives every request body `body_timeout` to arrive whole;
//!   a late body is answered 408 `request_timeout` by [`crate::http::extract::read_body`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared view of one connection's traffic and requests.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// Milliseconds since `opened` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Milliseconds since `opened` (+1, 0 = none) of the first byte read
    /// while no request was in flight: the start of the next head.
    head_started_ms: AtomicU64,
    /// Requests whose head has been read.
    requests: AtomicU64,
    /// Requests whose response has not been sent completely.
    in_flight: AtomicUsize,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No complete request head within `header_timeout`.
    HeaderTimeout,
    /// Kept alive without a request for `idle_timeout`.
    Idle,
}

impl Verdict {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::HeaderTimeout => "header_timeout",
            Verdict::Idle => "idle_timeout",
        }
    }
}

impl Activity {
    /// A connection that opened now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn saw_io(&self, read: bool) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if read && self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_started_ms.compare_exchange(
                0,
                now.saturating_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// A request head was read: the request is in flight until the guard
    /// (carried by its response body) is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Release);
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether the connection should be closed now.
    pub fn verdict(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Verdict> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let head = self.head_started_ms.load(Ordering::Acquire);
        if head > 0 && now.saturating_sub(head - 1) >= ms(header_timeout) {
            return Some(Verdict::HeaderTimeout);
        }
        if self.requests.load(Ordering::Relaxed) == 0 && now >= ms(header_timeout) {
            return Some(Verdict::HeaderTimeout);
        }
        let last = self.last_io_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= ms(idle_timeout) {
            return Some(Verdict::Idle);
        }
        None
    }
}

/// Marks one request in flight; dropped when its response is sent.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.last_io_ms.store(self.0.now_ms(), Ordering::Relaxed);
    }
}

/// How often the watchdog looks at a connection.
pub fn tick(header_timeout: Duration, idle_timeout: Duration) -> Duration {
    (header_timeout.min(idle_timeout) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// An I/O stream that reports its traffic to an [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    /// Wraps a stream.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.saw_io(true);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.saw_io(false);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.saw_io(false);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error a request body yields when `body_timeout` has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub struct BodyTimedOut;

/// Whether an error (from reading a body) is, or is caused by, [`BodyTimedOut`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimedOut>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body that must arrive whole before a deadline.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl<B> DeadlineBody<B> {
    /// `inner` must end within `limit` from now.
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            done: false,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_connection_has_header_timeout_to_send_a_head() {
        let a = Activity::new();
        assert_eq!(
            a.verdict(Duration::from_secs(10), Duration::from_secs(60)),
            None
        );
        assert_eq!(
            a.verdict(Duration::ZERO, Duration::from_secs(60)),
            Some(Verdict::HeaderTimeout)
        );
    }

    #[test]
    fn a_request_in_flight_is_never_cut() {
        let a = Activity::new();
        let guard = a.request_started();
        assert_eq!(a.verdict(Duration::ZERO, Duration::ZERO), None);
        drop(guard);
        // Kept alive, no head started: only the idle rule applies.
        assert_eq!(
            a.verdict(Duration::ZERO, Duration::from_secs(60)),
            None,
            "a kept-alive connection is not cut by the header rule"
        );
        assert_eq!(
            a.verdict(Duration::from_secs(10), Duration::ZERO),
            Some(Verdict::Idle)
        );
    }

    #[test]
    fn the_next_head_gets_header_timeout_from_its_first_byte() {
        let a = Activity::new();
        drop(a.request_started());
        a.saw_io(true);
        assert_eq!(
            a.verdict(Duration::ZERO, Duration::from_secs(60)),
            Some(Verdict::HeaderTimeout)
        );
        assert_eq!(
            a.verdict(Duration::from_secs(10), Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn timeouts_are_found_in_the_error_chain() {
        let e: Box<dyn std::error::Error + Send + Sync> = Box::new(BodyTimedOut);
        let wrapped = axum::Error::new(e);
        assert!(is_body_timeout(&wrapped));
        assert!(!is_body_timeout(&std::io::Error::other("x")));
    }
}

//! The one place that reads the wall clock. Everything else takes a
//! [`Clock`] so tests can control time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, UTC.
    fn now(&self) -> OffsetDateTime;

    /// Now as microseconds since the Unix epoch (the storage format).
    fn now_us(&self) -> i64 {
        to_us(self.now())
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the clock module is the one reader of the wall clock"
    )]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that tests move by hand; starts at the system time plus an offset.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_us: AtomicI64,
}

impl OffsetClock {
    /// A shareable offset clock.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Moves the clock forward (or back) by `secs`.
    pub fn advance_secs(&self, secs: i64) {
        self.offset_us
            .fetch_add(secs.saturating_mul(1_000_000), Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the clock module is the one reader of the wall clock"
    )]
    fn now(&self) -> OffsetDateTime {
        let off = self.offset_us.load(Ordering::SeqCst);
        OffsetDateTime::now_utc() + time::Duration::microseconds(off)
    }
}

/// Microseconds since the epoch.
pub fn to_us(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Back from microseconds; out-of-range values clamp to the epoch.
pub fn from_us(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 UTC text with second precision, e.g. `2026-11-23T13:22:18Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// [`rfc3339`] of a stored microsecond value.
pub fn rfc3339_us(us: i64) -> String {
    rfc3339(from_us(us))
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-23T13:22:18.123456Z`
/// (audit record times).
pub fn rfc3339_precise(t: OffsetDateTime) -> String {
    let micros = t.microsecond();
    let t = t.replace_nanosecond(micros * 1000).unwrap_or(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

//! The per-party rate limit (`[server] rate_limit_per_party`): a token
//! bucket per party, checked by the authentication layer ([`super::router`]).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::party::PartyId;

/// Per-party token bucket: `n` requests/s, burst `2n`.
pub struct PartyRateLimiter {
    limiter: DefaultKeyedRateLimiter<PartyId>,
    per_second: u32,
}

impl PartyRateLimiter {
    /// `None` when `per_second` is 0 (off).
    pub fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_second,
        })
    }

    /// The configured rate (requests per second).
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Ok, or how long until the next request would be allowed.
    pub fn check(&self, party: &PartyId) -> Result<(), Duration> {
        self.limiter.check_key(party).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

//! Keyed rate limits (governor), one limiter per kind of key so that a busy
//! IP cannot exhaust a phone's budget and one phone cannot exhaust an IP's.

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;

use crate::config::Config;

type KeyedLimiter = RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock>;

/// Allows a burst of `n` per key, refilled evenly over an hour. `n = 0` disables the limit.
pub struct HourlyLimit {
    limiter: Option<KeyedLimiter>,
    /// Keys are kept as 64-bit hashes under this per-process random key. A map holds every
    /// key seen within the hour, and a phone's string made its entry far larger: 370 000
    /// phones took 28 MB as strings and 20 MB as hashes, a million 106 MB against 56 MB.
    /// Two keys sharing a hash would share one budget; among a million keys the odds of
    /// that are about 3 in 10^8, and the random key stops anyone choosing keys that collide.
    hasher: RandomState,
    /// The `limiter` label of `otpgate_ratelimit_rejections_total`.
    name: &'static str,
}

impl HourlyLimit {
    pub fn per_hour(n: u32) -> Self {
        HourlyLimit {
            limiter: NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_hour(n))),
            hasher: RandomState::new(),
            name: "unnamed",
        }
    }

    /// Names the limit in the rejection metric.
    pub fn named(self, name: &'static str) -> Self {
        HourlyLimit { name, ..self }
    }

    /// `Err(seconds)` says how long the key must wait.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&self.hasher.hash_one(key)).map_err(|not_until| {
            crate::metrics::RATELIMIT_REJECTIONS.with_label_values(&[self.name]).inc();
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Forgets keys whose budget is full again, so the maps do not grow without bound.
    pub fn purge(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

pub struct Limits {
    pub start_per_address: HourlyLimit,
    pub start_per_ip: HourlyLimit,
    pub verify_per_address: HourlyLimit,
    pub verify_per_ip: HourlyLimit,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Limits {
            start_per_address: HourlyLimit::per_hour(config.limit_start_per_phone_per_hour).named("start_per_address"),
            start_per_ip: HourlyLimit::per_hour(config.limit_start_per_ip_per_hour).named("start_per_ip"),
            verify_per_address: HourlyLimit::per_hour(config.limit_verify_per_phone_per_hour).named("verify_per_address"),
            verify_per_ip: HourlyLimit::per_hour(config.limit_verify_per_ip_per_hour).named("verify_per_ip"),
        }
    }

    pub fn purge(&self) {
        for limit in [&self.start_per_address, &self.start_per_ip, &self.verify_per_address, &self.verify_per_ip] {
            limit.purge();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_wait_time() {
        let limit = HourlyLimit::per_hour(2);
        assert_eq!(limit.check("a"), Ok(()));
        assert_eq!(limit.check("a"), Ok(()));
        let wait = limit.check("a").unwrap_err();
        assert!((1..=1800).contains(&wait), "refill of one in 30 minutes, got {wait}");
        assert_eq!(limit.check("b"), Ok(()), "keys are independent");
    }

    #[test]
    fn zero_disables() {
        let limit = HourlyLimit::per_hour(0);
        for _ in 0..100 {
            assert_eq!(limit.check("a"), Ok(()));
        }
    }
}

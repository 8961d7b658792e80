//! Keyed rate limits (governor), one limiter per kind of key so that a busy
//! IP cannot exhaust a phone's budget and one phone cannot exhaust an IP's.

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::config::Config;

type KeyedLimiter = RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock>;

/// Allows a burst of `n` per key, refilled evenly over an hour (or a day). `n = 0` disables the limit.
pub struct KeyedLimit {
    limiter: Option<KeyedLimiter>,
    /// Keys are kept as 64-bit hashes under this per-process random key: a map holds every
    /// key seen within the period, and a phone's string makes its entry far larger.
    /// Two keys sharing a hash would share one budget; among a million keys that is
    /// vanishingly rare, and the random key stops anyone choosing keys that collide.
    hasher: RandomState,
    /// The `limiter` label of `otpgate_ratelimit_rejections_total`.
    name: &'static str,
}

impl KeyedLimit {
    pub fn per_hour(n: u32) -> Self {
        KeyedLimit {
            limiter: NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_hour(n))),
            hasher: RandomState::new(),
            name: "unnamed",
        }
    }

    pub fn per_day(n: u32) -> Self {
        KeyedLimit {
            limiter: NonZeroU32::new(n).map(|n| {
                let every = Duration::from_secs(24 * 3600) / n.get();
                RateLimiter::keyed(Quota::with_period(every.max(Duration::from_nanos(1))).expect("a positive period").allow_burst(n))
            }),
            hasher: RandomState::new(),
            name: "unnamed",
        }
    }

    /// Names the limit in the rejection metric.
    pub fn named(self, name: &'static str) -> Self {
        KeyedLimit { name, ..self }
    }

    /// `Err(seconds)` says how long the key must wait.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&self.hasher.hash_one(key)).map_err(|not_until| {
            crate::domain::metrics::RATELIMIT_REJECTIONS.with_label_values(&[self.name]).inc();
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Takes `n` at once. `Err(seconds)` says how long the key must wait; `Err(None)` that
    /// `n` is more than the whole budget.
    pub fn check_n(&self, key: &str, n: u32) -> Result<(), Option<u64>> {
        let (Some(limiter), Some(n)) = (&self.limiter, NonZeroU32::new(n)) else { return Ok(()) };
        let refused = |wait: Option<u64>| {
            crate::domain::metrics::RATELIMIT_REJECTIONS.with_label_values(&[self.name]).inc();
            Err(wait)
        };
        match limiter.check_key_n(&self.hasher.hash_one(key), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                refused(Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)))
            }
            Err(_) => refused(None),
        }
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
    pub start_per_address: KeyedLimit,
    pub start_per_ip: KeyedLimit,
    pub verify_per_address: KeyedLimit,
    pub verify_per_ip: KeyedLimit,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Limits {
            start_per_address: KeyedLimit::per_hour(config.limit.start_per_phone_per_hour).named("start_per_address"),
            start_per_ip: KeyedLimit::per_hour(config.limit.start_per_ip_per_hour).named("start_per_ip"),
            verify_per_address: KeyedLimit::per_hour(config.limit.verify_per_phone_per_hour).named("verify_per_address"),
            verify_per_ip: KeyedLimit::per_hour(config.limit.verify_per_ip_per_hour).named("verify_per_ip"),
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
        let limit = KeyedLimit::per_hour(2);
        assert_eq!(limit.check("a"), Ok(()));
        assert_eq!(limit.check("a"), Ok(()));
        let wait = limit.check("a").unwrap_err();
        assert!((1..=1800).contains(&wait), "refill of one in 30 minutes, got {wait}");
        assert_eq!(limit.check("b"), Ok(()), "keys are independent");
    }

    #[test]
    fn a_daily_limit_takes_many_at_once_and_refuses_more_than_is_left() {
        let limit = KeyedLimit::per_day(100);
        assert_eq!(limit.check_n("a", 60), Ok(()));
        let wait = limit.check_n("a", 60).unwrap_err().expect("the budget refills");
        // 20 of 100 are missing, at one per 864 s.
        assert!((17_000..=17_280).contains(&wait), "got {wait}");
        assert_eq!(limit.check_n("a", 40), Ok(()), "what is left can still be taken");
        assert_eq!(limit.check_n("b", 101), Err(None), "more than the whole budget never fits");
        assert_eq!(KeyedLimit::per_day(0).check_n("a", 1_000_000), Ok(()));
    }

    #[test]
    fn zero_disables() {
        let limit = KeyedLimit::per_hour(0);
        for _ in 0..100 {
            assert_eq!(limit.check("a"), Ok(()));
        }
    }
}

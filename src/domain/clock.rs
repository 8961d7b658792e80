//! The time the service's rules run on (code lifetimes, claims, sessions, retries): the
//! system's, or, in tests, a clock that moves only when told, so that an expiry can be
//! reached without waiting for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Clock {
    /// Unix milliseconds of a manual clock; `None` reads the system's.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that starts at the system's time and then moves only by [`Clock::advance`].
    pub fn manual() -> Clock {
        Clock { manual: Some(Arc::new(AtomicI64::new(system_ms()))) }
    }

    /// Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => system_ms(),
        }
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves a manual clock forward; the system's cannot be moved.
    pub fn advance(&self, by: Duration) {
        let manual = self.manual.as_ref().expect("only a manual clock can be moved");
        manual.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

fn system_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual();
        let start = clock.now_ms();
        assert_eq!(clock.now_ms(), start);
        clock.advance(Duration::from_secs(301));
        assert_eq!(clock.now_ms(), start + 301_000);
        assert_eq!(clock.now(), (start + 301_000).div_euclid(1000));
        let system = Clock::system();
        assert!((system.now_ms() - start).abs() < 3_600_000);
    }
}

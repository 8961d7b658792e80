//! The circuit breaker of one SMS provider instance: an instance that failed most of its
//! recent sends is skipped for a cool-down, then given one trial send, which closes the
//! breaker when delivered and opens it again when not. A state machine on the clock's
//! milliseconds, without I/O; `delivery::breakers::Breakers` keeps one per instance,
//! counts them in the metrics and shares their openings through [`SharedBreakers`].

use async_trait::async_trait;
use std::collections::VecDeque;
use std::time::Duration;

use crate::config::SmsBreakerSettings;

/// What became of a send through an instance, as its breaker counts it.
///
/// `Failed` is the provider's failure only: a transient error (a 5xx, a refused
/// connection) or a timeout. A permanent refusal of the message (an invalid number, a
/// destination the provider does not serve) is the number's fault and shows the
/// provider answering: record it as `Delivered`, so that it neither opens the breaker
/// nor leaves a trial send unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed,
}

/// A breaker as it stands, for `/readyz` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Sends go through.
    Closed,
    /// The instance is skipped until this time (Unix milliseconds).
    Open { until_ms: i64 },
    /// The cool-down is over: one trial send goes through (or is under way), the others
    /// still skip the instance.
    HalfOpen,
}

impl BreakerState {
    /// Whether the instance is not fully in use: open, or waiting on a trial send.
    pub fn is_degraded(self) -> bool {
        self != BreakerState::Closed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// When a breaker opens and for how long, from `SMS_BREAKER_*`.
#[derive(Debug, Clone, Copy)]
pub struct BreakerRule {
    /// How many of the last outcomes are judged.
    pub window: usize,
    /// Outcomes recorded before the breaker may open.
    pub min_sends: usize,
    pub cooldown: Duration,
}

impl BreakerRule {
    pub fn from_settings(settings: &SmsBreakerSettings) -> BreakerRule {
        BreakerRule {
            window: settings.window as usize,
            min_sends: settings.min_sends as usize,
            cooldown: Duration::from_secs(settings.cooldown_secs),
        }
    }

    fn cooldown_ms(&self) -> i64 {
        i64::try_from(self.cooldown.as_millis()).unwrap_or(i64::MAX)
    }
}

/// What a step of a breaker changed, for the metrics and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// `failed` of the last `of` sends failed, most of them: skipped until `until_ms`.
    Opened {
        until_ms: i64,
        failed: usize,
        of: usize,
    },
    /// The trial send failed: skipped again until `until_ms`.
    Reopened {
        until_ms: i64,
    },
    /// Another process opened it (seen in the shared state): skipped until `until_ms`.
    OpenedElsewhere {
        until_ms: i64,
    },
    /// The trial send was delivered: in use again.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until_ms: i64,
    },
    /// The trial send went out at `since_ms` and its outcome is awaited.
    Trial {
        since_ms: i64,
    },
}

/// One instance's breaker.
#[derive(Debug)]
pub struct Breaker {
    rule: BreakerRule,
    /// The outcomes recorded while closed, oldest first, at most `rule.window`: true for a
    /// failure.
    recent: VecDeque<bool>,
    failures: usize,
    state: State,
}

impl Breaker {
    pub fn new(rule: BreakerRule) -> Breaker {
        // Room for the whole window at once: recording never allocates.
        Breaker { rule, recent: VecDeque::with_capacity(rule.window), failures: 0, state: State::Closed }
    }

    pub fn state(&self, now_ms: i64) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until_ms } if now_ms < until_ms => BreakerState::Open { until_ms },
            State::Open { .. } | State::Trial { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether [`Breaker::allow`] would say no now, without taking the trial send.
    pub fn skips(&self, now_ms: i64) -> bool {
        match self.state {
            State::Closed => false,
            State::Open { until_ms } => now_ms < until_ms,
            State::Trial { since_ms } => !self.trial_lost(since_ms, now_ms),
        }
    }

    /// Whether a send may go through the instance now. After the cool-down the first
    /// caller is given the trial send and the others are refused until its outcome is
    /// recorded; a trial whose outcome never comes (its process stopped) is given again
    /// once a cool-down has passed.
    pub fn allow(&mut self, now_ms: i64) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until_ms } if now_ms < until_ms => false,
            State::Trial { since_ms } if !self.trial_lost(since_ms, now_ms) => false,
            State::Open { .. } | State::Trial { .. } => {
                self.state = State::Trial { since_ms: now_ms };
                true
            }
        }
    }

    /// Counts a send's outcome. While the breaker is open the outcome is of a send begun
    /// before it opened, and changes nothing; while it is half-open the outcome decides.
    pub fn record(&mut self, outcome: Outcome, now_ms: i64) -> Transition {
        match (self.state, outcome) {
            (State::Closed, _) => {
                let failed = outcome == Outcome::Failed;
                if self.recent.len() == self.rule.window && self.recent.pop_front() == Some(true) {
                    self.failures -= 1;
                }
                self.recent.push_back(failed);
                self.failures += usize::from(failed);
                // "Most": strictly more than half of what the window holds.
                let (failures, of) = (self.failures, self.recent.len());
                if failed && of >= self.rule.min_sends && failures * 2 > of {
                    Transition::Opened { until_ms: self.open(now_ms), failed: failures, of }
                } else {
                    Transition::Unchanged
                }
            }
            (State::Open { .. }, _) => Transition::Unchanged,
            (State::Trial { .. }, Outcome::Delivered) => {
                self.state = State::Closed;
                Transition::Closed
            }
            (State::Trial { .. }, Outcome::Failed) => Transition::Reopened { until_ms: self.open(now_ms) },
        }
    }

    /// Takes in that another process opened the breaker until `until_ms`: skipped here too
    /// until then (an opening already passed changes nothing).
    pub fn opened_elsewhere(&mut self, until_ms: i64, now_ms: i64) -> Transition {
        if until_ms <= now_ms {
            return Transition::Unchanged;
        }
        match self.state {
            State::Open { until_ms: own } => {
                self.state = State::Open { until_ms: own.max(until_ms) };
                Transition::Unchanged
            }
            State::Closed | State::Trial { .. } => {
                self.forget();
                self.state = State::Open { until_ms };
                Transition::OpenedElsewhere { until_ms }
            }
        }
    }

    /// Opens for a cool-down from `now_ms`, with a fresh window for when it closes again;
    /// answers until when.
    fn open(&mut self, now_ms: i64) -> i64 {
        let until_ms = now_ms.saturating_add(self.rule.cooldown_ms());
        self.forget();
        self.state = State::Open { until_ms };
        until_ms
    }

    fn forget(&mut self) {
        self.recent.clear();
        self.failures = 0;
    }

    fn trial_lost(&self, since_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(since_ms) >= self.rule.cooldown_ms()
    }
}

/// The breakers' openings as every process sees them (Redis, in `store`), so that an
/// instance one process found failing is skipped by all.
#[async_trait]
pub trait SharedBreakers: Send + Sync {
    /// Until when (Unix milliseconds) a process last opened `instance`'s breaker, if one
    /// did and the store still keeps it.
    async fn opened_until(&self, instance: &str) -> Result<Option<i64>, String>;
    /// Tells every process that `instance`'s breaker is open until `until_ms`, kept for
    /// `cooldown`.
    async fn open(&self, instance: &str, until_ms: i64, cooldown: Duration) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn breaker(window: usize, min_sends: usize) -> Breaker {
        Breaker::new(BreakerRule { window, min_sends, cooldown: Duration::from_secs(60) })
    }

    /// Records each outcome (`'x'` failed, `'.'` delivered) and answers the last transition.
    fn send(breaker: &mut Breaker, outcomes: &str) -> Transition {
        let mut last = Transition::Unchanged;
        for outcome in outcomes.chars() {
            assert!(breaker.allow(NOW), "a closed breaker lets sends through");
            last = breaker.record(if outcome == 'x' { Outcome::Failed } else { Outcome::Delivered }, NOW);
        }
        last
    }

    #[test]
    fn it_opens_when_most_of_the_last_sends_failed() {
        let mut b = breaker(10, 5);
        assert_eq!(send(&mut b, "..xx"), Transition::Unchanged);
        assert_eq!(send(&mut b, "x"), Transition::Opened { until_ms: NOW + 60_000, failed: 3, of: 5 });
        assert_eq!(b.state(NOW), BreakerState::Open { until_ms: NOW + 60_000 });
    }

    #[test]
    fn it_waits_for_min_sends_before_opening() {
        let mut b = breaker(10, 5);
        assert_eq!(send(&mut b, "xxxx"), Transition::Unchanged, "4 failures of 4 are fewer than SMS_BREAKER_MIN_SENDS");
        assert_eq!(b.state(NOW), BreakerState::Closed);
        assert_eq!(send(&mut b, "x"), Transition::Opened { until_ms: NOW + 60_000, failed: 5, of: 5 });
    }

    #[test]
    fn it_stays_closed_at_exactly_half() {
        let mut b = breaker(10, 5);
        assert_eq!(send(&mut b, ".x.x.x.x.x"), Transition::Unchanged);
        assert_eq!(b.state(NOW), BreakerState::Closed, "5 failed of 10 is not most");
        // The window slides: the oldest (a failure) leaves as a delivery comes in.
        assert_eq!(send(&mut b, "."), Transition::Unchanged);
        assert_eq!(send(&mut b, "x"), Transition::Unchanged, "still 5 of 10");
        assert_eq!(send(&mut b, "x"), Transition::Opened { until_ms: NOW + 60_000, failed: 6, of: 10 });
    }

    #[test]
    fn deliveries_keep_it_closed_while_failures_are_not_most() {
        let mut b = breaker(10, 5);
        // Deliveries and failures taking turns, forever: never most.
        for _ in 0..20 {
            assert_eq!(send(&mut b, ".x"), Transition::Unchanged);
        }
        // Only the last ten count: ten failures long ago are forgotten.
        let mut b = breaker(10, 5);
        assert_eq!(send(&mut b, "xx"), Transition::Unchanged);
        assert_eq!(send(&mut b, ".........."), Transition::Unchanged);
        assert_eq!(send(&mut b, "xxxxx"), Transition::Unchanged, "5 of the last 10");
        assert_eq!(b.state(NOW), BreakerState::Closed);
    }

    #[test]
    fn an_open_breaker_skips_until_the_cool_down_then_gives_one_trial() {
        let mut b = breaker(10, 5);
        send(&mut b, "xxxxx");
        for later in [0, 1, 59_999] {
            assert!(b.skips(NOW + later) && !b.allow(NOW + later), "{later} ms into the cool-down");
        }
        // A send begun before it opened changes nothing.
        assert_eq!(b.record(Outcome::Delivered, NOW + 10), Transition::Unchanged);
        let after = NOW + 60_000;
        assert_eq!(b.state(after), BreakerState::HalfOpen);
        assert!(!b.skips(after), "the trial is there to take");
        assert!(b.allow(after), "the first caller gets the trial");
        assert!(b.skips(after) && !b.allow(after) && !b.allow(after + 1), "and no one else");
        assert_eq!(b.state(after), BreakerState::HalfOpen);
    }

    #[test]
    fn a_delivered_trial_closes_it_with_a_fresh_window() {
        let mut b = breaker(10, 5);
        send(&mut b, "xxxxx");
        let after = NOW + 60_000;
        assert!(b.allow(after));
        assert_eq!(b.record(Outcome::Delivered, after), Transition::Closed);
        assert_eq!(b.state(after), BreakerState::Closed);
        assert!(b.allow(after) && b.allow(after), "every send goes through again");
        // The failures before it opened are forgotten: it takes min_sends again.
        for _ in 0..4 {
            assert_eq!(b.record(Outcome::Failed, after), Transition::Unchanged);
        }
        assert_eq!(b.record(Outcome::Failed, after), Transition::Opened { until_ms: after + 60_000, failed: 5, of: 5 });
    }

    #[test]
    fn a_failed_trial_opens_it_for_another_cool_down() {
        let mut b = breaker(10, 5);
        send(&mut b, "xxxxx");
        let after = NOW + 60_000;
        assert!(b.allow(after));
        assert_eq!(b.record(Outcome::Failed, after + 500), Transition::Reopened { until_ms: after + 60_500 });
        assert!(!b.allow(after + 60_499));
        assert!(b.allow(after + 60_500), "the next cool-down ends with a trial again");
    }

    #[test]
    fn a_trial_whose_outcome_never_comes_is_given_again_after_a_cool_down() {
        let mut b = breaker(10, 5);
        send(&mut b, "xxxxx");
        let trial = NOW + 60_000;
        assert!(b.allow(trial));
        assert!(!b.allow(trial + 59_999));
        assert!(b.allow(trial + 60_000), "a second trial");
        assert!(!b.allow(trial + 60_000));
    }

    #[test]
    fn an_opening_elsewhere_is_followed_until_it_ends() {
        let mut b = breaker(10, 5);
        send(&mut b, "xx");
        assert_eq!(b.opened_elsewhere(NOW, NOW), Transition::Unchanged, "an opening already over");
        assert_eq!(b.state(NOW), BreakerState::Closed);
        assert_eq!(b.opened_elsewhere(NOW + 30_000, NOW), Transition::OpenedElsewhere { until_ms: NOW + 30_000 });
        assert!(!b.allow(NOW + 29_999));
        // A later opening extends it, an earlier one does not shorten it.
        assert_eq!(b.opened_elsewhere(NOW + 40_000, NOW + 1), Transition::Unchanged);
        assert_eq!(b.opened_elsewhere(NOW + 35_000, NOW + 2), Transition::Unchanged);
        assert_eq!(b.state(NOW + 2), BreakerState::Open { until_ms: NOW + 40_000 });
        assert!(!b.allow(NOW + 39_999));
        assert!(b.allow(NOW + 40_000), "its trial, here");
        assert_eq!(b.record(Outcome::Delivered, NOW + 40_000), Transition::Closed);
        // The two failures before the opening were forgotten with it.
        for _ in 0..4 {
            assert_eq!(b.record(Outcome::Failed, NOW + 40_000), Transition::Unchanged);
        }
    }

    #[test]
    fn a_window_of_one_opens_at_the_first_failure_when_min_sends_is_one() {
        let mut b = breaker(1, 1);
        assert_eq!(send(&mut b, "."), Transition::Unchanged);
        assert_eq!(send(&mut b, "x"), Transition::Opened { until_ms: NOW + 60_000, failed: 1, of: 1 });
    }
}

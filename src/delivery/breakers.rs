//! A circuit breaker per SMS provider instance, for the courier: it asks
//! [`Breakers::allow`] before a send through an instance (false: try the route's next
//! instance) and tells [`Breakers::record`] how the send went. The rule is
//! `domain::breaker`'s; here it is kept per instance, counted in the metrics
//! (`otpgate_sender_breaker_open`, `otpgate_sender_breaker_opened_total`) and logged.
//!
//! With `REDIS_URL` an opening is shared: the process that opens a breaker writes it
//! to Redis, and every process looks there (at most once a second per instance) before
//! letting a send through, so an instance one process found failing is skipped by all
//! until the cool-down ends. Redis is never needed to send: while it cannot be asked each
//! process decides from its own sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::{IntCounter, IntGauge};

use crate::config::SmsBreakerSettings;
use crate::domain::breaker::{Breaker, BreakerRule, BreakerState, Outcome, SharedBreakers, Transition};
use crate::domain::clock::Clock;
use crate::domain::metrics;

/// How long an answer of the shared state stands before it is asked again: a send
/// costs no round trip to Redis, and an opening elsewhere is seen within this.
const SHARED_CHECK_EVERY_MS: i64 = 1000;

/// The breakers of the provider instances named at construction.
pub struct Breakers {
    rule: BreakerRule,
    clock: Clock,
    shared: Option<Arc<dyn SharedBreakers>>,
    instances: Vec<Instance>,
    /// Whether the shared state failed its last request, so that an outage is logged once.
    shared_failing: AtomicBool,
}

struct Instance {
    name: Box<str>,
    local: Mutex<Local>,
    /// This instance's series of the metrics, looked up once.
    open_gauge: IntGauge,
    opened: IntCounter,
}

struct Local {
    breaker: Breaker,
    /// When the shared state was last asked about this instance (or is being asked).
    shared_asked_at: Option<i64>,
}

impl Breakers {
    /// A closed breaker for each of `instances` (the provider instances' names, as
    /// configured; a name given twice is one instance), on `clock`, sharing openings
    /// through `shared` when given (`store::shared_breakers::RedisBreakers` with
    /// `REDIS_URL`). Their metrics start at zero.
    pub fn new<S: AsRef<str>>(
        settings: &SmsBreakerSettings,
        instances: impl IntoIterator<Item = S>,
        clock: Clock,
        shared: Option<Arc<dyn SharedBreakers>>,
    ) -> Breakers {
        let rule = BreakerRule::from_settings(settings);
        let mut kept: Vec<Instance> = Vec::new();
        for name in instances {
            let name = name.as_ref();
            if kept.iter().any(|instance| &*instance.name == name) {
                continue;
            }
            let open_gauge = metrics::SENDER_BREAKER_OPEN.with_label_values(&[name]);
            open_gauge.set(0);
            kept.push(Instance {
                name: name.into(),
                local: Mutex::new(Local { breaker: Breaker::new(rule), shared_asked_at: None }),
                open_gauge,
                opened: metrics::SENDER_BREAKER_OPENED.with_label_values(&[name]),
            });
        }
        Breakers { rule, clock, shared, instances: kept, shared_failing: AtomicBool::new(false) }
    }

    /// Whether a send may go through `instance` now; false: skip it for now. After the
    /// cool-down exactly one caller is let through, for the trial send, whose outcome must
    /// then be recorded. An instance not named at construction is always allowed.
    pub async fn allow(&self, instance: &str) -> bool {
        let Some(entry) = self.find(instance) else { return true };
        if let Some(shared) = &self.shared {
            let now = self.clock.now_ms();
            let ask = {
                let mut local = entry.lock();
                if local.breaker.skips(now) {
                    return false;
                }
                // One caller asks; the others go by what was last seen meanwhile.
                let due = local.shared_asked_at.is_none_or(|at| now < at || now - at >= SHARED_CHECK_EVERY_MS);
                if due {
                    local.shared_asked_at = Some(now);
                }
                due
            };
            if ask {
                match shared.opened_until(&entry.name).await {
                    Ok(until) => {
                        self.shared_answered();
                        if let Some(until_ms) = until {
                            let transition = entry.lock().breaker.opened_elsewhere(until_ms, self.clock.now_ms());
                            self.note(entry, transition);
                        }
                    }
                    Err(why) => self.shared_failed(&why),
                }
            }
        }
        entry.lock().breaker.allow(self.clock.now_ms())
    }

    /// Counts how a send through `instance` went. `Outcome::Failed` is for the
    /// provider's failures only, transient errors and timeouts; a permanent refusal (an
    /// invalid number) is the number's fault and is recorded as `Outcome::Delivered`: the
    /// provider answered. Opening the breaker is written to the shared state, if any.
    pub async fn record(&self, instance: &str, outcome: Outcome) {
        let Some(entry) = self.find(instance) else { return };
        let transition = entry.lock().breaker.record(outcome, self.clock.now_ms());
        self.note(entry, transition);
        if let (Transition::Opened { until_ms, .. } | Transition::Reopened { until_ms }, Some(shared)) = (transition, &self.shared) {
            match shared.open(&entry.name, until_ms, self.rule.cooldown).await {
                Ok(()) => self.shared_answered(),
                Err(why) => self.shared_failed(&why),
            }
        }
    }

    /// `instance`'s breaker as this process last saw it; `None` for an instance not
    /// named at construction.
    pub fn state(&self, instance: &str) -> Option<BreakerState> {
        self.find(instance).map(|entry| entry.lock().breaker.state(self.clock.now_ms()))
    }

    /// Every instance's breaker, in the order named, for `/readyz`.
    pub fn snapshot(&self) -> Vec<(String, BreakerState)> {
        let now = self.clock.now_ms();
        self.instances.iter().map(|entry| (entry.name.to_string(), entry.lock().breaker.state(now))).collect()
    }

    fn find(&self, instance: &str) -> Option<&Instance> {
        // A handful of operator-named instances: a scan is as quick as a hash, and allocates nothing.
        self.instances.iter().find(|entry| &*entry.name == instance)
    }

    /// Counts and logs what a step changed.
    fn note(&self, entry: &Instance, transition: Transition) {
        let cooldown = self.rule.cooldown.as_secs();
        let name = &entry.name;
        match transition {
            Transition::Unchanged => {}
            Transition::Opened { failed, of, .. } => {
                entry.open_gauge.set(1);
                entry.opened.inc();
                tracing::warn!("SMS provider instance {name} failed {failed} of its last {of} sends: skipped for {cooldown} s, then tried with one send");
            }
            Transition::Reopened { .. } => {
                entry.open_gauge.set(1);
                entry.opened.inc();
                tracing::warn!("SMS provider instance {name} failed its trial send: skipped for another {cooldown} s");
            }
            Transition::OpenedElsewhere { until_ms } => {
                entry.open_gauge.set(1);
                let left = (until_ms - self.clock.now_ms() + 999).max(0) / 1000;
                tracing::info!("SMS provider instance {name} was found failing by another otpgate process: skipped here too for {left} s");
            }
            Transition::Closed => {
                entry.open_gauge.set(0);
                tracing::info!("SMS provider instance {name} delivered its trial send: in use again");
            }
        }
    }

    fn shared_answered(&self) {
        if self.shared_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("the SMS provider breakers reach Redis again: openings are shared again");
        }
    }

    fn shared_failed(&self, why: &str) {
        if !self.shared_failing.swap(true, Ordering::Relaxed) {
            tracing::warn!("the SMS provider breakers cannot reach Redis ({why}): each process skips only the instances it found failing until it answers");
        }
    }
}

impl Instance {
    fn lock(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn settings(window: u32, min_sends: u32, cooldown_secs: u64) -> SmsBreakerSettings {
        SmsBreakerSettings { window, min_sends, cooldown_secs }
    }

    /// Breakers for `names` on `clock`, with the defaults (10 sends, 5 at least, 60 s).
    fn breakers(names: &[&str], clock: &Clock, shared: Option<Arc<dyn SharedBreakers>>) -> Breakers {
        Breakers::new(&settings(10, 5, 60), names.iter().copied(), clock.clone(), shared)
    }

    async fn fail(breakers: &Breakers, instance: &str, times: usize) {
        for _ in 0..times {
            assert!(breakers.allow(instance).await, "{instance} skipped before it failed {times} times");
            breakers.record(instance, Outcome::Failed).await;
        }
    }

    fn open_gauge(instance: &str) -> i64 {
        metrics::SENDER_BREAKER_OPEN.with_label_values(&[instance]).get()
    }

    fn opened(instance: &str) -> u64 {
        metrics::SENDER_BREAKER_OPENED.with_label_values(&[instance]).get()
    }

    /// The shared state in memory, as Redis would keep it for several processes.
    #[derive(Default)]
    struct Memory {
        opened: Mutex<HashMap<String, i64>>,
        asked: AtomicUsize,
        down: AtomicBool,
    }

    #[async_trait]
    impl SharedBreakers for Memory {
        async fn opened_until(&self, instance: &str) -> Result<Option<i64>, String> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            Ok(self.opened.lock().unwrap().get(instance).copied())
        }

        async fn open(&self, instance: &str, until_ms: i64, _: Duration) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            self.opened.lock().unwrap().insert(instance.into(), until_ms);
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_instance_failing_most_sends_is_skipped_and_counted_while_the_others_are_not() {
        let clock = Clock::manual();
        let b = breakers(&["unit_skip_a", "unit_skip_b"], &clock, None);
        assert_eq!((open_gauge("unit_skip_a"), opened("unit_skip_a")), (0, 0), "exported at zero from the start");
        b.record("unit_skip_a", Outcome::Delivered).await;
        fail(&b, "unit_skip_a", 3).await;
        assert_eq!(b.state("unit_skip_a"), Some(BreakerState::Closed), "3 of 4 are fewer than SMS_BREAKER_MIN_SENDS");
        fail(&b, "unit_skip_a", 1).await;
        let until_ms = clock.now_ms() + 60_000;
        assert_eq!(b.state("unit_skip_a"), Some(BreakerState::Open { until_ms }));
        assert!(!b.allow("unit_skip_a").await);
        assert!(b.allow("unit_skip_b").await, "another instance is not affected");
        assert_eq!((open_gauge("unit_skip_a"), opened("unit_skip_a")), (1, 1));
        assert_eq!(open_gauge("unit_skip_b"), 0);
        assert_eq!(
            b.snapshot(),
            vec![("unit_skip_a".to_string(), BreakerState::Open { until_ms }), ("unit_skip_b".to_string(), BreakerState::Closed)]
        );
        clock.advance(Duration::from_millis(59_999));
        assert!(!b.allow("unit_skip_a").await, "skipped for the whole cool-down");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn after_the_cool_down_exactly_one_of_many_concurrent_callers_gets_the_trial() {
        let clock = Clock::manual();
        for shared in [None, Some(Arc::new(Memory::default()) as Arc<dyn SharedBreakers>)] {
            let b = Arc::new(breakers(&["unit_trial"], &clock, shared));
            fail(&b, "unit_trial", 5).await;
            clock.advance(Duration::from_secs(60));
            let callers = 32;
            let start = Arc::new(tokio::sync::Barrier::new(callers));
            let asks: Vec<_> = (0..callers)
                .map(|_| {
                    let (b, start) = (Arc::clone(&b), Arc::clone(&start));
                    tokio::spawn(async move {
                        start.wait().await;
                        b.allow("unit_trial").await
                    })
                })
                .collect();
            let mut allowed = 0;
            for ask in asks {
                allowed += usize::from(ask.await.unwrap());
            }
            assert_eq!(allowed, 1, "one trial send");
            assert_eq!(b.state("unit_trial"), Some(BreakerState::HalfOpen));
            assert!(!b.allow("unit_trial").await, "nor one more later, while it is under way");
        }
    }

    #[tokio::test]
    async fn a_delivered_trial_closes_the_breaker_and_a_failed_one_opens_it_again() {
        let clock = Clock::manual();
        let b = breakers(&["unit_trial_outcome"], &clock, None);
        fail(&b, "unit_trial_outcome", 5).await;
        clock.advance(Duration::from_secs(60));
        assert!(b.allow("unit_trial_outcome").await);
        b.record("unit_trial_outcome", Outcome::Failed).await;
        assert_eq!(b.state("unit_trial_outcome"), Some(BreakerState::Open { until_ms: clock.now_ms() + 60_000 }));
        assert_eq!((open_gauge("unit_trial_outcome"), opened("unit_trial_outcome")), (1, 2), "opened again, and counted");
        clock.advance(Duration::from_secs(60));
        assert!(b.allow("unit_trial_outcome").await);
        assert_eq!(open_gauge("unit_trial_outcome"), 1, "degraded while the trial is under way");
        b.record("unit_trial_outcome", Outcome::Delivered).await;
        assert_eq!(b.state("unit_trial_outcome"), Some(BreakerState::Closed));
        assert_eq!((open_gauge("unit_trial_outcome"), opened("unit_trial_outcome")), (0, 2));
        assert!(b.allow("unit_trial_outcome").await && b.allow("unit_trial_outcome").await);
    }

    #[tokio::test]
    async fn an_instance_not_named_is_never_skipped_and_a_name_given_twice_is_one_instance() {
        let clock = Clock::manual();
        let b = breakers(&["unit_named", "unit_named"], &clock, None);
        for _ in 0..10 {
            b.record("unit_unnamed", Outcome::Failed).await;
        }
        assert!(b.allow("unit_unnamed").await);
        assert_eq!(b.state("unit_unnamed"), None);
        assert_eq!(b.snapshot(), vec![("unit_named".to_string(), BreakerState::Closed)]);
    }

    #[tokio::test]
    async fn an_opening_is_shared_and_the_shared_state_is_asked_at_most_once_a_second() {
        let clock = Clock::manual();
        let memory = Arc::new(Memory::default());
        let shared = || Some(Arc::clone(&memory) as Arc<dyn SharedBreakers>);
        let (a, b) = (breakers(&["unit_shared"], &clock, shared()), breakers(&["unit_shared"], &clock, shared()));
        for _ in 0..3 {
            assert!(b.allow("unit_shared").await);
        }
        assert_eq!(memory.asked.load(Ordering::SeqCst), 1, "asked once for three sends within a second");
        fail(&a, "unit_shared", 5).await;
        let until_ms = clock.now_ms() + 60_000;
        assert_eq!(memory.opened.lock().unwrap().get("unit_shared"), Some(&until_ms), "A tells the others");
        assert!(b.allow("unit_shared").await, "B goes by its last answer, under a second old");
        clock.advance(Duration::from_secs(1));
        assert!(!b.allow("unit_shared").await, "then skips it too");
        assert_eq!(b.state("unit_shared"), Some(BreakerState::Open { until_ms }));
        let asked = memory.asked.load(Ordering::SeqCst);
        clock.advance(Duration::from_secs(10));
        assert!(!b.allow("unit_shared").await);
        assert_eq!(memory.asked.load(Ordering::SeqCst), asked, "an open breaker needs no answer to skip");
        clock.advance(Duration::from_secs(49));
        assert!(a.allow("unit_shared").await && b.allow("unit_shared").await, "after the cool-down each has its trial");
    }

    #[tokio::test]
    async fn while_the_shared_state_cannot_be_asked_each_process_decides_from_its_own_sends() {
        let clock = Clock::manual();
        let memory = Arc::new(Memory::default());
        memory.down.store(true, Ordering::SeqCst);
        let b = breakers(&["unit_shared_down"], &clock, Some(Arc::clone(&memory) as Arc<dyn SharedBreakers>));
        fail(&b, "unit_shared_down", 5).await;
        assert!(!b.allow("unit_shared_down").await);
        clock.advance(Duration::from_secs(60));
        assert!(b.allow("unit_shared_down").await, "the trial, though the shared state was not there to ask");
        b.record("unit_shared_down", Outcome::Delivered).await;
        assert!(b.allow("unit_shared_down").await);
        // Back: it is asked again, and an opening there counts.
        memory.down.store(false, Ordering::SeqCst);
        memory.opened.lock().unwrap().insert("unit_shared_down".into(), clock.now_ms() + 5_000);
        clock.advance(Duration::from_secs(1));
        assert!(!b.allow("unit_shared_down").await);
    }
}

//! Keyed rate limits, one limiter per kind of key so that a busy IP cannot exhaust a
//! phone's budget and one phone cannot exhaust an IP's. Each limit is a GCRA bucket
//! (burst `n`, refilled evenly over its period): in this process's memory, or, with
//! `REDIS_URL`, in Redis, shared by every instance. Both run the same GCRA step, so that
//! several limits can be decided together, all or nothing.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::metrics;

/// Why a limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key must wait this many seconds.
    Wait(u64),
    /// More at once than the whole budget: waiting never helps.
    TooMany,
    /// The shared limiter could not be asked and `RATE_LIMIT_ON_ERROR=deny`.
    Unavailable,
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::Wait(wait) => ApiError::rate_limited(wait, format!("too many requests; retry in {wait} seconds")),
            Refusal::TooMany => ApiError::new(ErrorCode::TooMany, "more at once than this limit ever allows"),
            Refusal::Unavailable => unavailable(),
        }
    }
}

/// The answer while the shared limiter cannot be asked: an open limiter is an open SMS bill.
pub fn unavailable() -> ApiError {
    ApiError::new(ErrorCode::Internal, "rate limits cannot be checked right now; please retry shortly")
}

/// A limit check that may need a round trip (the shared limiter); a local one is ready at once.
pub type Admission<E> = futures_util::future::BoxFuture<'static, Result<(), E>>;

/// What a shared bucket answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Yes,
    /// Not before this long.
    Wait(Duration),
}

/// `n` from bucket `key` (capacity `burst`, one back every `per_unit`); `n` is at most `burst`.
#[derive(Debug, Clone)]
pub struct Take {
    pub key: String,
    pub n: u32,
    pub per_unit: Duration,
    pub burst: u32,
}

/// Buckets every instance shares (Redis, in `store`).
#[async_trait]
pub trait SharedBuckets: Send + Sync {
    /// Takes `n` from bucket `key` (capacity `burst`, one back every `per_unit`) in one
    /// atomic step, or says how long until they would fit. `n` is at most `burst`.
    async fn take(&self, key: &str, n: u32, per_unit: Duration, burst: u32) -> Result<Taken, String>;
    /// Takes from every bucket of `takes` or from none, in one atomic step: `None` when
    /// taken, or the index of the first that refused and its wait. The buckets are
    /// kept together as `group` (in a Redis Cluster: one slot).
    async fn take_all(&self, group: &str, takes: &[Take]) -> Result<Option<(usize, Duration)>, String>;
    /// Whether the buckets can be reached, for `/readyz`.
    async fn ping(&self) -> Result<(), String>;
}

/// The shared buckets and what to do when they cannot be reached.
pub struct SharedLimits {
    buckets: Arc<dyn SharedBuckets>,
    /// Keys entries by an HMAC of the limited key: the same on every instance, and no phone
    /// number or IP address in clear in Redis.
    key: [u8; 32],
    /// `RATE_LIMIT_ON_ERROR=allow`: let a request through when the buckets cannot be asked.
    allow_on_error: bool,
    /// What was logged of the current outage, so that it is told once, not per request.
    outage: Mutex<Outage>,
    clock: Clock,
}

/// An ERROR line says checks fail again at most this often while they go on failing.
const OUTAGE_REMINDER: Duration = Duration::from_secs(60);

/// An outage is over once no check failed for this long. Waiting for a quiet spell, not
/// for one answer, keeps a partial outage (a Cluster node down: its checks fail, the
/// others' succeed) from logging a line at every turn.
const OUTAGE_QUIET: Duration = Duration::from_secs(10);

/// The current outage of the shared buckets, on the service's clock in milliseconds.
#[derive(Default)]
struct Outage {
    /// When the last ERROR line was logged; `None` while there is no outage.
    told_at: Option<i64>,
    /// Checks that failed since that line.
    failed_since_told: u64,
    last_failure_at: i64,
}

impl SharedLimits {
    pub fn new(buckets: Arc<dyn SharedBuckets>, key: [u8; 32], allow_on_error: bool) -> Arc<SharedLimits> {
        SharedLimits::with_clock(buckets, key, allow_on_error, Clock::system())
    }

    /// [`SharedLimits::new`] whose outage lines follow `clock`.
    pub fn with_clock(buckets: Arc<dyn SharedBuckets>, key: [u8; 32], allow_on_error: bool, clock: Clock) -> Arc<SharedLimits> {
        Arc::new(SharedLimits { buckets, key, allow_on_error, outage: Mutex::new(Outage::default()), clock })
    }

    fn entry(&self, limit: &str, key: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(limit.as_bytes());
        mac.update(&[0]);
        mac.update(key.as_bytes());
        format!("{limit}:{}", hex::encode(&mac.finalize().into_bytes()[..16]))
    }

    async fn take(&self, limit: &str, key: &str, n: u32, per_unit: Duration, burst: u32) -> Result<Taken, Refusal> {
        let started = Instant::now();
        let taken = self.buckets.take(&self.entry(limit, key), n, per_unit, burst).await;
        metrics::REDIS_DURATION.observe(started.elapsed().as_secs_f64());
        self.decide(taken, Taken::Yes)
    }

    /// `takes` are (limit, key, n, per unit, burst).
    async fn take_all(&self, group: &str, takes: &[(&str, &str, u32, Duration, u32)]) -> Result<Option<(usize, Duration)>, Refusal> {
        let takes: Vec<Take> =
            takes.iter().map(|&(limit, key, n, per_unit, burst)| Take { key: self.entry(limit, key), n, per_unit, burst }).collect();
        // A group may be an address: keyed like the buckets, never in clear.
        let group = self.entry("group", group);
        let started = Instant::now();
        let taken = self.buckets.take_all(&group, &takes).await;
        metrics::REDIS_DURATION.observe(started.elapsed().as_secs_f64());
        self.decide(taken, None)
    }

    /// What the buckets answered, or, when they could not be asked, what
    /// `RATE_LIMIT_ON_ERROR` says: `let_through`, or a refusal.
    /// One ERROR line opens an outage and another says so every [`OUTAGE_REMINDER`] while
    /// checks go on failing; one INFO line closes it at the first answer after
    /// [`OUTAGE_QUIET`] without a failure.
    fn decide<T>(&self, answer: Result<T, String>, let_through: T) -> Result<T, Refusal> {
        let now = self.clock.now_ms();
        let mut outage = self.outage.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match answer {
            Ok(answer) => {
                if outage.told_at.is_some() && now - outage.last_failure_at >= millis(OUTAGE_QUIET) {
                    *outage = Outage::default();
                    tracing::info!("shared rate limits answer again: none failed for {} s", OUTAGE_QUIET.as_secs());
                }
                Ok(answer)
            }
            Err(e) => {
                metrics::RATELIMIT_ERRORS.inc();
                outage.last_failure_at = now;
                outage.failed_since_told += 1;
                let decision = if self.allow_on_error { "letting requests through unlimited" } else { "refusing limited requests" };
                let told = match outage.told_at {
                    None => {
                        tracing::error!("shared rate limits cannot be checked ({e}): {decision} until they answer (RATE_LIMIT_ON_ERROR)");
                        true
                    }
                    Some(told_at) if now - told_at >= millis(OUTAGE_REMINDER) => {
                        tracing::error!(
                            "shared rate limits still fail: {} more checks failed since this was logged {} s ago, the last with {e}: {decision} (RATE_LIMIT_ON_ERROR)",
                            outage.failed_since_told,
                            (now - told_at) / 1000,
                        );
                        true
                    }
                    Some(_) => false,
                };
                if told {
                    outage.told_at = Some(now);
                    outage.failed_since_told = 0;
                }
                drop(outage);
                if self.allow_on_error {
                    Ok(let_through)
                } else {
                    Err(Refusal::Unavailable)
                }
            }
        }
    }

    /// `RATE_LIMIT_ON_ERROR=allow`.
    pub fn allows_on_error(&self) -> bool {
        self.allow_on_error
    }

    /// Asks the buckets for a sign of life; for `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        self.buckets.ping().await
    }
}

/// The buckets of one in-process limit: key hash → theoretical arrival time, in
/// nanoseconds since [`EPOCH`].
type LocalBuckets = HashMap<u64, u64>;

/// The origin of the in-process buckets' monotonic clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn local_now() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One GCRA step, the same as the shared buckets' script: a key never seen starts at
/// `now + t`; `n` fit when `tat + t*(n-1) - t*burst <= now`, and taking them moves `tat`
/// to `max(tat, now) + t*n`. Answers the new `tat`, or the wait until `n` would fit.
fn gcra(tat: Option<u64>, now: u64, rule: Rule, n: u32) -> Result<u64, Duration> {
    let t = nanos(rule.per_unit);
    let tat = tat.unwrap_or(now.saturating_add(t));
    let earliest = (tat.saturating_add(t.saturating_mul(u64::from(n - 1)))).saturating_sub(t.saturating_mul(u64::from(rule.burst.get())));
    if now < earliest {
        return Err(Duration::from_nanos(earliest - now));
    }
    Ok(tat.max(now).saturating_add(t.saturating_mul(u64::from(n))))
}

/// The rule of a limit: a burst of `burst`, one back every `per_unit`.
#[derive(Clone, Copy)]
struct Rule {
    per_unit: Duration,
    burst: NonZeroU32,
}

/// Allows a burst of `n` per key, refilled evenly over an hour (or a day). `n = 0` disables the limit.
pub struct KeyedLimit {
    rule: Option<Rule>,
    /// The buckets in this process (unused when the limit is shared).
    local: Mutex<LocalBuckets>,
    shared: Option<Arc<SharedLimits>>,
    /// Keys are kept as 64-bit hashes under this per-process random key: a map holds every
    /// key seen within the period, and a phone's string makes its entry far larger.
    /// Two keys sharing a hash would share one budget; among a million keys that is
    /// vanishingly rare, and the random key stops anyone choosing keys that collide.
    hasher: RandomState,
    /// The `limiter` label of `otpgate_ratelimit_rejections_total`, and the shared buckets' namespace.
    name: &'static str,
}

impl KeyedLimit {
    pub fn per_hour(n: u32) -> Self {
        KeyedLimit::over(n, Duration::from_secs(3600))
    }

    pub fn per_day(n: u32) -> Self {
        KeyedLimit::over(n, Duration::from_secs(24 * 3600))
    }

    fn over(n: u32, period: Duration) -> Self {
        let rule = NonZeroU32::new(n).map(|burst| Rule { per_unit: (period / burst.get()).max(Duration::from_nanos(1)), burst });
        KeyedLimit { rule, local: Mutex::new(LocalBuckets::new()), shared: None, hasher: RandomState::new(), name: "unnamed" }
    }

    /// Names the limit in the rejection metric.
    pub fn named(self, name: &'static str) -> Self {
        KeyedLimit { name, ..self }
    }

    /// Keeps the buckets in `shared` (when given) instead of this process's memory.
    pub fn shared(self, shared: Option<&Arc<SharedLimits>>) -> Self {
        match shared {
            Some(shared) => KeyedLimit { shared: Some(Arc::clone(shared)), ..self },
            None => self,
        }
    }

    /// Takes one for `key`.
    pub async fn check(&self, key: &str) -> Result<(), Refusal> {
        self.check_n(key, 1).await
    }

    /// Takes `n` at once for `key`.
    pub async fn check_n(&self, key: &str, n: u32) -> Result<(), Refusal> {
        let (Some(rule), Some(n)) = (self.rule, NonZeroU32::new(n)) else { return Ok(()) };
        let refused = |refusal: Refusal| {
            if refusal != Refusal::Unavailable {
                metrics::RATELIMIT_REJECTIONS.with_label_values(&[self.name]).inc();
            }
            Err(refusal)
        };
        if n > rule.burst {
            return refused(Refusal::TooMany);
        }
        if let Some(shared) = &self.shared {
            return match shared.take(self.name, key, n.get(), rule.per_unit, rule.burst.get()).await {
                Ok(Taken::Yes) => Ok(()),
                Ok(Taken::Wait(wait)) => refused(Refusal::Wait(whole_seconds(wait))),
                Err(refusal) => refused(refusal),
            };
        }
        let hash = self.hasher.hash_one(key);
        let mut buckets = self.buckets();
        match gcra(buckets.get(&hash).copied(), local_now(), rule, n.get()) {
            Ok(tat) => {
                buckets.insert(hash, tat);
                Ok(())
            }
            Err(wait) => refused(Refusal::Wait(whole_seconds(wait))),
        }
    }

    fn buckets(&self) -> MutexGuard<'_, LocalBuckets> {
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one from each limit for its key, or, when one refuses, says which (its
    /// index in `checks`) and why; all or nothing: when one refuses, none is taken.
    /// In-process limits are decided under all their locks at once, shared ones in one
    /// step of the shared buckets. `group` keeps the shared buckets together (see
    /// [`SharedBuckets::take_all`]); a shared bucket is kept under its group, so a limit
    /// checked here is always checked with the same group, and never by [`KeyedLimit::check`].
    pub async fn check_all(group: &str, checks: &[(&KeyedLimit, &str)]) -> Result<(), (usize, Refusal)> {
        let enabled: Vec<(usize, &KeyedLimit, Rule, &str)> =
            checks.iter().enumerate().filter_map(|(i, &(limit, key))| limit.rule.map(|rule| (i, limit, rule, key))).collect();
        let shared = enabled.first().and_then(|(_, limit, _, _)| limit.shared.clone());
        let together = shared.as_ref().filter(|shared| enabled.iter().all(|(_, limit, _, _)| limit.shares(shared)));
        let Some(shared) = together else {
            if enabled.iter().any(|(_, limit, _, _)| limit.shared.is_some()) {
                // Mixed in-process and shared limits: no one step decides them all.
                for (i, limit, _, key) in enabled {
                    limit.check(key).await.map_err(|refusal| (i, refusal))?;
                }
                return Ok(());
            }
            return KeyedLimit::take_all_local(&enabled);
        };
        let takes: Vec<_> = enabled.iter().map(|&(_, limit, rule, key)| (limit.name, key, 1, rule.per_unit, rule.burst.get())).collect();
        match shared.take_all(group, &takes).await {
            Ok(None) => Ok(()),
            Ok(Some((refused, wait))) => {
                let (i, limit, _, _) = enabled.get(refused).copied().ok_or((0, Refusal::Unavailable))?;
                metrics::RATELIMIT_REJECTIONS.with_label_values(&[limit.name]).inc();
                Err((i, Refusal::Wait(whole_seconds(wait))))
            }
            Err(refusal) => Err((enabled[0].0, refusal)),
        }
    }

    /// [`KeyedLimit::check_all`] for in-process limits: every bucket is read under its
    /// limit's lock, locked in address order so that two calls cannot wait on each other,
    /// and written only when all have room.
    fn take_all_local(enabled: &[(usize, &KeyedLimit, Rule, &str)]) -> Result<(), (usize, Refusal)> {
        let mut limits: Vec<&KeyedLimit> = enabled.iter().map(|&(_, limit, _, _)| limit).collect();
        limits.sort_by_key(|limit| std::ptr::from_ref(*limit) as usize);
        limits.dedup_by_key(|limit| std::ptr::from_ref(*limit) as usize);
        let mut locked: Vec<(&KeyedLimit, MutexGuard<'_, LocalBuckets>)> =
            limits.into_iter().map(|limit| (limit, limit.buckets())).collect();
        let now = local_now();
        // (index in `locked`, key hash, new tat): read back by a later check of the same bucket.
        let mut taken: Vec<(usize, u64, u64)> = Vec::with_capacity(enabled.len());
        for &(i, limit, rule, key) in enabled {
            let at = locked.iter().position(|(held, _)| std::ptr::eq(*held, limit)).expect("every limit is locked");
            let hash = limit.hasher.hash_one(key);
            let tat = taken.iter().rev().find(|&&(held, h, _)| held == at && h == hash).map(|&(_, _, tat)| tat);
            match gcra(tat.or_else(|| locked[at].1.get(&hash).copied()), now, rule, 1) {
                Ok(tat) => taken.push((at, hash, tat)),
                Err(wait) => {
                    metrics::RATELIMIT_REJECTIONS.with_label_values(&[limit.name]).inc();
                    return Err((i, Refusal::Wait(whole_seconds(wait))));
                }
            }
        }
        for (at, hash, tat) in taken {
            locked[at].1.insert(hash, tat);
        }
        Ok(())
    }

    fn shares(&self, shared: &Arc<SharedLimits>) -> bool {
        self.shared.as_ref().is_some_and(|own| Arc::ptr_eq(own, shared))
    }

    /// Forgets keys whose budget is full again, so the maps do not grow without bound
    /// (shared entries expire in Redis on their own).
    pub fn purge(&self) {
        let Some(rule) = self.rule else { return };
        // A bucket at `now + t` or earlier is as full as one never seen.
        let full = local_now().saturating_add(nanos(rule.per_unit));
        let mut buckets = self.buckets();
        buckets.retain(|_, tat| *tat > full);
        buckets.shrink_to_fit();
    }
}

/// A wait rounded up to whole seconds, at least one.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The limits on guesses at codes (the limits on starts are `start_limits`).
pub struct Limits {
    pub verify_per_address: KeyedLimit,
    pub verify_per_address_daily: KeyedLimit,
    pub verify_per_ip: KeyedLimit,
}

impl Limits {
    pub fn from_config(config: &Config, shared: Option<&Arc<SharedLimits>>) -> Self {
        let limit = |n, name| KeyedLimit::per_hour(n).named(name).shared(shared);
        Limits {
            verify_per_address: limit(config.limit.verify_per_phone_per_hour, "verify_per_address"),
            verify_per_address_daily: KeyedLimit::per_day(config.limit.verify_per_phone_per_day)
                .named("verify_per_address_per_day")
                .shared(shared),
            verify_per_ip: limit(config.limit.verify_per_ip_per_hour, "verify_per_ip"),
        }
    }

    /// Charges a guess at a pending code of `address` that has had `attempts` wrong guesses
    /// of its kind: one sent without the code's challenge id spends the hourly and the daily
    /// budget of the address; one sent with it spends the daily one, but for the first of
    /// its challenge, which the one who asked for the code (and alone holds its id) always
    /// gets. Starts per address per day bound those first guesses.
    pub async fn admit_guess(&self, address: &str, bound: bool, attempts: u32) -> Result<(), Refusal> {
        let unbound = [(&self.verify_per_address, address), (&self.verify_per_address_daily, address)];
        let checks = match (bound, attempts) {
            (false, _) => &unbound[..],
            (true, 0) => return Ok(()),
            (true, _) => &unbound[1..],
        };
        // Grouped by address, so that a Redis Cluster spreads addresses over its nodes.
        KeyedLimit::check_all(address, checks).await.map_err(|(_, refusal)| refusal)
    }

    pub fn purge(&self) {
        for limit in [&self.verify_per_address, &self.verify_per_address_daily, &self.verify_per_ip] {
            limit.purge();
        }
    }
}

/// Keys a [`FailureLimit`] tracks at most before it forgets those not refused.
const MAX_FAILING_KEYS: usize = 100_000;

/// Counts failures per key (a wrong secret, say) in a window that starts at the key's first
/// failure, on the service's clock. A key with `max` failures in its window is refused until
/// the window ends, whatever it presents then: a secret found by guessing must not get in.
/// Kept in this process's memory: each instance counts its own.
pub struct FailureLimit {
    max: u32,
    window_secs: i64,
    clock: crate::domain::clock::Clock,
    /// Key → (start of its window, unix seconds; failures in it).
    failures: std::sync::Mutex<std::collections::HashMap<String, (i64, u32)>>,
}

impl FailureLimit {
    /// `max` failures per key per hour; 0 turns the limit off.
    pub fn per_hour(max: u32, clock: crate::domain::clock::Clock) -> FailureLimit {
        FailureLimit { max, window_secs: 3600, clock, failures: Default::default() }
    }

    /// The seconds `key` must wait, when it has used up its failures.
    pub fn refusal(&self, key: &str) -> Option<u64> {
        let now = self.clock.now();
        let failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match failures.get(key) {
            Some(&(start, count)) if self.max > 0 && count >= self.max && now < start + self.window_secs => {
                Some(u64::try_from(start + self.window_secs - now).unwrap_or(1).max(1))
            }
            _ => None,
        }
    }

    /// Counts one failure of `key`.
    pub fn record_failure(&self, key: &str) {
        if self.max == 0 {
            return;
        }
        let now = self.clock.now();
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if failures.len() >= MAX_FAILING_KEYS && !failures.contains_key(key) {
            failures.retain(|_, (start, _)| now < *start + self.window_secs);
            if failures.len() >= MAX_FAILING_KEYS {
                failures.retain(|_, (_, count)| *count >= self.max);
            }
        }
        let entry = failures.entry(key.to_string()).or_insert((now, 0));
        if now >= entry.0 + self.window_secs {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now<T>(future: impl std::future::Future<Output = T>) -> T {
        futures_util::FutureExt::now_or_never(future).expect("a local limit answers at once")
    }

    #[test]
    fn burst_then_refuse_with_wait_time() {
        let limit = KeyedLimit::per_hour(2);
        assert_eq!(now(limit.check("a")), Ok(()));
        assert_eq!(now(limit.check("a")), Ok(()));
        let Err(Refusal::Wait(wait)) = now(limit.check("a")) else { panic!("a third is refused") };
        assert!((1..=1800).contains(&wait), "refill of one in 30 minutes, got {wait}");
        assert_eq!(now(limit.check("b")), Ok(()), "keys are independent");
    }

    #[test]
    fn a_daily_limit_takes_many_at_once_and_refuses_more_than_is_left() {
        let limit = KeyedLimit::per_day(100);
        assert_eq!(now(limit.check_n("a", 60)), Ok(()));
        let Err(Refusal::Wait(wait)) = now(limit.check_n("a", 60)) else { panic!("the budget refills") };
        // 20 of 100 are missing, at one per 864 s.
        assert!((17_000..=17_280).contains(&wait), "got {wait}");
        assert_eq!(now(limit.check_n("a", 40)), Ok(()), "what is left can still be taken");
        assert_eq!(now(limit.check_n("b", 101)), Err(Refusal::TooMany), "more than the whole budget never fits");
        assert_eq!(now(KeyedLimit::per_day(0).check_n("a", 1_000_000)), Ok(()));
    }

    #[test]
    fn limits_checked_together_take_all_or_nothing() {
        let (a, b) = (KeyedLimit::per_hour(3), KeyedLimit::per_hour(1));
        assert_eq!(now(KeyedLimit::check_all("g", &[(&a, "k"), (&b, "k")])), Ok(()));
        assert!(matches!(now(KeyedLimit::check_all("g", &[(&a, "k"), (&b, "k")])), Err((1, Refusal::Wait(_)))));
        // The refusal took nothing from the first: it still has two.
        assert_eq!(now(a.check_n("k", 2)), Ok(()));
        assert!(now(a.check("k")).is_err());
        // One limit twice in one check sees its own first take.
        let c = KeyedLimit::per_hour(1);
        assert!(matches!(now(KeyedLimit::check_all("g", &[(&c, "k"), (&c, "k")])), Err((1, Refusal::Wait(_)))));
        assert_eq!(now(c.check("k")), Ok(()), "and took nothing");
    }

    #[test]
    fn a_guess_with_its_challenge_id_is_free_once_then_spends_the_daily_budget() {
        let config = Config::from_vars([("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "30"), ("LIMIT_VERIFY_PER_PHONE_PER_DAY", "3")]).unwrap();
        let limits = Limits::from_config(&config, None);
        for _ in 0..10 {
            assert_eq!(now(limits.admit_guess("a", true, 0)), Ok(()), "the first of each challenge");
        }
        assert_eq!(now(limits.admit_guess("a", true, 1)), Ok(()));
        assert_eq!(now(limits.admit_guess("a", false, 0)), Ok(()));
        assert_eq!(now(limits.admit_guess("a", false, 3)), Ok(()));
        let Err(Refusal::Wait(wait)) = now(limits.admit_guess("a", true, 2)) else { panic!("the day's guesses are spent") };
        assert!(wait > 3600, "one comes back every 8 hours, got {wait}");
        assert!(now(limits.admit_guess("a", false, 0)).is_err());
        assert_eq!(now(limits.admit_guess("b", false, 0)), Ok(()), "another address has its own");
    }

    /// Buckets that fail while `failing` is set, and take otherwise.
    struct FlakyBuckets {
        failing: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SharedBuckets for FlakyBuckets {
        async fn take(&self, _: &str, _: u32, _: Duration, _: u32) -> Result<Taken, String> {
            self.answer().map(|()| Taken::Yes)
        }
        async fn take_all(&self, _: &str, _: &[Take]) -> Result<Option<(usize, Duration)>, String> {
            self.answer().map(|()| None)
        }
        async fn ping(&self) -> Result<(), String> {
            self.answer()
        }
    }

    impl FlakyBuckets {
        fn answer(&self) -> Result<(), String> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                Err("a node did not answer in time".into())
            } else {
                Ok(())
            }
        }
    }

    /// A writer into a buffer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn count(&self, level: &str) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap()).lines().filter(|line| line.contains(level)).count()
        }
    }

    #[test]
    fn a_flapping_outage_is_told_once_then_reminded_and_closed_after_a_quiet_spell() {
        let buckets = Arc::new(FlakyBuckets { failing: Default::default() });
        let clock = Clock::manual();
        let limits = SharedLimits::with_clock(buckets.clone(), [1; 32], false, clock.clone());
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let check = |fail: bool| {
            buckets.failing.store(fail, std::sync::atomic::Ordering::SeqCst);
            now(limits.take("limit", "key", 1, Duration::from_secs(1), 10))
        };
        tracing::subscriber::with_default(subscriber, || {
            // A partial outage: every other check fails, for 50 s.
            for _ in 0..250 {
                assert_eq!(check(true), Err(Refusal::Unavailable));
                clock.advance(Duration::from_millis(100));
                assert_eq!(check(false), Ok(Taken::Yes));
                clock.advance(Duration::from_millis(100));
            }
            assert_eq!((logs.count("ERROR"), logs.count("INFO")), (1, 0), "one ERROR for 250 failures between answers");
            // Still failing a minute after the ERROR: one more says so, with the count.
            clock.advance(Duration::from_secs(10));
            assert!(check(true).is_err());
            assert_eq!(logs.count("ERROR"), 2);
            assert_eq!(logs.count("still fail: 250 more checks failed since this was logged 60 s ago"), 1);
            // Answers, but too soon after the last failure to call the outage over.
            clock.advance(Duration::from_secs(9));
            assert!(check(false).is_ok());
            assert_eq!(logs.count("INFO"), 0);
            clock.advance(Duration::from_secs(1));
            assert!(check(false).is_ok());
            assert!(check(false).is_ok());
            assert_eq!(logs.count("INFO"), 1, "one INFO once none failed for 10 s");
            // A later failure is a new outage, told at once.
            assert!(check(true).is_err());
            assert_eq!((logs.count("ERROR"), logs.count("cannot be checked")), (3, 2));
        });
    }

    #[test]
    fn zero_disables() {
        let limit = KeyedLimit::per_hour(0);
        for _ in 0..100 {
            assert_eq!(now(limit.check("a")), Ok(()));
        }
    }

    #[test]
    fn a_key_out_of_failures_is_refused_until_its_window_ends() {
        let clock = crate::domain::clock::Clock::manual();
        let limit = FailureLimit::per_hour(3, clock.clone());
        for _ in 0..2 {
            limit.record_failure("a");
        }
        assert_eq!(limit.refusal("a"), None, "two of three failures");
        clock.advance(Duration::from_secs(600));
        limit.record_failure("a");
        assert_eq!(limit.refusal("a"), Some(3000), "the hour runs from the first failure");
        assert_eq!(limit.refusal("b"), None, "keys are independent");
        clock.advance(Duration::from_secs(2999));
        assert_eq!(limit.refusal("a"), Some(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(limit.refusal("a"), None, "the window is over");
        limit.record_failure("a");
        assert_eq!(limit.refusal("a"), None, "a new window starts with one failure");

        let off = FailureLimit::per_hour(0, clock);
        for _ in 0..100 {
            off.record_failure("a");
        }
        assert_eq!(off.refusal("a"), None);
    }
}

//! The SMS provider instances' circuit breakers shared through Redis, as two otpgate
//! processes would hold them (each its own connection): an instance one opens, every
//! one skips until the cool-down ends, on one server or a Cluster; the key expires with
//! it; and while Redis is down each decides from its own sends, without waiting on
//! Redis. Runs when the suite has REDIS_URL.

use crate::common::redis_servers::{self, RedisProcess};
use crate::common::*;
use otpgate::config::{Config, RedisTopology};
use otpgate::delivery::breakers::Breakers;
use otpgate::domain::breaker::{BreakerState, Outcome, SharedBreakers};
use otpgate::domain::clock::Clock;
use otpgate::store::shared_breakers::RedisBreakers;
use otpgate::store::shared_limits::RedisBuckets;
use std::sync::Arc;
use std::time::Duration;

const INSTANCES: [&str; 2] = ["twilio_uk", "vonage"];

/// A prefix of this test's own, so that its keys meet no other test's.
fn own_prefix(test: &str) -> String {
    format!("otpgate-breaker-{test}-{:016x}-{:x}", backend::run_tag(), rand::random::<u64>())
}

/// One process's view of the shared state: its own connection to `url` (a `REDIS_URL`).
async fn shared(url: &str, prefix: &str) -> Arc<dyn SharedBreakers> {
    let buckets = RedisBuckets::connect(&RedisTopology::parse(url).unwrap(), prefix, false).await.unwrap();
    // The buckets are dropped here: the breakers keep the connection and its mending.
    Arc::new(RedisBreakers::sharing(&buckets))
}

/// One process's breakers for [`INSTANCES`], under `vars` (`SMS_BREAKER_*`).
fn breakers(vars: &[(&str, &str)], clock: &Clock, shared: Arc<dyn SharedBreakers>) -> Breakers {
    let config = Config::from_vars(vars.iter().copied()).unwrap();
    Breakers::new(&config.sms_breaker, INSTANCES, clock.clone(), Some(shared))
}

async fn fail(breakers: &Breakers, instance: &str, times: usize) {
    for _ in 0..times {
        assert!(breakers.allow(instance).await, "{instance} skipped before it failed {times} times");
        breakers.record(instance, Outcome::Failed).await;
    }
}

#[actix_web::test]
async fn an_instance_one_process_opens_is_skipped_by_every_process_until_the_cool_down_ends() {
    let Some(redis) = backend::redis_url() else {
        println!("skipped: needs REDIS_URL");
        return;
    };
    let prefix = own_prefix("shared");
    let clock = Clock::manual();
    let a = breakers(&[], &clock, shared(&redis, &prefix).await);
    let b = breakers(&[], &clock, shared(&redis, &prefix).await);
    assert!(b.allow("twilio_uk").await, "nothing opened yet");

    fail(&a, "twilio_uk", 5).await;
    let until_ms = clock.now_ms() + 60_000;
    assert_eq!(a.state("twilio_uk"), Some(BreakerState::Open { until_ms }));
    // B goes by Redis's answer of less than a second ago, then asks again.
    clock.advance(Duration::from_secs(1));
    assert!(!b.allow("twilio_uk").await, "B skips the instance A opened");
    assert_eq!(b.state("twilio_uk"), Some(BreakerState::Open { until_ms }));
    assert!(b.allow("vonage").await && a.allow("vonage").await, "the other instance is still used by both");
    clock.advance(Duration::from_millis(58_999));
    assert!(!a.allow("twilio_uk").await && !b.allow("twilio_uk").await, "for the whole cool-down");

    clock.advance(Duration::from_millis(1));
    assert!(a.allow("twilio_uk").await && b.allow("twilio_uk").await, "after it, both allow (a trial each)");
    b.record("twilio_uk", Outcome::Delivered).await;
    assert_eq!(b.state("twilio_uk"), Some(BreakerState::Closed));
    // A's trial fails: opened again, and B, closed, learns it at its next look.
    a.record("twilio_uk", Outcome::Failed).await;
    let reopened_until = clock.now_ms() + 60_000;
    clock.advance(Duration::from_secs(1));
    assert!(!b.allow("twilio_uk").await, "B skips the instance A opened again");
    assert_eq!(b.state("twilio_uk"), Some(BreakerState::Open { until_ms: reopened_until }));
}

#[actix_web::test]
async fn an_opening_is_kept_in_redis_for_its_cool_down_only() {
    let Some(redis) = backend::redis_url() else {
        println!("skipped: needs REDIS_URL");
        return;
    };
    let prefix = own_prefix("expiry");
    // Long enough to read the key before it goes; the manual clock keeps A's view open.
    let a = breakers(&[("SMS_BREAKER_COOLDOWN_SECS", "5")], &Clock::manual(), shared(&redis, &prefix).await);
    let other = shared(&redis, &prefix).await;
    assert_eq!(other.opened_until("vonage").await, Ok(None));
    fail(&a, "vonage", 5).await;
    let Some(BreakerState::Open { until_ms }) = a.state("vonage") else { panic!("not open: {:?}", a.state("vonage")) };
    assert_eq!(other.opened_until("vonage").await, Ok(Some(until_ms)), "every process reads the same opening");
    assert_eq!(other.opened_until("twilio_uk").await, Ok(None), "of that instance only");
    let expired = eventually(30, async || other.opened_until("vonage").await == Ok(None)).await;
    assert!(expired, "the key outlived its cool-down: {:?}", other.opened_until("vonage").await);
}

#[actix_web::test]
async fn while_redis_is_down_each_process_decides_from_its_own_sends_and_shares_again_when_it_is_back() {
    if !redis_servers::available() {
        return;
    }
    let mut redis = RedisProcess::start(&[]).await;
    let prefix = own_prefix("outage");
    let clock = Clock::manual();
    let a_shared = shared(&redis.url(), &prefix).await;
    let a = breakers(&[], &clock, Arc::clone(&a_shared));
    let b = breakers(&[], &clock, shared(&redis.url(), &prefix).await);
    fail(&a, "twilio_uk", 5).await;
    clock.advance(Duration::from_secs(1));
    assert!(!b.allow("twilio_uk").await, "shared while Redis is up");

    redis.kill();
    // Every call below returns: none waits on Redis beyond its timeout.
    assert!(!b.allow("twilio_uk").await, "what B learnt stays until the cool-down ends");
    fail(&b, "vonage", 5).await;
    assert!(!b.allow("vonage").await, "B opens on its own failures");
    clock.advance(Duration::from_secs(1));
    assert!(a.allow("vonage").await, "A cannot learn of it, and goes by its own sends");
    a.record("vonage", Outcome::Delivered).await;
    clock.advance(Duration::from_secs(59));
    assert!(b.allow("vonage").await, "the trial, with Redis still down");
    b.record("vonage", Outcome::Delivered).await;
    assert_eq!(b.state("vonage"), Some(BreakerState::Closed));

    redis.restart().await;
    // A's connection is mended in the background (though no one holds its buckets)...
    let mended = eventually(30, async || a_shared.opened_until("vonage").await.is_ok()).await;
    assert!(mended, "A's connection to Redis was not mended");
    // ...and its next opening reaches B again. (A's window holds one delivery.)
    fail(&a, "vonage", 4).await;
    assert!(matches!(a.state("vonage"), Some(BreakerState::Open { .. })));
    clock.advance(Duration::from_secs(1));
    assert!(!b.allow("vonage").await, "B skips it again on A's word");
}

#[actix_web::test]
async fn in_a_redis_cluster_every_instance_opened_is_skipped_by_every_process() {
    if !redis_servers::available() {
        return;
    }
    let nodes = crate::redis_cluster::cluster().await;
    let url = crate::redis_cluster::cluster_url(&nodes);
    let clock = Clock::manual();
    let a = breakers(&[], &clock, shared(&url, "otpgate").await);
    let b = breakers(&[], &clock, shared(&url, "otpgate").await);
    for instance in INSTANCES {
        fail(&a, instance, 5).await;
    }
    clock.advance(Duration::from_secs(1));
    for instance in INSTANCES {
        assert!(!b.allow(instance).await, "B skips {instance}, whichever node holds its key");
    }
    let keys: usize =
        nodes.iter().map(|node| node.cli(&["--raw", "keys", "otpgate:breaker:*"]).lines().filter(|key| !key.is_empty()).count()).sum();
    assert_eq!(keys, INSTANCES.len(), "a key per instance");
}

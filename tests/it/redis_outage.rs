//! A Redis of the test's own that dies and comes back: under RATE_LIMIT_ON_ERROR=allow
//! the service keeps serving, starts without Redis, and enforces the limits again once
//! Redis is back; a Redis restarted between two requests costs none of them. Through
//! Sentinel, a master that is down is an outage (not a wrong master name) and the
//! limits follow it to the replica promoted in its place.

use crate::common::redis_servers::{self, RedisProcess};
use crate::common::*;
use serde_json::Value;

async fn readyz(server: &TestServer) -> (u16, Value) {
    server.send(server.client().get(format!("{}/readyz", server.url))).await
}

/// What `/readyz` says of Redis.
async fn redis_check(server: &TestServer) -> String {
    readyz(server).await.1["checks"]["redis"].as_str().unwrap_or_default().to_string()
}

/// Polls `/readyz` until Redis is reported reachable, for up to a minute.
async fn until_redis_answers(server: &TestServer) {
    let answers = eventually(60, async || redis_check(server).await == "ok").await;
    assert!(answers, "Redis is back but the service does not say so: {}", redis_check(server).await);
}

/// Two starts for `phone` are let through and counted, the third is refused.
async fn limit_of_two_holds(servers: [&TestServer; 3], phone: &str) {
    assert_ok(servers[0].call(login(phone)).await);
    assert_ok(servers[1].call(login(phone)).await);
    assert_error(&servers[2].call(login(phone)).await, 429, "RATELIMIT");
}

#[actix_web::test]
async fn under_allow_a_redis_outage_lets_requests_through_and_the_limits_return_with_redis() {
    if !redis_servers::available() {
        return;
    }
    let mut redis = RedisProcess::start(&[]).await;
    let url = redis.url();
    // One prefix and one secret (which keys the buckets): instances that share their limits.
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_PREFIX", "otpgate"),
        ("OTP_SECRET", "a-test-secret-shared-by-instances"),
        ("RATE_LIMIT_ON_ERROR", "allow"),
        ("LIMIT_START_PER_PHONE_PER_HOUR", "2"),
    ];
    let first = TestServer::start(&env).await;
    limit_of_two_holds([&first; 3], "18005550101").await;

    redis.kill();
    for _ in 0..3 {
        assert_ok(first.call(login("18005550102")).await);
    }
    // Answered from what the reconnecting task last found, without trying to connect.
    let (status, ready) = readyz(&first).await;
    let check = ready["checks"]["redis"].as_str().unwrap_or_default();
    assert_eq!(status, 200, "{ready}");
    assert!(check.contains("reconnecting in the background") && check.contains("not enforced"), "{ready}");
    assert!(first.logs().contains("letting requests through unlimited"), "{}", first.logs());

    // An instance starts while Redis is down, says so, and serves.
    let second = TestServer::start(&env).await;
    assert!(second.logs().contains("Redis cannot be reached"), "{}", second.logs());
    assert!(redis_check(&second).await.contains("reconnecting in the background"));
    for _ in 0..3 {
        assert_ok(second.call(login("18005550103")).await);
    }

    redis.restart().await;
    until_redis_answers(&first).await;
    until_redis_answers(&second).await;
    // The first limited requests after Redis is back are served and counted: both
    // instances count into the one bucket again.
    limit_of_two_holds([&first, &second, &first], "18005550104").await;
    limit_of_two_holds([&second, &first, &second], "18005550105").await;
    first.stop().await;
    second.stop().await;
}

#[actix_web::test]
async fn under_deny_a_redis_restarted_between_two_requests_costs_neither() {
    if !redis_servers::available() {
        return;
    }
    let mut redis = RedisProcess::start(&[]).await;
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("RATE_LIMIT_ON_ERROR", "deny"), ("LIMIT_START_PER_PHONE_PER_HOUR", "2")];
    let server = TestServer::start(&env).await;
    assert_ok(server.call(login("18005550111")).await);
    // The service's connection is now closed by a Redis it has not seen go.
    redis.restart().await;
    // Under deny a check that failed would refuse: this one is sent again on a new connection.
    limit_of_two_holds([&server; 3], "18005550112").await;
    assert_eq!(redis_check(&server).await, "ok");
    server.stop().await;

    // Under deny no instance starts without Redis.
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("otpgate.db").to_string_lossy().into_owned();
    let config = otpgate::config::Config::from_vars([
        ("DATABASE_PATH", database.as_str()),
        ("REDIS_URL", url.as_str()),
        ("RATE_LIMIT_ON_ERROR", "deny"),
    ])
    .unwrap();
    let senders = otpgate::delivery::senders::Senders::all(std::sync::Arc::new(RecordingSender::default()));
    let refused = otpgate::api::AppState::new(&config, senders).await.err().expect("no start without Redis under deny");
    assert!(refused.contains("cannot connect to Redis") && refused.contains("RATE_LIMIT_ON_ERROR=deny"), "{refused}");
}

#[actix_web::test]
async fn through_sentinel_the_limits_follow_the_master_to_the_replica_it_promotes() {
    if !redis_servers::available() {
        return;
    }
    let mut master = RedisProcess::start(&[]).await;
    let master_port = master.port.to_string();
    let replica = RedisProcess::start(&["--replicaof", "127.0.0.1", &master_port]).await;
    assert!(
        eventually(30, async || master.cli(&["info", "replication"]).contains("connected_slaves:1")).await,
        "the replica does not follow"
    );
    let sentinel = RedisProcess::sentinel(&master).await;
    let url = format!("redis+sentinel://{}/mymaster", sentinel.address());
    let env = [("REDIS_URL", url.as_str()), ("RATE_LIMIT_ON_ERROR", "deny"), ("LIMIT_START_PER_PHONE_PER_HOUR", "2")];
    let server = TestServer::start(&env).await;
    limit_of_two_holds([&server; 3], "18005550121").await;
    assert!(master.cli(&["dbsize"]).trim() != "0", "the buckets are on the master");

    master.kill();
    let promoted = eventually(60, async || replica.cli(&["info", "replication"]).contains("role:master")).await;
    assert!(promoted, "the sentinel did not promote the replica: {}", sentinel.log());
    until_redis_answers(&server).await;
    limit_of_two_holds([&server; 3], "18005550122").await;
    server.stop().await;
}

#[actix_web::test]
async fn through_sentinel_an_instance_starts_under_allow_while_the_master_is_down_and_follows_the_failover() {
    if !redis_servers::available() {
        return;
    }
    let mut master = RedisProcess::start(&[]).await;
    let master_port = master.port.to_string();
    // Not to be promoted until the test says so: the master stays down as long as it needs.
    let replica = RedisProcess::start(&["--replicaof", "127.0.0.1", &master_port, "--replica-priority", "0"]).await;
    assert!(
        eventually(30, async || master.cli(&["info", "replication"]).contains("connected_slaves:1")).await,
        "the replica does not follow"
    );
    let sentinel = RedisProcess::sentinel(&master).await;
    // A failover that found no replica to promote is tried again after twice this.
    sentinel.cli(&["sentinel", "set", "mymaster", "failover-timeout", "1000"]);
    let replica_port = replica.port.to_string();
    let knows_replica = eventually(30, async || sentinel.cli(&["sentinel", "replicas", "mymaster"]).contains(&replica_port)).await;
    assert!(knows_replica, "the sentinel does not know the replica: {}", sentinel.log());

    master.kill();
    let url = format!("redis+sentinel://{}/mymaster", sentinel.address());
    let env = [("REDIS_URL", url.as_str()), ("RATE_LIMIT_ON_ERROR", "allow"), ("LIMIT_START_PER_PHONE_PER_HOUR", "2")];
    // The sentinel still names the master it watches, which is down: the instance starts.
    let server = TestServer::start(&env).await;
    let check = redis_check(&server).await;
    assert!(check.contains("is down or failing over") && check.contains("reconnecting in the background"), "{check}");
    assert!(!server.logs().contains("no sentinel"), "{}", server.logs());
    for _ in 0..3 {
        assert_ok(server.call(login("18005550131")).await);
    }

    replica.cli(&["config", "set", "replica-priority", "100"]);
    let promoted = eventually(60, async || replica.cli(&["info", "replication"]).contains("role:master")).await;
    assert!(promoted, "the sentinel did not promote the replica: {}", sentinel.log());
    until_redis_answers(&server).await;
    limit_of_two_holds([&server; 3], "18005550132").await;
    server.stop().await;
}

#[actix_web::test]
async fn through_sentinel_a_master_name_no_sentinel_watches_is_refused_even_under_allow() {
    if !redis_servers::available() {
        return;
    }
    let master = RedisProcess::start(&[]).await;
    let sentinel = RedisProcess::sentinel(&master).await;
    let url = format!("redis+sentinel://{}/othermaster", sentinel.address());
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("otpgate.db").to_string_lossy().into_owned();
    let config = otpgate::config::Config::from_vars([
        ("DATABASE_PATH", database.as_str()),
        ("REDIS_URL", url.as_str()),
        ("RATE_LIMIT_ON_ERROR", "allow"),
    ])
    .unwrap();
    let senders = otpgate::delivery::senders::Senders::all(std::sync::Arc::new(RecordingSender::default()));
    let refused = otpgate::api::AppState::new(&config, senders).await.err().expect("a master name no sentinel watches is refused");
    assert!(refused.contains(r#"no sentinel of REDIS_URL watches a master named "othermaster""#), "{refused}");
}

//! Rate limits kept in Redis: what a request meets when Redis cannot be asked, under
//! each RATE_LIMIT_ON_ERROR. Runs when the suite has REDIS_URL.

use crate::common::*;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

const PHONE: &str = "18005551234";

/// A TCP relay to Redis that can be cut, as a network failure would cut it.
struct Relay {
    addr: std::net::SocketAddr,
    tasks: Arc<Mutex<Vec<actix_web::rt::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(redis_url: &str) -> Relay {
        let target = reqwest::Url::parse(redis_url).unwrap();
        let target = format!("{}:{}", target.host_str().unwrap(), target.port().unwrap_or(6379));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<actix_web::rt::task::JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::clone(&tasks);
        let accept = actix_web::rt::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let relay = actix_web::rt::spawn(async move {
                    if let Ok(mut redis) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut redis).await;
                    }
                });
                accepted.lock().unwrap().push(relay);
            }
        });
        tasks.lock().unwrap().push(accept);
        Relay { addr, tasks }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drops every connection and stops accepting new ones.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn readyz(server: &TestServer) -> (u16, Value) {
    server.send(server.client().get(format!("{}/readyz", server.url))).await
}

#[actix_web::test]
async fn when_redis_cannot_be_asked_limited_requests_are_refused_or_let_through_as_configured() {
    let Some(redis) = backend::redis_url() else {
        println!("skipped: needs REDIS_URL");
        return;
    };
    for policy in ["deny", "allow"] {
        let relay = Relay::start(&redis).await;
        let url = relay.url();
        let env = [("REDIS_URL", url.as_str()), ("LIMIT_START_PER_PHONE_PER_HOUR", "5"), ("RATE_LIMIT_ON_ERROR", policy)];
        let server = TestServer::start(&env).await;
        assert_ok(server.call(login(PHONE)).await);
        assert_eq!(readyz(&server).await.1["checks"]["redis"], "ok");

        let errors = otpgate::domain::metrics::RATELIMIT_ERRORS.get();
        relay.cut();
        let reply = server.call(login(PHONE)).await;
        let (status, ready) = readyz(&server).await;
        let redis_check = ready["checks"]["redis"].as_str().unwrap_or_default().to_string();
        assert!(redis_check.starts_with("unreachable"), "{policy}: {ready}");
        if policy == "deny" {
            assert_error(&reply, 503, "INTERNAL");
            assert_eq!(status, 503, "not ready while limits cannot be checked: {ready}");
        } else {
            assert_ok(reply);
            assert_eq!(status, 200, "{ready}");
            assert!(redis_check.contains("not enforced"), "{ready}");
        }
        assert!(otpgate::domain::metrics::RATELIMIT_ERRORS.get() > errors, "{policy}: the failure is counted");
        assert!(!server.logs().contains(PHONE), "no phone number in the logs: {}", server.logs());
        server.stop().await;
    }
}

#[actix_web::test]
async fn redis_buckets_decide_as_the_in_process_ones() {
    use otpgate::domain::ratelimit::{KeyedLimit, Refusal, SharedLimits};
    let Some(redis) = backend::redis_url() else {
        println!("skipped: needs REDIS_URL");
        return;
    };
    let prefix = format!("otpgate-gcra-{}-{:x}", std::process::id(), rand::random::<u64>());
    let buckets =
        otpgate::store::shared_limits::RedisBuckets::connect(&otpgate::config::RedisTopology::Server(redis), &prefix, false).await.unwrap();
    let shared = SharedLimits::new(Arc::new(buckets), [7; 32], false);
    let (local, remote) = (KeyedLimit::per_hour(3).named("gcra"), KeyedLimit::per_hour(3).named("gcra").shared(Some(&shared)));
    for key in ["a", "b"] {
        for _ in 0..5 {
            let (here, there) = (local.check(key).await, remote.check(key).await);
            match (here, there) {
                (Ok(()), Ok(())) => {}
                // One back every 20 minutes: the waits agree to the second.
                (Err(Refusal::Wait(a)), Err(Refusal::Wait(b))) => assert!(a.abs_diff(b) <= 1, "{a} vs {b}"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
    let (daily_local, daily_remote) = (KeyedLimit::per_day(100), KeyedLimit::per_day(100).named("daily").shared(Some(&shared)));
    assert_eq!(daily_local.check_n("c", 60).await, daily_remote.check_n("c", 60).await);
    let (Err(Refusal::Wait(a)), Err(Refusal::Wait(b))) = (daily_local.check_n("c", 60).await, daily_remote.check_n("c", 60).await) else {
        panic!("60 more do not fit in what is left of 100")
    };
    assert!(a.abs_diff(b) <= 1, "{a} vs {b}");
    assert_eq!(daily_remote.check_n("c", 40).await, Ok(()), "what is left can still be taken");
    assert_eq!(daily_remote.check_n("d", 101).await, Err(Refusal::TooMany));
}

#[actix_web::test]
async fn in_redis_a_starts_limits_and_the_sms_budget_are_spent_all_or_nothing() {
    use otpgate::domain::ratelimit::{Refusal, SharedLimits};
    use otpgate::domain::start_limits::{Start, StartLimits};
    let Some(redis) = backend::redis_url() else {
        println!("skipped: needs REDIS_URL");
        return;
    };
    let prefix = format!("otpgate-sms-{}-{:x}", std::process::id(), rand::random::<u64>());
    let topology = otpgate::config::RedisTopology::Server(redis);
    let buckets = otpgate::store::shared_limits::RedisBuckets::connect(&topology, &prefix, false).await.unwrap();
    let shared = SharedLimits::new(Arc::new(buckets), [9; 32], false);
    let vars = [
        ("SMS_BUDGET_PER_HOUR", "20"),
        ("SMS_BUDGET_NETWORK_SHARE", "25"),
        ("SMS_BUDGET_COUNTRY_SHARE", "10"),
        ("SMS_BUDGET_IP_SHARE", "0"),
        ("SMS_BUDGET_HOME_COUNTRIES", "44"),
        ("LIMIT_START_PER_IP_PER_HOUR", "4"),
    ];
    let config = otpgate::config::Config::from_vars(vars).unwrap();
    let limits = StartLimits::from_config(&config, Some(&shared));
    let spend = |calling_code: u16, ip: &str, n: u32| {
        let start = Start { client_ip: ip.into(), address: format!("{calling_code}{n}"), calling_code: Some(calling_code) };
        let limits = &limits;
        async move { limits.admit(&start).await }
    };
    let ip = "198.51.100.1";
    for n in 0..2 {
        spend(33, ip, n).await.unwrap();
    }
    for n in 2..6 {
        assert!(matches!(spend(33, ip, n).await, Err(Refusal::Wait(_))), "+33's share (2 of 20) is spent");
    }
    // The refused starts took nothing of the IP's starts (4, 2 used) nor of the network's
    // share (5 of 20, 2 used). (+44 is a home country, held to no country share.)
    for n in 0..2 {
        spend(44, ip, n).await.expect("the IP has 2 starts left");
    }
    assert!(matches!(spend(44, ip, 2).await, Err(Refusal::Wait(_))), "the IP's starts are spent");
    spend(44, "198.51.100.2", 3).await.expect("the network has one left");
    assert!(matches!(spend(44, "198.51.100.3", 4).await, Err(Refusal::Wait(_))), "the network's share is spent");
    spend(49, "203.0.113.1", 1).await.expect("the budget has 15 left for others");
}

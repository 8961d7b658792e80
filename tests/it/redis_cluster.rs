//! The limits in a Redis Cluster of three local nodes: logins through it keep every
//! rule (a code used once, a token per login, the per-phone limit refusing at its
//! count), the buckets spread over every node, a frozen node fails only the checks
//! whose buckets it holds, and a node given as a plain `redis://` URL is refused at
//! start and by `check-config`.

use crate::common::redis_servers::{self, RedisProcess};
use crate::common::*;
use std::collections::HashSet;

/// Three empty nodes made into one cluster (no replicas), once every node says it is ok.
pub(crate) async fn cluster() -> Vec<RedisProcess> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(RedisProcess::start(&["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]).await);
    }
    let addresses: Vec<String> = nodes.iter().map(RedisProcess::address).collect();
    let create = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(create.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&create.stdout));
    let joined = eventually(60, async || nodes.iter().all(|node| node.cli(&["cluster", "info"]).contains("cluster_state:ok"))).await;
    assert!(joined, "the cluster did not form: {}", nodes[0].cli(&["cluster", "info"]));
    nodes
}

/// The `REDIS_URL` of a cluster of `nodes`.
pub(crate) fn cluster_url(nodes: &[RedisProcess]) -> String {
    format!("redis+cluster://{}", nodes.iter().map(RedisProcess::address).collect::<Vec<_>>().join(","))
}

#[actix_web::test]
async fn logins_through_a_redis_cluster_keep_every_rule() {
    if !redis_servers::available() {
        return;
    }
    let nodes = cluster().await;
    let url = cluster_url(&nodes);
    let env = [
        ("REDIS_URL", url.as_str()),
        ("LIMIT_START_PER_PHONE_PER_HOUR", "3"),
        ("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "5"),
        ("LIMIT_START_PER_IP_PER_HOUR", "1000"),
    ];
    let server = TestServer::start(&env).await;
    let (status, ready) = server.send(server.client().get(format!("{}/readyz", server.url))).await;
    assert_eq!((status, &ready["checks"]["redis"]), (200, &"ok".into()), "{ready}");

    let phones: Vec<String> = (0..40).map(|n| format!("180055502{n:02}")).collect();
    let server = &server;
    let logins = phones.iter().map(|phone| async move {
        let code = server.start_login(phone).await;
        // Two verifies of one code at once: one token, one refusal.
        let (a, b) = futures_util::join!(server.call(verify(phone, &code)), server.call(verify(phone, &code)));
        let tokens: Vec<String> = [a, b].iter().filter_map(|(_, reply)| reply["token"].as_str().map(String::from)).collect();
        assert_eq!(tokens.len(), 1, "{phone}: the code is accepted once");
        tokens[0].clone()
    });
    let tokens = futures_util::future::join_all(logins).await;
    assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), phones.len(), "a token per login, all distinct");
    assert_eq!(server.upstream.issued(), phones.len() as u64, "no token lost");

    for phone in &phones {
        // The first start was one of three.
        assert_ok(server.call(login(phone)).await);
        assert_ok(server.call(login(phone)).await);
        assert_error(&server.call(login(phone)).await, 429, "RATELIMIT");
    }
    // A start's buckets share the hash tag of the SMS budget, which every start spends;
    // a guess's buckets share one per phone, so the 40 phones' spread over the nodes:
    // one node left without any is at most 3 × (2/3)^40 ≈ 3e-7 likely.
    for node in &nodes {
        let keys: u64 = node.cli(&["dbsize"]).trim().parse().unwrap();
        assert!(keys > 0, "node {} holds no bucket", node.port);
    }
    server.stop().await;
}

#[actix_web::test]
async fn a_cluster_node_given_as_one_server_is_refused_with_the_form_to_use() {
    if !redis_servers::available() {
        return;
    }
    let nodes = cluster().await;
    let plain = nodes[0].url();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("otpgate.db").to_string_lossy().into_owned();
    let env = [("DATABASE_PATH", database.as_str()), ("REDIS_URL", plain.as_str()), ("RATE_LIMIT_ON_ERROR", "allow")];
    let config = otpgate::config::Config::from_vars(env).unwrap();
    let senders = otpgate::delivery::senders::Senders::all(std::sync::Arc::new(RecordingSender::default()));
    let refused = otpgate::api::AppState::new(&config, senders).await.err().expect("a cluster node is not one server");
    assert!(refused.contains("redis+cluster://"), "{refused}");

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_otpgate")).arg("check-config").env_clear().envs(env).output().unwrap();
    assert_eq!(check.status.code(), Some(2), "check-config refuses it");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("redis+cluster://"), "{stderr}");
}

/// How many keys of `node` match `pattern`.
fn keys(node: &RedisProcess, pattern: &str) -> usize {
    node.cli(&["keys", pattern]).lines().filter(|line| !line.trim().is_empty()).count()
}

/// A code of the same shape that is not `code`.
fn wrong(code: &str) -> String {
    code.chars().map(|digit| if digit == '0' { '1' } else { '0' }).collect()
}

#[actix_web::test]
async fn a_frozen_cluster_node_fails_only_the_checks_whose_buckets_it_holds() {
    if !redis_servers::available() {
        return;
    }
    let nodes = cluster().await;
    let url = cluster_url(&nodes);
    let env = [
        ("REDIS_URL", url.as_str()),
        ("RATE_LIMIT_ON_ERROR", "deny"),
        ("LIMIT_START_PER_PHONE_PER_HOUR", "10"),
        ("LIMIT_START_PER_IP_PER_HOUR", "1000"),
        ("SMS_BUDGET_PER_HOUR", "1000"),
        ("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "10"),
        ("LIMIT_VERIFY_PER_IP_PER_HOUR", "1000"),
    ];
    let server = TestServer::start(&env).await;
    // A first login makes the buckets every start shares (one slot) and this client's guesses share.
    server.log_in("18005553000", None).await;
    let holder = |pattern: &str| nodes.iter().position(|node| keys(node, pattern) > 0).unwrap_or_else(|| panic!("no key {pattern}"));
    let (start_node, guess_ip_node) = (holder("*:start_per_address:*"), holder("*{verify_per_ip:*"));
    let frozen = (0..nodes.len()).find(|&n| n != start_node && n != guess_ip_node).unwrap();

    // Pending codes, sorted by where their address's guess buckets are: a wrong guess makes them.
    let (mut on_frozen, mut elsewhere) = (Vec::new(), Vec::new());
    let count = |nodes: &[RedisProcess]| nodes.iter().map(|node| keys(node, "*:verify_per_address:*")).collect::<Vec<_>>();
    let mut before = count(&nodes);
    for n in 0..24 {
        let phone = format!("180055531{n:02}");
        let code = server.start_login(&phone).await;
        assert_error(&server.call(verify(&phone, &wrong(&code))).await, 401, "BADCODE");
        let after = count(&nodes);
        let node = (0..nodes.len()).find(|&i| after[i] > before[i]).expect("a guess makes its address's buckets");
        before = after;
        if node == frozen { &mut on_frozen } else { &mut elsewhere }.push((phone, code));
    }
    // 24 addresses over three nodes: none on one is (2/3)^24 ≈ 6e-5 likely.
    assert!(!on_frozen.is_empty() && elsewhere.len() >= 3, "{} on the node to freeze, {} elsewhere", on_frozen.len(), elsewhere.len());

    nodes[frozen].freeze();
    for (round, ((phone, code), (other_phone, other_code))) in on_frozen.iter().cycle().zip(&elsewhere).take(3).enumerate() {
        // The frozen node holds this guess's buckets: under deny it is refused once the check times out.
        assert_error(&server.call(verify(phone, code)).await, 503, "INTERNAL");
        // Right after, checks whose buckets the other nodes hold go on: a start (its group
        // is on a live node) and a login whose address's buckets are elsewhere.
        assert_ok(server.call(login(&format!("180055532{round:02}"))).await);
        let reply = assert_ok(server.call(verify(other_phone, other_code)).await);
        assert!(reply["token"].is_string(), "{reply}");
    }
    nodes[frozen].thaw();
    // Once it answers again, so do its buckets.
    for (phone, code) in &on_frozen {
        let reply = assert_ok(server.call(verify(phone, code)).await);
        assert!(reply["token"].is_string(), "{reply}");
    }
    server.stop().await;
}

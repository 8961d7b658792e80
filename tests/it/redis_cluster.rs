//! The limits in a Redis Cluster of three local nodes: logins through it keep every
//! rule (a code used once, a token per login, the per-phone limit refusing at its
//! count), the buckets spread over every node, and a node given as a plain
//! `redis://` URL is refused at start and by `check-config`.

use crate::common::redis_servers::{self, RedisProcess};
use crate::common::*;
use std::collections::HashSet;

/// Three empty nodes made into one cluster (no replicas), once every node says it is ok.
async fn cluster() -> Vec<RedisProcess> {
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
    let joined = eventually(60, || nodes.iter().all(|node| node.cli(&["cluster", "info"]).contains("cluster_state:ok"))).await;
    assert!(joined, "the cluster did not form: {}", nodes[0].cli(&["cluster", "info"]));
    nodes
}

#[actix_web::test]
async fn logins_through_a_redis_cluster_keep_every_rule() {
    if !redis_servers::available() {
        return;
    }
    let nodes = cluster().await;
    let url = format!("redis+cluster://{}", nodes.iter().map(RedisProcess::address).collect::<Vec<_>>().join(","));
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

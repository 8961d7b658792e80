//! Operational HTTP behaviour: probes, request ids and the request log, CORS,
//! the body size limit, the request timeout and the OpenAPI document.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

const PHONE: &str = "18005551234";

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    server.send(server.client().get(format!("{}{path}", server.url))).await
}

/// The checks of a ready service: the database, Redis when the suite runs with it, and `more`.
fn ready_checks(more: Value) -> Value {
    let mut checks = json!({ "database": "ok" });
    if backend::redis_url().is_some() {
        checks["redis"] = "ok".into();
    }
    checks.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
    checks
}

#[actix_web::test]
async fn healthz_is_alive_even_when_the_database_is_not_writable() {
    let server = TestServer::start(&[]).await;
    assert_eq!(get(&server, "/healthz").await, (200, json!({ "status": "ok" })));
    assert_eq!(get(&server, "/readyz").await, (200, json!({ "status": "ok", "checks": ready_checks(json!({})) })));
    if backend::sqlite_only("another process locking the database file") {
        return;
    }

    // Another process holding the write lock: logins could not be stored.
    let locker = rusqlite::Connection::open(server.dir.path().join("otpgate.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, body) = get(&server, "/readyz").await;
    assert_eq!((status, &body["status"]), (503, &json!("unavailable")), "{body}");
    assert!(body["checks"]["database"].as_str().unwrap().contains("no write"), "{body}");
    assert_eq!(get(&server, "/healthz").await.0, 200, "liveness does not depend on the database");

    locker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(get(&server, "/readyz").await.0, 200);
}

#[actix_web::test]
async fn readyz_fails_once_the_database_directory_is_removed() {
    let server = TestServer::start(&[]).await;
    if backend::sqlite_only("removing the SQLite file under the service") {
        return;
    }
    server.log_in(PHONE, None).await;
    assert_eq!(get(&server, "/readyz").await.0, 200);

    // Writes still succeed on the open, unlinked file: only a look at the path tells.
    std::fs::remove_dir_all(server.dir.path()).unwrap();
    let (status, body) = get(&server, "/readyz").await;
    assert_eq!((status, &body["status"]), (503, &json!("unavailable")), "{body}");
    let why = body["checks"]["database"].as_str().unwrap();
    assert!(why.contains("otpgate.db was removed") && why.contains("DATABASE_PATH"), "{body}");
    assert_eq!(get(&server, "/healthz").await.0, 200, "liveness does not depend on the database");
}

#[actix_web::test]
async fn readyz_fails_once_the_database_file_is_replaced() {
    let server = TestServer::start(&[]).await;
    if backend::sqlite_only("replacing the SQLite file under the service") {
        return;
    }
    let path = server.dir.path().join("otpgate.db");
    let copy = server.dir.path().join("restored.db");
    std::fs::copy(&path, &copy).unwrap();
    assert_eq!(get(&server, "/readyz").await.0, 200);

    std::fs::rename(&copy, &path).unwrap();
    let (status, body) = get(&server, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["checks"]["database"].as_str().unwrap().contains("otpgate.db was replaced"), "{body}");
}

#[actix_web::test]
async fn readyz_checks_upstream_and_caches_the_answer() {
    // A cache far longer than the test: the cached answer cannot expire by accident.
    let server = TestServer::start(&[("READYZ_UPSTREAM_CACHE_SECS", "3600")]).await;
    let ready = json!({ "status": "ok", "checks": ready_checks(json!({ "upstream": "ok" })) });
    assert_eq!(get(&server, "/readyz").await, (200, ready.clone()));
    assert_eq!(get(&server, "/readyz").await, (200, ready.clone()));
    let probes = server.upstream.received();
    assert_eq!(probes.len(), 1, "the second probe used the cached answer");
    assert_eq!((probes[0].authorization.as_deref(), probes[0].body.as_str()), (None, ""), "the probe carries no app token");
    server.upstream.stop().await;
    assert_eq!(get(&server, "/readyz").await.0, 200, "still cached");

    // With a one-second cache, the answer expires and the next probe finds upstream gone.
    let server = TestServer::start(&[("READYZ_UPSTREAM_CACHE_SECS", "1")]).await;
    assert_eq!(get(&server, "/readyz").await.0, 200);
    server.upstream.stop().await;
    // Polled for up to 30 s: the second it takes may be long on a loaded machine.
    let mut body = Value::Null;
    let unready = eventually(30, async || {
        let status;
        (status, body) = get(&server, "/readyz").await;
        status == 503
    })
    .await;
    assert!(unready, "{body}");
    assert!(body["checks"]["upstream"].as_str().unwrap().starts_with("unreachable"), "{body}");
    assert_eq!(body["checks"]["database"], "ok");
}

#[actix_web::test]
async fn request_ids_are_echoed_or_generated_and_logged_once() {
    let server = TestServer::start(&[]).await;
    let request = server.client().post(server.api()).header("x-request-id", "req-test-7f1e").json(&login(PHONE));
    let (status, headers, _) = server.send_full(request).await;
    assert_eq!((status, &headers["x-request-id"]), (200, &"req-test-7f1e".parse().unwrap()));
    let lines: Vec<String> = server.logs().lines().filter(|l| l.contains("req-test-7f1e")).map(String::from).collect();
    // The login flow's own line and the one request line, both tagged with the id.
    assert!(lines.iter().any(|l| l.contains("code issued")), "{lines:?}");
    let request_lines: Vec<&String> = lines.iter().filter(|l| l.contains("otpgate::request")).collect();
    assert_eq!(request_lines.len(), 1, "{lines:?}");
    for field in ["method=\"POST\"", "route=\"/api\"", "op=\"login\"", "result=\"ok\"", "status=200", "latency_ms="] {
        assert!(request_lines[0].contains(field), "{field} in {}", request_lines[0]);
    }

    // A hostile id is replaced by a generated one.
    let request = server.client().get(format!("{}/healthz", server.url)).header("x-request-id", "a b\tc");
    let (_, headers, _) = server.send_full(request).await;
    let generated = headers["x-request-id"].to_str().unwrap();
    assert!(generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");
}

#[actix_web::test]
async fn logs_show_no_phone_code_or_query_string() {
    let server = TestServer::start(&[("TEST_OTPS", "18005559876:918273")]).await;
    // Upstream errors are logged with their body, which may echo the phone.
    server.upstream.set_mode(Mode::Reply(500, r#"{"result":false,"address":"18005559876"}"#.into()));
    assert_error(&server.call(verify("18005559876", "918273")).await, 502, "UPSTREAM");
    assert!(server.logs().contains(r#"{"result":false,"address":"1800555****"}"#), "the body is logged, masked");
    server.upstream.set_mode(Mode::Useradd);
    let query = [("op", "login"), ("phone", "18005559876"), ("appid", APPID), ("code", "918273")];
    let request = server.client().get(server.api()).query(&query).header("x-request-id", "req-query-check");
    assert_eq!(server.send(request).await.0, 200);
    let lines: Vec<String> = server.logs().lines().filter(|l| l.contains("req-query-check")).map(String::from).collect();
    assert!(lines.iter().any(|l| l.contains("1800555****")), "masked phone logged: {lines:?}");
    // Each line's timestamp is left out: its microseconds can be any six digits, the code's too;
    // and so can the fraction of a latency or any longer number, so only the code standing
    // alone counts.
    let all: Vec<String> = logs().lines().map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest).to_string()).collect();
    let code_alone = |line: &str| {
        line.match_indices("918273").any(|(at, code)| {
            let before = line[..at].chars().next_back();
            let after = line[at + code.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit() || c == '.') && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    let leaked: Vec<&String> = all.iter().filter(|line| line.contains("18005559876") || code_alone(line)).collect();
    assert!(leaked.is_empty(), "a phone or code reached the log: {leaked:?}");
}

#[actix_web::test]
async fn cors_allows_only_configured_origins() {
    let server = TestServer::start(&[("CORS_ORIGINS", "https://app.example.com, https://web.example.com")]).await;
    let preflight = |origin: &str| {
        server
            .client()
            .request(reqwest::Method::OPTIONS, server.api())
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
    };
    let response = preflight("https://app.example.com").send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(response.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let response = preflight("https://evil.example.com").send().await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());

    let request = server.client().post(server.api()).header("origin", "https://web.example.com").json(&login(PHONE));
    let (status, headers, _) = server.send_full(request).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "https://web.example.com");
    assert!(headers["access-control-expose-headers"].to_str().unwrap().contains("x-request-id"));
}

#[actix_web::test]
async fn cors_allows_any_origin_by_default_and_can_be_turned_off() {
    // The web app calls from its own origin, with the token in the body or a bearer header.
    let server = TestServer::start(&[("CORS_ORIGINS", "*")]).await;
    let preflight = server
        .client()
        .request(reqwest::Method::OPTIONS, format!("{}/", server.url))
        .header("origin", "https://web.example.org")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization");
    let response = preflight.send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let allowed_headers = response.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed_headers.contains("content-type") && allowed_headers.contains("authorization"), "{allowed_headers}");
    assert!(response.headers().get("access-control-allow-credentials").is_none(), "no credentials mode");
    let request = server.client().post(server.api()).header("origin", "https://web.example.org").json(&login(PHONE));
    let (status, headers, _) = server.send_full(request).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "*");

    let server = TestServer::start(&[("CORS_ORIGINS", "")]).await;
    let request = server.client().post(server.api()).header("origin", "https://app.example.com").json(&login(PHONE));
    let (status, headers, _) = server.send_full(request).await;
    assert_eq!(status, 200, "apps without an Origin policy still work");
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn body_limit_is_configurable() {
    let server = TestServer::start(&[("MAX_BODY_BYTES", "2048"), ("MAX_CONTACTS_BODY_BYTES", "4096")]).await;
    let body = |pad: usize| json!({ "op": "login", "phone": PHONE, "appid": APPID, "pad": "x".repeat(pad) });
    assert_eq!(server.call(body(1500)).await.0, 200);
    let reply = server.call(body(3000)).await;
    assert_error(&reply, 400, "BADREQUEST");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("2048"), "{}", reply.1);

    // Contact ops carry address books and get the larger limit, and only they do.
    let token = server.log_in(PHONE, None).await;
    let book = |count: usize| json!({ "phones": (0..count).map(|i| format!("+1 900 555 {i:04}")).collect::<Vec<_>>() });
    let sized = |count: usize| serde_json::to_string(&book(count)).unwrap().len();
    assert!(sized(150) > 2048 && sized(150) < 4000, "{}", sized(150));
    assert_ok(server.call_op("getcontacts", &token, book(150)).await);
    let reply = server.call_op("getcontacts", &token, book(300)).await;
    assert_error(&reply, 400, "BADREQUEST");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("4096"), "{}", reply.1);
    let mut padded_profile = book(150);
    padded_profile["name"] = json!("Ann");
    assert_error(&server.call_op("profile", &token, padded_profile).await, 400, "BADREQUEST");
}

#[actix_web::test]
async fn slow_requests_time_out() {
    // A slow SMS gateway, and a login start willing to wait for it longer than the request may last.
    let gateway = FakeUpstream::start();
    let url = gateway.url();
    let env = [
        ("UPSTREAM_TIMEOUT_SECS", "1"),
        ("REQUEST_TIMEOUT_SECS", "2"),
        ("OTP_SENDER", "http"),
        ("SMS_HTTP_URL", url.as_str()),
        ("COURIER_WAIT_MS", "5000"),
    ];
    let server =
        TestServer::start_with(&env, FakeUpstream::start(), std::sync::Arc::new(tempfile::tempdir().unwrap()), Delivery::Configured).await;
    // The gateway never answers, so a TIMEOUT can only come from the request's own limit.
    gateway.set_mode(Mode::Hang);
    let reply = server.call(login("18005550000")).await;
    assert_error(&reply, 504, "TIMEOUT");
    assert_eq!(gateway.received().len(), 1, "the gateway was called and is still holding the call");
}

#[actix_web::test]
async fn openapi_describes_every_op_and_error_code() {
    let server = TestServer::start(&[]).await;
    let (status, doc) = get(&server, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let schemas = &doc["components"]["schemas"];
    let get_ops = &doc["paths"]["/api"]["get"]["parameters"][0]["schema"]["enum"];
    for op in otpgate::api::op::Op::ALL.map(|op| op.as_str()) {
        let name = format!("{}{}", op[..1].to_uppercase(), &op[1..]);
        assert_eq!(schemas[format!("{name}Request")]["properties"]["op"]["enum"], json!([op]), "op {op} is not documented");
        assert!(schemas[format!("{name}Reply")].is_object(), "reply of {op} is not documented");
        assert!(get_ops.as_array().unwrap().contains(&json!(op)));
    }
    // The operator API, on its own listener.
    for (path, method) in [
        ("/admin/users", "get"),
        ("/admin/events", "get"),
        ("/admin/events/operator", "get"),
        ("/admin/users/{id}", "get"),
        ("/admin/users/{id}", "delete"),
        ("/admin/users/{id}/sessions", "delete"),
        ("/admin/users/{id}/sessions/{session}", "delete"),
    ] {
        assert_eq!(doc["paths"][path][method]["security"], json!([{ "operator": [] }]), "{method} {path}");
        assert!(doc["paths"][path]["servers"][0]["description"].as_str().unwrap().contains("ADMIN_BIND"));
    }
    let login = &schemas["LoginRequest"]["properties"];
    for field in ["appid", "phone", "email", "name", "otp", "code", "device", "provider", "id_token", "nonce"] {
        assert!(login[field].is_object(), "login field {field}");
    }
    let codes = schemas["Error"]["allOf"][1]["properties"]["error"]["enum"].as_array().unwrap();
    for code in otpgate::domain::error::ErrorCode::ALL {
        let (code, status) = (code.as_str(), code.status());
        assert!(codes.contains(&json!(code)), "{code}");
        let response = &doc["paths"]["/api"]["post"]["responses"][status.to_string()];
        assert!(response["description"].as_str().unwrap().contains(code), "{code} under HTTP {status}");
    }
    // Every op reaches its handler (which then wants its fields, not a known op).
    for op in otpgate::api::op::Op::ALL.map(|op| op.as_str()) {
        let (_, reply) = server.call(json!({ "op": op })).await;
        assert_ne!(reply["error"], "BADOP", "{op}: {reply}");
    }
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(schemas[name].is_object(), "dangling $ref {name}");
    }
}

#[actix_web::test]
async fn shutdown_checkpoints_and_closes_the_database() {
    if backend::sqlite_only("the WAL file") {
        return;
    }
    let server = TestServer::start(&[]).await;
    server.start_login(PHONE).await;
    let wal = server.dir.path().join("otpgate.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the login was written to the WAL");
    server.stop().await;
    server.state.shutdown(Duration::from_secs(1)).await;
    assert!(!wal.exists(), "the WAL is checkpointed into the database and removed");
    let db = rusqlite::Connection::open(server.dir.path().join("otpgate.db")).unwrap();
    let pending: i64 = db.query_row("SELECT count(*) FROM otp_challenges", [], |r| r.get(0)).unwrap();
    assert_eq!(pending, 1, "nothing written before the shutdown is lost");
    let after = server.state.db.probe_write().await;
    assert!(after.unwrap_err().to_string().contains("closed"), "a late call fails instead of waiting forever");
}

const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef-0123";

/// One request to the operator API at `admin` from `ip` (forwarded by the trusted loopback
/// proxy), with `token` as its bearer token: status, Retry-After and body.
async fn operator_call(admin: &str, ip: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new().get(format!("{admin}/admin/events/operator")).header("X-Forwarded-For", ip);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let retry_after = reply.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, reply.json().await.unwrap_or(Value::Null))
}

/// The operator API of `server`'s state on a loopback port of its own, with
/// [`OPERATOR_TOKEN`]: its URL, and the handle that stops it.
fn operator_listener(server: &TestServer) -> (String, actix_web::dev::ServerHandle) {
    let (state, token) = (server.state.clone(), otpgate::config::Secret::from(OPERATOR_TOKEN));
    let listener = actix_web::HttpServer::new(move || otpgate::api::admin::app(state.clone(), &token))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
    let app = format!("http://{}", listener.addrs()[0]);
    let listener = listener.run();
    let handle = listener.handle();
    actix_web::rt::spawn(listener);
    (app, handle)
}

#[actix_web::test]
async fn another_method_on_a_documented_path_answers_405_with_the_documented_ones() {
    let server = TestServer::start(&[]).await;
    let (admin, handle) = operator_listener(&server);
    let (_, doc) = get(&server, "/openapi.json").await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut documented: Vec<String> =
            ["get", "post", "put", "patch", "delete"].into_iter().filter(|m| item[*m].is_object()).map(str::to_uppercase).collect();
        documented.sort();
        let base = if path.starts_with("/admin/") { &admin } else { &server.url };
        let url = format!("{base}{}", path.replace("{name}", "x.jpg").replace("{id}", "1").replace("{session}", "0123456789abcdef"));
        for method in ["TRACE", "PUT", "PATCH"].into_iter().filter(|m| !documented.contains(&m.to_string())) {
            let request =
                server.client().request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url).bearer_auth(OPERATOR_TOKEN);
            let reply = request.send().await.unwrap();
            assert_eq!(reply.status().as_u16(), 405, "{method} {path}");
            let allow = reply.headers().get("allow").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            let mut allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
            allowed.sort();
            assert_eq!(allowed, documented, "{method} {path}: Allow is {allow:?}");
            checked += 1;
        }
    }
    assert!(checked >= 14 * 2, "only {checked} requests");
    handle.stop(false).await;
}

#[actix_web::test]
async fn failed_operator_logins_are_audited_and_then_refused_unless_the_token_is_right() {
    let server = TestServer::start_on_manual_clock(&[("ADMIN_FAILURES_PER_IP_PER_HOUR", "3"), ("TRUSTED_PROXIES", "127.0.0.1")]).await;
    let (app, handle) = operator_listener(&server);
    let (guesser, operator) = ("192.0.2.7", "192.0.2.8");
    let wrong = "operator-token-0123456789abcdef-0124";

    assert_eq!(operator_call(&app, guesser, None).await.0, 401);
    assert_eq!(operator_call(&app, guesser, Some(wrong)).await.0, 401);
    assert_eq!(operator_call(&app, guesser, Some(wrong)).await.0, 401);
    // Out of failures: every other token is refused, and further guesses are not counted.
    for token in [Some(wrong), Some("operator-token-0123456789abcdef-0125"), None] {
        let (status, retry_after, body) = operator_call(&app, guesser, token).await;
        assert_eq!((status, retry_after.as_deref(), &body["code"]), (429, Some("3600"), &json!("RATELIMIT")), "{body}");
    }
    // The right token still gets in from there: an operator sharing the guesser's address
    // is not locked out.
    let (status, _, trail) = operator_call(&app, guesser, Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, 200, "{trail}");
    assert_eq!(operator_call(&app, guesser, Some(wrong)).await.0, 429, "the right token did not lift the lock-out");

    // Another address is not held back, and reads the failures in the operator trail.
    let (status, _, trail) = operator_call(&app, operator, Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, 200, "{trail}");
    let events: Vec<(&str, &str)> =
        trail["events"].as_array().unwrap().iter().map(|e| (e["event"].as_str().unwrap(), e["detail"].as_str().unwrap())).collect();
    let failed = "operator_auth_failed";
    let expected = [(failed, "192.0.2.7: wrong token"), (failed, "192.0.2.7: wrong token"), (failed, "192.0.2.7: no token")];
    assert_eq!(events, expected, "{trail}");
    assert!(!trail.to_string().contains(wrong), "the presented secret is not kept");
    assert!(!server.logs().contains(wrong), "nor logged");

    server.clock.advance(Duration::from_secs(3599));
    assert_eq!(operator_call(&app, guesser, Some(wrong)).await.0, 429);
    server.clock.advance(Duration::from_secs(1));
    assert_eq!(operator_call(&app, guesser, Some(wrong)).await.0, 401, "the hour is over: a wrong token is counted again");
    handle.stop(false).await;
}

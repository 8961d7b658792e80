//! Several `otpgate` processes on one PostgreSQL database and one Redis, as behind a load
//! balancer: a code started on one verifies on another, exactly once; limits and the SMS
//! budget hold across them; and work held by an instance that is killed is delivered,
//! exactly once, by the others. Runs when the suite has DATABASE_URL and REDIS_URL.

use crate::common::fake_providers::{self, FakeProvider, Provider, Script};
use crate::common::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_otpgate");
const SECRET: &str = "one-secret-for-every-instance-0123";

/// The shared servers, or `None` (after saying so) when the suite runs without them.
fn shared_servers() -> Option<(String, String)> {
    match (backend::postgres_url(), backend::redis_url()) {
        (Some(postgres), Some(redis)) => Some((postgres, redis)),
        _ => {
            println!("skipped: the multi-instance tests need DATABASE_URL and REDIS_URL");
            None
        }
    }
}

/// One `otpgate serve` process with its own SMS gateway and upstream.
struct Instance {
    child: Child,
    url: String,
    sms: Arc<FakeUpstream>,
    upstream: Arc<FakeUpstream>,
    client: reqwest::Client,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the instances of one test share.
struct Cluster {
    server: String,
    database_url: String,
    redis_url: String,
    redis_prefix: String,
    dir: Arc<tempfile::TempDir>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        backend::release(&self.server, &self.dir);
    }
}

impl Cluster {
    fn new((postgres, redis): (String, String)) -> Cluster {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let database_url = backend::database_for(&postgres, &dir);
        let redis_prefix = format!("otpgate-instances-{}-{:x}", std::process::id(), rand::random::<u64>());
        Cluster { server: postgres, database_url, redis_url: redis, redis_prefix, dir }
    }

    /// Starts an instance with these settings on top of the shared ones, and waits until it is ready.
    async fn start(&self, env: &[(&str, &str)]) -> Instance {
        let (sms, upstream) = (FakeUpstream::start(), FakeUpstream::start());
        sms.set_mode(Mode::Reply(200, r#"{"status":"queued"}"#.into()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bind = format!("127.0.0.1:{port}");
        let (sms_url, upstream_url) = (sms.url(), upstream.url());
        let files = self.dir.path().join("files").to_string_lossy().into_owned();
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .envs([
                ("BIND", bind.as_str()),
                ("FILES_DIR", files.as_str()),
                ("DATABASE_URL", self.database_url.as_str()),
                ("REDIS_URL", self.redis_url.as_str()),
                ("REDIS_PREFIX", self.redis_prefix.as_str()),
                ("OTP_SECRET", SECRET),
                ("APP_TOKEN", APP_TOKEN),
                ("UPSTREAM_URL", upstream_url.as_str()),
                ("UPSTREAM_CONNECT_TIMEOUT_SECS", "1"),
                ("UPSTREAM_TIMEOUT_SECS", "1"),
                ("API_DIALECT", "json"),
                ("OTP_SENDER", "http"),
                ("SMS_HTTP_URL", sms_url.as_str()),
                ("SMS_HTTP_TIMEOUT_SECS", "1"),
                ("PROVIDER_TIMEOUT_SECS", "1"),
                ("PHONE_MOBILE_ONLY", "false"),
                ("OTP_RESEND_SECS", "0"),
                ("COURIER_WAIT_MS", "300"),
                ("COURIER_LEASE_SECS", "2"),
                ("COURIER_MAX_ATTEMPTS", "20"),
                ("COURIER_RETRY_BASE_MS", "200"),
                ("OUTBOX_RETRY_SECS", "1"),
                ("LIMIT_START_PER_PHONE_PER_HOUR", "0"),
                ("LIMIT_START_PER_PHONE_PER_DAY", "0"),
                ("LIMIT_START_PER_IP_PER_HOUR", "0"),
                ("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "0"),
                ("LIMIT_VERIFY_PER_PHONE_PER_DAY", "0"),
                ("LIMIT_VERIFY_PER_IP_PER_HOUR", "0"),
                ("LIMIT_START_PER_SUBNET_PER_HOUR", "0"),
                ("LIMIT_START_PER_CALLING_CODE_PER_HOUR", "0"),
                ("SMS_BUDGET_PER_HOUR", "0"),
                ("SMS_BUDGET_NETWORK_SHARE", "0"),
                ("SMS_BUDGET_COUNTRY_SHARE", "0"),
                ("SMS_BUDGET_IP_SHARE", "0"),
                ("RUST_LOG", "warn"),
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().unwrap();
        let instance = Instance { child, url: format!("http://{bind}"), sms, upstream, client: http_client() };
        let ready = async || instance.client.get(format!("{}/readyz", instance.url)).send().await.is_ok_and(|r| r.status().is_success());
        assert!(eventually(60, ready).await, "the instance on {bind} did not become ready");
        instance
    }
}

impl Instance {
    async fn call(&self, body: Value) -> (u16, Value) {
        let response = self.client.post(format!("{}/api", self.url)).json(&body).send().await.expect("the instance answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON reply"))
    }

    /// The code the gateway of this instance was asked to send to `phone` last.
    fn code_for(&self, phone: &str) -> String {
        let received = self.sms.received();
        let body = received.iter().rev().map(|r| &r.body).find(|body| body.contains(phone)).unwrap_or_else(|| panic!("no SMS to {phone}"));
        let digits: String = body.split(|c: char| !c.is_ascii_digit()).find(|run| run.len() == 6).expect("a six-digit code").into();
        digits
    }
}

#[actix_web::test]
async fn a_code_started_on_one_instance_verifies_on_another_and_gives_one_token() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    let instances = [cluster.start(&[]).await, cluster.start(&[]).await, cluster.start(&[]).await];
    let [a, b, _] = &instances;

    assert_ok(a.call(login("18005550001")).await);
    let code = a.code_for("18005550001");
    let (status, reply) = b.call(verify("18005550001", &code)).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["token"].as_str().is_some_and(|t| !t.is_empty()), "{reply}");

    // 50 verifies with the right code at once, spread over the three: one token.
    assert_ok(a.call(login("18005550002")).await);
    let code = a.code_for("18005550002");
    let issued_before: u64 = instances.iter().map(|i| i.upstream.issued()).sum();
    let verifies = (0..50).map(|n| instances[n % 3].call(verify("18005550002", &code)));
    let replies = futures_util::future::join_all(verifies).await;
    let tokens: Vec<&Value> = replies.iter().filter(|(status, _)| *status == 200).map(|(_, reply)| &reply["token"]).collect();
    assert_eq!(tokens.len(), 1, "{replies:?}");
    assert!(replies.iter().all(|(status, reply)| *status == 200 || reply["error"] == "BADCODE"), "{replies:?}");
    let issued_after: u64 = instances.iter().map(|i| i.upstream.issued()).sum();
    assert_eq!(issued_after - issued_before, 1, "upstream minted one token");
}

#[actix_web::test]
async fn limits_and_the_sms_budget_hold_across_instances() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    let env = [("LIMIT_START_PER_PHONE_PER_HOUR", "3"), ("SMS_BUDGET_PER_HOUR", "6")];
    let instances = [cluster.start(&env).await, cluster.start(&env).await, cluster.start(&env).await];

    // A per-phone limit of 3 lets exactly 3 of 9 starts through, whichever instance they reach.
    let mut admitted = 0;
    for n in 0..9 {
        let (status, reply) = instances[n % 3].call(login("18005550010")).await;
        match status {
            200 => admitted += 1,
            _ => assert_eq!(reply["error"], "RATELIMIT", "{reply}"),
        }
    }
    assert_eq!(admitted, 3);

    // The budget of 6 SMS an hour is the service's: 3 are spent, 3 are left for everyone.
    let mut sent = 0;
    for n in 0..6 {
        let (status, reply) = instances[n % 3].call(login(&format!("1800555002{n}"))).await;
        match status {
            200 => sent += 1,
            _ => assert_eq!(reply["error"], "RATELIMIT", "{reply}"),
        }
    }
    assert_eq!(sent, 3);
    let delivered: usize = instances.iter().map(|i| i.sms.received().len()).sum();
    assert_eq!(delivered, 6, "six messages in all were sent");
}

#[actix_web::test]
async fn the_contact_limit_holds_across_instances_and_concurrent_uploads() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    let env = [("MAX_CONTACTS_PER_USER", "10")];
    let instances = [cluster.start(&env).await, cluster.start(&env).await];
    let (status, reply) = instances[1].call(verify_new_user(&instances[0], "18005550001").await).await;
    assert_eq!(status, 200, "{reply}");
    let token = reply["token"].as_str().expect("a token").to_string();
    let pair = |n: usize| [format!("1800556{:04}", 2 * n), format!("1800556{:04}", 2 * n + 1)];
    let upload = |n: usize| json!({ "op": "getcontacts", "token": token, "phones": pair(n) });
    let sql = |query: &str| backend::run_sql(&cluster.database_url, query)[0].clone().expect("a value");

    // 12 uploads of two new numbers each at once, spread over both instances: 5 fit.
    let replies = futures_util::future::join_all((0..12).map(|n| instances[n % 2].call(upload(n)))).await;
    assert!(replies.iter().all(|(status, reply)| *status == 200 || reply["error"] == "TOOMANY"), "{replies:?}");
    assert_eq!(replies.iter().filter(|(status, _)| *status == 200).count(), 5, "{replies:?}");
    assert_eq!((sql("SELECT count(*) FROM contacts"), sql("SELECT contact_count FROM users")), ("10".into(), "10".into()));

    // Deletions and uploads at once: none waits for another forever, and the count stays that of the rows.
    let mixed = (0..24).map(|n| match n % 2 {
        0 => instances[n % 2].call(json!({ "op": "delcontacts", "token": token, "phones": pair(n / 2) })),
        _ => instances[n % 2].call(upload(100 + n)),
    });
    let replies = futures_util::future::join_all(mixed).await;
    assert!(replies.iter().all(|(status, reply)| *status == 200 || reply["error"] == "TOOMANY"), "{replies:?}");
    let (rows, counted) = (sql("SELECT count(*) FROM contacts"), sql("SELECT contact_count FROM users"));
    assert_eq!(rows, counted);
    assert!(rows.parse::<i64>().unwrap() <= 10, "{rows}");
}

#[actix_web::test]
async fn a_countrys_share_of_the_sms_budget_holds_across_instances() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    let env = [("SMS_BUDGET_PER_HOUR", "10"), ("SMS_BUDGET_COUNTRY_SHARE", "30")];
    let instances = [cluster.start(&env).await, cluster.start(&env).await, cluster.start(&env).await];

    // +1's share is 3 of 10, whichever instance the starts reach.
    let mut sent = 0;
    for n in 0..6 {
        let (status, reply) = instances[n % 3].call(login(&format!("1800555003{n}"))).await;
        match status {
            200 => sent += 1,
            _ => assert_eq!(reply["error"], "RATELIMIT", "{reply}"),
        }
    }
    assert_eq!(sent, 3);
    for (n, instance) in instances.iter().enumerate() {
        let (status, reply) = instance.call(login(&format!("44740012345{n}"))).await;
        assert_eq!(status, 200, "another country still gets codes: {reply}");
    }
}

#[actix_web::test]
async fn work_held_by_a_killed_instance_is_delivered_once_by_the_others() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    // Owners of address books and two contacts who join: test numbers, sent no SMS.
    let (owners, joiners) = (["18005550100", "18005550101"], ["18005550200", "18005550201"]);
    let test_otps = owners.iter().chain(&joiners).map(|phone| format!("{phone}:111111")).collect::<Vec<_>>().join(",");
    let env = [("TEST_OTPS", test_otps.as_str())];
    let a = cluster.start(&env).await;
    // A takes every message it sends and never hears back.
    a.sms.set_mode(Mode::Hang);
    for owner in owners {
        let (_, reply) = a.call(verify(owner, "111111")).await;
        let token = reply["token"].as_str().expect("a token").to_string();
        assert_ok(a.call(json!({ "op": "getcontacts", "token": token, "phones": joiners.join(",") })).await);
    }
    a.upstream.hang_messages(true);
    for joiner in joiners {
        assert_eq!(a.call(verify(joiner, "111111")).await.0, 200);
    }
    let coded = ["18005550301", "18005550302", "18005550303"];
    for phone in coded {
        assert_ok(a.call(login(phone)).await);
    }
    assert!(
        eventually(30, async || a.sms.received().len() >= 3 && !a.upstream.messages().is_empty()).await,
        "A holds code messages and a notice"
    );

    let others = [cluster.start(&env).await, cluster.start(&env).await];
    drop(a); // kill -9: no shutdown, no lease given back

    let sms_to = |phone: &str| others.iter().flat_map(|i| i.sms.received()).filter(|r| r.body.contains(phone)).count();
    let notices = || -> Vec<(String, String)> {
        let mut notices: Vec<(String, String)> = others
            .iter()
            .flat_map(|i| i.upstream.messages())
            .map(|m| (m["to"].as_str().unwrap().to_string(), crate::notifications::notice_text(&m)["phone"].as_str().unwrap().to_string()))
            .collect();
        notices.sort();
        notices
    };
    let all_sent = || coded.iter().all(|phone| sms_to(phone) >= 1) && notices().len() >= 4;
    assert!(eventually(60, async || all_sent()).await, "every message was delivered after the kill");
    // Once the database says every message is done, none can be sent again.
    let rows = |sql: &str| backend::run_sql(&cluster.database_url, sql)[0].clone().unwrap_or_default();
    assert!(
        eventually(30, async || rows("SELECT count(*) FROM courier WHERE status = 'queued'") == "0"
            && rows("SELECT count(*) FROM outbox") == "0")
        .await
    );
    for phone in coded {
        assert_eq!(sms_to(phone), 1, "one SMS to {phone}");
    }
    let mut expected: Vec<(String, String)> = owners.iter().flat_map(|o| joiners.iter().map(|j| (o.to_string(), j.to_string()))).collect();
    expected.sort();
    assert_eq!(notices(), expected, "each contact told once of each joiner");
}

#[actix_web::test]
async fn an_instance_moves_from_sqlite_to_postgres_with_its_users_sessions_and_contacts() {
    let Some(servers) = shared_servers() else { return };
    // The instance as it ran on SQLite.
    let sqlite = TestServer::start(&[("DATABASE_URL", ""), ("REDIS_URL", ""), ("OTP_SECRET", SECRET)]).await;
    let ann = sqlite.log_in("18005550401", Some("ann-phone")).await;
    sqlite.log_in("18005550402", None).await;
    assert_ok(sqlite.call_op("getcontacts", &ann, json!({ "phones": "18005550402,18005550499" })).await);
    assert_ok(sqlite.call_op("setnotify", &ann, json!({ "notifytoken": "ann-push", "dt": "1" })).await);
    let group = assert_ok(sqlite.call_op("setgroup", &ann, json!({ "gid": 0, "name": "Hikers", "m": "18005550402" })).await);
    // Ann links her e-mail address and logs in through it.
    let email_login = json!({ "op": "login", "appid": APPID, "email": "ann@example.com" });
    assert_ok(sqlite.call(email_login.clone()).await);
    let link = json!({ "appid": APPID, "email": "ann@example.com", "otp": sqlite.sender.last_code("ann@example.com") });
    assert_ok(sqlite.call_op("link", &ann, link).await);
    assert_ok(sqlite.call(email_login.clone()).await);
    let mut verify_email = email_login;
    verify_email["otp"] = sqlite.sender.last_code("ann@example.com").into();
    let by_mail = assert_ok(sqlite.call(verify_email).await)["token"].as_str().unwrap().to_string();
    let file = rusqlite::Connection::open(sqlite.dir.path().join("otpgate.db")).unwrap();
    file.execute("UPDATE users SET photo = 'p.jpg', thumbnail = X'FFD8FFD9' WHERE address = '18005550401'", []).unwrap();
    file.execute("INSERT INTO attachment_files (name) VALUES ('a.pdf')", []).unwrap();
    sqlite.stop().await;
    sqlite.state.shutdown(Duration::from_secs(1)).await;

    let cluster = Cluster::new(servers);
    let source = sqlite.dir.path().join("otpgate.db").to_string_lossy().into_owned();
    let migrate_with = |secret: &str| {
        let mut command = Command::new(BIN);
        command
            .args(["migrate", "--from-sqlite", &source])
            .env_clear()
            .envs([("DATABASE_URL", cluster.database_url.as_str()), ("OTP_SECRET", secret)]);
        command.output().unwrap()
    };
    let migrate = || migrate_with(SECRET);
    // Address books are hashed under the instance's key: another key would lose them.
    let refused = migrate_with("another-secret-than-the-instance-had");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("under another server key"), "{}", String::from_utf8_lossy(&refused.stderr));
    let output = migrate();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("2 users, 3 sessions, 2 contacts"), "{said}");
    assert!(!said.contains("postgres@"), "no credentials in what it prints: {said}");

    let instance = cluster.start(&[]).await;
    let (status, me) = instance.call(json!({ "op": "me", "token": ann })).await;
    assert_eq!(status, 200, "the session moved: {me}");
    assert_eq!((&me["profile"]["photo"], &me["profile"]["tn"]), (&json!("p.jpg"), &json!("/9j/2Q==")), "with its photo: {me}");
    let (_, devices) = instance.call(json!({ "op": "devices", "token": ann })).await;
    assert_eq!(devices["devices"][0]["push"], true, "and its push registration: {devices}");
    let (_, moved) = instance.call(json!({ "op": "getgroup", "token": ann, "gid": group["gid"] })).await;
    assert_eq!((&moved["name"], &moved["members"]), (&group["name"], &group["members"]), "and its groups: {moved}");
    let (_, synced) = instance.call(json!({ "op": "getcontacts", "token": ann })).await;
    let phones: Vec<&str> =
        synced["contacts"].as_array().unwrap().iter().filter(|c| c.get("gid").is_none()).map(|c| c["phone"].as_str().unwrap()).collect();
    assert_eq!(phones, ["18005550402"], "{synced}");
    let counted = backend::run_sql(&cluster.database_url, "SELECT contact_count FROM users WHERE address = '18005550401'");
    assert_eq!(counted, [Some("2".to_string())], "the imported address book is counted for the limit");
    let (_, unlinked) = instance.call(json!({ "op": "unlink", "token": ann, "email": "ann@example.com" })).await;
    assert_eq!(unlinked["ended"], 1, "the linked address moved, with the session that came through it: {unlinked}");
    assert_eq!(instance.call(json!({ "op": "me", "token": by_mail })).await.1["error"], "AUTHFAIL");
    // A new user gets an id after the imported ones.
    let (status, _) = instance.call(verify_new_user(&instance, "18005550403").await).await;
    assert_eq!(status, 200);
    let ids = backend::run_sql(&cluster.database_url, "SELECT id FROM users ORDER BY id");
    assert_eq!(ids.len(), 3);
    let attachments = backend::run_sql(&cluster.database_url, "SELECT name FROM attachment_files");
    assert_eq!(attachments, [Some("a.pdf".to_string())], "the attachments' names moved: no photo of their bytes is deleted");

    let again = migrate();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("has users already"));
}

/// Starts a login for `phone` on `instance` and answers the verify request with its code.
async fn verify_new_user(instance: &Instance, phone: &str) -> Value {
    assert_ok(instance.call(login(phone)).await);
    verify(phone, &instance.code_for(phone))
}

/// An nginx process, stopped when dropped, also when a test fails.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx from deploy/compose-nginx.conf in front of `instances`, as one process in the
/// foreground (no workers, which would outlive a killed master and hold the test's output
/// open); `None` when nginx is not installed.
fn nginx_in_front_of(instances: &[&Instance], work: &std::path::Path) -> Option<(Nginx, String)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|path| std::path::Path::new(path).exists())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let site = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/compose-nginx.conf")).unwrap();
    let address = |instance: &Instance| instance.url.trim_start_matches("http://").to_string();
    let site = site
        .replace("otpgate-a:8080", &address(instances[0]))
        .replace("otpgate-b:8080", &address(instances[1]))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("/var/log/nginx/", &format!("{}/", work.display()));
    std::fs::write(work.join("site.conf"), site).unwrap();
    let temp = |name: &str| format!("{name}_temp_path {}/{name};", work.display());
    let main = format!(
        "daemon off; master_process off; pid {dir}/nginx.pid; error_log {dir}/error.log; events {{}}\nhttp {{ {} {} {} {} {} include {dir}/site.conf; }}\n",
        temp("client_body"),
        temp("proxy"),
        temp("fastcgi"),
        temp("uwsgi"),
        temp("scgi"),
        dir = work.display()
    );
    std::fs::write(work.join("nginx.conf"), main).unwrap();
    let child = Command::new(nginx)
        .args(["-c", &work.join("nginx.conf").to_string_lossy(), "-e", &work.join("error.log").to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some((Nginx(child), format!("http://127.0.0.1:{port}")))
}

#[actix_web::test]
async fn behind_the_compose_nginx_a_login_started_on_one_instance_verifies_on_the_other() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    let (a, b) = (cluster.start(&[]).await, cluster.start(&[]).await);
    let work = tempfile::tempdir().unwrap();
    let Some((nginx, front)) = nginx_in_front_of(&[&a, &b], work.path()) else {
        println!("skipped: nginx is not installed");
        return;
    };
    let client = http_client();
    let post = |body: Value| {
        let request = client.post(format!("{front}/")).json(&body);
        async move {
            // nginx may still be starting: it answers 502 until it reaches an instance.
            let answered = eventually_some(30, async || {
                let response = request.try_clone().unwrap().send().await.ok().filter(|r| r.status() != 502)?;
                Some((response.status().as_u16(), response.json::<Value>().await.unwrap()))
            });
            answered.await.expect("nginx does not answer")
        }
    };
    const PHONE: &str = "18005550501";
    assert_ok(post(login(PHONE)).await);
    let started_on = if a.sms.received().is_empty() { &b } else { &a };
    let code = started_on.code_for(PHONE);
    let (status, reply) = post(verify(PHONE, &code)).await;
    assert_eq!(status, 200, "{reply}");
    let verified_on = if a.upstream.issued() == 1 { &a } else { &b };
    assert_ne!(started_on.url, verified_on.url, "nginx alternates: the start and the verify reached different instances");
    drop(nginx);
}

/// Instances `twilio_k` and `vonage_k` on these fakes, on one route in that order.
/// Their breakers stay closed: these tests are about the queue.
fn routed_env(twilio: &fake_providers::FakeProvider, vonage: &fake_providers::FakeProvider) -> [(&'static str, String); 4] {
    let providers = json!({
        "twilio_k": {"kind": "twilio", "account_sid": "AC1", "auth_token": "t", "from": "Example", "base_url": twilio.url()},
        "vonage_k": {"kind": "vonage", "api_key": "k", "api_secret": "s", "from": "Example", "base_url": vonage.url()},
    });
    [
        ("SMS_PROVIDERS", providers.to_string()),
        ("SMS_ROUTES", r#"{"*": ["twilio_k", "vonage_k"]}"#.into()),
        ("SMS_BREAKER_WINDOW", "1000".into()),
        ("SMS_BREAKER_MIN_SENDS", "1000".into()),
    ]
}

/// Messages retried by the couriers of two instances over one queue, through a route of
/// two providers, each reach exactly one provider exactly once.
#[actix_web::test]
async fn two_instances_sharing_the_queue_deliver_each_routed_message_once() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    let (twilio, vonage) = (FakeProvider::start(Provider::Twilio), FakeProvider::start(Provider::Vonage));
    twilio.script("", Script::Unavailable);
    vonage.script("", Script::Unavailable);
    let env = routed_env(&twilio, &vonage);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let instances = [cluster.start(&env).await, cluster.start(&env).await];
    let phones: Vec<String> = (0..10).map(|n| format!("1202555{n:04}")).collect();
    for (n, phone) in phones.iter().enumerate() {
        assert_ok(instances[n % 2].call(login(phone)).await);
    }
    assert!(eventually(30, async || twilio.requests() >= 20).await, "both couriers retry while both providers fail");
    twilio.script("", Script::Accept);
    vonage.script("", Script::Accept);
    let delivered = || twilio.accepted().into_iter().chain(vonage.accepted()).map(|m| m.to).collect::<Vec<_>>();
    assert!(eventually(60, async || delivered().len() >= phones.len()).await);
    let rows = |sql: &str| backend::run_sql(&cluster.database_url, sql)[0].clone().unwrap_or_default();
    assert!(eventually(30, async || rows("SELECT count(*) FROM courier WHERE status = 'queued'") == "0").await);
    let mut to = delivered();
    to.sort();
    assert_eq!(to, phones, "each number got its code from one provider, once");
}

/// An instance killed after the provider took the message but before the instance heard
/// so loses no code: another instance sends it once more, the same code, and no more.
#[actix_web::test]
async fn a_kill_between_the_provider_taking_a_code_and_its_record_sends_it_once_more() {
    let Some(servers) = shared_servers() else { return };
    let cluster = Cluster::new(servers);
    let (twilio, vonage) = (FakeProvider::start(Provider::Twilio), FakeProvider::start(Provider::Vonage));
    let env = routed_env(&twilio, &vonage);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The provider's silence outlasts the kill; the lease outlasts the provider's timeout.
    env.extend([("PROVIDER_TIMEOUT_SECS", "5"), ("COURIER_LEASE_SECS", "8")]);
    let a = cluster.start(&env).await;
    twilio.script("", Script::AcceptAndHang);
    let phone = "12025550999";
    assert_ok(a.call(login(phone)).await);
    assert!(eventually(30, async || twilio.accepted().len() == 1).await, "the provider took it");
    drop(a); // kill -9 while the provider's answer is still awaited
    twilio.script("", Script::Accept);
    let b = cluster.start(&env).await;
    assert!(eventually(60, async || twilio.accepted().len() == 2).await, "the other instance sent it again after the lease");
    let rows = |sql: &str| backend::run_sql(&cluster.database_url, sql)[0].clone().unwrap_or_default();
    assert!(eventually(30, async || rows("SELECT status FROM courier") == "sent").await);
    let sent = twilio.accepted();
    assert_eq!(sent[0].text, sent[1].text, "the same code both times");
    assert_eq!((sent.len(), vonage.requests()), (2, 0), "once more, and no more");
    let code: String = sent[1].text.split(|c: char| !c.is_ascii_digit()).find(|run| run.len() == 6).unwrap().into();
    let reply = assert_ok(b.call(verify(phone, &code)).await);
    assert!(reply["token"].is_string());
}

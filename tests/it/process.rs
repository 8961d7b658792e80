//! The `otpgate` binary as an operator runs it: subcommands, JSON logs, and a
//! graceful stop on SIGTERM/SIGINT that lets an in-flight request finish.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_otpgate");

/// The binary with only the given environment (nothing inherited from the test runner).
fn otpgate(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().envs(env.iter().copied());
    command
}

/// Runs to completion off the async runtime, so fake servers in this process keep answering.
async fn run(mut command: Command) -> Output {
    actix_web::rt::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

/// As [`run`], but a command still running after `secs` seconds (a `serve` that should have
/// refused to start) is killed and gives None.
async fn run_for_at_most(mut command: Command, secs: u64) -> Option<Output> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    if eventually(secs, async || child.try_wait().unwrap().is_some()).await {
        return Some(child.wait_with_output().unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[actix_web::test]
async fn every_subcommand_has_help() {
    let output = run(otpgate(&["--help"], &[])).await;
    assert!(output.status.success());
    let help = text(&output.stdout);
    for subcommand in ["serve", "check-config", "migrate", "send-test", "healthcheck"] {
        assert!(help.contains(subcommand), "{help}");
        let output = run(otpgate(&[subcommand, "--help"], &[])).await;
        assert!(output.status.success(), "{subcommand} --help");
        assert!(text(&output.stdout).contains("Usage: otpgate"), "{subcommand}");
    }
    assert!(text(&run(otpgate(&["send-test", "--help"], &[])).await.stdout).contains("--to"));
}

#[actix_web::test]
async fn check_config_prints_the_effective_configuration_without_secrets() {
    let env = [
        ("APP_TOKEN", APP_TOKEN),
        ("OTP_SECRET", "otp-secret-value-91"),
        ("OTP_SENDER", "http"),
        ("SMS_HTTP_URL", "https://user:gw-pass-55@sms.example.com/send?apikey=gw-key-66"),
        ("SMS_HTTP_AUTH", "Bearer gw-bearer-77"),
        ("SMS_HTTP_BODY", r#"{"api_key":"gw-body-key-99","to":"{phone}","text":"{message}"}"#),
        ("SMTP_PASSWORD", "smtp-pass-88"),
        ("TEST_OTPS", "18005550000:424242"),
        ("OTP_TTL_SECS", "120"),
        ("DATABASE_URL", "postgres://otpgate:db-pass-44@db.example.com:5432/otpgate?sslmode=require"),
        ("REDIS_URL", "redis://:redis-pass-33@cache.example.com:6379/0"),
    ];
    let output = run(otpgate(&["check-config"], &env)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    for secret in [
        APP_TOKEN,
        "otp-secret-value-91",
        "gw-pass-55",
        "gw-key-66",
        "gw-bearer-77",
        "gw-body-key-99",
        "smtp-pass-88",
        "424242",
        "db-pass-44",
        "redis-pass-33",
    ] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
    let config: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(config["app_token"], "<redacted>");
    assert_eq!(config["smtp_user"], "", "unset values stay visible as unset");
    assert_eq!(config["sms_http_url"], "https://sms.example.com/send");
    assert_eq!(config["otp_ttl_secs"], 120);
    assert_eq!(config["bind"], "127.0.0.1:8080", "defaults are shown");
    assert_eq!(config["database_url"], "postgres://db.example.com:5432/otpgate");
    assert_eq!(config["redis_url"], "redis://cache.example.com:6379/0");
    // Checked before anything connects: the scheme, and the shared key several instances need.
    let output = run(otpgate(&["check-config"], &[("DATABASE_URL", "mysql://db/otpgate")])).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("DATABASE_URL must be a URL such as postgres://"), "{}", text(&output.stderr));
    let output = run(otpgate(&["check-config"], &[("DATABASE_URL", "postgres://db/otpgate")])).await;
    assert!(text(&output.stderr).contains("needs OTP_SECRET or OTP_SECRET_FILE"), "{}", text(&output.stderr));
    // libpq's forms with several hosts pass, printed without the password; what the
    // driver would refuse is refused here, before anything connects.
    let standby = "postgres://otpgate:db-pass-44@db1:5432,db2:5433/otpgate?target_session_attrs=read-write";
    let output = run(otpgate(&["check-config"], &[("DATABASE_URL", standby), ("OTP_SECRET", "otp-secret-value-91")])).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed: Value = serde_json::from_str(&text(&output.stdout)).unwrap();
    assert_eq!(printed["database_url"], "postgres://db1:5432,db2:5433/otpgate");
    let listed = "postgres:///otpgate?host=db1,db2&port=5432,5433&target_session_attrs=read-write";
    let output = run(otpgate(&["check-config"], &[("DATABASE_URL", listed), ("OTP_SECRET", "otp-secret-value-91")])).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let unknown = "postgres://otpgate:db-pass-44@db1,db2/otpgate?target_session_attrs=primary";
    let output = run(otpgate(&["check-config"], &[("DATABASE_URL", unknown), ("OTP_SECRET", "otp-secret-value-91")])).await;
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("DATABASE_URL invalid connection string"), "{}", text(&output.stderr));
    assert!(!text(&output.stderr).contains("db-pass-44"), "{}", text(&output.stderr));
    let output = run(otpgate(&["check-config"], &[("REDIS_URL", "127.0.0.1:6379")])).await;
    assert!(text(&output.stderr).contains("REDIS_URL must be a URL"), "{}", text(&output.stderr));
    let output = run(otpgate(&["check-config"], &[("DATABASE_URL", "postgres://db/otpgate"), ("OTP_SECRET", "otp-secret-value-91")])).await;
    assert!(output.status.success());
    assert!(text(&output.stderr).contains("limits and the SMS budget are kept per instance"), "a warning without REDIS_URL");

    let output = run(otpgate(&["check-config"], &[("OTP_LENGTH", "3")])).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("OTP_LENGTH"));
    let output = run(otpgate(&["check-config"], &[("OTP_SENDER", "http")])).await;
    assert_eq!(output.status.code(), Some(2), "the sender's own settings are checked too");
    assert!(text(&output.stderr).contains("SMS_HTTP_URL"));
    for (name, value) in [("UPSTREAM_URL", "api.mesibo.com/backend"), ("BIND", "8080"), ("UPSTREAM_URL", "builtin")] {
        let env = [("BIND", "0.0.0.0:8080"), (name, value)];
        let output = run(otpgate(&["check-config"], &env)).await;
        assert_eq!(output.status.code(), Some(2), "{name}={value} was accepted");
        assert!(text(&output.stderr).contains(name), "{}", text(&output.stderr));
    }
    let output = run(otpgate(&["check-config"], &[])).await;
    assert!(output.status.success());
    assert!(text(&output.stderr).contains("APP_TOKEN is not set"), "warned as serve does: {}", text(&output.stderr));
}

#[actix_web::test]
async fn trusting_every_address_as_a_proxy_is_refused() {
    // Every client would be a trusted proxy, and could write its own address.
    for everything in ["0.0.0.0/0", "127.0.0.1, ::/0"] {
        for subcommand in ["check-config", "serve"] {
            let command = otpgate(&[subcommand], &[("BIND", "127.0.0.1:0"), ("TRUSTED_PROXIES", everything)]);
            let output =
                run_for_at_most(command, 30).await.unwrap_or_else(|| panic!("{subcommand} started with TRUSTED_PROXIES={everything}"));
            assert_eq!(output.status.code(), Some(2), "{subcommand} with TRUSTED_PROXIES={everything}");
            assert!(
                text(&output.stderr).contains("TRUSTED_PROXIES entry") && text(&output.stderr).contains("wider than /8"),
                "{}",
                text(&output.stderr)
            );
        }
    }
    let output = run(otpgate(&["check-config"], &[("TRUSTED_PROXY_HEADER", "X-Real-IP")])).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("TRUSTED_PROXY_HEADER must be X-Forwarded-For or Forwarded"), "{}", text(&output.stderr));
    let output =
        run(otpgate(&["check-config"], &[("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"), ("TRUSTED_PROXY_HEADER", "Forwarded")])).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed: Value = serde_json::from_str(&text(&output.stdout)).unwrap();
    assert_eq!(
        (printed["trusted_proxies"].as_str(), printed["trusted_proxy_header"].as_str()),
        (Some("127.0.0.1, 10.0.0.0/8"), Some("Forwarded"))
    );
}

#[actix_web::test]
async fn check_config_refuses_the_key_file_and_gateway_body_that_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("otpgate.db");
    let db = db.to_str().unwrap();
    let missing = dir.path().join("secrets").join("otp.key");
    let missing = missing.to_str().unwrap();
    let named = [("DATABASE_PATH", db), ("OTP_SECRET_FILE", missing), ("BIND", "127.0.0.1:0")];
    for subcommand in ["check-config", "serve"] {
        let output = run(otpgate(&[subcommand], &named)).await;
        assert_eq!(output.status.code(), Some(2), "{subcommand}: {}", text(&output.stderr));
        assert!(text(&output.stderr).contains(&format!("OTP_SECRET_FILE {missing} does not exist")), "{}", text(&output.stderr));
    }
    assert!(!std::path::Path::new(missing).exists() && !std::path::Path::new(db).exists(), "check-config created nothing");

    let key_file = dir.path().join("otp.key");
    let with_key_file = [("DATABASE_PATH", db), ("OTP_SECRET_FILE", key_file.to_str().unwrap())];
    std::fs::write(&key_file, "not hex\n").unwrap();
    let output = run(otpgate(&["check-config"], &with_key_file)).await;
    assert_eq!(output.status.code(), Some(2), "a key file serve cannot read is refused");
    assert!(text(&output.stderr).contains("hexadecimal digits"), "{}", text(&output.stderr));
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let output = run(otpgate(&["check-config"], &with_key_file)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    // The key an earlier release kept in the database is moved to a missing named file at start.
    let legacy = rusqlite::Connection::open(db).unwrap();
    legacy.execute_batch("CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL)").unwrap();
    legacy.execute("INSERT INTO settings (key, value) VALUES ('otp_hash_key', ?1)", [&[0x5a_u8; 32][..]]).unwrap();
    drop(legacy);
    let output = run(otpgate(&["check-config"], &named[..2])).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!std::path::Path::new(missing).exists());

    let gateway = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")];
    for (body, placeholder) in [(r#"{"to":"{phone}","text":"hello"}"#, "{message}"), (r#"{"text":"{message}"}"#, "{phone}")] {
        let mut env = gateway.to_vec();
        env.push(("SMS_HTTP_BODY", body));
        let output = run(otpgate(&["check-config"], &env)).await;
        assert_eq!(output.status.code(), Some(2), "{body} was accepted");
        assert!(text(&output.stderr).contains(&format!("SMS_HTTP_BODY has no {placeholder}")), "{}", text(&output.stderr));
    }
    let output = run(otpgate(&["check-config"], &gateway)).await;
    assert!(output.status.success(), "the default body has both: {}", text(&output.stderr));
}

/// Every setting `serve` refuses, `check-config` refuses in the same words: both read the
/// settings with `Config::from_vars`, which checks their values, and check what they name
/// outside the process with `runtime::check_surroundings`.
#[actix_web::test]
async fn check_config_refuses_every_setting_serve_refuses_in_the_same_words() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("otpgate.db").to_string_lossy().into_owned();
    let missing_key = dir.path().join("secrets").join("otp.key").to_string_lossy().into_owned();
    let unreadable_key = dir.path().join("otp.key").to_string_lossy().into_owned();
    std::fs::write(&unreadable_key, "not hex\n").unwrap();
    let http = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")];
    let webhook = [("OTP_SENDER", "webhook"), ("WEBHOOK_URL", "https://hooks.example.com/otp")];
    let shared =
        [("DATABASE_URL", "postgres://otpgate@db1,db2/otpgate?target_session_attrs=primary"), ("OTP_SECRET", "otp-secret-value-91")];
    // With the hash's line, 161 GSM-7 characters: one over the 140 bytes SMS Retriever reads.
    let long_message = format!("{} {{otp}}", "x".repeat(142));
    let refused: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("OTP_LENGTH", "3")], "OTP_LENGTH must be between 4 and 10"),
        (vec![("OTP_SENDER", "pigeon")], "OTP_SENDER must be one of"),
        (vec![("OTP_MESSAGE", "no code")], "OTP_MESSAGE must contain {otp}"),
        (vec![("BIND", "8080")], "BIND must be an address and port"),
        (vec![("TRUSTED_PROXIES", "0.0.0.0/0")], "wider than /8"),
        (vec![("UPSTREAM_URL", "api.mesibo.com/backend")], "UPSTREAM_URL must be an http:// or https:// URL"),
        (vec![("ADMIN_BIND", "127.0.0.1:9090")], "ADMIN_TOKEN must be set"),
        (vec![("CAPTCHA_PROVIDER", "hcaptcha")], "CAPTCHA_SECRET is required"),
        (vec![("SMS_BUDGET_HOME_RESERVE", "100")], "SMS_BUDGET_HOME_RESERVE of 100"),
        (vec![("SMS_BREAKER_WINDOW", "0")], "SMS_BREAKER_WINDOW must be 1 to 1000"),
        (vec![("SMS_BREAKER_MIN_SENDS", "11")], "SMS_BREAKER_MIN_SENDS must be 1 to SMS_BREAKER_WINDOW"),
        (vec![("SMS_BREAKER_COOLDOWN_SECS", "0")], "SMS_BREAKER_COOLDOWN_SECS must be 1 to 86400"),
        // The senders in use, each with the settings it requires.
        (vec![("OTP_SENDER", "http")], "SMS_HTTP_URL is required when the http sender is used"),
        ([&http[..], &[("SMS_HTTP_BODY", r#"{"text":"{message}"}"#)]].concat(), "SMS_HTTP_BODY has no {phone}"),
        ([&http[..], &[("SMS_HTTP_BODY", "to={phone}&text={message}")]].concat(), "SMS_HTTP_BODY must be a JSON template"),
        (vec![("EMAIL_SENDER", "smtp")], "SMTP_HOST is required when the smtp sender is used"),
        (vec![("OTP_SENDER", "smtp"), ("SMTP_HOST", "mail.example.com"), ("SMTP_FROM", "nobody")], "SMTP_FROM must be an address"),
        (vec![("OTP_SENDER", "twilio")], "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN required when the twilio sender is used"),
        (
            vec![("OTP_SENDER", "twilio"), ("TWILIO_ACCOUNT_SID", "AC1"), ("TWILIO_AUTH_TOKEN", "twilio-token")],
            "TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID is required",
        ),
        (vec![("OTP_SENDER", "vonage")], "VONAGE_API_KEY, VONAGE_API_SECRET, VONAGE_FROM required"),
        (vec![("OTP_SENDER", "messagebird")], "MESSAGEBIRD_ACCESS_KEY, MESSAGEBIRD_ORIGINATOR required"),
        (webhook.to_vec(), "WEBHOOK_SECRET required when the webhook sender is used"),
        ([&webhook[..], &[("WEBHOOK_SECRET", "whsec_!")]].concat(), "WEBHOOK_SECRET after whsec_ must be base64"),
        // Provider instances and routes.
        (vec![("SMS_ROUTES", r#"{"*": ["nobody"]}"#)], r#"SMS_ROUTES route "*" names "nobody", which is not an instance"#),
        (vec![("SMS_ROUTES", r#"{"*": ["smtp"]}"#)], "nor a sender kind that reaches phones"),
        (vec![("SMS_ROUTES", r#"{"44": ["log"]}"#)], r#"SMS_ROUTES needs a "*" route"#),
        (
            vec![("SMS_PROVIDERS", r#"{"uk": {"kind": "twilio", "account_sid": "AC1", "auth_token": "t"}}"#)],
            "instance uk needs from or messaging_service_sid",
        ),
        (vec![("SMS_PROVIDERS", r#"{"uk": {"kind": "pigeon"}}"#)], "SMS_PROVIDERS must be a JSON object of instance name"),
        // The messages and what the apps are told.
        (vec![("OTP_MESSAGE_PER_APP", r#"{"com.a":"no code"}"#)], r#"OTP_MESSAGE_PER_APP template for "com.a" must contain {otp}"#),
        (vec![("APP_NAMES", "Alpha")], "APP_NAMES must be a JSON object of strings"),
        (vec![("APP_SETTINGS", r#"{"default":{"share":{"txt":"x"}}}"#)], "APP_SETTINGS must be a JSON object"),
        (vec![("OIDC_PROVIDERS", r#"{"corp":{"client_ids":["x"]}}"#)], "OIDC_PROVIDERS provider corp needs an issuer"),
        (
            vec![("APP_SETTINGS", r#"{"com.a":{"android_hash":"FA+9qCX9VS"}}"#)],
            "APP_SETTINGS android_hash of com.a must be the app's signature hash: 11 Base64 characters",
        ),
        (
            vec![("APP_SETTINGS", r#"{"com.a":{"webotp_domain":"https://login.example.com"}}"#)],
            "APP_SETTINGS webotp_domain of com.a must be a host such as login.example.com: no scheme",
        ),
        (
            vec![
                ("APP_SETTINGS", r#"{"com.a":{"webotp_domain":"login.example.com"}}"#),
                ("OTP_MESSAGE_PER_APP", r#"{"com.a":"{otp}\n\n@login.example.com #{otp}"}"#),
            ],
            "APP_SETTINGS for com.a: OTP_MESSAGE_PER_APP[com.a] ends with a line of the WebOTP form @host #code",
        ),
        (
            vec![("APP_SETTINGS", r#"{"default":{"android_hash":"FA+9qCX9VSu"}}"#), ("OTP_MESSAGE", long_message.as_str())],
            "APP_SETTINGS for any other appid (shown up to 64 characters): its SMS with android_hash can be 141 bytes",
        ),
        // Phones.
        (vec![("TEST_OTPS", "18005550000")], "TEST_OTPS entries must look like 18005550000:123456"),
        (vec![("DEFAULT_REGION", "Narnia")], "DEFAULT_REGION must be an ISO country code"),
        (vec![("ALLOWED_COUNTRIES", "Narnia")], r#"ALLOWED_COUNTRIES entry "Narnia""#),
        (vec![("BLOCKED_COUNTRIES", "GB, 1000")], r#"BLOCKED_COUNTRIES entry "1000""#),
        (vec![("SMS_BUDGET_HOME_COUNTRIES", "Narnia")], r#"SMS_BUDGET_HOME_COUNTRIES entry "Narnia""#),
        // What the settings name: the key file, the database, Redis.
        (vec![("OTP_SECRET_FILE", missing_key.as_str())], "does not exist"),
        (vec![("OTP_SECRET_FILE", unreadable_key.as_str())], "hexadecimal digits"),
        (
            vec![("OTP_SECRET", "otp-secret-value-91"), ("OTP_SECRET_FILE", unreadable_key.as_str())],
            "OTP_SECRET_FILE and OTP_SECRET are both set",
        ),
        (vec![("DATABASE_URL", "mysql://db/otpgate")], "DATABASE_URL must be a URL such as postgres://"),
        (vec![("DATABASE_URL", "postgres://db/otpgate")], "needs OTP_SECRET or OTP_SECRET_FILE"),
        (shared.to_vec(), "DATABASE_URL invalid connection string"),
        (vec![("REDIS_URL", "127.0.0.1:6379")], "REDIS_URL must be a URL"),
    ];
    let refusal = |output: &Output| text(&output.stderr).lines().find(|line| line.starts_with("otpgate: ")).map(str::to_string);
    for (vars, expected) in &refused {
        let mut env = vec![("BIND", "127.0.0.1:0"), ("DATABASE_PATH", db.as_str())];
        env.extend(vars.iter().copied());
        let check = run(otpgate(&["check-config"], &env)).await;
        assert_eq!(check.status.code(), Some(2), "check-config with {vars:?}: {}", text(&check.stderr));
        let said = refusal(&check).unwrap_or_else(|| panic!("{vars:?}: {}", text(&check.stderr)));
        assert!(said.contains(expected), "{vars:?}: {said}");
        let serve = run_for_at_most(otpgate(&["serve"], &env), 30).await.unwrap_or_else(|| panic!("serve started with {vars:?}"));
        assert_eq!(serve.status.code(), Some(2), "serve with {vars:?}: {}", text(&serve.stderr));
        assert_eq!(refusal(&serve), Some(said), "{vars:?}");
    }
    assert!(!std::path::Path::new(&db).exists() && !std::path::Path::new(&missing_key).exists(), "neither created anything");
}

#[actix_web::test]
async fn a_misspelled_setting_is_warned_about_with_the_one_meant() {
    let output = run(otpgate(&["check-config"], &[("OTP_LENGHT", "8"), ("RUST_LOG", "info"), ("OTP_TTL_SECS", "60")])).await;
    assert!(output.status.success(), "a warning, not a refusal: {}", text(&output.stderr));
    let warnings = text(&output.stderr);
    assert!(warnings.contains("OTP_LENGHT is not a setting of otpgate and is ignored (the closest setting is OTP_LENGTH)"), "{warnings}");
    assert_eq!(warnings.matches("is not a setting").count(), 1, "RUST_LOG and OTP_TTL_SECS are known: {warnings}");
    assert_eq!(serde_json::from_str::<Value>(&text(&output.stdout)).unwrap()["otp_length"], 6);
}

#[actix_web::test]
async fn the_warnings_about_serving_are_for_serve_and_check_config_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("otpgate.db");
    // Nothing listens on a port just let go of.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let env = [("BIND", bind.as_str()), ("DATABASE_PATH", db.to_str().unwrap()), ("OTP_LENGHT", "8")];
    let output = run(otpgate(&["check-config"], &env)).await;
    assert!(text(&output.stderr).contains("APP_TOKEN is not set"), "{}", text(&output.stderr));

    let output = run(otpgate(&["healthcheck"], &env)).await;
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stderr);
    assert!(!said.contains("APP_TOKEN") && !said.contains("OTP_LENGHT"), "the healthcheck warns of nothing: {said}");
    // With the cause and what to check, not only "error sending request".
    assert!(said.to_lowercase().contains("connection refused"), "{said}");
    assert!(said.contains(&format!("is `otpgate serve` running, with this BIND ({bind})?")), "{said}");

    let output = run(otpgate(&["migrate"], &env)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stderr);
    assert!(!said.contains("APP_TOKEN"), "migrate does not use it: {said}");
    assert!(said.contains("OTP_LENGHT is not a setting"), "a misspelled setting matters to every subcommand that reads them: {said}");
}

#[actix_web::test]
async fn a_redis_that_cannot_be_reached_is_named_by_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("otpgate.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = format!("redis://:redis-pass-33@127.0.0.1:{port}/0");
    let env = [("BIND", "127.0.0.1:0"), ("DATABASE_PATH", db.to_str().unwrap()), ("REDIS_URL", redis.as_str())];
    let output = run(otpgate(&["serve"], &env)).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let said = text(&output.stderr);
    assert!(said.contains(&format!("(REDIS_URL=redis://127.0.0.1:{port}/0, RATE_LIMIT_ON_ERROR=deny)")), "{said}");
    assert!(!said.contains("redis-pass-33"), "{said}");
}

#[actix_web::test]
async fn migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let output = run(otpgate(&["migrate"], &[("DATABASE_PATH", path.to_str().unwrap())])).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let db = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        tables,
        [
            "attachment_files",
            "audit_events",
            "chat_groups",
            "contacts",
            "courier",
            "group_members",
            "linked_addresses",
            "otp_challenges",
            "outbox",
            "sessions",
            "settings",
            "sqlite_sequence",
            "users"
        ]
    );
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert!(version >= 1, "every migration step ran");
}

#[actix_web::test]
async fn send_test_goes_through_the_configured_provider() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Reply(200, "{}".into()));
    let url = gateway.url();
    // send-test applies the phone policy of a login start: a toll-free number cannot get SMS.
    let mobile_only = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", url.as_str())];
    let output = run(otpgate(&["send-test", "--to", "+1 800 555 1234"], &mobile_only)).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("PHONE_MOBILE_ONLY"), "the refusal names its setting: {}", text(&output.stderr));
    assert!(gateway.received().is_empty());

    let env = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", url.as_str()), ("PHONE_MOBILE_ONLY", "false")];
    let output = run(otpgate(&["send-test", "--to", "+1 800 555 1234"], &env)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("1800555****"), "{}", text(&output.stdout));
    let received = gateway.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json()["to"], "18005551234");

    gateway.set_mode(Mode::Reply(500, "down".into()));
    let output = run(otpgate(&["send-test", "--to", "18005551234"], &env)).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("HTTP 500"), "{}", text(&output.stderr));
    let output = run(otpgate(&["send-test", "--to", "ann@example.com"], &env)).await;
    assert_eq!(output.status.code(), Some(1), "an SMS gateway cannot reach e-mail");
}

/// A running `otpgate serve` with JSON logs, its address and its log lines.
struct Service {
    child: Child,
    url: String,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

/// A test that fails leaves no process behind holding the test's output open.
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    async fn start(upstream: &FakeUpstream, dir: &tempfile::TempDir) -> Service {
        Service::start_with(upstream, dir, &[]).await
    }

    /// [`Service::start`] with more settings.
    async fn start_with(upstream: &FakeUpstream, dir: &tempfile::TempDir, more: &[(&str, &str)]) -> Service {
        let db = dir.path().join("otpgate.db");
        let upstream_url = upstream.url();
        let mut env = vec![
            ("BIND", "127.0.0.1:0"),
            ("DATABASE_PATH", db.to_str().unwrap()),
            ("APP_TOKEN", APP_TOKEN),
            ("UPSTREAM_URL", upstream_url.as_str()),
            ("TEST_OTPS", "18005550000:123456"),
            ("LOG_FORMAT", "json"),
            ("SHUTDOWN_GRACE_SECS", "10"),
        ];
        env.extend_from_slice(more);
        let mut child = otpgate(&["serve"], &env).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let (send, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let parsed = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "not_json": line }));
                if send.send(parsed).is_err() {
                    break;
                }
            }
        });
        let mut service = Service { child, url: String::new(), lines, seen: Vec::new() };
        let listening = service.wait_for("otpgate listening").await;
        service.url = format!("http://{}", listening["fields"]["bind"].as_str().unwrap());
        service
    }

    /// Waits for a log line whose message is `message`, for up to 30 s: the process may
    /// start slowly on a loaded machine.
    async fn wait_for(&mut self, message: &str) -> Value {
        let found = eventually_some(30, async || {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            self.seen.iter().find(|l| l["fields"]["message"] == message).cloned()
        })
        .await;
        found.unwrap_or_else(|| panic!("no log line {message:?} in {:?}", self.seen))
    }

    fn signal(&self, signal: libc::c_int) {
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    async fn exit_code(mut self) -> (Option<i32>, Vec<Value>) {
        let Some(status) = eventually_some(30, async || self.child.try_wait().unwrap()).await else {
            panic!("the service did not exit: {:?}", self.seen);
        };
        // The log lines written before the exit are all in the pipe: read it to its end.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        (status.code(), std::mem::take(&mut self.seen))
    }
}

#[actix_web::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let upstream = FakeUpstream::start();
    upstream.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(&upstream, &dir).await;
    let client = http_client();
    let in_flight = {
        let request =
            client.post(format!("{}/api", service.url)).header("x-request-id", "in-flight-1").json(&verify("18005550000", "123456"));
        actix_web::rt::spawn(request.send())
    };
    // Wait (up to 30 s) until upstream holds the request, then ask the service to stop.
    eventually(30, async || !upstream.received().is_empty()).await;
    assert_eq!(upstream.received().len(), 1, "the login reached upstream");
    service.signal(libc::SIGTERM);
    service.wait_for("shutting down: no new connections, finishing in-flight requests").await;

    let refused = client.get(format!("{}/healthz", service.url)).timeout(Duration::from_millis(500)).send().await;
    assert!(refused.is_err(), "no new requests are taken after SIGTERM");

    let response = in_flight.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["token"], "usertoken-1");

    let (code, logs) = service.exit_code().await;
    assert_eq!(code, Some(0));
    assert!(logs.iter().any(|l| l["fields"]["message"] == "shutdown complete"), "{logs:?}");
    let wal = dir.path().join("otpgate.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "the WAL was checkpointed and the database closed");

    // JSON logs: the request line carries the request id, route, op and status; no phone, code or token.
    let request_line = logs.iter().find(|l| l["fields"]["message"] == "request").expect("a request line");
    assert_eq!(request_line["span"]["request_id"], "in-flight-1");
    assert_eq!((&request_line["fields"]["route"], &request_line["fields"]["op"]), (&json!("/api"), &json!("login")));
    assert_eq!(request_line["fields"]["status"], 200);
    let all = serde_json::to_string(&logs).unwrap();
    assert!(logs.iter().all(|l| l.get("not_json").is_none()), "every line is JSON: {all}");
    for secret in ["18005550000", "123456", "usertoken-1", APP_TOKEN] {
        assert!(!all.contains(secret), "{secret} in the log");
    }
}

#[actix_web::test]
async fn sigint_stops_gracefully_too() {
    let upstream = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(&upstream, &dir).await;
    // The container HEALTHCHECK command.
    let bind = service.url.trim_start_matches("http://").to_string();
    let healthcheck = |path: &str| otpgate(&["healthcheck", "--path", path], &[("BIND", bind.as_str())]);
    let output = run(healthcheck("/healthz")).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(serde_json::from_str::<Value>(&text(&output.stdout)).unwrap(), json!({ "status": "ok" }));
    assert_eq!(run(healthcheck("/nowhere")).await.status.code(), Some(1), "a 404 is unhealthy");

    service.signal(libc::SIGINT);
    service.wait_for("shutting down: no new connections, finishing in-flight requests").await;
    let (code, logs) = service.exit_code().await;
    assert_eq!(code, Some(0));
    assert!(logs.iter().any(|l| l["fields"]["message"] == "shutdown complete"));
    assert_eq!(run(healthcheck("/healthz")).await.status.code(), Some(1), "a stopped service is unhealthy");
    // Probes are logged only at debug; other requests at info.
    let routes: Vec<&Value> = logs.iter().filter(|l| l["fields"]["message"] == "request").map(|l| &l["fields"]["route"]).collect();
    assert_eq!(routes, [&json!("unmatched")], "{logs:?}");
}

const ADMIN_TOKEN: &str = "operator-token-0123456789abcdef-0123";

#[actix_web::test]
async fn the_operator_api_revokes_a_device_and_is_not_on_the_public_port() {
    let output = run(otpgate(&["check-config"], &[("ADMIN_BIND", "127.0.0.1:9090")])).await;
    assert_eq!(output.status.code(), Some(2), "ADMIN_BIND without a token is refused");
    assert!(text(&output.stderr).contains("ADMIN_TOKEN"), "{}", text(&output.stderr));
    let env = [("ADMIN_BIND", "127.0.0.1:9090"), ("ADMIN_TOKEN", ADMIN_TOKEN)];
    let output = run(otpgate(&["check-config"], &env)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!text(&output.stdout).contains(ADMIN_TOKEN), "the token is redacted");
    assert!(!text(&output.stderr).contains("ADMIN_BIND is not a loopback address"), "{}", text(&output.stderr));
    // Off loopback the token would cross the network in clear: allowed, and warned about as serve does.
    let output = run(otpgate(&["check-config"], &[("ADMIN_BIND", "0.0.0.0:9090"), ("ADMIN_TOKEN", ADMIN_TOKEN)])).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let warning = "ADMIN_BIND is not a loopback address and the operator API speaks plain HTTP";
    assert!(text(&output.stderr).contains(warning), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("TLS"), "{}", text(&output.stderr));

    let upstream = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start_with(&upstream, &dir, &[("ADMIN_BIND", "127.0.0.1:0"), ("ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let admin = format!("http://{}", service.wait_for("operator API listening").await["fields"]["admin_bind"].as_str().unwrap());
    let client = http_client();
    let api = |body: Value| client.post(format!("{}/api", service.url)).json(&body).send();
    let login = json!({ "op": "login", "phone": "18005550000", "appid": APPID });
    assert_eq!(api(login.clone()).await.unwrap().status(), 200);
    let mut verify = login;
    verify["otp"] = json!("123456");
    let reply: Value = api(verify).await.unwrap().json().await.unwrap();
    let token = reply["token"].as_str().expect("a token").to_string();

    // Without the token, or with another, the operator API answers nothing else.
    let lookup = format!("{admin}/admin/users?phone=%2B1%20800%20555%200000");
    assert_eq!(client.get(&lookup).send().await.unwrap().status(), 401);
    assert_eq!(client.get(&lookup).bearer_auth("operator-token-0123456789abcdef-0124").send().await.unwrap().status(), 401);
    let found: Value = client.get(&lookup).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(found["user"]["phone"], "18005550000", "{found}");
    let (id, session) = (found["user"]["id"].as_i64().unwrap(), found["sessions"][0]["session"].as_str().unwrap().to_string());
    assert_eq!(found["sessions"].as_array().unwrap().len(), 1);
    assert!(!found.to_string().contains(&token), "no token in what operators see");
    let missing = client.get(format!("{admin}/admin/users?uid=nobody")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let ambiguous = client.get(format!("{admin}/admin/users?uid=1&phone=18005550000")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(ambiguous.status(), 400);

    // The public port serves none of it, with or without the token.
    for path in [
        "/admin/users?phone=18005550000",
        "/admin/events?phone=18005550000",
        &format!("/admin/users/{id}"),
        &format!("/admin/users/{id}/sessions/{session}"),
    ] {
        let url = format!("{}{path}", service.url);
        for request in [client.get(&url), client.delete(&url), client.post(&url)] {
            let status = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap().status();
            assert_eq!(status, 404, "{path} on the public port");
        }
    }

    // Revoking the device's session: its next call is refused.
    let me = || api(json!({ "op": "me", "token": token }));
    assert!(!me().await.unwrap().text().await.unwrap().contains("AUTHFAIL"));
    let revoke = format!("{admin}/admin/users/{id}/sessions/{session}");
    let ended: Value = client.delete(&revoke).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(ended["ended"], 1);
    assert!(me().await.unwrap().text().await.unwrap().contains("AUTHFAIL"));
    let again: Value = client.delete(&revoke).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["ended"], 0);
    let after: Value = client.get(format!("{admin}/admin/users/{id}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(after["sessions"], json!([]));

    // Deleting the user: gone here, and the platform is told.
    let user = format!("{admin}/admin/users/{id}");
    let deleted: Value = client.delete(&user).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(client.get(&user).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 404);
    assert_eq!(client.delete(&user).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 404);
    assert!(eventually(30, async || upstream.userdel_calls().len() == 1).await, "userdel reached the platform");

    // The audit trail outlives the user.
    let trail: Value =
        client.get(format!("{admin}/admin/events?phone=18005550000")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    let events: Vec<&str> = trail["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["account_deleted", "operator_lookup", "sessions_revoked", "sessions_revoked", "operator_lookup", "login"],
        "{trail}"
    );
    assert_eq!(trail["events"][0]["detail"], "operator");
    // Each look at the user's data and each revoke names the operator, not the token.
    let operator = "operator (ADMIN_TOKEN) from 127.0.0.1";
    let details: Vec<&str> = trail["events"].as_array().unwrap()[1..5].iter().map(|e| e["detail"].as_str().unwrap()).collect();
    assert_eq!(
        details,
        [format!("{operator}: user"), format!("{operator}: ended 0"), format!("{operator}: ended 1"), format!("{operator}: user")]
    );
    let by_uid = client.get(format!("{admin}/admin/events?uid=1")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(by_uid.status(), 400, "events are found by address: they outlive users");
    // The operator trail holds every lookup and revoke too, with the user's address masked.
    let trail: Value =
        client.get(format!("{admin}/admin/events/operator")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    let events: Vec<(&str, &str)> =
        trail["events"].as_array().unwrap().iter().map(|e| (e["event"].as_str().unwrap(), e["detail"].as_str().unwrap())).collect();
    let (lookup, revoked, user) = ("operator_lookup", "sessions_revoked", format!("user {id} (1800555****)"));
    let expected = [
        (lookup, format!("{operator}: events of phone 1800555****")),
        (lookup, format!("{operator}: no user by id {id}")),
        (lookup, format!("{operator}: {user} by id {id}")),
        (revoked, format!("{operator}: ended 0 of {user}")),
        (revoked, format!("{operator}: ended 1 of {user}")),
        (lookup, format!("{operator}: no user by uid")),
        (lookup, format!("{operator}: {user} by phone 1800555****")),
        ("operator_auth_failed", "127.0.0.1: wrong token".to_string()),
        ("operator_auth_failed", "127.0.0.1: no token".to_string()),
    ];
    assert_eq!(events, expected.iter().map(|(event, detail)| (*event, detail.as_str())).collect::<Vec<_>>(), "{trail}");
    assert!(!trail.to_string().contains("18005550000") && !trail.to_string().contains(ADMIN_TOKEN), "{trail}");
    service.signal(libc::SIGTERM);
    assert_eq!(service.exit_code().await.0, Some(0), "both listeners stop on SIGTERM");
}

#[actix_web::test]
async fn the_binary_signs_in_with_an_id_token_of_its_configured_issuer() {
    let output = run(otpgate(&["check-config"], &[("OIDC_PROVIDERS", r#"{"corp":{"client_ids":["x"]}}"#)])).await;
    assert_eq!(output.status.code(), Some(2), "a provider without an issuer is refused");
    assert!(text(&output.stderr).contains("OIDC_PROVIDERS provider corp needs an issuer"), "{}", text(&output.stderr));
    let trusting_by_subject =
        r#"{"corp":{"issuer":"https://login.example.com","client_ids":["x"],"address_claim":"sub","email_verified_if_absent":true}}"#;
    let output = run(otpgate(&["check-config"], &[("OIDC_PROVIDERS", trusting_by_subject)])).await;
    assert_eq!(output.status.code(), Some(2), "trusting a missing email_verified where no e-mail is used is refused");
    assert!(text(&output.stderr).contains("email_verified_if_absent, which only applies with"), "{}", text(&output.stderr));

    let [key, ..] = crate::common::local_issuer::keys();
    let issuer = crate::common::local_issuer::LocalIssuer::start(&[key]);
    let upstream = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let providers = issuer.provider_setting("email");
    let mut service = Service::start_with(&upstream, &dir, &[("OIDC_PROVIDERS", &providers), ("RUST_LOG", "debug")]).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let id_token = key.sign(&issuer.claims("ann@example.com", now));
    let reply: Value = http_client()
        .post(format!("{}/api", service.url))
        .json(&json!({ "op": "login", "appid": APPID, "provider": "local", "id_token": id_token }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((&reply["result"], &reply["email"]), (&json!("OK"), &json!("ann@example.com")), "{reply}");
    assert_eq!(upstream.received()[0].json()["user"]["address"], "ann@example.com");
    service.wait_for("sign-in provider's keys fetched").await;
    service.signal(libc::SIGTERM);
    let (code, lines) = service.exit_code().await;
    assert_eq!(code, Some(0));
    let log = lines.iter().map(Value::to_string).collect::<String>();
    let signature = id_token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature) && !log.contains(reply["token"].as_str().unwrap()), "no ID token or access token in the log");
    issuer.stop().await;
}

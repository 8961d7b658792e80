//! What a copy of the database directory gives away: no code, no message in clear, and
//! not the key that would let anyone test guesses against the stored code hashes.

use crate::common::*;
use otpgate::domain::otp::OtpHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const FILES: [&str; 3] = ["otpgate.db", "otpgate.db-wal", "otpgate.db-shm"];

/// Every file of the database in `dir` that holds `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<&'static str> {
    FILES
        .into_iter()
        .filter(|name| std::fs::read(dir.join(name)).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

fn assert_nowhere_on_disk(dir: &std::path::Path, needles: &[String], when: &str) {
    for needle in needles {
        let found = files_holding(dir, needle.as_bytes());
        assert!(found.is_empty(), "{when}: {needle:?} is readable in {found:?}");
    }
}

fn phone(n: usize) -> String {
    format!("1800555{n:04}")
}

#[actix_web::test]
async fn no_code_or_message_reaches_the_database_files_in_clear_and_retries_survive_a_restart() {
    if backend::sqlite_only("what the database files hold") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let env = [
        ("OTP_LENGTH", "8"),
        ("OTP_MESSAGE", "Your otpgate code is {otp}"),
        ("OTP_TTL_SECS", "600"),
        ("COURIER_MAX_ATTEMPTS", "50"),
        ("COURIER_RETRY_BASE_MS", "200"),
        ("COURIER_WAIT_MS", "5000"),
    ];
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir.clone(), Delivery::Recording).await;
    for n in 0..10 {
        server.start_login(&phone(n)).await;
    }
    // The provider goes down: these codes stay queued for retries.
    server.sender.fail.store(true, Ordering::SeqCst);
    for n in 10..20 {
        let (status, reply) = server.call(login(&phone(n))).await;
        assert_eq!(status, 200, "{reply}");
    }
    let attempted = server.sender.attempted.lock().unwrap().clone();
    let mut secrets: Vec<String> = attempted.iter().flat_map(|m| [m.otp.clone(), m.text.clone()]).collect();
    secrets.sort();
    secrets.dedup();
    assert_eq!(secrets.len(), 40, "20 codes and their messages");
    let queued: i64 = server.db().query_row("SELECT count(*) FROM courier WHERE status = 'queued'", [], |r| r.get(0)).unwrap();
    assert_eq!(queued, 10, "the undelivered codes are pending");
    assert_nowhere_on_disk(dir.path(), &secrets, "while running");
    // Stopped without closing the database, as a crash leaves it.
    server.stop().await;
    assert_nowhere_on_disk(dir.path(), &secrets, "after a crash");

    // After the restart the courier can still read what it queued, and delivers it.
    let again = TestServer::start_with(&env, FakeUpstream::start(), dir.clone(), Delivery::Recording).await;
    let delivered =
        eventually(60, async || (10..20).all(|n| again.sender.sent.lock().unwrap().iter().any(|m| m.to.as_str() == phone(n)))).await;
    assert!(delivered, "the messages queued before the restart were delivered after it");
    for n in 10..20 {
        let code = again.sender.last_code(&phone(n));
        assert!(secrets.contains(&code), "the code delivered after the restart is the one issued before it");
    }
    let (status, reply) = again.call(verify(&phone(15), &again.sender.last_code(&phone(15)))).await;
    assert_eq!(status, 200, "{reply}");
    assert_nowhere_on_disk(dir.path(), &secrets, "after delivery");
}

#[actix_web::test]
async fn without_otp_secret_the_key_is_a_private_file_beside_the_database() {
    if backend::sqlite_only("the key file beside the SQLite database") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&[], FakeUpstream::start(), dir.clone(), Delivery::Recording).await;
    let key_file = dir.path().join("otpgate.db.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let key = hex::decode(std::fs::read_to_string(&key_file).unwrap().trim()).unwrap();
    assert_eq!(key.len(), 32);

    let code = server.start_login(&phone(1)).await;
    let stored: Vec<u8> = server.db().query_row("SELECT otp_hash FROM otp_challenges", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, OtpHasher::new(&key).hash(&phone(1), &code), "the file's key is the one in use");
    let settings: i64 = server.db().query_row("SELECT count(*) FROM settings WHERE key = 'otp_hash_key'", [], |r| r.get(0)).unwrap();
    assert_eq!(settings, 0);
    assert!(files_holding(dir.path(), &key).is_empty(), "the key is not in the database");
    server.stop().await;

    // The next start reads the same key: the pending code still works.
    let again = TestServer::start_with(&[], FakeUpstream::start(), dir.clone(), Delivery::Recording).await;
    assert_eq!(again.call(verify(&phone(1), &code)).await.0, 200);
}

#[actix_web::test]
async fn an_upgraded_database_loses_its_key_and_its_messages_in_clear_but_no_pending_code() {
    if backend::sqlite_only("upgrading a SQLite database of an earlier release") {
        return;
    }
    const ANN: &str = "18005550001";
    const BOB: &str = "18005550002";
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let old_key = [0x5a_u8; 32];
    let now = otpgate::store::now();
    {
        // A database of a release that kept the key in the settings and queued messages in clear.
        let db = rusqlite::Connection::open(dir.path().join("otpgate.db")).unwrap();
        db.execute_batch(include_str!("fixtures/foundation_schema.sql")).unwrap();
        db.execute_batch(
            "CREATE TABLE courier (id INTEGER PRIMARY KEY, address TEXT NOT NULL, appid TEXT NOT NULL, otp_hash BLOB NOT NULL,
                otp TEXT, body TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                next_attempt_ms INTEGER NOT NULL, expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL);",
        )
        .unwrap();
        db.execute("INSERT INTO settings (key, value) VALUES ('otp_hash_key', ?1)", [&old_key[..]]).unwrap();
        let hasher = OtpHasher::new(&old_key);
        for (address, code) in [(ANN, "11223344"), (BOB, "55667788")] {
            db.execute(
                "INSERT INTO otp_challenges (address, appid, otp_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![address, APPID, &hasher.hash(address, code)[..], now, now + 600],
            )
            .unwrap();
        }
        // Ann's message went out; Bob's waits for a retry.
        db.execute(
            "INSERT INTO courier (address, appid, otp_hash, otp, body, status, next_attempt_ms, expires_at, created_at)
             VALUES (?1, ?2, ?3, '55667788', 'Your otpgate code is 55667788', 'queued', 0, ?4, ?5)",
            rusqlite::params![BOB, APPID, &hasher.hash(BOB, "55667788")[..], now + 600, now],
        )
        .unwrap();
        db.execute(
            "INSERT INTO courier (address, appid, otp_hash, otp, body, status, next_attempt_ms, expires_at, created_at)
             VALUES (?1, ?2, ?3, NULL, NULL, 'sent', 0, ?4, ?5)",
            rusqlite::params![ANN, APPID, &hasher.hash(ANN, "11223344")[..], now + 600, now],
        )
        .unwrap();
        // The text a finished message once had, left in a free page as SQLite leaves it.
        db.execute("INSERT INTO settings (key, value) VALUES ('scratch', 'Your otpgate code is 11223344')", []).unwrap();
        db.execute("DELETE FROM settings WHERE key = 'scratch'", []).unwrap();
    }
    assert!(!files_holding(dir.path(), b"Your otpgate code is 11223344").is_empty(), "the test starts from text in a free page");

    let env = [("OTP_LENGTH", "8"), ("OTP_TTL_SECS", "600"), ("COURIER_MAX_ATTEMPTS", "5")];
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir.clone(), Delivery::Recording).await;
    let key_file = dir.path().join("otpgate.db.key");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), hex::encode(old_key), "the stored key moved to the key file");
    assert!(server.logs().contains(&format!("moved the OTP key out of the database into the key file {}", key_file.display())));
    let settings: i64 = server.db().query_row("SELECT count(*) FROM settings WHERE key = 'otp_hash_key'", [], |r| r.get(0)).unwrap();
    assert_eq!(settings, 0);

    // Bob's queued message is delivered, and both pending codes still verify.
    assert!(eventually(30, async || server.sender.count() == 1).await, "the message queued before the upgrade is delivered");
    assert_eq!(server.sender.last_code(BOB), "55667788");
    assert_eq!(server.call(verify(ANN, "11223344")).await.0, 200);
    assert_eq!(server.call(verify(BOB, "55667788")).await.0, 200);
    server.stop().await;
    for needle in [&old_key[..], b"11223344", b"55667788"] {
        assert!(files_holding(dir.path(), needle).is_empty(), "{:?} is still in the database files", String::from_utf8_lossy(needle));
    }
}

#[actix_web::test]
async fn a_named_key_file_that_is_missing_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("secrets").join("otp.key");
    let vars = [
        ("DATABASE_PATH", dir.path().join("otpgate.db").to_string_lossy().into_owned()),
        ("OTP_SECRET_FILE", missing.to_string_lossy().into_owned()),
    ];
    let config = otpgate::config::Config::from_vars(vars).unwrap();
    let error = otpgate::api::AppState::new(&config, otpgate::delivery::senders::Senders::all(Arc::new(RecordingSender::default())))
        .await
        .err()
        .unwrap();
    assert!(error.contains("OTP_SECRET_FILE") && error.contains("does not exist"), "{error}");
    assert!(!missing.exists(), "no key is made up in its place");

    let both = otpgate::config::Config::from_vars([("OTP_SECRET", "a-long-enough-secret-value"), ("OTP_SECRET_FILE", "/tmp/x")]);
    assert!(both.err().unwrap().contains("OTP_SECRET_FILE and OTP_SECRET are both set"));
}

/// After the README's first command (default settings, run from the checkout) the server
/// secret's key file and the uploaded files must not show up as untracked in `git status`.
#[test]
fn the_default_key_file_and_files_directory_are_ignored_by_git() {
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let in_git = std::process::Command::new("git").arg("-C").arg(checkout).args(["rev-parse", "--git-dir"]).output();
    if !in_git.is_ok_and(|out| out.status.success()) {
        eprintln!("skipped: git is not installed, or {} is not a git checkout", checkout.display());
        return;
    }
    let config = otpgate::config::Config::from_vars(Vec::<(String, String)>::new()).unwrap();
    let key_file = otpgate::domain::keys::default_key_file(&config.database.path);
    let uploaded = config.files_directory().join("3f2a9c.jpg");
    for path in [key_file, uploaded] {
        // --no-index: the verdict of .gitignore alone, even for a path someone committed.
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(checkout)
            .args(["check-ignore", "-q", "--no-index", "--"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "{} is not ignored by .gitignore: `git status` would offer it for a commit", path.display());
    }
}

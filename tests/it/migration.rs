//! A database created by the foundation release (schema kept in
//! `tests/fixtures/foundation_schema.sql`) upgrades in place: users, their last
//! token and pending codes survive.

use crate::common::*;
use otpgate::domain::otp::OtpHasher;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

const ANN: &str = "18005550001";
const BOB: &str = "18005550002";
const SECRET: &str = "migration-test-secret";

#[actix_web::test]
async fn a_foundation_database_upgrades_without_losing_users_or_codes() {
    if backend::sqlite_only("the SQLite schema's migrations") {
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let now = otpgate::store::now();
    {
        let db = rusqlite::Connection::open(dir.path().join("otpgate.db")).unwrap();
        db.execute_batch(include_str!("fixtures/foundation_schema.sql")).unwrap();
        db.execute(
            "INSERT INTO users (address, uid, name, created_at, last_login, token_sha256) VALUES (?1, '1001', 'Ann Old', ?2, ?2, ?3)",
            rusqlite::params![ANN, now - 100, hex::encode(Sha256::digest(b"legacy-token"))],
        )
        .unwrap();
        let otp_hash = OtpHasher::new(SECRET.as_bytes()).hash(BOB, "123456");
        db.execute(
            "INSERT INTO otp_challenges (address, appid, otp_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![BOB, APPID, &otp_hash[..], now, now + 300],
        )
        .unwrap();
    }

    let env = [("OTP_SECRET", SECRET)];
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir.clone(), Delivery::Recording).await;
    let version: u32 = server.db().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, otpgate::store::sqlite::schema::latest_version());

    // Ann's last token from the foundation release is still a session.
    let me = assert_ok(server.call_op("me", "legacy-token", json!({})).await);
    assert_eq!((&me["profile"]["name"], &me["profile"]["uid"], &me["profile"]["phone"]), (&json!("Ann Old"), &json!("1001"), &json!(ANN)));
    let ann_id: i64 = server.db().query_row("SELECT id FROM users WHERE address = ?1", [ANN], |r| r.get(0)).unwrap();

    // Bob's pending code still works.
    let (status, reply) = server.call(verify(BOB, "123456")).await;
    assert_eq!(status, 200, "{reply}");
    let bob = reply["token"].as_str().unwrap().to_string();
    assert_ok(server.call_op("getcontacts", &bob, json!({ "phones": [ANN] })).await);
    server.stop().await;

    // Opening the upgraded database again changes nothing; Ann keeps her id on a new login.
    let again = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Recording).await;
    assert_ok(again.call_op("me", "legacy-token", json!({})).await);
    let contacts = assert_ok(again.call_op("getcontacts", &bob, json!({})).await);
    assert_eq!(contacts["contacts"][0]["phone"], ANN);
    again.log_in(ANN, None).await;
    let id_after: i64 = again.db().query_row("SELECT id FROM users WHERE address = ?1", [ANN], |r| r.get(0)).unwrap();
    assert_eq!(id_after, ann_id);
    let users: i64 = again.db().query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    assert_eq!(users, 2);
}

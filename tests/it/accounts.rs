//! Deleting an account: every row and file of the user goes, the platform is told
//! (retried until it takes it), and nobody else's data changes.

use crate::common::*;
use serde_json::{json, Value};
use std::io::Cursor;

const ANN: &str = "18005550001";
const BOB: &str = "18005550002";
const DAN: &str = "18005550004"; // never logs in

fn photo() -> Vec<u8> {
    let image = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 77]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    jpeg
}

/// Every file under `dir` named `name`.
fn files_named(dir: &std::path::Path, name: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { files_named(&path, name) } else { usize::from(path.file_name().unwrap() == name) })
        .sum()
}

#[actix_web::test]
async fn a_user_deletes_their_account_and_nothing_of_theirs_is_left() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, Some("ann-phone")).await;
    let bob = server.log_in(BOB, None).await;
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, DAN] })).await);
    assert_ok(server.call_op("getcontacts", &bob, json!({ "phones": [ANN] })).await);
    assert_ok(server.call_op("setnotify", &ann, json!({ "notifytoken": "ann-push" })).await);
    let group = assert_ok(server.call_op("setgroup", &bob, json!({ "gid": 0, "name": "Hikers", "m": ANN })).await);
    let (content_type, body) = crate::files::multipart(&[("op", "upload"), ("token", &ann), ("profile", "1")], Some(("me.jpg", &photo())));
    let (status, uploaded) =
        server.send(server.client().post(format!("{}/api", server.url)).header("content-type", content_type).body(body)).await;
    assert_eq!(status, 200, "{uploaded}");
    let photo_name = uploaded["photo"].as_str().unwrap().to_string();
    assert_eq!(files_named(server.dir.path(), &photo_name), 1);
    let ann_id = server.scalar(&format!("SELECT id FROM users WHERE address = '{ANN}'"));

    // A token alone does not delete: a fresh code must come with it.
    assert_error(&server.call_op("deleteaccount", &ann, json!({ "appid": APPID })).await, 400, "BADPARAM");
    let code = server.start_login(ANN).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_error(&server.call_op("deleteaccount", &ann, json!({ "appid": APPID, "otp": wrong })).await, 401, "BADCODE");
    assert_error(&server.call_op("deleteaccount", "not-a-token", json!({ "appid": APPID, "otp": code })).await, 401, "AUTHFAIL");
    assert_eq!(server.scalar(&format!("SELECT count(*) FROM users WHERE address = '{ANN}'")), 1, "nothing was deleted yet");
    assert_ok(server.call_op("deleteaccount", &ann, json!({ "appid": APPID, "otp": code })).await);

    for (what, sql) in [
        ("user", format!("SELECT count(*) FROM users WHERE address = '{ANN}'")),
        ("sessions and push tokens", format!("SELECT count(*) FROM sessions WHERE user_id = {ann_id}")),
        ("address book", format!("SELECT count(*) FROM contacts WHERE owner_id = {ann_id}")),
        ("group membership", format!("SELECT count(*) FROM group_members WHERE phone = '{ANN}'")),
        ("pending codes", format!("SELECT count(*) FROM otp_challenges WHERE address = '{ANN}'")),
        ("delivery records", format!("SELECT count(*) FROM courier WHERE address = '{ANN}'")),
    ] {
        assert_eq!(server.scalar(&sql), 0, "Ann's {what} is left");
    }
    assert_eq!(files_named(server.dir.path(), &photo_name), 0, "the photo file is gone");
    let ann_hash = server.state.db.phone_hash(ANN);
    assert_eq!(server.scalar(&format!("SELECT count(*) FROM contacts WHERE phone_hash = {ann_hash}")), 1, "Bob's address book keeps Ann");
    let (_, kept) = server.call_op("getgroup", &bob, json!({ "gid": group["gid"] })).await;
    assert!(!kept["members"].as_str().unwrap().contains(ANN), "{kept}");

    assert!(eventually(30, async || server.upstream.userdel_calls().len() == 1).await, "the platform is told");
    let userdel = &server.upstream.userdel_calls()[0];
    assert_eq!((&userdel["user"]["address"], &userdel["user"]["uid"]), (&json!(ANN), &json!("1001")), "{userdel}");
    assert_error(&server.call_op("me", &ann, json!({})).await, 401, "AUTHFAIL");

    // The phone can sign up again, as a new user.
    let again = server.log_in(ANN, None).await;
    let me: Value = assert_ok(server.call_op("me", &again, json!({})).await);
    assert_eq!(me["profile"]["photo"], "");
    assert!(server.scalar(&format!("SELECT id FROM users WHERE address = '{ANN}'")) > ann_id);
}

#[actix_web::test]
async fn the_platform_is_asked_to_delete_the_user_until_it_takes_it() {
    let server = TestServer::start(&[("OUTBOX_RETRY_SECS", "1")]).await;
    let ann = server.log_in(ANN, None).await;
    server.upstream.fail_messages(true);
    let code = server.start_login(ANN).await;
    assert_ok(server.call_op("deleteaccount", &ann, json!({ "appid": APPID, "otp": code })).await);
    assert!(eventually(30, async || server.upstream.userdel_calls().len() >= 2).await, "a refused userdel is tried again");
    assert_eq!(server.scalar("SELECT count(*) FROM outbox WHERE kind = 'userdel'"), 1, "and kept until taken");

    // The same phone signs up and deletes again meanwhile: both users are deleted upstream.
    let again = server.log_in(ANN, None).await;
    let code = server.start_login(ANN).await;
    assert_ok(server.call_op("deleteaccount", &again, json!({ "appid": APPID, "otp": code })).await);
    assert_eq!(server.scalar("SELECT count(*) FROM outbox WHERE kind = 'userdel'"), 2);
    server.upstream.fail_messages(false);
    assert!(
        eventually(30, async || server.scalar("SELECT count(*) FROM outbox WHERE kind = 'userdel'") == 0).await,
        "taken, it is not sent again"
    );
    let mut taken: Vec<Value> = server.upstream.userdel_calls().iter().map(|call| call["user"]["uid"].clone()).collect();
    taken.dedup();
    assert!(taken.contains(&json!("1001")) && taken.contains(&json!("1002")), "{taken:?}");
}

#[actix_web::test]
async fn security_events_are_kept_per_address_and_dropped_after_their_retention() {
    let server = TestServer::start(&[("OTP_MAX_ATTEMPTS", "2")]).await;
    let code = server.start_login(ANN).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_error(&server.call(verify(ANN, wrong)).await, 401, "BADCODE");
    assert_error(&server.call(verify(ANN, wrong)).await, 401, "TOOMANYATTEMPTS");
    server.log_in(ANN, None).await;
    server.sender.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_error(&server.call(login(BOB)).await, 502, "SENDFAILED");

    let events: Vec<(String, String)> =
        server.state.db.audit_events(ANN).await.unwrap().iter().map(|e| (e.event.clone(), e.detail.clone())).collect();
    let expected = [("login", APPID), ("locked_out", "too_many_attempts"), ("login_failed", "wrong")];
    assert_eq!(events, expected.map(|(event, detail)| (event.to_string(), detail.to_string())), "newest first");
    let bob = server.state.db.audit_events(BOB).await.unwrap();
    assert_eq!((bob[0].event.as_str(), bob[0].detail.as_str()), ("delivery_failed", "recording"), "{bob:?}");
    assert_eq!(server.scalar(&format!("SELECT count(*) FROM audit_events WHERE detail LIKE '%{ANN}%'")), 0);

    // Past AUDIT_RETENTION_DAYS (90 by default) an event goes at the next housekeeping.
    let now = otpgate::store::now();
    let ann_hash = server.state.db.phone_hash(ANN);
    server.execute(&format!(
        "INSERT INTO audit_events (at, address_hash, event, detail) VALUES ({}, {ann_hash}, 'login', 'old'), ({}, {ann_hash}, 'login', 'recent')",
        now - 91 * 86_400,
        now - 89 * 86_400
    ));
    server.state.housekeeping().await.unwrap();
    let details: Vec<String> = server.state.db.audit_events(ANN).await.unwrap().into_iter().map(|e| e.detail).collect();
    assert!(details.iter().any(|d| d == "recent") && !details.iter().any(|d| d == "old"), "{details:?}");
    assert_eq!(details.len(), 4);
}

#[actix_web::test]
async fn a_deleted_account_leaves_nothing_readable_in_the_database_files() {
    if backend::sqlite_only("the bytes of the SQLite files") {
        return;
    }
    const MAIL: &str = "ann.quartz@example.com";
    const NAME: &str = "Annabel Quartzfield";
    const STATUS: &str = "climbing the Zugspitze";
    const PUSH: &str = "fcm-push-token-5d8e71c0a2";
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    assert_ok(server.call_op("profile", &ann, json!({ "name": NAME, "status": STATUS })).await);
    assert_ok(server.call_op("setnotify", &ann, json!({ "notifytoken": PUSH })).await);
    assert_ok(server.call(json!({ "op": "login", "appid": APPID, "email": MAIL })).await);
    let code = server.sender.last_code(MAIL);
    assert_ok(server.call_op("link", &ann, json!({ "appid": APPID, "email": MAIL, "otp": code })).await);
    let needles = [ANN, MAIL, NAME, STATUS, PUSH];
    let holding = |needle: &str| -> Vec<&'static str> {
        ["otpgate.db", "otpgate.db-wal"]
            .into_iter()
            .filter(|file| {
                std::fs::read(server.dir.path().join(file)).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            })
            .collect()
    };
    assert!(needles.iter().all(|needle| !holding(needle).is_empty()), "the fixture is on disk before the deletion");

    let code = server.start_login(ANN).await;
    assert_ok(server.call_op("deleteaccount", &ann, json!({ "appid": APPID, "otp": code })).await);
    // The queued userdel names the addresses until the platform takes it.
    assert!(eventually(30, async || server.scalar("SELECT count(*) FROM outbox") == 0).await, "both userdels are taken");
    let db = server.db();
    let checkpointed =
        eventually(30, async || db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).unwrap() == 0).await;
    assert!(checkpointed, "the WAL is copied into the database file");
    for needle in needles {
        assert_eq!(holding(needle), Vec::<&str>::new(), "{needle:?} is still readable");
    }
}

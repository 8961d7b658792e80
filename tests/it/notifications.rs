//! Notices to the apps: "contact joined" with a first login and a refresh with each
//! profile change, sent once per contact through upstream `message` in the shape the
//! 2021 apps read (a transient type-1 message whose text is the profile), retried
//! after failures and restarts.

use crate::common::*;
use serde_json::{json, Value};
use std::sync::Arc;

const ANN: &str = "18005550001";
const BOB: &str = "18005550002";
const CAT: &str = "18005550003";
const NEW: &str = "18005550009";

/// Ann and Bob are users with NEW (and the user Cat) in their contacts; Cat has no contacts.
async fn contacts_waiting_for_new(server: &TestServer) {
    server.log_in(CAT, None).await;
    for phone in [ANN, BOB] {
        let token = server.log_in(phone, None).await;
        assert_ok(server.call_op("getcontacts", &token, json!({ "phones": [NEW, CAT] })).await);
    }
}

/// The JSON text of a notice, as the apps parse it.
pub fn notice_text(message: &Value) -> Value {
    serde_json::from_str(message["msg"].as_str().expect("msg is the notice's text")).expect("the text is JSON")
}

fn recipients(messages: &[Value]) -> Vec<String> {
    let mut to: Vec<String> = messages.iter().map(|m| m["to"].as_str().unwrap().to_string()).collect();
    to.sort();
    to
}

#[actix_web::test]
async fn a_first_login_tells_each_contact_once() {
    let server = TestServer::start(&[("SYSTEM_ADDRESS", "otpgate-bot")]).await;
    contacts_waiting_for_new(&server).await;
    assert!(server.upstream.messages().is_empty(), "existing users' logins notify nobody");

    server.log_in(NEW, None).await;
    assert!(eventually(30, async || server.upstream.messages().len() >= 2).await, "both contacts are told");
    let messages = server.upstream.messages();
    assert_eq!(recipients(&messages), [ANN, BOB]);
    for message in &messages {
        assert_eq!(message["token"], APP_TOKEN);
        assert_eq!(message["from"], "otpgate-bot");
        assert_eq!((&message["type"], &message["flag"], &message["expiry"]), (&json!(1), &json!(4), &json!(3600)), "{message}");
        let body = notice_text(message);
        assert_eq!(
            (&body["subject"], &body["phone"], &body["name"], &body["gid"]),
            (&json!("%NAME% has joined"), &json!(NEW), &json!("Ann"), &json!(0))
        );
        assert!(body["ts"].as_i64().is_some(), "{body}");
    }

    // A second login is not a first login; nothing is sent again.
    server.log_in(NEW, Some("tablet")).await;
    // Notices are queued in the login's own transaction: with the outbox empty, none is on its way.
    let queued = || server.scalar("SELECT count(*) FROM outbox");
    assert!(eventually(30, async || queued() == 0).await, "acknowledged messages leave the outbox");
    assert_eq!(server.upstream.messages().len(), 2);
}

#[actix_web::test]
async fn a_failed_notification_is_retried_and_survives_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let upstream = FakeUpstream::start();
    let env = [("OUTBOX_RETRY_SECS", "1")];
    let first = TestServer::start_with(&env, upstream.clone(), dir.clone(), Delivery::Recording).await;
    contacts_waiting_for_new(&first).await;
    upstream.fail_messages(true);
    first.log_in(NEW, None).await;
    // Stop only once both failures are recorded (a stop mid-send leaves a lease to run out).
    let failed = || first.scalar("SELECT count(*) FROM outbox WHERE attempts >= 1");
    assert!(eventually(30, async || failed() == 2).await, "both sends were tried");
    first.stop().await;
    let tried = upstream.messages().len();
    let (queued, attempts) = (first.scalar("SELECT count(*) FROM outbox"), first.scalar("SELECT min(attempts) FROM outbox"));
    assert_eq!(queued, 2, "failed messages stay queued");
    assert!(attempts >= 1);

    // Upstream recovers while the service is down; the restarted service sends the queue.
    upstream.fail_messages(false);
    let second = TestServer::start_with(&env, upstream.clone(), dir.clone(), Delivery::Recording).await;
    assert!(eventually(30, async || upstream.messages().len() >= tried + 2).await, "the queue is sent after the restart");
    assert!(eventually(30, async || second.scalar("SELECT count(*) FROM outbox") == 0).await);
    let delivered = upstream.messages().len();
    assert_eq!(recipients(&upstream.messages()[tried..]), [ANN, BOB]);
    second.stop().await;

    // Acknowledged messages are never sent again, not even after another restart.
    let third = TestServer::start_with(&env, upstream.clone(), dir, Delivery::Recording).await;
    let queued = third.scalar("SELECT count(*) FROM outbox");
    assert_eq!(queued, 0, "nothing is left to send");
    assert_eq!(upstream.messages().len(), delivered);
    third.stop().await;
}

#[actix_web::test]
async fn a_failed_notification_is_retried_until_upstream_takes_it() {
    let server = TestServer::start(&[("OUTBOX_RETRY_SECS", "1")]).await;
    contacts_waiting_for_new(&server).await;
    server.upstream.fail_messages(true);
    server.log_in(NEW, None).await;
    assert!(eventually(30, async || server.upstream.messages().len() >= 2).await, "both sends were tried");
    server.upstream.fail_messages(false);
    let outbox = || server.scalar("SELECT count(*) FROM outbox");
    assert!(eventually(30, async || outbox() == 0).await, "the retries went through");
    let messages = server.upstream.messages();
    assert!(messages.len() >= 4, "{messages:?}");
    assert_eq!(recipients(&messages[messages.len() - 2..]), [ANN, BOB]);
    assert!(server.logs().contains("outbox: upstream message failed, retrying in"), "failures are logged");
    assert!(!logs().contains(APP_TOKEN));
}

#[actix_web::test]
async fn shutdown_waits_for_a_notification_in_flight() {
    let server = TestServer::start(&[]).await;
    contacts_waiting_for_new(&server).await;
    // Upstream is slow to answer from now on; shutdown comes while the first notice is under way.
    server.upstream.set_mode(Mode::Slow(std::time::Duration::from_millis(800)));
    server.log_in(NEW, None).await;
    assert!(eventually(30, async || !server.upstream.messages().is_empty()).await, "a notice is being sent");
    server.state.shutdown(std::time::Duration::from_secs(5)).await;
    // It was recorded as delivered before the database closed, and no other was started.
    assert_eq!(server.upstream.messages().len(), 1);
    let left: Vec<String> = server.column("SELECT recipient FROM outbox");
    assert_eq!(left.len(), 1, "the other notice waits for the next start");
    assert_ne!(left[0], server.upstream.messages()[0]["to"].as_str().unwrap());
}

#[actix_web::test]
async fn a_profile_change_refreshes_the_profile_in_the_apps_of_its_contacts() {
    let server = TestServer::start(&[]).await;
    contacts_waiting_for_new(&server).await;
    let new = server.log_in(NEW, None).await;
    assert!(eventually(30, async || server.upstream.messages().len() >= 2).await, "the joined notices");
    assert_ok(server.call_op("profile", &new, json!({ "status": "on holiday" })).await);
    assert!(eventually(30, async || server.upstream.messages().len() >= 4).await, "both contacts are told of the change");
    let changes: Vec<Value> = server.upstream.messages().into_iter().skip(2).collect();
    assert_eq!(recipients(&changes), [ANN, BOB]);
    for change in &changes {
        let body = notice_text(change);
        assert_eq!((&body["subject"], &body["phone"], &body["status"]), (&json!(""), &json!(NEW), &json!("on holiday")), "{body}");
    }
}

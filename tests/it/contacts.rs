//! Contact sync and profiles over HTTP: first upload, incremental sync by ts,
//! reset, delete, paging, limits, and profile changes reaching contacts.

use crate::common::*;
use serde_json::{json, Value};

const ANN: &str = "18005550001";
const BOB: &str = "18005550002";
const CAT: &str = "18005550003";
const DAN: &str = "18005550004"; // never logs in in most tests

fn phones_of(reply: &Value) -> Vec<String> {
    let mut phones: Vec<String> = reply["contacts"].as_array().unwrap().iter().map(|c| c["phone"].as_str().unwrap().to_string()).collect();
    phones.sort();
    phones
}

/// Moves every user's last change `secs` into the past, as if they joined earlier.
fn age_users(server: &TestServer, secs: i64) {
    server.execute(&format!("UPDATE users SET ts = ts - {secs}"));
}

#[actix_web::test]
async fn an_upload_answers_the_users_among_the_phones_and_nothing_else() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    server.log_in(BOB, None).await;
    server.log_in(CAT, None).await;
    let upload = json!({ "phones": format!("+1 800 555 0002, {CAT},{DAN}, {ANN}, 12345, not-a-phone") });
    let reply = assert_ok(server.call_op("getcontacts", &ann, upload).await);
    assert_eq!(phones_of(&reply), [BOB, CAT], "users only, never the caller: {reply}");
    assert_eq!(reply["invalid"], 2);
    assert_eq!(reply["more"], false);
    assert!(reply["ts"].as_i64().unwrap() > 1_700_000_000);
    let bob = &reply["contacts"].as_array().unwrap().iter().find(|c| c["phone"] == BOB).unwrap();
    assert_eq!(bob["name"], "Ann"); // every test user logs in with the name Ann
    assert_eq!(bob["status"], "");
    assert_eq!(bob["photo"], "");
    assert!(bob["ts"].as_i64().is_some());
    assert!(bob.get("uid").is_none() && bob.get("token").is_none());

    // A JSON array works too, and old users are answered whatever their ts.
    age_users(&server, 1000);
    let now = reply["ts"].as_i64().unwrap();
    let again = assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, DAN], "ts": now })).await);
    assert_eq!(phones_of(&again), [BOB]);
}

#[actix_web::test]
async fn a_sync_without_phones_answers_contacts_changed_since_ts() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    let bob = server.log_in(BOB, None).await;
    server.log_in(CAT, None).await;
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT, DAN] })).await);
    let everything = assert_ok(server.call_op("getcontacts", &ann, json!({})).await);
    assert_eq!(phones_of(&everything), [BOB, CAT], "ts defaults to 0");

    age_users(&server, 1000);
    let first = assert_ok(server.call_op("getcontacts", &ann, json!({ "ts": 0 })).await);
    let since = first["ts"].as_i64().unwrap();
    let quiet = assert_ok(server.call_op("getcontacts", &ann, json!({ "ts": since })).await);
    assert_eq!(phones_of(&quiet), Vec::<String>::new(), "nothing changed: {quiet}");

    // Bob changes his profile; Dan joins. Both show up in Ann's next sync, Cat does not.
    assert_ok(server.call_op("profile", &bob, json!({ "name": "Bob", "status": "at work" })).await);
    server.log_in(DAN, None).await;
    let changed = assert_ok(server.call_op("getcontacts", &ann, json!({ "ts": since })).await);
    assert_eq!(phones_of(&changed), [BOB, DAN]);
    let bob_entry = changed["contacts"].as_array().unwrap().iter().find(|c| c["phone"] == BOB).unwrap();
    assert_eq!((&bob_entry["name"], &bob_entry["status"]), (&json!("Bob"), &json!("at work")));
    assert!(bob_entry["ts"].as_i64().unwrap() >= since);
}

#[actix_web::test]
async fn reset_and_delete_forget_contacts() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    server.log_in(BOB, None).await;
    server.log_in(CAT, None).await;
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT] })).await);

    let reset = assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB], "reset": 1 })).await);
    assert_eq!(phones_of(&reset), [BOB]);
    let all = assert_ok(server.call_op("getcontacts", &ann, json!({})).await);
    assert_eq!(phones_of(&all), [BOB], "Cat was forgotten by the reset");

    let deleted = assert_ok(server.call_op("delcontacts", &ann, json!({ "phones": format!("{BOB},junk") })).await);
    assert_eq!((&deleted["removed"], &deleted["invalid"]), (&json!(1), &json!(1)));
    let none = assert_ok(server.call_op("getcontacts", &ann, json!({})).await);
    assert_eq!(phones_of(&none), Vec::<String>::new());
    assert_error(&server.call_op("delcontacts", &ann, json!({})).await, 400, "BADPARAM");
}

#[actix_web::test]
async fn large_answers_come_in_pages_of_1000() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    let phones: Vec<String> = (0..1005).map(|i| format!("1900555{i:04}")).collect();
    let rows: Vec<String> = phones
        .iter()
        .enumerate()
        .map(|(i, phone)| format!("('{phone}', {}, '{phone}', 'u', 1, 1, {})", server.state.db.phone_hash(phone), 1_000_000 + (i % 7)))
        .collect();
    server.execute(&format!("INSERT INTO users (address, address_hash, uid, name, created_at, last_login, ts) VALUES {}", rows.join(", ")));
    let first = assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": phones })).await);
    assert_eq!(first["contacts"].as_array().unwrap().len(), 1000);
    assert_eq!(first["more"], true);
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let second = assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": phones, "cursor": cursor })).await);
    assert_eq!(second["contacts"].as_array().unwrap().len(), 5);
    assert_eq!(second["more"], false);
    assert!(second.get("cursor").is_none());
    assert_eq!(second["ts"], first["ts"], "the next sync starts from the first page's time");
    let mut seen: Vec<String> = phones_of(&first).into_iter().chain(phones_of(&second)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, phones, "every user exactly once across the pages");

    // The same pages without phones, from the recorded contacts.
    let stored = assert_ok(server.call_op("getcontacts", &ann, json!({})).await);
    assert_eq!((stored["contacts"].as_array().unwrap().len(), &stored["more"]), (1000, &json!(true)));
    assert_error(&server.call_op("getcontacts", &ann, json!({ "cursor": "nonsense" })).await, 400, "BADPARAM");
}

#[actix_web::test]
async fn address_books_keep_no_phone_only_its_keyed_hash() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    let bob = server.log_in(BOB, None).await;
    let reply = assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [DAN, BOB] })).await);
    assert_eq!(phones_of(&reply), [BOB]);
    let dan = server.state.db.phone_hash(DAN);
    assert_eq!(server.scalar(&format!("SELECT count(*) FROM contacts WHERE phone_hash = {dan}")), 1, "Dan is stored as his hash");
    let text_columns = if backend::on_postgres() {
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'contacts' AND data_type = 'text'"
    } else {
        "SELECT count(*) FROM pragma_table_info('contacts') WHERE type = 'TEXT'"
    };
    assert_eq!(server.scalar(text_columns), 0, "no column could hold a phone");

    // Matching by hash finds Bob's later changes and, once he joins, Dan.
    assert_ok(server.call_op("profile", &bob, json!({ "status": "new" })).await);
    let changed = assert_ok(server.call_op("getcontacts", &ann, json!({ "ts": reply["ts"] })).await);
    assert_eq!(phones_of(&changed), [BOB]);
    server.log_in(DAN, None).await;
    let all = assert_ok(server.call_op("getcontacts", &ann, json!({})).await);
    let mut phones = phones_of(&all);
    phones.sort();
    assert_eq!(phones, [BOB, DAN]);
    assert_eq!(server.call_op("delcontacts", &ann, json!({ "phones": [DAN] })).await.1["removed"], 1);
    assert_eq!(stored_contacts(&server), 1);
}

#[actix_web::test]
async fn too_many_phones_are_refused() {
    let server = TestServer::start(&[("MAX_CONTACTS_PER_REQUEST", "3")]).await;
    let ann = server.log_in(ANN, None).await;
    let four = json!({ "phones": [BOB, CAT, DAN, "18005550005"] });
    assert_error(&server.call_op("getcontacts", &ann, four.clone()).await, 413, "TOOMANY");
    assert_error(&server.call_op("delcontacts", &ann, four).await, 413, "TOOMANY");
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT, DAN] })).await);
    assert_error(&server.call_op("getcontacts", &ann, json!({ "ts": "yesterday" })).await, 400, "BADPARAM");
    assert_error(&server.call_op("getcontacts", &ann, json!({ "phones": "[1," })).await, 400, "BADPARAM");
}

#[actix_web::test]
async fn a_full_address_book_fits_in_one_request() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    // 5000 (the default MAX_CONTACTS_PER_REQUEST) phones as address books format them.
    let book: Vec<String> = (0..5001).map(|i| format!("+1 (900) 555-{i:04}")).collect();
    let reply = assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": book[..5000] })).await);
    assert_eq!((&reply["invalid"], &reply["more"]), (&json!(0), &json!(false)));
    let stored = server.scalar("SELECT count(*) FROM contacts");
    assert_eq!(stored, 5000);
    assert_error(&server.call_op("getcontacts", &ann, json!({ "phones": book })).await, 413, "TOOMANY");
}

#[actix_web::test]
async fn profile_changes_show_in_me_and_are_validated() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(ANN, None).await;
    let me = assert_ok(server.call_op("me", &ann, json!({})).await);
    assert_eq!(me["profile"]["phone"], ANN);
    assert_eq!(me["profile"]["name"], "Ann");
    assert_eq!(me["profile"]["uid"], "1001");
    let before = me["profile"]["ts"].as_i64().unwrap();

    let changed =
        assert_ok(server.call_op("profile", &ann, json!({ "status": "  hiking 🏔  ", "photo": "https://example.com/a.jpg" })).await);
    assert_eq!(changed["profile"]["status"], "hiking 🏔", "trimmed, UTF-8 kept");
    assert_eq!(changed["profile"]["name"], "Ann", "unchanged fields stay");
    assert!(changed["profile"]["ts"].as_i64().unwrap() >= before);
    let me = assert_ok(server.call_op("me", &ann, json!({})).await);
    assert_eq!(me["profile"], changed["profile"]);

    for bad in [
        json!({ "name": "n".repeat(65) }),
        json!({ "status": "é".repeat(141) }),
        json!({ "photo": "javascript:alert(1)" }),
        json!({ "name": "a\u{0}b" }),
        json!({}),
    ] {
        assert_error(&server.call_op("profile", &ann, bad).await, 400, "BADPARAM");
    }
    assert_ok(server.call_op("profile", &ann, json!({ "name": "n".repeat(64), "status": "é".repeat(140) })).await);
}

fn stored_contacts(server: &TestServer) -> i64 {
    server.scalar("SELECT count(*) FROM contacts")
}

#[actix_web::test]
async fn a_user_keeps_at_most_max_contacts_per_user() {
    let server = TestServer::start(&[("MAX_CONTACTS_PER_USER", "3")]).await;
    let ann = server.log_in(ANN, None).await;
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT] })).await);
    let refused = server.call_op("getcontacts", &ann, json!({ "phones": [DAN, "18005550005"] })).await;
    assert_error(&refused, 413, "TOOMANY");
    assert!(refused.1.get("contacts").is_none(), "a refused upload learns nothing: {}", refused.1);
    assert_eq!(stored_contacts(&server), 2, "nothing of it was stored");
    // Known numbers do not count twice; a reset counts only what it uploads.
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT, DAN] })).await);
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": ["18005550005", "18005550006", "18005550007"], "reset": true })).await);
    assert_eq!(stored_contacts(&server), 3);
}

/// A user's contacts as counted for the limit, checked against their rows.
fn counted_contacts(server: &TestServer, user: &str) -> i64 {
    let counted = server.scalar(&format!("SELECT contact_count FROM users WHERE address = '{user}'"));
    assert_eq!(
        counted,
        server.scalar(&format!("SELECT count(*) FROM contacts c JOIN users u ON u.id = c.owner_id WHERE u.address = '{user}'"))
    );
    counted
}

#[actix_web::test]
async fn the_contact_limit_counts_what_delcontacts_and_reset_removed() {
    let server = TestServer::start(&[("MAX_CONTACTS_PER_USER", "3")]).await;
    let ann = server.log_in(ANN, None).await;
    let would_make_4 = |reply: &(u16, Value)| {
        assert_error(reply, 413, "TOOMANY");
        assert!(reply.1["errmsg"].as_str().unwrap().contains("this upload would make 4;"), "{}", reply.1);
    };
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT, DAN] })).await);
    would_make_4(&server.call_op("getcontacts", &ann, json!({ "phones": ["18005550005"] })).await);
    assert_eq!(counted_contacts(&server, ANN), 3, "a refused upload is not counted");
    assert_eq!(server.call_op("delcontacts", &ann, json!({ "phones": [BOB, "18005550009"] })).await.1["removed"], 1);
    assert_eq!(counted_contacts(&server, ANN), 2);
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": ["18005550005"] })).await);
    would_make_4(&server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT] })).await);
    // A reset forgets the book; one without phones empties it.
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB], "reset": true })).await);
    assert_eq!(counted_contacts(&server, ANN), 1);
    assert_ok(server.call_op("getcontacts", &ann, json!({ "reset": true })).await);
    assert_eq!(counted_contacts(&server, ANN), 0);
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT, DAN] })).await);
    would_make_4(&server.call_op("getcontacts", &ann, json!({ "phones": [BOB, "18005550005"] })).await);
    assert_eq!(counted_contacts(&server, ANN), 3);
}

#[actix_web::test]
async fn new_numbers_are_limited_per_user_per_day_and_known_ones_cost_nothing() {
    let server = TestServer::start(&[("LIMIT_NEW_CONTACTS_PER_USER_PER_DAY", "3")]).await;
    let ann = server.log_in(ANN, None).await;
    let bob = server.log_in(BOB, None).await;
    for _ in 0..5 {
        assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT, DAN] })).await);
    }
    // A reset with the same book costs nothing either.
    assert_ok(server.call_op("getcontacts", &ann, json!({ "phones": [BOB, CAT, DAN], "reset": true })).await);
    let (status, headers, reply) = server
        .send_full(server.client().post(server.api()).json(&json!({ "op": "getcontacts", "token": ann, "phones": ["18005550005"] })))
        .await;
    assert_error(&(status, reply.clone()), 429, "RATELIMIT");
    let retry_after = reply["retry_after"].as_u64().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{reply}");
    assert_eq!(headers["retry-after"].to_str().unwrap(), retry_after.to_string());
    assert!(reply.get("contacts").is_none());
    // Deleting and uploading again makes a number new again.
    assert_ok(server.call_op("delcontacts", &ann, json!({ "phones": [DAN] })).await);
    assert_error(&server.call_op("getcontacts", &ann, json!({ "phones": [DAN] })).await, 429, "RATELIMIT");
    // Each user has a budget of their own; more than a whole day's budget at once never fits.
    assert_ok(server.call_op("getcontacts", &bob, json!({ "phones": [ANN] })).await);
    let four = json!({ "phones": ["18005550011", "18005550012", "18005550013", "18005550014"] });
    let cat = server.log_in(CAT, None).await;
    assert_error(&server.call_op("getcontacts", &cat, four).await, 413, "TOOMANY");
}

#[actix_web::test]
async fn new_numbers_are_limited_per_client_ip_over_all_its_users() {
    let server = TestServer::start(&[("LIMIT_NEW_CONTACTS_PER_IP_PER_DAY", "4")]).await;
    let ann = server.log_in(ANN, None).await;
    let bob = server.log_in(BOB, None).await;
    let upload = |token: &str, phones: Value| json!({ "op": "getcontacts", "token": token, "phones": phones });
    assert_ok(server.call_from("127.0.0.1", upload(&ann, json!([BOB, CAT, DAN]))).await);
    let refused = server.call_from("127.0.0.1", upload(&bob, json!([ANN, CAT]))).await;
    assert_error(&refused, 429, "RATELIMIT");
    assert!(refused.1["retry_after"].as_u64().is_some_and(|s| s > 0));
    assert_ok(server.call_from("127.0.0.2", upload(&bob, json!([ANN, CAT]))).await);
    assert_ok(server.call_from("127.0.0.1", upload(&ann, json!([BOB, CAT, DAN]))).await);
}

//! Groups as the 2021 apps use them: form posts to /messenger/api.php in the mesibo
//! dialect, each reply field checked with the JSON type the apps read; the checks and
//! error codes of the reference; every change mirrored to the platform first, with
//! nothing changed when it refuses; members told through the durable outbox.

use crate::common::*;
use serde_json::{json, Value};
use std::sync::Arc;

const ANN: &str = "18005550701";
const BOB: &str = "18005550702";
const CAT: &str = "18005550703";
/// Not a user: groups keep members by phone all the same.
const DAN: &str = "18005550704";
const EVE: &str = "18005550705";

/// One user of a 2021 app: form posts with the token, as `postBundle` sends them.
struct App2021<'a> {
    server: &'a TestServer,
    token: String,
}

impl<'a> App2021<'a> {
    async fn log_in(server: &'a TestServer, phone: &str) -> App2021<'a> {
        let form = |extra: &[(&str, &str)]| {
            let mut fields = vec![("op", "login"), ("appid", APPID), ("phone", phone), ("dt", "1")];
            fields.extend_from_slice(extra);
            server.client().post(format!("{}/messenger/api.php", server.url)).form(&fields)
        };
        assert_eq!(server.send(form(&[])).await.1["result"], "OK");
        let code = server.sender.last_code(phone);
        let (_, reply) = server.send(form(&[("code", &code)])).await;
        assert_eq!(reply["result"], "OK", "{reply}");
        App2021 { server, token: reply["token"].as_str().unwrap().to_string() }
    }

    async fn op(&self, op: &str, extra: &[(&str, &str)]) -> Value {
        let mut fields = vec![("op", op), ("token", self.token.as_str())];
        fields.extend_from_slice(extra);
        let (status, reply) =
            self.server.send(self.server.client().post(format!("{}/messenger/api.php", self.server.url)).form(&fields)).await;
        assert_eq!(status, 200, "the mesibo dialect answers 200: {reply}");
        assert_parses_as_the_2021_android_app_reads_it(&reply);
        reply
    }
}

/// The 2021 Android app parses every reply into one Gson class: `op` and `result`
/// strings, `ts` and `gid` longs, `profile` and `type` ints. Any other type there fails
/// the whole reply.
fn assert_parses_as_the_2021_android_app_reads_it(reply: &Value) {
    assert!(reply["op"].is_string() && reply["result"].is_string(), "{reply}");
    for long in ["ts", "gid", "profile", "type"] {
        assert!(reply.get(long).is_none_or(Value::is_i64), "{long} must be a number: {reply}");
    }
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["result"], "OK", "{reply}");
    reply
}

fn failed(reply: &Value, code: &str) {
    assert_eq!((&reply["result"], &reply["error"]), (&json!("FAIL"), &json!(code)), "{reply}");
}

/// The notices upstream received about group `gid`, as (recipient, subject).
fn group_notices(server: &TestServer, gid: i64) -> Vec<(String, String)> {
    let mut notices: Vec<(String, String)> = server
        .upstream
        .messages()
        .iter()
        .map(|m| (m["to"].as_str().unwrap().to_string(), crate::notifications::notice_text(m)))
        .filter(|(_, body)| body["gid"] == gid)
        .map(|(to, body)| (to, body["subject"].as_str().unwrap().to_string()))
        .collect();
    notices.sort();
    notices
}

#[actix_web::test]
async fn a_group_lives_from_creation_to_deletion_as_the_2021_apps_drive_it() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo"), ("OUTBOX_RETRY_SECS", "1")]).await;
    let ann = App2021::log_in(&server, ANN).await;
    let bob = App2021::log_in(&server, BOB).await;
    let cat = App2021::log_in(&server, CAT).await;
    let eve = App2021::log_in(&server, EVE).await;

    // Create: the platform is asked first and its gid is the group's.
    let created =
        ann.op("setgroup", &[("gid", "0"), ("name", "Hikers%20%E2%9B%B0"), ("status", ""), ("m", &format!("{BOB},{CAT},{DAN}"))]).await;
    ok(&created);
    let gid = created["gid"].as_i64().expect("gid is a JSON number (the iOS app reads it as NSNumber)");
    assert_eq!(gid, 5001);
    assert_eq!(created["name"], "Hikers ⛰", "percent-encoded names are decoded, as the reference did");
    assert_eq!(created["members"], format!("1:{ANN},{BOB},{CAT},{DAN}"));
    assert!(created["ts"].is_i64() && created["status"] == "");
    let add = &server.upstream.group_calls()[0];
    assert_eq!((&add["op"], &add["token"], &add["m"]), (&json!("groupadd"), &json!(APP_TOKEN), &json!(format!("{ANN},{BOB},{CAT},{DAN}"))));
    let added = "You have been added to group Hikers ⛰".to_string();
    assert!(eventually(30, async || group_notices(&server, gid).len() == 2).await, "the members who are users are told");
    assert_eq!(group_notices(&server, gid), [(BOB.to_string(), added.clone()), (CAT.to_string(), added.clone())]);

    // Reading: members only.
    let read = ok(&bob.op("getgroup", &[("gid", &gid.to_string())]).await).clone();
    assert_eq!((&read["gid"], &read["members"]), (&json!(gid), &created["members"]));
    failed(&eve.op("getgroup", &[("gid", &gid.to_string())]).await, "NOTMEMBER");
    failed(&bob.op("getgroup", &[("gid", "0")]).await, "MISSINGPARA");

    // Plain members cannot change it; the owner makes Bob an admin.
    let gid_text = gid.to_string();
    let g = gid_text.as_str();
    failed(&bob.op("editmembers", &[("gid", g), ("m", EVE), ("delete", "0")]).await, "BADGROUP");
    failed(&bob.op("setadmin", &[("gid", g), ("m", CAT), ("admin", "1")]).await, "BADGROUP");
    failed(&bob.op("profile", &[("gid", g), ("name", "Mine"), ("status", "")]).await, "BADGROUP");
    failed(&ann.op("editmembers", &[("gid", g), ("m", "")]).await, "MISSINGPARA");
    let promoted = ok(&ann.op("setadmin", &[("gid", g), ("m", BOB), ("admin", "1")]).await).clone();
    assert_eq!((&promoted["gid"], &promoted["members"]), (&json!(gid), &json!(format!("2:{ANN},{BOB},{CAT},{DAN}"))));
    assert!(server.upstream.group_calls().len() == 1, "roles are not the platform's: no call");

    // The admin adds Eve, and cannot remove the owner.
    let edited = ok(&bob.op("editmembers", &[("gid", g), ("m", EVE), ("delete", "0")]).await).clone();
    assert_eq!(edited["members"], format!("2:{ANN},{BOB},{CAT},{DAN},{EVE}"));
    let call = server.upstream.group_calls().last().unwrap().clone();
    assert_eq!((&call["op"], &call["gid"], &call["m"], &call["delete"]), (&json!("groupeditmembers"), &json!(gid), &json!(EVE), &json!(0)));
    let kept = ok(&bob.op("editmembers", &[("gid", g), ("m", ANN), ("delete", "1")]).await).clone();
    assert!(kept["members"].as_str().unwrap().starts_with(&format!("2:{ANN},")), "the owner stays: {kept}");

    // The admin renames it (profile with gid) and sets its photo (upload with gid).
    let renamed = ok(&bob.op("profile", &[("gid", g), ("name", "Climbers"), ("status", "")]).await).clone();
    assert!(renamed.get("profile").is_none(), "{renamed}");
    assert_eq!(ok(&cat.op("getgroup", &[("gid", g)]).await)["name"], "Climbers");
    let photo = {
        let image = image::RgbImage::from_pixel(64, 48, image::Rgb([10, 200, 30]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        png
    };
    let fields = [("op", "upload"), ("token", bob.token.as_str()), ("mid", "0"), ("profile", "1"), ("gid", g)];
    let (content_type, body) = crate::files::multipart(&fields, Some(("g.png", &photo)));
    let request = server.client().post(format!("{}/messenger/api.php", server.url)).header("content-type", content_type).body(body);
    let (_, uploaded) = server.send(request).await;
    assert_parses_as_the_2021_android_app_reads_it(&uploaded);
    ok(&uploaded);
    assert_eq!((&uploaded["gid"], &uploaded["profile"], &uploaded["phone"]), (&json!(gid), &json!(1), &json!("")));
    assert!(uploaded["photo"].as_str().unwrap().ends_with(".jpg") && uploaded["tn"].is_string(), "{uploaded}");
    assert!(uploaded.get("file").is_none(), "a group photo reply has no file, as the reference's");

    // A sync of changes lists the group after the users, and the caller's own profile.
    let synced = ok(&cat.op("getcontacts", &[("ts", "0"), ("hidden", "0")]).await).clone();
    let entry = synced["contacts"].as_array().unwrap().iter().find(|c| c["gid"] == gid).expect("the group is listed").clone();
    assert_eq!((&entry["name"], &entry["phone"], &entry["photo"]), (&json!("Climbers"), &json!(""), &uploaded["photo"]));
    assert!(entry["members"].as_str().unwrap().contains(CAT) && entry["tn"].is_string(), "{entry}");
    assert_eq!(synced["me"]["phone"], CAT, "{synced}");
    let later = ok(&cat.op("getcontacts", &[("ts", &(entry["ts"].as_i64().unwrap() + 1).to_string())]).await).clone();
    assert!(later["contacts"].as_array().unwrap().iter().all(|c| c["gid"] != gid), "unchanged since: not listed again");

    // Cat leaves; the owner deletes the group; the platform is told of both.
    assert_eq!(ok(&cat.op("delgroup", &[("gid", g)]).await)["gid"], gid);
    assert!(!ok(&ann.op("getgroup", &[("gid", g)]).await)["members"].as_str().unwrap().contains(CAT));
    let leave = server.upstream.group_calls().last().unwrap().clone();
    assert_eq!((&leave["op"], &leave["m"], &leave["delete"]), (&json!("groupeditmembers"), &json!(CAT), &json!(1)));
    failed(&cat.op("delgroup", &[("gid", g)]).await, "BADGROUP");
    assert_eq!(ok(&ann.op("delgroup", &[("gid", g)]).await)["gid"], gid);
    assert_eq!(server.upstream.group_calls().last().unwrap()["op"], "groupdel");
    failed(&bob.op("getgroup", &[("gid", g)]).await, "NOTMEMBER");
    assert_eq!(server.scalar("SELECT count(*) FROM chat_groups") + server.scalar("SELECT count(*) FROM group_members"), 0);
    let deleted = "The group Climbers has been deleted".to_string();
    assert!(eventually(30, async || group_notices(&server, gid).iter().filter(|(_, subject)| *subject == deleted).count() == 2).await);
    let told: Vec<String> = group_notices(&server, gid).into_iter().filter(|(_, s)| *s == deleted).map(|(to, _)| to).collect();
    assert_eq!(told, [BOB, EVE], "the members left, but the owner who deleted it");
}

#[actix_web::test]
async fn a_change_the_platform_refuses_changes_nothing_here() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo")]).await;
    let ann = App2021::log_in(&server, ANN).await;
    let created = ok(&ann.op("setgroup", &[("gid", "0"), ("name", "Hikers"), ("m", BOB)]).await).clone();
    let g = created["gid"].as_i64().unwrap().to_string();

    server.upstream.refuse_groups(true);
    failed(&ann.op("setgroup", &[("gid", "0"), ("name", "Second"), ("m", BOB)]).await, "UPSTREAM");
    assert_eq!(server.scalar("SELECT count(*) FROM chat_groups"), 1, "no group without the platform's");
    failed(&ann.op("setgroup", &[("gid", &g), ("name", "Renamed"), ("m", CAT)]).await, "UPSTREAM");
    failed(&ann.op("editmembers", &[("gid", &g), ("m", DAN), ("delete", "0")]).await, "UPSTREAM");
    failed(&ann.op("profile", &[("gid", &g), ("name", "Renamed")]).await, "UPSTREAM");
    failed(&ann.op("delgroup", &[("gid", &g)]).await, "UPSTREAM");
    let group = ok(&ann.op("getgroup", &[("gid", &g)]).await).clone();
    assert_eq!((&group["name"], &group["members"], &group["ts"]), (&created["name"], &created["members"], &created["ts"]));
    assert!(!server.logs().contains(APP_TOKEN));

    server.upstream.refuse_groups(false);
    ok(&ann.op("editmembers", &[("gid", &g), ("m", DAN), ("delete", "0")]).await);
}

#[actix_web::test]
async fn group_notices_queued_before_a_restart_are_sent_after_it() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let upstream = FakeUpstream::start();
    let env = [("API_DIALECT", "mesibo"), ("OUTBOX_RETRY_SECS", "1")];
    let first = TestServer::start_with(&env, upstream.clone(), dir.clone(), Delivery::Recording).await;
    let ann = App2021::log_in(&first, ANN).await;
    App2021::log_in(&first, BOB).await;
    App2021::log_in(&first, CAT).await;
    upstream.fail_messages(true);
    let gid = ok(&ann.op("setgroup", &[("gid", "0"), ("name", "Hikers"), ("m", &format!("{BOB},{CAT}"))]).await)["gid"].as_i64().unwrap();
    let tried = || first.scalar("SELECT count(*) FROM outbox WHERE attempts >= 1");
    assert!(eventually(30, async || tried() == 2).await, "both notices were tried and failed");
    first.stop().await;

    upstream.fail_messages(false);
    let second = TestServer::start_with(&env, upstream.clone(), dir, Delivery::Recording).await;
    let delivered = || {
        let mut to: Vec<String> = upstream
            .messages()
            .iter()
            .filter(|m| crate::notifications::notice_text(m)["gid"] == gid)
            .map(|m| m["to"].as_str().unwrap().to_string())
            .collect();
        to.sort();
        to.dedup();
        to
    };
    assert!(eventually(30, async || delivered() == [BOB, CAT]).await, "sent after the restart: {:?}", delivered());
    assert!(eventually(30, async || second.scalar("SELECT count(*) FROM outbox") == 0).await);
}

/// The notices upstream received about group `gid`, as (recipient, subject, members).
fn group_notice_members(server: &TestServer, gid: i64) -> Vec<(String, String, String)> {
    let mut notices: Vec<(String, String, String)> = server
        .upstream
        .messages()
        .iter()
        .map(|m| (m["to"].as_str().unwrap().to_string(), crate::notifications::notice_text(m)))
        .filter(|(_, body)| body["gid"] == gid)
        .map(|(to, body)| (to, body["subject"].as_str().unwrap().to_string(), body["members"].as_str().unwrap().to_string()))
        .collect();
    notices.sort();
    notices
}

#[actix_web::test]
async fn members_added_per_user_and_hour_are_limited() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo"), ("LIMIT_GROUP_ADDS_PER_USER_PER_HOUR", "3")]).await;
    let ann = App2021::log_in(&server, ANN).await;
    let bob = App2021::log_in(&server, BOB).await;
    let created = ok(&ann.op("setgroup", &[("gid", "0"), ("name", "Spam"), ("m", &format!("{BOB},{CAT}"))]).await).clone();
    let g = created["gid"].as_i64().unwrap().to_string();
    ok(&ann.op("editmembers", &[("gid", &g), ("m", DAN), ("delete", "0")]).await);
    let calls = server.upstream.group_calls().len();

    let refused = ann.op("editmembers", &[("gid", &g), ("m", EVE), ("delete", "0")]).await;
    failed(&refused, "RATELIMIT");
    assert!(refused["retry_after"].as_u64().is_some_and(|wait| wait > 0), "{refused}");
    assert_eq!(server.upstream.group_calls().len(), calls, "the platform is not asked");
    assert!(!ok(&ann.op("getgroup", &[("gid", &g)]).await)["members"].as_str().unwrap().contains(EVE));
    failed(&ann.op("setgroup", &[("gid", "0"), ("name", "More"), ("m", EVE)]).await, "RATELIMIT");
    failed(&ann.op("setgroup", &[("gid", &g), ("name", ""), ("m", &format!("{BOB},{CAT},{DAN},{EVE}"))]).await, "RATELIMIT");
    assert_eq!(server.scalar("SELECT count(*) FROM chat_groups"), 1);

    // Members already there cost nothing; other users keep their own budget.
    ok(&ann.op("editmembers", &[("gid", &g), ("m", &format!("{BOB},{DAN}")), ("delete", "0")]).await);
    ok(&ann.op("setgroup", &[("gid", &g), ("name", "Renamed"), ("m", &format!("{BOB},{CAT},{DAN}"))]).await);
    ok(&bob.op("setgroup", &[("gid", "0"), ("name", "Bob's"), ("m", &format!("{CAT},{DAN},{EVE}"))]).await);
    failed(
        &bob.op("setgroup", &[("gid", "0"), ("name", "Too big"), ("m", "18005550706,18005550707,18005550708,18005550709")]).await,
        "TOOMANY",
    );
}

#[actix_web::test]
async fn adding_members_again_tells_nobody_and_adding_one_tells_only_the_newcomer() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo"), ("OUTBOX_RETRY_SECS", "1")]).await;
    let ann = App2021::log_in(&server, ANN).await;
    App2021::log_in(&server, BOB).await;
    App2021::log_in(&server, CAT).await;
    App2021::log_in(&server, EVE).await;
    let gid = ok(&ann.op("setgroup", &[("gid", "0"), ("name", "Hikers"), ("m", &format!("{BOB},{CAT}"))]).await)["gid"].as_i64().unwrap();
    let g = gid.to_string();
    let added = "You have been added to group Hikers".to_string();
    assert!(eventually(30, async || group_notices(&server, gid).len() == 2).await);
    assert!(eventually(30, async || server.scalar("SELECT count(*) FROM outbox") == 0).await);

    // A notice is queued in the change's transaction: after the reply it is in the outbox or sent.
    let again = ok(&ann.op("editmembers", &[("gid", &g), ("m", &format!("{BOB},{CAT}")), ("delete", "0")]).await).clone();
    assert_eq!(again["members"], format!("1:{ANN},{BOB},{CAT}"));
    assert_eq!(server.scalar("SELECT count(*) FROM outbox"), 0, "nothing queued");
    assert_eq!(group_notices(&server, gid).len(), 2, "nobody told again");

    ok(&ann.op("editmembers", &[("gid", &g), ("m", &format!("{BOB},{EVE}")), ("delete", "0")]).await);
    assert!(eventually(30, async || group_notices(&server, gid).len() == 5).await, "{:?}", group_notices(&server, gid));
    let notices = group_notices(&server, gid);
    let told_added: Vec<&str> = notices.iter().filter(|(_, subject)| *subject == added).map(|(to, _)| to.as_str()).collect();
    assert_eq!(told_added, [BOB, CAT, EVE], "the first two when created, then only Eve");
    let silent: Vec<&str> = notices.iter().filter(|(_, subject)| subject.is_empty()).map(|(to, _)| to.as_str()).collect();
    assert_eq!(silent, [BOB, CAT], "the members refresh silently");
}

#[actix_web::test]
async fn a_group_notice_shows_its_recipient_only_the_phones_they_know() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo"), ("OUTBOX_RETRY_SECS", "1")]).await;
    let ann = App2021::log_in(&server, ANN).await;
    let bob = App2021::log_in(&server, BOB).await;
    let cat = App2021::log_in(&server, CAT).await;
    App2021::log_in(&server, EVE).await;
    // Cat has Bob (and a non-member) in her address book; Eve has nobody.
    ok(&cat.op("getcontacts", &[("phones", &format!("{BOB},18005550799"))]).await);
    ok(&bob.op("getcontacts", &[("phones", &format!("{ANN},{CAT},{DAN},{EVE}"))]).await);

    let members = format!("{BOB},{CAT},{DAN},{EVE}");
    let created = ok(&ann.op("setgroup", &[("gid", "0"), ("name", "Strangers"), ("m", &members)]).await).clone();
    let gid = created["gid"].as_i64().unwrap();
    assert_eq!(created["members"], format!("1:{ANN},{BOB},{CAT},{DAN},{EVE}"), "the reply to the owner is the whole group");
    assert!(eventually(30, async || group_notice_members(&server, gid).len() == 3).await, "{:?}", group_notice_members(&server, gid));
    let added = "You have been added to group Strangers".to_string();
    assert_eq!(
        group_notice_members(&server, gid),
        [
            (BOB.to_string(), added.clone(), format!("1:{ANN},{BOB},{CAT},{DAN},{EVE}")),
            (CAT.to_string(), added.clone(), format!("1:{ANN},{BOB},{CAT}")),
            (EVE.to_string(), added.clone(), format!("1:{ANN},{EVE}")),
        ],
        "own phone, the adder's and the recipient's contacts"
    );
    // A member may still read the group.
    assert_eq!(ok(&cat.op("getgroup", &[("gid", &gid.to_string())]).await)["members"], created["members"]);
}

//! `upload` and `setnotify` as the 2021 apps and the iOS app send them: attachments
//! uploaded to the login reply's `urls.upload` and downloaded from the `url` it returns,
//! profile photos re-encoded without their metadata, and push registrations kept with
//! the session.

use crate::common::*;
use base64::Engine;
use serde_json::{json, Value};
use std::io::Cursor;

const PHONE: &str = "18005550601";

/// A multipart body as the apps' `postBundle` builds it: text fields, then the file
/// part named `photo`.
pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "otpgate-test-7d1c";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    if let Some((file_name, bytes)) = file {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_multipart(server: &TestServer, url: &str, fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (u16, Value) {
    let (content_type, body) = multipart(fields, file);
    server.send(server.client().post(url).header("content-type", content_type).body(body)).await
}

/// The login reply of `phone`, through both steps, in either dialect.
async fn logged_in(server: &TestServer, phone: &str) -> Value {
    let succeeded = |reply: &Value| reply["result"] == true || reply["result"] == "OK";
    let (_, started) = server.call(login(phone)).await;
    assert!(succeeded(&started), "{started}");
    let (_, verified) = server.call(verify(phone, &server.sender.last_code(phone))).await;
    assert!(succeeded(&verified), "{verified}");
    verified
}

/// The token of `phone`, logged in through both steps in either dialect.
pub async fn token_of(server: &TestServer, phone: &str) -> String {
    logged_in(server, phone).await["token"].as_str().unwrap().to_string()
}

/// A JPEG whose EXIF block carries a GPS position and a camera serial.
fn jpeg_with_exif() -> Vec<u8> {
    let image = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut plain = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut plain), image::ImageFormat::Jpeg).unwrap();
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\0\0\0\0\0".to_vec();
    exif.extend(b"GPS 51.5007N 0.1246W serial CAM-4411");
    let length = u16::try_from(exif.len() + 2).unwrap().to_be_bytes();
    let mut with_exif = plain[..2].to_vec(); // SOI
    with_exif.extend([0xFF, 0xE1, length[0], length[1]]);
    with_exif.extend(exif);
    with_exif.extend(&plain[2..]);
    assert!(image::load_from_memory(&with_exif).is_ok(), "the fixture is a valid JPEG");
    with_exif
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

async fn download(server: &TestServer, url: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = server.client().get(url).send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.bytes().await.unwrap().to_vec())
}

#[actix_web::test]
async fn an_attachment_uploaded_to_urls_upload_downloads_from_its_url() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo")]).await;
    let login = logged_in(&server, PHONE).await;
    let (upload_url, token) = (login["urls"]["upload"].as_str().unwrap(), login["token"].as_str().unwrap());
    let upload_url = upload_url.replace("http://127.0.0.1:8080", &server.url);
    let document = b"%PDF-1.4 a chat attachment".to_vec();

    // The 2021 Android app (and Swift until 2022): `token`, `mid`, `profile=0`; reads `file`.
    let reply = post_multipart(
        &server,
        &upload_url,
        &[("op", "upload"), ("token", token), ("mid", "77"), ("profile", "0")],
        Some(("scan.pdf", &document)),
    )
    .await;
    assert_eq!((reply.0, &reply.1["result"]), (200, &json!("OK")), "{}", reply.1);
    let url = reply.1["url"].as_str().expect("url is a string").to_string();
    assert_eq!(reply.1["file"], url.as_str(), "file and url are the same full URL");
    assert_eq!(reply.1["profile"], 0, "a number");
    let (status, headers, bytes) = download(&server, &url.replace("http://127.0.0.1:8080", &server.url)).await;
    assert_eq!((status, bytes), (200, document.clone()));
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["cache-control"].to_str().unwrap().contains("immutable"));

    // The Swift app since late 2022 sends the token as `auth`; a page is served as a download.
    let page = b"<html><script>alert(1)</script></html>".to_vec();
    let reply = post_multipart(
        &server,
        &upload_url,
        &[("op", "upload"), ("auth", token), ("mid", "78"), ("profile", "0")],
        Some(("x.html", &page)),
    )
    .await;
    assert_eq!(reply.1["result"], "OK", "{}", reply.1);
    let url = reply.1["url"].as_str().unwrap().replace("http://127.0.0.1:8080", &server.url);
    assert!(url.ends_with(".bin"), "{url}");
    let (_, headers, bytes) = download(&server, &url).await;
    assert_eq!(bytes, page);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-disposition"], "attachment");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("sandbox"));

    for missing in ["/files/../otpgate.db", "/files/otpgate.db", &format!("/files/{}.jpg", "0".repeat(64))] {
        assert_eq!(download(&server, &format!("{}{missing}", server.url)).await.0, 404, "{missing}");
    }
    // No token, no upload.
    let reply = post_multipart(&server, &upload_url, &[("op", "upload"), ("profile", "0")], Some(("a.pdf", &document))).await;
    assert_eq!(reply.1["error"], "AUTHFAIL");
}

#[actix_web::test]
async fn a_profile_photo_is_stored_without_its_metadata_with_a_thumbnail() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo")]).await;
    let login = logged_in(&server, PHONE).await;
    let token = login["token"].as_str().unwrap();
    let api = format!("{}/messenger/api.php", server.url);
    let photo = jpeg_with_exif();
    assert!(contains(&photo, b"CAM-4411"));

    let fields = [("op", "upload"), ("token", token), ("mid", "0"), ("profile", "1"), ("gid", "0")];
    let reply = post_multipart(&server, &api, &fields, Some(("me.jpg", &photo))).await;
    assert_eq!(reply.1["result"], "OK", "{}", reply.1);
    let (name, tn) = (reply.1["photo"].as_str().unwrap().to_string(), reply.1["tn"].as_str().unwrap());
    assert_eq!((&reply.1["gid"], &reply.1["profile"], &reply.1["phone"]), (&json!(0), &json!(1), &json!(PHONE)));
    assert!(name.ends_with(".jpg") && !name.contains('/'), "a bare file name: {name}");
    let thumbnail = image::load_from_memory(&base64::engine::general_purpose::STANDARD.decode(tn).unwrap()).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (100, 100));

    let download_base = login["urls"]["download"].as_str().unwrap().replace("http://127.0.0.1:8080", &server.url);
    let (status, headers, stored) = download(&server, &format!("{download_base}{name}")).await;
    assert_eq!((status, &headers["content-type"]), (200, &reqwest::header::HeaderValue::from_static("image/jpeg")));
    assert!(!contains(&stored, b"Exif") && !contains(&stored, b"CAM-4411") && !contains(&stored, b"51.5007"), "no metadata is kept");
    let on_disk: Vec<Vec<u8>> =
        std::fs::read_dir(server.dir.path().join("files")).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert!(on_disk.iter().all(|file| !contains(file, b"CAM-4411")), "nor on disk");

    // The next login and `me` carry the photo and its thumbnail; a contact's sync does too.
    let again = logged_in(&server, PHONE).await;
    assert_eq!((&again["photo"], &again["tn"]), (&json!(name), &json!(tn)));
    let friend = token_of(&server, "18005550602").await;
    let (_, synced) = server.call_op("getcontacts", &friend, json!({ "phones": PHONE })).await;
    assert_eq!(synced["contacts"][0]["tn"], tn, "{synced}");

    // Not an image, no file, and a group the caller does not run.
    let refused = post_multipart(&server, &api, &fields, Some(("me.jpg", b"<svg/>"))).await;
    assert_eq!((refused.0, &refused.1["error"]), (200, &json!("BADIMAGE")), "{}", refused.1);
    let refused = post_multipart(&server, &api, &fields, None).await;
    assert_eq!(refused.1["error"], "MISSINGFILE");
    let group = [("op", "upload"), ("token", token), ("profile", "1"), ("gid", "41")];
    assert_eq!(post_multipart(&server, &api, &group, Some(("g.jpg", &photo))).await.1["error"], "BADGROUP");
    assert_eq!(server.call_op("me", token, json!({})).await.1["profile"]["photo"], name.as_str(), "a refusal changes nothing");

    // delete=1 removes the photo and its thumbnail.
    let deleted =
        post_multipart(&server, &api, &[("op", "upload"), ("token", token), ("profile", "1"), ("gid", "0"), ("delete", "1")], None).await;
    assert_eq!(deleted.1["result"], "OK", "{}", deleted.1);
    let me = server.call_op("me", token, json!({})).await.1;
    assert_eq!(me["profile"]["photo"], "");
    assert!(me["profile"].get("tn").is_none(), "{me}");
}

#[actix_web::test]
async fn an_upload_over_max_upload_bytes_is_refused() {
    let server = TestServer::start(&[("MAX_UPLOAD_BYTES", "1000")]).await;
    let token = server.log_in(PHONE, None).await;
    let fields = [("op", "upload"), ("token", token.as_str()), ("profile", "0")];
    let fits = post_multipart(&server, &server.api(), &fields, Some(("a.bin", &[7u8; 900]))).await;
    assert_eq!(fits.1["result"], true, "{}", fits.1);
    let over = post_multipart(&server, &server.api(), &fields, Some(("a.bin", &[7u8; 1001]))).await;
    assert_error(&over, 400, "BADREQUEST");
    let body_over = post_multipart(&server, &server.api(), &fields, Some(("a.bin", &vec![7u8; 70_000]))).await;
    assert_error(&body_over, 400, "BADREQUEST");
    // Other ops keep MAX_BODY_BYTES, file part or not.
    let other =
        post_multipart(&server, &server.api(), &[("op", "me"), ("token", token.as_str())], Some(("a.bin", &vec![7u8; 70_000]))).await;
    assert_error(&other, 400, "BADREQUEST");
}

#[actix_web::test]
async fn the_profile_reply_carries_no_profile_object_for_the_2021_apps() {
    let mesibo = TestServer::start(&[("API_DIALECT", "mesibo")]).await;
    let token = token_of(&mesibo, PHONE).await;
    let form = mesibo.client().post(format!("{}/messenger/api.php", mesibo.url)).form(&[
        ("op", "profile"),
        ("token", token.as_str()),
        ("name", "Ann"),
        ("status", "Hi"),
        ("gid", "0"),
    ]);
    let (status, reply) = mesibo.send(form).await;
    assert_eq!((status, &reply["result"]), (200, &json!("OK")), "{reply}");
    assert!(reply.get("profile").is_none(), "the 2021 Android app parses profile as an int: {reply}");
    assert_eq!(mesibo.call_op("me", &token, json!({})).await.1["profile"]["status"], "Hi", "the change is kept");

    // A photo may come as a file part of the same request: one change with the texts.
    let fields = [("op", "profile"), ("token", token.as_str()), ("name", "Ann B"), ("status", "Back"), ("gid", "0")];
    let (status, reply) =
        post_multipart(&mesibo, &format!("{}/messenger/api.php", mesibo.url), &fields, Some(("me.jpg", &jpeg_with_exif()))).await;
    assert_eq!((status, &reply["result"]), (200, &json!("OK")), "{reply}");
    let me = mesibo.call_op("me", &token, json!({})).await.1;
    assert_eq!((&me["profile"]["name"], &me["profile"]["status"]), (&json!("Ann B"), &json!("Back")));
    assert!(me["profile"]["photo"].as_str().unwrap().ends_with(".jpg") && me["profile"]["tn"].is_string(), "{me}");

    let json_dialect = TestServer::start(&[]).await;
    let token = json_dialect.log_in(PHONE, None).await;
    let reply = assert_ok(json_dialect.call_op("profile", &token, json!({ "name": "Ann" })).await);
    assert_eq!(reply["profile"]["name"], "Ann", "the json dialect keeps the object");
}

#[actix_web::test]
async fn setnotify_keeps_the_push_registration_with_the_session_until_logout() {
    let server = TestServer::start(&[("API_DIALECT", "mesibo")]).await;
    let token = token_of(&server, PHONE).await;
    // The 2021 Android app: a form with notifytoken, fcmid and dt.
    let set = |push: &'static str| {
        server.client().post(format!("{}/messenger/api.php", server.url)).form(&[
            ("op", "setnotify"),
            ("token", token.as_str()),
            ("notifytoken", push),
            ("fcmid", "1234567890"),
            ("dt", "1"),
        ])
    };
    assert_eq!(server.send(set("fcm-token-one")).await.1["result"], "OK");
    assert_eq!(server.send(set("fcm-token-two")).await.1["result"], "OK");
    assert_eq!(server.column("SELECT notify_token FROM sessions WHERE notify_token IS NOT NULL"), ["fcm-token-two"], "replaced");
    let devices = server.call_op("devices", &token, json!({})).await.1;
    assert_eq!((&devices["devices"][0]["push"], &devices["devices"][0]["dt"]), (&json!(true), &json!("1")), "{devices}");
    assert!(!devices.to_string().contains("fcm-token"), "devices never shows the push token: {devices}");

    let too_long = "x".repeat(4097);
    let refused = server.call_op("setnotify", &token, json!({ "notifytoken": too_long })).await;
    assert_eq!(refused.1["error"], "BADPARAM");

    assert_eq!(server.call_op("logout", &token, json!({})).await.1["result"], "OK");
    assert_eq!(server.scalar("SELECT count(*) FROM sessions WHERE notify_token IS NOT NULL"), 0, "logout removed it");
}

#[actix_web::test]
async fn uploads_of_the_same_bytes_at_once_all_succeed_and_no_download_is_ever_partial() {
    let server = TestServer::start(&[]).await;
    // Four users, four uploads each: every request of one session updates the same
    // session row, so one user's uploads at once queue on its lock (PostgreSQL). Kept
    // small for a loaded machine: the store's own test is the one that finds a race.
    let mut tokens = Vec::new();
    for n in 0..4 {
        tokens.push(server.log_in(&format!("1800555070{n}"), None).await);
    }
    // Large enough that writing it takes many system calls, so that uploads overlap.
    let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let url = format!("{}/files/{}.pdf", server.url, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    let api = server.api();
    let uploads = (0..16).map(|n| {
        let fields = [("op", "upload"), ("token", tokens[n % 4].as_str()), ("profile", "0")];
        let (api, bytes) = (&api, &bytes);
        let server = &server;
        async move { post_multipart(server, api, &fields, Some(("scan.pdf", bytes))).await }
    });
    // Downloads run beside the uploads: each finds nothing yet or the whole file.
    let downloads = (0..32).map(|_| async {
        let (status, _, body) = download(&server, &url).await;
        assert!(
            status == 404 || (status == 200 && body == bytes),
            "a download answered {status} with {} of {} bytes",
            body.len(),
            bytes.len()
        );
        status
    });
    let (uploaded, _) =
        futures_util::future::join(futures_util::future::join_all(uploads), futures_util::future::join_all(downloads)).await;
    let failed: Vec<_> = uploaded.iter().filter(|(status, reply)| *status != 200 || reply["result"] != true).collect();
    assert!(failed.is_empty(), "{} of 16 identical uploads failed: {:?}", failed.len(), failed.first());
    assert!(uploaded.iter().all(|(_, reply)| reply["url"].as_str().unwrap().ends_with(&url[url.len() - 68..])), "one name for one content");
    let (status, _, body) = download(&server, &url).await;
    assert_eq!((status, body.len()), (200, bytes.len()));
    assert_eq!(body, bytes);
    let left: Vec<_> = std::fs::read_dir(server.dir.path().join("files")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "one file, no temporary file left: {left:?}");
}

/// An attachment upload of `bytes` by `token` in the server's dialect.
async fn attach(server: &TestServer, token: &str, bytes: &[u8]) -> (u16, reqwest::header::HeaderMap, Value) {
    let (content_type, body) = multipart(&[("op", "upload"), ("token", token), ("profile", "0")], Some(("a.bin", bytes)));
    server.send_full(server.client().post(server.api()).header("content-type", content_type).body(body)).await
}

#[actix_web::test]
async fn a_user_uploading_more_files_per_hour_than_the_limit_is_refused() {
    let server = TestServer::start(&[("LIMIT_UPLOADS_PER_USER_PER_HOUR", "3")]).await;
    let (ann, bob) = (server.log_in(PHONE, None).await, server.log_in("18005550602", None).await);
    for n in 0..2u8 {
        let (status, _, reply) = attach(&server, &ann, &[n; 10]).await;
        assert_eq!((status, &reply["result"]), (200, &json!(true)), "{reply}");
    }
    // A photo counts as an upload too.
    let photo = [("op", "upload"), ("token", ann.as_str()), ("profile", "1"), ("gid", "0")];
    assert_eq!(post_multipart(&server, &server.api(), &photo, Some(("me.jpg", &jpeg_with_exif()))).await.1["result"], true);
    let (status, headers, reply) = attach(&server, &ann, b"one too many").await;
    assert_error(&(status, reply.clone()), 429, "RATELIMIT");
    assert!(reply["retry_after"].as_u64().is_some_and(|wait| (1..=1200).contains(&wait)) && headers.contains_key("retry-after"), "{reply}");
    let refused = post_multipart(&server, &server.api(), &photo, Some(("me.jpg", &jpeg_with_exif()))).await;
    assert_error(&refused, 429, "RATELIMIT");
    let before = server.call_op("me", &ann, json!({})).await.1["profile"].clone();
    let profile = [("op", "profile"), ("token", ann.as_str()), ("name", "Ann Refused")];
    assert_error(&post_multipart(&server, &server.api(), &profile, Some(("me.jpg", &jpeg_with_exif()))).await, 429, "RATELIMIT");
    assert_eq!(server.call_op("me", &ann, json!({})).await.1["profile"], before, "a refused profile change changes nothing");
    assert_eq!(attach(&server, &bob, b"bob's own budget").await.2["result"], true, "another user is not limited");

    // The apps' dialect answers it as a failure, with the wait.
    let mesibo = TestServer::start(&[("API_DIALECT", "mesibo"), ("LIMIT_UPLOADS_PER_USER_PER_HOUR", "1")]).await;
    let token = token_of(&mesibo, PHONE).await;
    assert_eq!(attach(&mesibo, &token, b"first").await.2["result"], "OK");
    let (status, headers, reply) = attach(&mesibo, &token, b"second").await;
    assert_eq!((status, &reply["result"], &reply["error"]), (200, &json!("FAIL"), &json!("RATELIMIT")), "{reply}");
    assert!(headers.contains_key("retry-after"), "{reply}");
}

#[actix_web::test]
async fn a_user_uploading_more_bytes_per_day_than_the_limit_is_refused() {
    let server = TestServer::start(&[("MAX_UPLOAD_BYTES", "1000"), ("LIMIT_UPLOAD_BYTES_PER_USER_PER_DAY", "2500")]).await;
    let (ann, bob) = (server.log_in(PHONE, None).await, server.log_in("18005550602", None).await);
    for n in 0..2u8 {
        let (status, _, reply) = attach(&server, &ann, &[n; 900]).await;
        assert_eq!((status, &reply["result"]), (200, &json!(true)), "{reply}");
    }
    let (status, _, reply) = attach(&server, &ann, &[3; 900]).await;
    assert_error(&(status, reply.clone()), 429, "RATELIMIT");
    // Counted from the body's length before it is read, each file took 902 bytes (its
    // body ends in a line break after the closing boundary): 696 are left, and 206 more
    // come back in about two hours.
    assert!(reply["retry_after"].as_u64().is_some_and(|wait| (7_000..=7_200).contains(&wait)), "{reply}");
    let name = format!("{}.bin", hex::encode(<sha2::Sha256 as sha2::Digest>::digest([3u8; 900])));
    assert_eq!(download(&server, &format!("{}/files/{name}", server.url)).await.0, 404, "a refused file is not stored");
    assert_eq!(attach(&server, &ann, &[4; 600]).await.2["result"], true, "what is left of the day can still be used");
    assert_eq!(attach(&server, &bob, &[5; 900]).await.2["result"], true, "another user is not limited");
}

/// A JPEG of one colour: photos of different colours are different files.
fn photo_of(shade: u8) -> Vec<u8> {
    let image = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([shade, (x * 3) as u8, (y * 5) as u8]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    jpeg
}

/// Sets `token`'s own photo; returns the stored file's name.
async fn set_photo(server: &TestServer, token: &str, jpeg: &[u8]) -> String {
    let fields = [("op", "upload"), ("token", token), ("profile", "1"), ("gid", "0")];
    let (status, reply) = post_multipart(server, &server.api(), &fields, Some(("me.jpg", jpeg))).await;
    assert_eq!((status, &reply["result"]), (200, &json!(true)), "{reply}");
    reply["photo"].as_str().unwrap().to_string()
}

async fn served(server: &TestServer, name: &str) -> u16 {
    download(server, &format!("{}/files/{name}", server.url)).await.0
}

#[actix_web::test]
async fn a_replaced_or_removed_photo_is_deleted_unless_someone_else_still_shows_it() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(PHONE, None).await;
    let bob = server.log_in("18005550602", None).await;

    // Replaced: the old file goes.
    let first = set_photo(&server, &ann, &photo_of(10)).await;
    assert_eq!(served(&server, &first).await, 200);
    let second = set_photo(&server, &ann, &photo_of(20)).await;
    assert_eq!((served(&server, &first).await, served(&server, &second).await), (404, 200), "the replaced photo is deleted");

    // Bob shows the same file: Ann's removal keeps it; Bob's replacement through `profile` deletes it.
    assert_eq!(set_photo(&server, &bob, &photo_of(20)).await, second, "the same photo is the same file");
    let remove = [("op", "upload"), ("token", ann.as_str()), ("profile", "1"), ("gid", "0"), ("delete", "1")];
    assert_eq!(post_multipart(&server, &server.api(), &remove, None).await.1["result"], true);
    assert_eq!(served(&server, &second).await, 200, "Bob still shows it");
    let profile = [("op", "profile"), ("token", bob.as_str()), ("name", "Bob")];
    let (_, reply) = post_multipart(&server, &server.api(), &profile, Some(("me.jpg", &photo_of(30)))).await;
    assert_eq!(reply["result"], true, "{reply}");
    assert_eq!(served(&server, &second).await, 404, "nobody shows it any more");
    // A photo URL instead of a stored photo deletes the stored one too.
    let third = reply["profile"]["photo"].as_str().unwrap().to_string();
    assert_ok(server.call_op("profile", &bob, json!({ "photo": "https://example.com/bob.jpg" })).await);
    assert_eq!(served(&server, &third).await, 404);

    // A group's photo, and an attachment of the same bytes, keep the file.
    let group = assert_ok(server.call_op("setgroup", &ann, json!({ "gid": 0, "name": "Hikers" })).await);
    let gid = group["gid"].as_i64().unwrap().to_string();
    let own = set_photo(&server, &ann, &photo_of(40)).await;
    let group_photo = [("op", "upload"), ("token", ann.as_str()), ("profile", "1"), ("gid", gid.as_str())];
    let (_, reply) = post_multipart(&server, &server.api(), &group_photo, Some(("g.jpg", &photo_of(40)))).await;
    assert_eq!(reply["photo"], own.as_str(), "{reply}");
    set_photo(&server, &ann, &photo_of(50)).await;
    assert_eq!(served(&server, &own).await, 200, "the group still shows it");
    let (_, reply) = post_multipart(&server, &server.api(), &group_photo, Some(("g.jpg", &photo_of(45)))).await;
    assert_eq!(reply["result"], true, "{reply}");
    assert_eq!(served(&server, &own).await, 404, "the group's replaced photo is deleted too");

    let kept = set_photo(&server, &bob, &photo_of(60)).await;
    let (_, _, bytes) = download(&server, &format!("{}/files/{kept}", server.url)).await;
    let attachment = [("op", "upload"), ("token", ann.as_str()), ("profile", "0")];
    let (_, reply) = post_multipart(&server, &server.api(), &attachment, Some(("forwarded.jpg", &bytes))).await;
    assert!(reply["url"].as_str().unwrap().ends_with(&kept), "{reply}");
    assert_ok(server.call_op("profile", &bob, json!({ "photo": "" })).await);
    assert_eq!(served(&server, &kept).await, 200, "an attachment of the same bytes is still in a chat");
}

#[actix_web::test]
async fn a_deleted_accounts_photo_is_no_longer_served() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(PHONE, None).await;
    let earlier = set_photo(&server, &ann, &photo_of(70)).await;
    let photo = set_photo(&server, &ann, &photo_of(80)).await;
    assert_eq!(served(&server, &photo).await, 200);
    let code = server.start_login(PHONE).await;
    assert_ok(server.call_op("deleteaccount", &ann, json!({ "appid": APPID, "otp": code })).await);
    assert_eq!(served(&server, &photo).await, 404, "the account is gone, and so is its photo");
    assert_eq!(served(&server, &earlier).await, 404, "and the one it replaced");
}

#[actix_web::test]
async fn photos_replaced_at_once_leave_no_file_that_no_profile_shows() {
    let server = TestServer::start(&[("PHOTO_DECODES", "8"), ("MAX_CONCURRENT_UPLOADS_PER_USER", "6")]).await;
    let ann = server.log_in(PHONE, None).await;
    set_photo(&server, &ann, &photo_of(0)).await;
    // Each replacement must free the photo it replaced itself: two that both read the
    // same old photo free it twice and leave one of theirs behind, served to anyone.
    for round in 0..4u8 {
        let photos: Vec<Vec<u8>> = (1..=6).map(|n| photo_of(round * 10 + n)).collect();
        futures_util::future::join_all(photos.iter().map(|photo| set_photo(&server, &ann, photo))).await;
    }
    let shown = server.call_op("me", &ann, json!({})).await.1["profile"]["photo"].as_str().unwrap().to_string();
    let kept: Vec<String> =
        std::fs::read_dir(server.dir.path().join("files")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(shown.ends_with(".jpg"), "{shown}");
    assert_eq!(kept, vec![shown], "only the photo Ann shows is kept");
}

/// Sets group `gid`'s photo, by `upload` for even `n` and by `setgroup` for odd; returns
/// the stored file's name.
async fn set_group_photo(server: &TestServer, token: &str, gid: &str, n: usize, jpeg: &[u8]) -> String {
    let fields: &[(&str, &str)] = match n % 2 {
        0 => &[("op", "upload"), ("token", token), ("profile", "1"), ("gid", gid)],
        _ => &[("op", "setgroup"), ("token", token), ("gid", gid)],
    };
    let (status, reply) = post_multipart(server, &server.api(), fields, Some(("g.jpg", jpeg))).await;
    assert_eq!((status, &reply["result"]), (200, &json!(true)), "{reply}");
    reply["photo"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn group_photos_replaced_at_once_leave_no_file_that_no_group_shows() {
    let server = TestServer::start(&[("PHOTO_DECODES", "8"), ("MAX_CONCURRENT_UPLOADS_PER_USER", "8")]).await;
    let ann = server.log_in(PHONE, None).await;
    let group = assert_ok(server.call_op("setgroup", &ann, json!({ "gid": 0, "name": "Hikers" })).await);
    let gid = group["gid"].as_i64().unwrap().to_string();
    set_group_photo(&server, &ann, &gid, 0, &photo_of(0)).await;
    // Each replacement must free the photo it replaced itself, whichever op made it: two
    // that both read the same old photo free it twice and leave one of theirs behind,
    // served to anyone though no group shows it.
    for round in 0..4u8 {
        let photos: Vec<Vec<u8>> = (1..=6).map(|n| photo_of(round * 10 + n)).collect();
        futures_util::future::join_all(photos.iter().enumerate().map(|(n, photo)| set_group_photo(&server, &ann, &gid, n, photo))).await;
    }
    let shown = server.call_op("getgroup", &ann, json!({ "gid": group["gid"] })).await.1["photo"].as_str().unwrap().to_string();
    assert!(shown.ends_with(".jpg"), "{shown}");
    assert_eq!(kept_files(&server), vec![shown], "only the photo the group shows is kept");
}

/// The names of the files in `FILES_DIR`.
fn kept_files(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.dir.path().join("files")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

#[actix_web::test]
async fn a_deleted_groups_photo_is_no_longer_served_unless_someone_else_shows_it() {
    let server = TestServer::start(&[]).await;
    let ann = server.log_in(PHONE, None).await;
    let bob = server.log_in("18005550602", None).await;
    let create = |name: &str| server.call_op("setgroup", &ann, json!({ "gid": 0, "name": name, "m": "18005550602" }));
    let hikers = assert_ok(create("Hikers").await)["gid"].as_i64().unwrap().to_string();
    let climbers = assert_ok(create("Climbers").await)["gid"].as_i64().unwrap().to_string();
    let photo = set_group_photo(&server, &ann, &hikers, 0, &photo_of(90)).await;
    let shared = set_group_photo(&server, &ann, &climbers, 1, &photo_of(95)).await;
    assert_eq!(set_photo(&server, &bob, &photo_of(95)).await, shared, "Bob shows the same bytes: one file");

    // A member leaving changes nothing of the photo.
    assert_ok(server.call_op("delgroup", &bob, json!({ "gid": hikers })).await);
    assert_eq!(served(&server, &photo).await, 200);
    assert_ok(server.call_op("delgroup", &ann, json!({ "gid": hikers })).await);
    assert_eq!(served(&server, &photo).await, 404, "the group is gone, and so is its photo");
    assert_ok(server.call_op("delgroup", &ann, json!({ "gid": climbers })).await);
    assert_eq!(served(&server, &shared).await, 200, "Bob still shows it");
}

#[actix_web::test]
async fn a_group_photo_whose_change_is_not_written_is_not_kept() {
    let server = TestServer::start(&[("PHOTO_DECODES", "1")]).await;
    let ann = server.log_in(PHONE, None).await;
    let gid = assert_ok(server.call_op("setgroup", &ann, json!({ "gid": 0, "name": "Hikers" })).await)["gid"].as_i64().unwrap().to_string();
    let shown = set_group_photo(&server, &ann, &gid, 0, &photo_of(100)).await;

    // The platform refuses the change after the photo was stored: the photo goes.
    server.upstream.refuse_groups(true);
    let setgroup = [("op", "setgroup"), ("token", ann.as_str()), ("gid", gid.as_str())];
    let (_, refused) = post_multipart(&server, &server.api(), &setgroup, Some(("g.jpg", &photo_of(101)))).await;
    assert_eq!(refused["error"], "UPSTREAM", "{refused}");
    assert_eq!(kept_files(&server), vec![shown.clone()], "the refused change's photo is not kept");
    server.upstream.refuse_groups(false);

    // The group is deleted while its new photo waits for its decode: the photo finds no
    // group to show it.
    let decodes = &server.state.files.decodes;
    let held = decodes.turn().await.unwrap();
    let upload = [("op", "upload"), ("token", ann.as_str()), ("profile", "1"), ("gid", gid.as_str())];
    let (api, jpeg) = (server.api(), photo_of(102));
    let late = post_multipart(&server, &api, &upload, Some(("g.jpg", &jpeg)));
    let delete = async {
        assert!(eventually(20, async || decodes.waiting() == 1).await, "the photo waits for the turn");
        assert_ok(server.call_op("delgroup", &ann, json!({ "gid": gid })).await);
        drop(held);
    };
    let ((_, late), ()) = futures_util::future::join(late, delete).await;
    assert_eq!(late["error"], "BADGROUP", "the group is gone: {late}");
    assert_eq!(kept_files(&server), Vec::<String>::new(), "neither the deleted group's photo nor the late one is kept");
}

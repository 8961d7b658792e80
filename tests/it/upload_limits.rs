//! What an upload may cost the service: photos are bounded in pixels before they are
//! decoded, only so many are decoded at once, and a file part is not read before its
//! token is checked.

use crate::common::*;
use crate::files::{multipart, token_of};
use serde_json::{json, Value};
use std::io::Cursor;

const PHONE: &str = "18005550701";

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 60]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// A JPEG of a few hundred bytes whose frame header claims `width` × `height` pixels,
/// as an attacker's would.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::new(16, 16)).write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    let frame = out.windows(2).position(|marker| marker == [0xFF, 0xC0]).expect("a baseline frame header");
    out[frame + 5..frame + 7].copy_from_slice(&height.to_be_bytes());
    out[frame + 7..frame + 9].copy_from_slice(&width.to_be_bytes());
    out
}

fn own_photo_fields(token: &str) -> Vec<(&str, &str)> {
    vec![("op", "upload"), ("token", token), ("mid", "0"), ("profile", "1"), ("gid", "0")]
}

fn multipart_request(server: &TestServer, fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> reqwest::RequestBuilder {
    let (content_type, body) = multipart(fields, file);
    server.client().post(server.api()).header("content-type", content_type).body(body)
}

#[actix_web::test]
async fn a_photo_claiming_more_pixels_than_max_photo_pixels_is_refused_in_both_dialects() {
    for dialect in ["json", "mesibo"] {
        let server = TestServer::start(&[("API_DIALECT", dialect)]).await;
        let token = token_of(&server, PHONE).await;
        let huge = jpeg_claiming(8192, 8192);
        let (status, reply) = server.send(multipart_request(&server, &own_photo_fields(&token), Some(("me.jpg", &huge)))).await;
        assert_eq!(reply["error"], "IMAGETOOLARGE", "{dialect}: {reply}");
        let expected = if dialect == "json" { (413, json!(false)) } else { (200, json!("FAIL")) };
        assert_eq!((status, &reply["result"]), (expected.0, &expected.1), "{dialect}: {reply}");
        assert!(reply["errmsg"].as_str().unwrap().contains("8192 × 8192"), "{reply}");
        let (_, me) = server.call_op("me", &token, json!({})).await;
        assert_eq!(me["profile"]["photo"], "", "nothing stored: {me}");
        server.stop().await;
    }
}

#[actix_web::test]
async fn max_photo_pixels_is_the_bound_for_own_group_and_profile_photos() {
    let server = TestServer::start(&[("MAX_PHOTO_PIXELS", "1048576")]).await;
    let token = server.log_in(PHONE, None).await;
    let fits = png(1024, 1024);
    let over = png(1025, 1024);
    assert_ok(server.send(multipart_request(&server, &own_photo_fields(&token), Some(("me.png", &fits)))).await);
    let refused = server.send(multipart_request(&server, &own_photo_fields(&token), Some(("me.png", &over)))).await;
    assert_error(&refused, 413, "IMAGETOOLARGE");
    // The 2021 apps may send the photo with op=profile, and a group's with setgroup.
    let profile = [("op", "profile"), ("token", token.as_str()), ("name", "Ann")];
    assert_error(&server.send(multipart_request(&server, &profile, Some(("me.png", &over)))).await, 413, "IMAGETOOLARGE");
    let group = [("op", "setgroup"), ("token", token.as_str()), ("gid", "0"), ("name", "Team"), ("m", "")];
    assert_error(&server.send(multipart_request(&server, &group, Some(("g.png", &over)))).await, 413, "IMAGETOOLARGE");
}

#[actix_web::test]
async fn photos_beyond_photo_decodes_wait_their_turn_and_beyond_the_queue_are_busy() {
    let server = TestServer::start(&[("PHOTO_DECODES", "1"), ("PHOTO_DECODE_QUEUE", "1")]).await;
    let token = server.log_in(PHONE, None).await;
    let decodes = &server.state.files.decodes;
    let photo = png(64, 48);
    // The one turn is taken, as by a decode that runs long.
    let held = decodes.turn().await.unwrap();
    assert_eq!(decodes.running(), 1);

    let waiting = multipart_request(&server, &own_photo_fields(&token), Some(("me.png", &photo))).send();
    let waiting = actix_web::rt::spawn(waiting);
    assert!(eventually(20, async || decodes.waiting() == 1).await, "the first photo waits for the turn");
    let (status, headers, busy) = server.send_full(multipart_request(&server, &own_photo_fields(&token), Some(("me.png", &photo)))).await;
    assert_error(&(status, busy.clone()), 503, "BUSY");
    assert_eq!((&busy["retry_after"], &headers["retry-after"]), (&json!(1), &reqwest::header::HeaderValue::from_static("1")));
    assert_eq!(decodes.running(), 1, "the waiting photo did not start");

    drop(held);
    let answered = waiting.await.unwrap().unwrap();
    let reply: Value = answered.json().await.unwrap();
    assert_eq!(reply["result"], true, "it ran once the turn was free: {reply}");
    assert!(reply["photo"].as_str().is_some_and(|name| name.ends_with(".jpg")), "{reply}");
    assert_eq!((decodes.running(), decodes.waiting()), (0, 0));
}

/// A multipart body with its file part first and the text fields after it.
fn file_first_multipart(file: (&str, &[u8]), fields: &[(&str, &str)]) -> (String, Vec<u8>, usize) {
    let (content_type, with_fields_first) = multipart(&[], Some(file));
    let boundary = content_type.split("boundary=").nth(1).unwrap().to_string();
    let closing = format!("--{boundary}--\r\n");
    let mut body = with_fields_first[..with_fields_first.len() - closing.len()].to_vec();
    let file_starts = body.len() - file.1.len() - 2;
    for (name, value) in fields {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    body.extend(closing.as_bytes());
    (content_type, body, file_starts)
}

/// A POST to the API on a connection of its own, its body sent in the parts the test
/// chooses, so that a reply can be seen to come before the rest of the body.
struct HeldUpload {
    connection: tokio::net::TcpStream,
    body: Vec<u8>,
    sent: usize,
}

impl HeldUpload {
    /// Sends the head (announcing the whole body) and the body's first `first` bytes.
    async fn open(server: &TestServer, headers: &[(&str, &str)], body: Vec<u8>, first: usize) -> HeldUpload {
        use tokio::io::AsyncWriteExt;
        let address = server.url.trim_start_matches("http://").to_string();
        let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
        let mut head = format!("POST /api HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        connection.write_all(head.as_bytes()).await.unwrap();
        connection.write_all(&body[..first]).await.unwrap();
        HeldUpload { connection, body, sent: first }
    }

    async fn send_the_rest(&mut self) {
        use tokio::io::AsyncWriteExt;
        self.connection.write_all(&self.body[self.sent..]).await.unwrap();
        self.sent = self.body.len();
    }

    /// The reply: its status and JSON body (a test fails after a generous deadline).
    async fn reply(&mut self) -> (u16, Value) {
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut received = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map(|value| value.trim().parse().unwrap())
                        .expect("a reply with a Content-Length");
                    if received.len() >= end + 4 + length {
                        return (status, serde_json::from_slice(&received[end + 4..end + 4 + length]).unwrap());
                    }
                }
                let read = self.connection.read(&mut buffer).await.unwrap();
                assert!(read > 0, "the connection closed without a reply: {}", String::from_utf8_lossy(&received));
                received.extend_from_slice(&buffer[..read]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), read).await.expect("a reply before the rest of the body")
    }
}

#[actix_web::test]
async fn a_bad_token_is_refused_before_the_file_part_is_read() {
    let server = TestServer::start(&[]).await;
    let file = vec![7u8; 8 * 1024 * 1024];
    for (headers, fields) in [
        (vec![], vec![("op", "upload"), ("token", "not-a-token-of-anyone"), ("profile", "0")]),
        (vec![("Authorization", "Bearer not-a-token-of-anyone")], vec![("op", "upload"), ("profile", "0")]),
    ] {
        let (content_type, body) = multipart(&fields, Some(("big.bin", &file)));
        // All of the text fields and the first kilobyte of the file; 8 MB are held back.
        let first = body.len() - file.len() + 1024;
        let mut headers = headers;
        headers.push(("Content-Type", &content_type));
        let mut upload = HeldUpload::open(&server, &headers, body, first).await;
        // The reply comes while the file is still held back.
        assert_error(&upload.reply().await, 401, "AUTHFAIL");
    }
    assert_eq!(std::fs::read_dir(server.dir.path().join("files")).map(|files| files.count()).unwrap_or(0), 0, "nothing stored");
}

#[actix_web::test]
async fn a_file_before_its_token_is_read_for_at_most_max_uploads_before_token_requests() {
    let server = TestServer::start(&[("MAX_UPLOADS_BEFORE_TOKEN", "1")]).await;
    let token = server.log_in(PHONE, None).await;
    let waiting_for_token = &server.state.uploads_before_token;
    let attachment = vec![9u8; 64 * 1024];
    let fields = [("op", "upload"), ("profile", "0"), ("token", token.as_str())];
    let (content_type, body, file_starts) = file_first_multipart(("a.bin", &attachment), &fields);

    // The first such upload is being read: its token has not arrived yet.
    let mut first = HeldUpload::open(&server, &[("Content-Type", &content_type)], body.clone(), file_starts + 1024).await;
    assert!(eventually(20, async || waiting_for_token.available_permits() == 0).await, "the first upload is read before its token");
    let second = || server.client().post(server.api()).header("content-type", &content_type).body(body.clone());
    let (status, busy) = server.send(second()).await;
    assert_error(&(status, busy.clone()), 503, "BUSY");
    assert_eq!(busy["retry_after"], 1);

    // Its token, once it comes, is checked before the file is kept.
    first.send_the_rest().await;
    let stored = assert_ok(first.reply().await);
    assert!(stored["url"].as_str().is_some_and(|url| url.contains("/files/")), "{stored}");
    assert!(eventually(20, async || waiting_for_token.available_permits() == 1).await, "its place is free again");
    assert_ok(server.send(second()).await);
    let stranger = [("op", "upload"), ("profile", "0"), ("token", "not-a-token-of-anyone")];
    let (content_type, body, _) = file_first_multipart(("a.bin", &attachment), &stranger);
    let refused = server.send(server.client().post(server.api()).header("content-type", content_type).body(body)).await;
    assert_error(&refused, 401, "AUTHFAIL");
}

/// The id of `phone`'s user.
fn user_id_of(server: &TestServer, phone: &str) -> i64 {
    server.scalar(&format!("SELECT id FROM users WHERE address = '{phone}'"))
}

#[actix_web::test]
async fn a_part_head_or_preamble_past_8_kib_is_refused_before_the_rest_arrives() {
    let server = TestServer::start(&[]).await;
    let boundary = "otpgate-test-7d1c";
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let endless_header = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"op\"\r\nX-Padding: ");
    for start in [endless_header.into_bytes(), Vec::new()] {
        // A megabyte announced; 32 KiB of it sent, with no end of the head (or no boundary) in sight.
        let mut body = start;
        body.resize(1024 * 1024, b'a');
        let mut upload = HeldUpload::open(&server, &[("Content-Type", &content_type)], body, 32 * 1024).await;
        let refused = upload.reply().await;
        assert_error(&refused, 400, "BADREQUEST");
        assert!(refused.1["errmsg"].as_str().unwrap().contains("longer than 8192 bytes"), "{}", refused.1);
    }
    // The apps' forms, and a file of many times the bound, are read as before.
    let token = token_of(&server, PHONE).await;
    let fields = [("op", "upload"), ("token", token.as_str()), ("profile", "0")];
    assert_ok(server.send(multipart_request(&server, &fields, Some(("a.bin", &vec![b'a'; 64 * 1024])))).await);
}

#[actix_web::test]
async fn a_user_past_their_upload_limits_is_refused_before_the_file_is_read() {
    let server = TestServer::start(&[("LIMIT_UPLOADS_PER_USER_PER_HOUR", "1")]).await;
    let token = token_of(&server, PHONE).await;
    let fields = [("op", "upload"), ("token", token.as_str()), ("profile", "0")];
    assert_ok(server.send(multipart_request(&server, &fields, Some(("a.bin", b"the hour's one file")))).await);
    let file = vec![7u8; 8 * 1024 * 1024];
    let (content_type, body) = multipart(&fields, Some(("big.bin", &file)));
    let first = body.len() - file.len() + 1024;
    let mut upload = HeldUpload::open(&server, &[("Content-Type", &content_type)], body, first).await;
    // Answered while 8 MB are still held back.
    assert_error(&upload.reply().await, 429, "RATELIMIT");

    // The bytes of the day too: 16 MB of a 20 MB day are spent, and the next body announces 8 MB.
    let server = TestServer::start(&[("LIMIT_UPLOAD_BYTES_PER_USER_PER_DAY", "20000000")]).await;
    let token = token_of(&server, PHONE).await;
    let fields = [("op", "upload"), ("token", token.as_str()), ("profile", "0")];
    for n in 0..2u8 {
        assert_ok(server.send(multipart_request(&server, &fields, Some(("a.bin", &vec![n; 8_000_000])))).await);
    }
    let (content_type, body) = multipart(&fields, Some(("big.bin", &file)));
    let first = body.len() - file.len() + 1024;
    let mut upload = HeldUpload::open(&server, &[("Content-Type", &content_type)], body, first).await;
    assert_error(&upload.reply().await, 429, "RATELIMIT");
}

#[actix_web::test]
async fn uploads_of_one_user_beyond_max_concurrent_uploads_per_user_are_refused() {
    let server = TestServer::start(&[("MAX_CONCURRENT_UPLOADS_PER_USER", "1")]).await;
    let (ann, bob) = (server.log_in(PHONE, None).await, server.log_in("18005550702", None).await);
    let ann_id = user_id_of(&server, PHONE);
    let uploads = &server.state.uploads_per_user;
    let file = vec![7u8; 1024 * 1024];
    let fields = [("op", "upload"), ("token", ann.as_str()), ("profile", "0")];
    let (content_type, body) = multipart(&fields, Some(("big.bin", &file)));
    let first = body.len() - file.len() + 1024;
    let mut held = HeldUpload::open(&server, &[("Content-Type", &content_type)], body, first).await;
    assert!(eventually(20, async || uploads.held(ann_id) == 1).await, "the first upload holds Ann's place");

    let small = |token: &str| {
        let fields = [("op", "upload"), ("token", token), ("profile", "0")];
        multipart_request(&server, &fields, Some(("a.bin", b"a small file")))
    };
    let (status, headers, refused) = server.send_full(small(&ann)).await;
    assert_error(&(status, refused.clone()), 429, "RATELIMIT");
    assert_eq!((&refused["retry_after"], &headers["retry-after"]), (&json!(1), &reqwest::header::HeaderValue::from_static("1")));
    assert_ok(server.send(small(&bob)).await);

    held.send_the_rest().await;
    assert_ok(held.reply().await);
    assert!(eventually(20, async || uploads.held(ann_id) == 0).await, "her place is free once the upload is answered");
    assert_ok(server.send(small(&ann)).await);
}

#[actix_web::test]
async fn a_file_before_its_token_that_stalls_loses_its_place() {
    let server = TestServer::start(&[("MAX_UPLOADS_BEFORE_TOKEN", "1"), ("UPLOAD_BEFORE_TOKEN_TIMEOUT_SECS", "1")]).await;
    let token = server.log_in(PHONE, None).await;
    let waiting_for_token = &server.state.uploads_before_token;
    let attachment = vec![9u8; 64 * 1024];
    let fields = [("op", "upload"), ("profile", "0"), ("token", token.as_str())];
    let (content_type, body, file_starts) = file_first_multipart(("a.bin", &attachment), &fields);

    // A kilobyte of the file, then nothing more.
    let mut stalled = HeldUpload::open(&server, &[("Content-Type", &content_type)], body.clone(), file_starts + 1024).await;
    assert!(eventually(20, async || waiting_for_token.available_permits() == 0).await, "the stalled upload holds the place");
    assert_error(&stalled.reply().await, 504, "TIMEOUT");
    assert!(eventually(20, async || waiting_for_token.available_permits() == 1).await, "and loses it");
    let again = server.client().post(server.api()).header("content-type", &content_type).body(body);
    assert_ok(server.send(again).await);
}

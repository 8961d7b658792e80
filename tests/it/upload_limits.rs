//! What an upload may cost the service: photos are bounded in pixels before they are
//! decoded, only so many are decoded at once, and a file part is not read before its
//! token is checked.

use crate::common::*;
use crate::files::multipart;
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

/// The token of `phone`, logged in through both steps in either dialect.
async fn token_in_any_dialect(server: &TestServer, phone: &str) -> String {
    let succeeded = |reply: &Value| reply["result"] == true || reply["result"] == "OK";
    let (_, started) = server.call(login(phone)).await;
    assert!(succeeded(&started), "{started}");
    let (_, verified) = server.call(verify(phone, &server.sender.last_code(phone))).await;
    assert!(succeeded(&verified), "{verified}");
    verified["token"].as_str().unwrap().to_string()
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
        let token = token_in_any_dialect(&server, PHONE).await;
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
    assert!(eventually(20, || decodes.waiting() == 1).await, "the first photo waits for the turn");
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

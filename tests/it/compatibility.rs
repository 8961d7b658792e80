//! The mesibo messenger apps, replayed: each app's own requests (path, encoding, field
//! names, `dt`, `device`, `code` or `otp`, a Content-Type or none) against the service,
//! and every field the app reads checked with the JSON type it reads it as
//! (`../shared/mesibo-protocol.md`), in both reply dialects.

use crate::common::*;
use serde_json::{json, Value};

/// The seeds' example number: US toll-free, which cannot get SMS; the log sender takes it.
const PHONE: &str = "18005551234";

/// One app and how it talks to its backend.
#[derive(Clone, Copy, Debug)]
enum App {
    /// Android (Java), current: JSON to the base URL, `device` on verify.
    Android,
    /// Android (Kotlin), current: the same without `device`.
    AndroidKotlin,
    /// iOS (Swift), current: a JSON body with no Content-Type at all.
    Swift,
    /// iOS (Objective-C), current: JSON with its Content-Type, `device` on verify.
    ObjectiveC,
    /// The web app: JSON, no `dt`, `otp` only when longer than 4 characters.
    Web,
    /// Android (Kotlin) 2021: a URL-encoded form to /messenger/api.php, the code as `code`.
    Kotlin2021,
    /// iOS 2021 (Objective-C API layer): a multipart form to /messenger/api.php.
    ObjectiveC2021,
}

const APPS: [App; 7] = [App::Android, App::AndroidKotlin, App::Swift, App::ObjectiveC, App::Web, App::Kotlin2021, App::ObjectiveC2021];

impl App {
    fn path(self) -> &'static str {
        match self {
            App::Kotlin2021 | App::ObjectiveC2021 => "/messenger/api.php",
            _ => "/",
        }
    }

    fn is_2021(self) -> bool {
        matches!(self, App::Kotlin2021 | App::ObjectiveC2021)
    }

    /// The fields this app sends for a login start (`code` None) or a verify.
    fn login_fields(self, code: Option<&str>) -> Vec<(&'static str, String)> {
        let mut fields = vec![("op", "login".to_string()), ("appid", APPID.to_string()), ("phone", PHONE.to_string())];
        if !matches!(self, App::Web) {
            fields.push(("dt", "1".into()));
        }
        if let Some(code) = code {
            fields.push((if self.is_2021() { "code" } else { "otp" }, code.to_string()));
            if matches!(self, App::Android | App::ObjectiveC) {
                fields.push(("device", "3f1c9a52-6f1e-4c55-9d7a-0c6c2d4e8b11".into()));
            }
        }
        fields
    }

    fn request(self, server: &TestServer, fields: &[(&'static str, String)]) -> reqwest::RequestBuilder {
        let url = format!("{}{}", server.url, self.path());
        let object: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), Value::from(v.as_str()))).collect();
        let client = server.client();
        match self {
            App::Android | App::AndroidKotlin | App::ObjectiveC | App::Web => client.post(url).json(&object),
            // No Content-Type header at all.
            App::Swift => client.post(url).body(Value::Object(object).to_string()),
            App::Kotlin2021 => client.post(url).form(fields),
            App::ObjectiveC2021 => {
                let boundary = "mesibo-0b7f3c2a9e";
                let mut body = String::new();
                for (name, value) in fields {
                    body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
                }
                body.push_str(&format!("--{boundary}--\r\n"));
                client.post(url).header("content-type", format!("multipart/form-data; boundary={boundary}")).body(body)
            }
        }
    }

    /// Checks what the app reads of a login verify reply, with the types it reads.
    fn check_verify_reply(self, reply: &Value, dialect: &str) {
        assert_result(reply, dialect, true);
        assert_eq!(reply["op"], "login", "every app compares op: {reply}");
        assert!(reply["ts"].is_i64(), "ts is a number (Gson long): {reply}");
        let token = reply["token"].as_str().unwrap_or_else(|| panic!("{self:?}: token is a string: {reply}"));
        assert!(token.len() > 16, "the web app takes a token only if longer than 16: {token}");
        assert_eq!(reply["phone"], PHONE);
        for url in ["upload", "download"] {
            assert!(reply["urls"][url].as_str().is_some_and(|u| u.starts_with("http")), "urls.{url} is a URL string: {reply}");
        }
        for field in ["text", "subject", "title"] {
            assert!(reply["share"][field].as_str().is_some_and(|t| !t.is_empty()), "share.{field}: {reply}");
        }
        assert!(reply["invite"].as_str().is_some_and(|t| !t.is_empty()), "invite: {reply}");
        // The 2021 apps build the user's own profile from these.
        assert_eq!(reply["cc"], "1", "cc is a string of digits (read with intValue): {reply}");
        for field in ["name", "status", "photo"] {
            assert!(reply[field].is_string(), "{field} is a string: {reply}");
        }
    }
}

/// `result` is "OK"/"FAIL" in the mesibo dialect, true/false in the json one.
fn assert_result(reply: &Value, dialect: &str, ok: bool) {
    let expected = match dialect {
        "mesibo" => json!(if ok { "OK" } else { "FAIL" }),
        _ => json!(ok),
    };
    assert_eq!(reply["result"], expected, "{reply}");
}

async fn server_in(dialect: &str) -> TestServer {
    // The built-in stand-in for the platform mints tokens as long as real ones.
    TestServer::start(&[("API_DIALECT", dialect), ("UPSTREAM_URL", "builtin"), ("PHONE_MOBILE_ONLY", "true")]).await
}

#[actix_web::test]
async fn every_app_logs_in_and_out_as_it_does_against_the_reference() {
    for dialect in ["mesibo", "json"] {
        let server = server_in(dialect).await;
        for app in APPS {
            let (status, reply) = server.send(app.request(&server, &app.login_fields(None))).await;
            assert_eq!(status, 200, "{app:?} {dialect}: {reply}");
            assert_result(&reply, dialect, true);
            assert_eq!((&reply["op"], reply["ts"].is_i64()), (&json!("login"), true), "{app:?}: {reply}");
            assert!(reply.get("token").is_none(), "a start carries no token: {reply}");

            let code = server.sender.last_code(PHONE);
            let (status, reply) = server.send(app.request(&server, &app.login_fields(Some(&code)))).await;
            assert_eq!(status, 200, "{app:?} {dialect}: {reply}");
            app.check_verify_reply(&reply, dialect);
            let token = reply["token"].as_str().unwrap().to_string();
            assert!(token.starts_with(otpgate::delivery::upstream::builtin::FAKE_TOKEN_PREFIX));

            // The session works for the ops that need one, and logout ends it with OK.
            let me = app.request(&server, &[("op", "me".into()), ("token", token.clone())]);
            let (status, reply) = server.send(me).await;
            assert_eq!(status, 200, "{app:?}: {reply}");
            assert_result(&reply, dialect, true);
            let logout = app.request(&server, &[("op", "logout".into()), ("token", token.clone()), ("dt", "1".into())]);
            let (status, reply) = server.send(logout).await;
            assert_eq!((status, &reply["op"]), (200, &json!("logout")), "{app:?}: {reply}");
            assert_result(&reply, dialect, true);
        }
        let fake_calls = server.upstream.received();
        assert!(fake_calls.is_empty(), "the built-in platform was used, not the fake one: {fake_calls:?}");
    }
}

#[actix_web::test]
async fn a_start_answers_the_apps_the_fields_it_always_did() {
    let server = server_in("mesibo").await;
    for app in APPS {
        let (status, reply) = server.send(app.request(&server, &app.login_fields(None))).await;
        assert_eq!(status, 200, "{app:?}: {reply}");
        let mut fields: Vec<&str> = reply.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["challenge", "op", "result", "ts"], "{app:?}: the apps send no channel and are told none: {reply}");
    }
}

#[actix_web::test]
async fn failures_answer_200_with_fail_and_the_code_in_the_mesibo_dialect() {
    let server = server_in("mesibo").await;
    for app in APPS {
        // A wrong code: the Android app shows errmsg; every app needs op, and a body it can parse.
        server.send(app.request(&server, &app.login_fields(None))).await;
        let (status, reply) = server.send(app.request(&server, &app.login_fields(Some("000000")))).await;
        assert_eq!(status, 200, "{app:?}: a non-200 reads as 'no internet': {reply}");
        assert_result(&reply, "mesibo", false);
        assert_eq!((&reply["op"], &reply["error"]), (&json!("login"), &json!("BADCODE")), "{reply}");
        assert!(reply["errmsg"].is_string() && reply["ts"].is_i64(), "{reply}");

        // A token the service does not know: AUTHFAIL makes every native app log out.
        let stale = app.request(&server, &[("op", "getcontacts".into()), ("token", "a-stale-token-0123456789".into())]);
        let (status, reply) = server.send(stale).await;
        assert_eq!((status, &reply["error"], &reply["op"]), (200, &json!("AUTHFAIL"), &json!("getcontacts")), "{app:?}: {reply}");
        assert_result(&reply, "mesibo", false);

        // Logout with a token that is already gone (or none at all) is still OK.
        for fields in [vec![("op", "logout".into()), ("token", "a-stale-token-0123456789".into())], vec![("op", "logout".into())]] {
            let (status, reply) = server.send(app.request(&server, &fields)).await;
            assert_eq!(status, 200);
            assert_result(&reply, "mesibo", true);
        }
    }
    // RATELIMIT keeps its Retry-After header and retry_after field, at HTTP 200.
    let limited = TestServer::start(&[("API_DIALECT", "mesibo"), ("OTP_RESEND_SECS", "60")]).await;
    limited.call(login(PHONE)).await;
    let (status, headers, reply) = limited.send_full(limited.client().post(format!("{}/", limited.url)).json(&login(PHONE))).await;
    assert_eq!((status, &reply["error"]), (200, &json!("RATELIMIT")), "{reply}");
    assert!(reply["retry_after"].as_u64().is_some_and(|s| s > 0) && headers.contains_key("retry-after"), "{reply}");
    // A body over the limit is refused as a request, with its 4xx kept.
    let huge = json!({ "op": "login", "appid": APPID, "phone": PHONE, "pad": "x".repeat(300 * 1024) });
    let (status, reply) = limited.send(limited.client().post(format!("{}/", limited.url)).json(&huge)).await;
    assert_eq!((status, &reply["error"]), (400, &json!("BADREQUEST")), "{reply}");
    assert_result(&reply, "mesibo", false);
}

#[actix_web::test]
async fn the_api_answers_at_every_path_the_apps_use_by_get_and_post() {
    let server = server_in("mesibo").await;
    for path in otpgate::api::op::API_PATHS {
        let url = format!("{}{path}", server.url);
        let (status, reply) = server.send(server.client().post(&url).json(&login(PHONE))).await;
        assert_eq!((status, &reply["result"]), (200, &json!("OK")), "POST {path}: {reply}");
        let query = [("op", "login"), ("appid", APPID), ("phone", PHONE)];
        let (status, reply) = server.send(server.client().get(&url).query(&query)).await;
        assert_eq!((status, &reply["result"]), (200, &json!("OK")), "GET {path}: {reply}");
    }
}

#[actix_web::test]
async fn the_seeds_javascript_style_json_is_understood() {
    let server = server_in("mesibo").await;
    // As the platform's own walk-through writes it: unquoted keys.
    let body = r#"{op: "login", phone: "18005551234", appid: "com.example.app"}"#;
    let (status, reply) = server.send(server.client().post(format!("{}/", server.url)).body(body)).await;
    assert_eq!((status, &reply["result"]), (200, &json!("OK")), "{reply}");
    let code = server.sender.last_code(PHONE);
    let body = format!("{{op: 'login', phone: '{PHONE}', appid: '{APPID}', otp: '{code}',}}");
    let (status, reply) = server.send(server.client().post(format!("{}/", server.url)).body(body)).await;
    assert_eq!((status, &reply["result"]), (200, &json!("OK")), "{reply}");
    assert!(reply["token"].is_string());
    // What is neither JSON nor JSON5 is still a bad request, not a crash.
    let (status, reply) = server.send(server.client().post(format!("{}/", server.url)).body("{op: login")).await;
    assert_eq!((status, &reply["error"]), (200, &json!("BADREQUEST")), "{reply}");
}

#[actix_web::test]
async fn only_small_bodies_are_read_as_json5_and_large_ones_must_be_strict_json() {
    let server = server_in("mesibo").await;
    let padding = "x".repeat(8 * 1024);
    let post = |body: String| server.client().post(format!("{}/", server.url)).body(body);
    // Past 4 KiB, a JavaScript-style object is not parsed as JSON5.
    let large_json5 = format!("{{op: 'login', phone: '{PHONE}', appid: '{APPID}', note: '{padding}'}}");
    let (status, reply) = server.send(post(large_json5)).await;
    assert_eq!((status, &reply["error"]), (200, &json!("BADREQUEST")), "{reply}");
    assert_eq!(reply["errmsg"], "the request body is not a JSON object", "{reply}");
    // The same request in strict JSON is read whatever its size,
    let large_json = json!({ "op": "login", "phone": PHONE, "appid": APPID, "note": padding }).to_string();
    let (status, reply) = server.send(post(large_json)).await;
    assert_eq!((status, &reply["result"]), (200, &json!("OK")), "{reply}");
    // and a small JavaScript-style one still is.
    let small_json5 = format!("{{op: 'login', phone: '{PHONE}', appid: '{APPID}', note: 'short'}}");
    let (status, reply) = server.send(post(small_json5)).await;
    assert_eq!((status, &reply["result"]), (200, &json!("OK")), "{reply}");
}

#[actix_web::test]
async fn app_settings_fill_the_login_replies() {
    let settings = json!({
        "default": { "start": { "title": "Important", "message": "Your code is on its way", "delay": 2000 } },
        APPID: { "share": { "text": "Chat with me on {appname}" }, "urls": { "download": "https://cdn.example.com/files/" } },
    })
    .to_string();
    let env = [
        ("API_DIALECT", "mesibo"),
        ("UPSTREAM_URL", "builtin"),
        ("APP_SETTINGS", settings.as_str()),
        ("APP_NAMES", r#"{"com.example.app":"Example Chat"}"#),
        ("PUBLIC_URL", "https://login.example.com"),
    ];
    let server = TestServer::start(&env).await;
    let (_, reply) = server.call(login(PHONE)).await;
    assert_eq!(
        (&reply["title"], &reply["message"], &reply["delay"]),
        (&json!("Important"), &json!("Your code is on its way"), &json!(2000))
    );
    let code = server.sender.last_code(PHONE);
    let (_, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!(reply["share"]["text"], "Chat with me on Example Chat");
    assert_eq!(reply["invite"], "Chat with me on Example Chat");
    assert_eq!(reply["urls"], json!({ "upload": "https://login.example.com/api.php", "download": "https://cdn.example.com/files/" }));
    assert_eq!(reply["name"], "Ann", "the name the login sent");
}

#[actix_web::test]
async fn openapi_describes_the_dialect_in_force() {
    for (dialect, result) in [("mesibo", json!({ "type": "string", "enum": ["OK", "FAIL"] })), ("json", json!({ "type": "boolean" }))] {
        let server = server_in(dialect).await;
        let (_, doc) = server.send(server.client().get(format!("{}/openapi.json", server.url))).await;
        assert_eq!(doc["components"]["schemas"]["Reply"]["properties"]["result"], result, "{dialect}");
        for path in otpgate::api::op::API_PATHS {
            assert!(doc["paths"][path]["post"].is_object(), "{path} is documented");
        }
        let badcode = &doc["paths"]["/"]["post"]["responses"][if dialect == "mesibo" { "200" } else { "401" }];
        assert!(badcode["description"].as_str().unwrap().contains("BADCODE"), "{dialect}: {badcode}");
    }
}

#[actix_web::test]
async fn an_unreachable_platform_is_named_in_the_verify_reply() {
    // Nothing listens on port 1 of loopback: the connection is refused.
    let server = TestServer::start(&[("UPSTREAM_URL", "http://127.0.0.1:1/")]).await;
    let code = server.start_login(PHONE).await;
    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!((status, &reply["error"]), (502, &json!("UPSTREAM")), "{reply}");
    let message = reply["errmsg"].as_str().unwrap();
    assert!(message.contains("could not be reached (connection refused)"), "{message}");
    assert!(message.contains("your code stays valid"), "{message}");
}

//! Code delivery through the configured senders: SMTP e-mail, the HTTP SMS
//! gateway, and what happens when delivery fails.

use crate::common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const PHONE: &str = "18005551234";

/// A minimal SMTP server on loopback that keeps every message it accepts,
/// or refuses every recipient when `refuse` is set.
struct FakeSmtp {
    port: u16,
    messages: Arc<Mutex<Vec<String>>>,
}

impl FakeSmtp {
    async fn start(refuse: bool) -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        actix_web::rt::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                actix_web::rt::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 localhost ESMTP test\r\n").await.unwrap();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                        let answer: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 localhost\r\n",
                            "RCPT" if refuse => b"550 no such mailbox\r\n",
                            "DATA" => {
                                write.write_all(b"354 go ahead\r\n").await.unwrap();
                                let mut message = String::new();
                                while let Ok(Some(data)) = lines.next_line().await {
                                    if data == "." {
                                        break;
                                    }
                                    message.push_str(&data);
                                    message.push('\n');
                                }
                                store.lock().unwrap().push(message);
                                b"250 queued\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await.unwrap();
                                break;
                            }
                            _ => b"250 OK\r\n",
                        };
                        write.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        FakeSmtp { port, messages }
    }
}

fn code_in(text: &str) -> String {
    let at = text.find("Your code is ").expect("message carries the code") + "Your code is ".len();
    text[at..].chars().take_while(char::is_ascii_digit).collect()
}

#[actix_web::test]
async fn email_login_through_smtp() {
    let smtp = FakeSmtp::start(false).await;
    let port = smtp.port.to_string();
    let env = [
        ("EMAIL_SENDER", "smtp"),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("SMTP_TLS", "none"),
        ("SMTP_FROM", "Login <login@example.com>"),
        ("EMAIL_SUBJECT", "Your {appname} sign-in code"),
        ("APP_NAMES", r#"{"com.example.app":"Example"}"#),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await;

    let (status, reply) = server.call(json!({ "op": "login", "email": "ann@example.com", "appid": APPID })).await;
    assert_eq!(status, 200, "{reply}");
    let message = smtp.messages.lock().unwrap()[0].clone();
    assert!(message.contains("To: ann@example.com"), "{message}");
    assert!(message.contains("From: Login <login@example.com>"), "{message}");
    assert!(message.contains("Subject: Your Example sign-in code"), "{message}");
    let code = code_in(&message);
    assert_eq!(code.len(), 6);

    let (status, reply) = server.call(json!({ "op": "login", "email": "ann@example.com", "appid": APPID, "otp": code })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["token"], "usertoken-1");
}

#[actix_web::test]
async fn smtp_refusal_is_sendfailed() {
    let smtp = FakeSmtp::start(true).await;
    let port = smtp.port.to_string();
    let env = [
        ("OTP_SENDER", "smtp"),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("SMTP_TLS", "none"),
        ("SMTP_FROM", "login@example.com"),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await;
    let reply = server.call(json!({ "op": "login", "email": "ann@example.com", "appid": APPID })).await;
    assert_error(&reply, 502, "SENDFAILED");
    // With OTP_SENDER=smtp there is no way to reach a phone.
    assert_error(&server.call(login(PHONE)).await, 400, "BADPHONE");
}

#[actix_web::test]
async fn sms_through_the_http_gateway() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Reply(200, r#"{"status":"queued"}"#.into()));
    let url = gateway.url();
    let env = [
        ("OTP_SENDER", "http"),
        ("SMS_HTTP_URL", url.as_str()),
        ("SMS_HTTP_AUTH", "Bearer gateway-key"),
        ("SMS_HTTP_BODY", r#"{"recipient":"+{phone}","body":"{message}","kind":"otp"}"#),
        ("OTP_MESSAGE", "Code for {appid}: {otp}"),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await;
    assert_eq!(server.call(login(PHONE)).await.0, 200);

    let received = gateway.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].authorization.as_deref(), Some("Bearer gateway-key"));
    let body = received[0].json();
    assert_eq!(body["recipient"], "+18005551234");
    assert_eq!(body["kind"], "otp");
    let text = body["body"].as_str().unwrap();
    let code = text.strip_prefix("Code for com.example.app: ").expect("template rendered");
    assert_eq!(server.call(verify(PHONE, code)).await.0, 200);

    // E-mail is not something an SMS gateway can deliver.
    let reply = server.call(json!({ "op": "login", "email": "ann@example.com", "appid": APPID })).await;
    assert_error(&reply, 400, "BADEMAIL");
}

#[actix_web::test]
async fn gateway_error_is_sendfailed_and_leaves_no_valid_code() {
    let gateway = FakeUpstream::start();
    gateway.set_mode(Mode::Reply(503, "try later".into()));
    let url = gateway.url();
    let env = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", url.as_str()), ("OTP_RESEND_SECS", "30")];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await;
    assert_error(&server.call(login(PHONE)).await, 502, "SENDFAILED");

    // The undelivered code is gone, so the resend interval does not hold the user back.
    gateway.set_mode(Mode::Reply(200, "{}".into()));
    assert_eq!(server.call(login(PHONE)).await.0, 200);
    assert_eq!(gateway.received().len(), 2);
}

#[actix_web::test]
async fn an_undelivered_code_cannot_be_used() {
    let server = TestServer::start(&[]).await;
    server.sender.fail.store(true, Ordering::SeqCst);
    assert_error(&server.call(login(PHONE)).await, 502, "SENDFAILED");
    assert_eq!(server.scalar("SELECT count(*) FROM otp_challenges"), 0, "no code is left valid that nobody received");
    assert!(server.logs().contains("code not delivered"));
}

#[actix_web::test]
async fn an_sms_carries_its_apps_auto_fill_lines_and_an_email_does_not() {
    const HASH: &str = "FA+9qCX9VSu";
    let (gateway, smtp) = (FakeUpstream::start(), FakeSmtp::start(false).await);
    gateway.set_mode(Mode::Reply(200, r#"{"status":"queued"}"#.into()));
    let (url, port) = (gateway.url(), smtp.port.to_string());
    let settings = json!({ APPID: { "android_hash": HASH, "webotp_domain": "login.example.com" } }).to_string();
    let env = [
        ("OTP_SENDER", "http"),
        ("SMS_HTTP_URL", url.as_str()),
        ("EMAIL_SENDER", "smtp"),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("SMTP_TLS", "none"),
        ("SMTP_FROM", "login@example.com"),
        ("APP_SETTINGS", settings.as_str()),
    ];
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(&env, FakeUpstream::start(), dir, Delivery::Configured).await;

    assert_eq!(server.call(login(PHONE)).await.0, 200);
    let sms = gateway.received()[0].json()["text"].as_str().expect("the SMS text").to_string();
    let code = code_in(&sms);
    assert_eq!(sms, format!("Your code is {code}\n{HASH}\n@login.example.com #{code}"));
    let lines: Vec<&str> = sms.lines().collect();
    assert_eq!(lines[lines.len() - 2..], [HASH.to_string(), format!("@login.example.com #{code}")]);
    assert_eq!(server.call(verify(PHONE, &code)).await.0, 200, "the code the lines carry is the one issued");

    let (status, reply) = server.call(json!({ "op": "login", "email": "ann@example.com", "appid": APPID })).await;
    assert_eq!(status, 200, "{reply}");
    let email = smtp.messages.lock().unwrap()[0].clone();
    let code = code_in(&email);
    assert_eq!(code.len(), 6, "{email}");
    assert!(!email.contains(HASH) && !email.contains("login.example.com") && !email.contains(&format!("#{code}")), "{email}");
}

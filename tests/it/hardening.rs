//! Defects an adversarial test found, each shown fixed: a token without its session,
//! codes stranded by a crash, control characters stored and served back, and requests
//! whose shape burnt a guess or hid a malformed request behind another error.

use crate::common::*;
use serde_json::json;

const PHONE: &str = "18005551234";

#[actix_web::test]
async fn a_login_that_cannot_be_recorded_answers_internal_and_the_code_works_again() {
    let server = TestServer::start(&[]).await;
    let code = server.start_login(PHONE).await;
    // The database refuses the session row, as a full disk would refuse the write.
    let (refuse, allow) = match backend::on_postgres() {
        true => (
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;
             CREATE TRIGGER refuse_sessions BEFORE INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION refuse();",
            "DROP TRIGGER refuse_sessions ON sessions",
        ),
        false => (
            "CREATE TRIGGER refuse_sessions BEFORE INSERT ON sessions BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
            "DROP TRIGGER refuse_sessions",
        ),
    };
    server.execute(refuse);
    let reply = server.call(verify(PHONE, &code)).await;
    assert_error(&reply, 503, "INTERNAL");
    assert!(reply.1.get("token").is_none(), "no token without its session: {}", reply.1);
    assert_eq!(server.scalar("SELECT count(*) FROM users"), 0, "nothing of the failed login stayed");

    server.execute(allow);
    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!(status, 200, "the same code works on retry: {reply}");
    let token = reply["token"].as_str().unwrap();
    assert_ok(server.call_op("me", token, json!({})).await);
}

#[actix_web::test]
async fn a_claim_stranded_by_a_crash_frees_itself_after_its_deadline_and_not_before() {
    let server = TestServer::start_on_manual_clock(&[("UPSTREAM_TIMEOUT_SECS", "2")]).await;
    let code = server.start_login(PHONE).await;
    // A verify was exchanging the code when the process died: the claim is all that is left.
    server.execute(&format!("UPDATE otp_challenges SET claimed_at = {}", server.clock.now()));
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "BADCODE");
    // The deadline is the upstream timeout (2 s) plus a margin of 30 s.
    server.clock.advance(std::time::Duration::from_secs(31));
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "BADCODE");
    server.clock.advance(std::time::Duration::from_secs(1));
    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!(status, 200, "{reply}");
    // Still never accepted twice.
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "BADCODE");
    assert_eq!(server.upstream.received().len(), 1);
}

#[actix_web::test]
async fn control_characters_are_refused_in_every_stored_text_field() {
    let server = TestServer::start(&[("TEST_OTPS", "18005550000:123456")]).await;
    for bad in ["Ann\u{0}", "\u{1b}[31mAnn", "Ann\u{202e}nnA", "\u{2066}Ann"] {
        for field in ["name", "device", "appid"] {
            let mut request = verify("18005550000", "123456");
            request[field] = bad.into();
            let reply = server.call(request).await;
            assert_error(&reply, 400, "BADPARAM");
            assert!(reply.1["errmsg"].as_str().unwrap().contains(field), "{}", reply.1);
        }
    }
    assert!(server.upstream.received().is_empty(), "nothing reached upstream");
    let token = server.log_in(PHONE, Some("android-123")).await;
    for bad in ["Ann\u{0}", "Ann\u{202e}"] {
        assert_error(&server.call_op("profile", &token, json!({ "status": bad })).await, 400, "BADPARAM");
    }
}

#[actix_web::test]
async fn a_code_of_the_wrong_shape_is_refused_without_spending_a_guess() {
    let server = TestServer::start(&[("OTP_MAX_ATTEMPTS", "1")]).await;
    let code = server.start_login(PHONE).await;
    // As a JSON number a code loses its leading zeros; letters and short codes cannot match.
    let number = json!({ "op": "login", "phone": PHONE, "appid": APPID, "otp": 12345 });
    for request in [number, verify(PHONE, "12345"), verify(PHONE, "1234567"), verify(PHONE, "12a456")] {
        assert_error(&server.call(request).await, 400, "BADPARAM");
    }
    // With one guess allowed, the code still works.
    assert_eq!(server.call(verify(PHONE, &code)).await.0, 200);
}

#[actix_web::test]
async fn invalid_utf8_in_a_form_or_query_string_is_a_bad_request() {
    let server = TestServer::start(&[]).await;
    let form = format!("op=login&appid={APPID}&phone=1800555%FF1234");
    let request = server.client().post(server.api()).header("content-type", "application/x-www-form-urlencoded").body(form.clone());
    assert_error(&server.send(request).await, 400, "BADREQUEST");
    let request = server.client().get(format!("{}?{form}", server.api()));
    assert_error(&server.send(request).await, 400, "BADREQUEST");
    assert_eq!(server.sender.count(), 0);
    // Encoded UTF-8 is fine.
    let request = server.client().post(server.api()).form(&[("op", "login"), ("appid", APPID), ("phone", PHONE), ("name", "Zoë")]);
    assert_eq!(server.send(request).await.0, 200);
}

#[actix_web::test]
async fn guesses_that_cannot_match_a_code_do_not_spend_the_phones_budget() {
    let server = TestServer::start(&[("LIMIT_VERIFY_PER_PHONE_PER_HOUR", "3")]).await;
    let bogus = |n: usize| json!({ "op": "login", "phone": PHONE, "appid": "com.attacker", "otp": format!("{n:06}") });
    // Before and after the victim asks for a code, from another address with another app.
    for n in 0..10 {
        assert_error(&server.call_from("127.0.0.2", bogus(n)).await, 401, "BADCODE");
    }
    let code = server.start_login(PHONE).await;
    for n in 10..40 {
        assert_error(&server.call_from("127.0.0.2", bogus(n)).await, 401, "BADCODE");
    }
    let (status, reply) = server.call(verify(PHONE, &code)).await;
    assert_eq!(status, 200, "the victim's code still works: {reply}");

    // Guesses that could match still spend it (the victim's verify spent one of the three).
    let code = server.start_login(PHONE).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..2 {
        assert_error(&server.call_from("127.0.0.2", verify(PHONE, wrong)).await, 401, "BADCODE");
    }
    assert_error(&server.call_from("127.0.0.2", verify(PHONE, wrong)).await, 429, "RATELIMIT");
}

#[actix_web::test]
async fn a_verify_with_the_challenge_id_is_counted_apart_from_guesses_without_it() {
    let server = TestServer::start(&[("OTP_MAX_ATTEMPTS", "3")]).await;
    let (status, started) = server.call(login(PHONE)).await;
    assert_eq!(status, 200, "{started}");
    let challenge = started["challenge"].as_str().expect("the start reply carries a challenge id").to_string();
    assert!(challenge.len() >= 22, "{challenge}");
    let code = server.sender.last_code(PHONE);
    let wrong = if code == "000000" { "000001" } else { "000000" };

    // Someone who never saw the start reply uses up the guesses without a challenge id...
    for _ in 0..2 {
        assert_error(&server.call_from("127.0.0.2", verify(PHONE, wrong)).await, 401, "BADCODE");
    }
    for _ in 0..2 {
        assert_error(&server.call_from("127.0.0.2", verify(PHONE, wrong)).await, 401, "TOOMANYATTEMPTS");
    }
    assert_error(&server.call_from("127.0.0.2", verify(PHONE, &code)).await, 401, "TOOMANYATTEMPTS");
    // ...and a made-up challenge id matches nothing and spends nothing.
    let mut forged = verify(PHONE, &code);
    forged["challenge"] = "AAAAAAAAAAAAAAAAAAAAAA".into();
    assert_error(&server.call_from("127.0.0.2", forged).await, 401, "BADCODE");

    // The holder of the start reply still logs in.
    let mut bound = verify(PHONE, &code);
    bound["challenge"] = challenge.into();
    let (status, reply) = server.call(bound).await;
    assert_eq!(status, 200, "{reply}");

    // Guesses with the challenge id have their own limit.
    let (_, started) = server.call(login(PHONE)).await;
    let code = server.sender.last_code(PHONE);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let with_challenge = |otp: &str| {
        let mut request = verify(PHONE, otp);
        request["challenge"] = started["challenge"].clone();
        request
    };
    for expected in ["BADCODE", "BADCODE", "TOOMANYATTEMPTS"] {
        assert_error(&server.call(with_challenge(wrong)).await, 401, expected);
    }
    assert_error(&server.call(with_challenge(&code)).await, 401, "TOOMANYATTEMPTS");
}

#[actix_web::test]
async fn require_challenge_refuses_a_verify_without_it_except_for_test_numbers() {
    let server = TestServer::start(&[("REQUIRE_CHALLENGE", "true"), ("OTP_MAX_ATTEMPTS", "1"), ("TEST_OTPS", "18005550000:123456")]).await;
    let (_, started) = server.call(login(PHONE)).await;
    let code = server.sender.last_code(PHONE);
    let reply = server.call(verify(PHONE, &code)).await;
    assert_error(&reply, 400, "BADPARAM");
    assert!(reply.1["errmsg"].as_str().unwrap().contains("challenge"), "{}", reply.1);
    let mut bound = verify(PHONE, &code);
    bound["challenge"] = started["challenge"].clone();
    assert_eq!(server.call(bound).await.0, 200, "the refusal spent no guess");
    // Test numbers get no challenge id, and need none.
    let (_, started) = server.call(login("18005550000")).await;
    assert!(started.get("challenge").is_none(), "{started}");
    assert_eq!(server.call(verify("18005550000", "123456")).await.0, 200);
}

#[actix_web::test]
async fn of_200_concurrent_wrong_guesses_exactly_the_allowed_number_are_evaluated() {
    let server = TestServer::start(&[("OTP_MAX_ATTEMPTS", "5")]).await;
    let (_, started) = server.call(login(PHONE)).await;
    let code = server.sender.last_code(PHONE);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for challenge in [None, Some(started["challenge"].clone())] {
        let guesses = (0..200).map(|_| {
            let mut request = verify(PHONE, wrong);
            if let Some(challenge) = &challenge {
                request["challenge"] = challenge.clone();
            }
            server.call(request)
        });
        let replies = futures_util::future::join_all(guesses).await;
        let counted = |error: &str| replies.iter().filter(|(_, reply)| reply["error"] == error).count();
        assert_eq!((counted("BADCODE"), counted("TOOMANYATTEMPTS")), (4, 196), "{challenge:?}");
    }
    let (attempts, bound) =
        (server.scalar("SELECT attempts FROM otp_challenges"), server.scalar("SELECT bound_attempts FROM otp_challenges"));
    assert_eq!((attempts, bound), (5, 5));
    assert_error(&server.call(verify(PHONE, &code)).await, 401, "TOOMANYATTEMPTS");
}

/// Values for each field of each op the OpenAPI document describes: empty, huge, of the
/// wrong JSON type, or with characters a parser or a database could choke on.
fn hostile_values(valid_phone: &str) -> Vec<serde_json::Value> {
    vec![
        json!(""),
        json!(" "),
        json!("x".repeat(10_000)),
        json!(0),
        json!(-1),
        json!(1e300),
        json!(true),
        json!(null),
        json!([valid_phone, 12, null, {"a": 1}]),
        json!({ "nested": [1, 2] }),
        json!("Ann\u{0}\u{1b}[31m\u{202e}"),
        json!("'; DROP TABLE users; --"),
        json!("%FF%00"),
        json!("\u{1F600}".repeat(100)),
        json!(valid_phone),
        json!("123456"),
    ]
}

#[actix_web::test]
async fn requests_generated_from_the_openapi_document_never_answer_a_server_error() {
    let server = TestServer::start(&[("TEST_OTPS", "18005550000:123456")]).await;
    let token = server.log_in(PHONE, Some("android-123")).await;
    let (_, document) = server.send(server.client().get(format!("{}/openapi.json", server.url))).await;
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let mut sent = 0;
    for (name, schema) in schemas.iter().filter(|(name, _)| name.ends_with("Request")) {
        let op = schema["properties"]["op"]["enum"][0].as_str().unwrap_or_else(|| panic!("{name} names its op"));
        let fields: Vec<&String> = schema["properties"].as_object().unwrap().keys().filter(|k| *k != "op").collect();
        assert!(!fields.is_empty(), "{name}");
        for field in &fields {
            for value in hostile_values("18005550000") {
                // Each field alone, and beside a valid login or a valid session.
                for base in [json!({ "op": op }), json!({ "op": op, "appid": APPID, "phone": "18005550000", "token": token })] {
                    let mut request = base;
                    request[field.as_str()] = value.clone();
                    let (status, reply) = server.call(request.clone()).await;
                    assert!(status < 500, "{request} answered {status}: {reply}");
                    assert!(reply["result"].is_boolean(), "{request}: {reply}");
                    sent += 1;
                }
            }
        }
    }
    assert!(sent >= 500, "only {sent} requests");
    // The session survived (unless a generated logout ended it, which is fine: it answered).
    assert!(server.call_op("me", &token, json!({})).await.0 < 500);
}

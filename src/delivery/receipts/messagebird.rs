//! MessageBird status reports (to a message's `reportUrl`), signed with
//! `MessageBird-Signature-JWT`: a JWT by the account's signing key whose claims bind the
//! request's URL and body and limit when it may arrive.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{field, rfc3339_seconds, same_secret, Callback, DeliveryStatus, Receipt, ReceiptError};

const SIGNATURE_HEADER: &str = "messagebird-signature-jwt";
const ISSUER: &str = "MessageBird";
/// Clock difference tolerated on `nbf` and `exp`, as MessageBird's own validators allow.
const MAX_SKEW_SECS: i64 = 1;

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    nbf: i64,
    exp: i64,
    #[serde(default)]
    jti: String,
    /// Hex SHA-256 of the full URL as requested.
    url_hash: String,
    /// Hex SHA-256 of the body; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_hash: Option<String>,
}

/// Checks a status report against each configured signing key and reads it: the index of
/// the key that signed it, and its receipt. `now`: unix seconds.
pub fn verify_and_read(callback: &Callback<'_>, signing_keys: &[&str], now: i64) -> Result<(usize, Vec<Receipt>), ReceiptError> {
    let matched = verify(callback, signing_keys, now)?;
    Ok((matched, vec![read(callback)?]))
}

/// The `MessageBird-Signature-JWT` of a request to `url` with `body`, issued at `now` and
/// valid for a minute, signed HS256 (what MessageBird sends, for fakes and tests).
pub fn signature_jwt(url: &str, body: &[u8], signing_key: &str, now: i64, jti: &str) -> String {
    let claims = Claims {
        iss: ISSUER.into(),
        nbf: now,
        exp: now + 60,
        jti: jti.into(),
        url_hash: sha256_hex(url.as_bytes()),
        payload_hash: (!body.is_empty()).then(|| sha256_hex(body)),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(signing_key.as_bytes()))
        .expect("HMAC signing does not fail")
}

/// The index of the key that signed the request.
fn verify(callback: &Callback<'_>, signing_keys: &[&str], now: i64) -> Result<usize, ReceiptError> {
    let token = callback.header(SIGNATURE_HEADER).ok_or(ReceiptError::BadSignature)?.trim();
    // Only HMAC: the signing key is a shared secret. `none` does not even parse.
    let algorithm = jsonwebtoken::decode_header(token).map_err(|_| ReceiptError::BadSignature)?.alg;
    if !matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(ReceiptError::BadSignature);
    }
    let mut validation = Validation::new(algorithm);
    // The times are checked below against `now`, not the system clock; the other claims too.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let (matched, claims) = signing_keys
        .iter()
        .enumerate()
        .filter(|(_, key)| !key.is_empty())
        .find_map(|(index, key)| {
            let key = DecodingKey::from_secret(key.as_bytes());
            jsonwebtoken::decode::<Claims>(token, &key, &validation).ok().map(|data| (index, data.claims))
        })
        .ok_or(ReceiptError::BadSignature)?;
    let in_time = claims.nbf - MAX_SKEW_SECS <= now && now <= claims.exp + MAX_SKEW_SECS;
    let url_signed = same_secret(claims.url_hash.as_bytes(), sha256_hex(callback.url.as_bytes()).as_bytes());
    // A body must be covered by its hash, and a hash without a body means it was dropped.
    let body_signed = match claims.payload_hash.as_deref().filter(|hash| !hash.is_empty()) {
        Some(hash) => !callback.body.is_empty() && same_secret(hash.as_bytes(), sha256_hex(callback.body).as_bytes()),
        None => callback.body.is_empty(),
    };
    if claims.iss == ISSUER && in_time && !claims.jti.is_empty() && url_signed && body_signed {
        Ok(matched)
    } else {
        Err(ReceiptError::BadSignature)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The report's fields come as query parameters; a form or flat JSON body, when there is
/// one, is read too and takes precedence (the exact shape is not documented).
fn read(callback: &Callback<'_>) -> Result<Receipt, ReceiptError> {
    let query = callback.query_fields().ok_or_else(|| ReceiptError::Malformed("the query string is not form-encoded".into()))?;
    let body = callback.body_fields().unwrap_or_default();
    let value = |name: &str| field(&body, name).or_else(|| field(&query, name));
    let message_id = value("id").ok_or_else(|| ReceiptError::Malformed("no id".into()))?;
    let status = value("status").ok_or_else(|| ReceiptError::Malformed("no status".into()))?;
    Ok(Receipt {
        message_id: message_id.to_string(),
        status: delivery_status(status),
        error_code: value("statusErrorCode").map(str::to_string),
        reported_at: value("statusDatetime").and_then(rfc3339_seconds),
    })
}

fn delivery_status(status: &str) -> Option<DeliveryStatus> {
    match status {
        "sent" => Some(DeliveryStatus::Sent),
        "delivered" => Some(DeliveryStatus::Delivered),
        "delivery_failed" | "expired" => Some(DeliveryStatus::Undelivered),
        // scheduled, buffered.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    // MessageBird's reference case "Valid JWT with URL parameters and payload - POST"
    // (go-rest-api signature_jwt/testdata/reference.json).
    const KEY: &str = "36efdd1aace2e26cd490f0d951138253bef2f7c6d34d18981da781555cc4cebb";
    const URL: &str = "https://example.com/path?bar=1&foo=2";
    const PAYLOAD: &str = "Hello, World!";
    /// 2021-07-05T12:00:00+02:00, the token's `nbf`; it expires a minute later.
    const RECEIVED: i64 = 1_625_479_200;
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJNZXNzYWdlQmlyZCIsIm5iZiI6MTYyNTQ3OTIwMCwiZXhwIjoxNjI1NDc5MjYwLCJqdGkiOiI5M2U1NTAwNi1hMGU4LTQ1MjYtYTE5MC1mYTVmZjAwZWExMTYiLCJ1cmxfaGFzaCI6IjQxZjA1ZjBkZGQwYTIyYWIyMDlhYzQ2ZjQ3YzQ1NzJkOWNlZmEyNTdlZDc0YjI0MDA0YmFlNzUzZWNlNmMyNjAiLCJwYXlsb2FkX2hhc2giOiJkZmZkNjAyMWJiMmJkNWIwYWY2NzYyOTA4MDllYzNhNTMxOTFkZDgxYzdmNzBhNGIyODY4OGEzNjIxODI5ODZmIn0._H--TOuYFLpeEH39-rg5E3IHVkjHozBcaKVWPRC5m9I";

    fn check(url: &str, token: &str, body: &str, keys: &[&str], now: i64) -> Result<usize, ReceiptError> {
        let headers = [("MessageBird-Signature-JWT", token)];
        verify(&Callback { url, headers: &headers, content_type: Some("text/plain"), body: body.as_bytes() }, keys, now)
    }

    fn reference(url: &str, token: &str, body: &str, now: i64) -> bool {
        check(url, token, body, &[KEY], now).is_ok()
    }

    /// A token with the reference case's claims, changed by `change`, signed with `algorithm`.
    fn token_with(algorithm: Algorithm, change: impl FnOnce(&mut Claims)) -> String {
        let mut claims = Claims {
            iss: ISSUER.into(),
            nbf: RECEIVED,
            exp: RECEIVED + 60,
            jti: "93e55006-a0e8-4526-a190-fa5ff00ea116".into(),
            url_hash: sha256_hex(URL.as_bytes()),
            payload_hash: Some(sha256_hex(PAYLOAD.as_bytes())),
        };
        change(&mut claims);
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
    }

    #[test]
    fn reference_vector_is_valid_when_received() {
        assert_eq!(check(URL, TOKEN, PAYLOAD, &[KEY], RECEIVED), Ok(0));
        assert_eq!(check(URL, TOKEN, PAYLOAD, &["another key", KEY], RECEIVED), Ok(1));
        // Signed, but no report: the reference case carries no fields.
        let headers = [("messagebird-signature-jwt", TOKEN)];
        let callback = Callback { url: URL, headers: &headers, content_type: Some("text/plain"), body: PAYLOAD.as_bytes() };
        assert!(matches!(verify_and_read(&callback, &[KEY], RECEIVED), Err(ReceiptError::Malformed(_))));
    }

    #[test]
    fn our_tokens_carry_the_reference_claims() {
        // The same claims, byte for byte; the header names the same fields in another order.
        let claims = |token: &str| token.split('.').nth(1).unwrap().to_string();
        let ours = signature_jwt(URL, PAYLOAD.as_bytes(), KEY, RECEIVED, "93e55006-a0e8-4526-a190-fa5ff00ea116");
        assert_eq!(claims(&ours), claims(TOKEN));
        assert_eq!(claims(&token_with(Algorithm::HS256, |_| {})), claims(TOKEN));
        assert!(reference(URL, &ours, PAYLOAD, RECEIVED));
    }

    #[test]
    fn refuses_an_expired_token() {
        assert!(reference(URL, TOKEN, PAYLOAD, RECEIVED + 61));
        assert!(!reference(URL, TOKEN, PAYLOAD, RECEIVED + 62));
        assert!(!reference(URL, TOKEN, PAYLOAD, RECEIVED + 3600));
    }

    #[test]
    fn refuses_a_token_not_yet_valid() {
        assert!(reference(URL, TOKEN, PAYLOAD, RECEIVED - 1));
        assert!(!reference(URL, TOKEN, PAYLOAD, RECEIVED - 2));
        assert!(!reference(URL, TOKEN, PAYLOAD, RECEIVED - 3600));
    }

    #[test]
    fn refuses_a_reordered_query_or_another_url() {
        assert!(!reference("https://example.com/path?foo=2&bar=1", TOKEN, PAYLOAD, RECEIVED));
        assert!(!reference("https://example.com/path?bar=1&foo=3", TOKEN, PAYLOAD, RECEIVED));
        assert!(!reference("https://example.org/path?bar=1&foo=2", TOKEN, PAYLOAD, RECEIVED));
    }

    #[test]
    fn refuses_a_payload_removed_added_or_changed() {
        assert!(!reference(URL, TOKEN, "", RECEIVED));
        assert!(!reference(URL, TOKEN, "Hello, World?", RECEIVED));
        let without_payload = token_with(Algorithm::HS256, |claims| claims.payload_hash = None);
        assert!(reference(URL, &without_payload, "", RECEIVED));
        assert!(!reference(URL, &without_payload, PAYLOAD, RECEIVED));
    }

    #[test]
    fn refuses_a_wrong_key() {
        assert_eq!(
            check(URL, TOKEN, PAYLOAD, &["36efdd1aace2e26cd490f0d951138253bef2f7c6d34d18981da781555cc4cebc"], RECEIVED),
            Err(ReceiptError::BadSignature)
        );
        assert_eq!(check(URL, TOKEN, PAYLOAD, &[], RECEIVED), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_alg_none() {
        let (_, claims_and_signature) = TOKEN.split_once('.').unwrap();
        let claims = claims_and_signature.split_once('.').unwrap().0;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(!reference(URL, &format!("{header}.{claims}."), PAYLOAD, RECEIVED));
        // The reference signature under a `none` header does not pass either.
        let signature = claims_and_signature.split_once('.').unwrap().1;
        assert!(!reference(URL, &format!("{header}.{claims}.{signature}"), PAYLOAD, RECEIVED));
    }

    #[test]
    fn accepts_hs384_and_hs512() {
        assert!(reference(URL, &token_with(Algorithm::HS384, |_| {}), PAYLOAD, RECEIVED));
        assert!(reference(URL, &token_with(Algorithm::HS512, |_| {}), PAYLOAD, RECEIVED));
    }

    #[test]
    fn refuses_a_wrong_issuer_or_empty_jti() {
        assert!(!reference(URL, &token_with(Algorithm::HS256, |claims| claims.iss = "Someone".into()), PAYLOAD, RECEIVED));
        assert!(!reference(URL, &token_with(Algorithm::HS256, |claims| claims.jti = String::new()), PAYLOAD, RECEIVED));
    }

    #[test]
    fn refuses_a_tampered_or_truncated_token() {
        let (header_and_claims, signature) = TOKEN.rsplit_once('.').unwrap();
        assert!(!reference(URL, &format!("{header_and_claims}.{}", &signature[..signature.len() - 2]), PAYLOAD, RECEIVED));
        assert!(!reference(URL, header_and_claims, PAYLOAD, RECEIVED));
        let later = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(header_and_claims.split_once('.').unwrap().1).unwrap())
                .unwrap()
                .replace("1625479260", "1625489260"),
        );
        let header = header_and_claims.split_once('.').unwrap().0;
        assert!(!reference(URL, &format!("{header}.{later}.{signature}"), PAYLOAD, RECEIVED + 120));
    }

    #[test]
    fn refuses_a_missing_signature() {
        let callback =
            Callback { url: URL, headers: &[("authorization", TOKEN)], content_type: Some("text/plain"), body: PAYLOAD.as_bytes() };
        assert_eq!(verify_and_read(&callback, &[KEY], RECEIVED), Err(ReceiptError::BadSignature));
    }

    const REPORT_URL: &str = "https://login.example.com/delivery/messagebird";

    fn report(url: &str, content_type: Option<&str>, body: &str, now: i64) -> Result<(usize, Vec<Receipt>), ReceiptError> {
        let token = signature_jwt(url, body.as_bytes(), KEY, now, "4c3b0d6e-1f2a-4b5c-8d7e-9f0a1b2c3d4e");
        let headers = [("messagebird-signature-jwt", token.as_str())];
        verify_and_read(&Callback { url, headers: &headers, content_type, body: body.as_bytes() }, &[KEY], now)
    }

    #[test]
    fn reads_a_report_from_the_query_string() {
        let query = "id=e8077d803532c0b5937c639b60216938&reference=login-1&recipient=31612345678&status=delivery_failed\
                     &statusDatetime=2021-07-05T10%3A00%3A00%2B00%3A00&statusReason=unknown%20subscriber&statusErrorCode=1";
        let url = format!("{REPORT_URL}?{query}");
        let (matched, receipts) = report(&url, None, "", RECEIVED).unwrap();
        assert_eq!(matched, 0);
        let expected = Receipt {
            message_id: "e8077d803532c0b5937c639b60216938".into(),
            status: Some(DeliveryStatus::Undelivered),
            error_code: Some("1".into()),
            reported_at: Some(RECEIVED),
        };
        assert_eq!(receipts, vec![expected]);
    }

    #[test]
    fn reads_a_report_from_a_form_or_json_body() {
        let form = "id=e8077d803532c0b5937c639b60216938&status=delivered&statusDatetime=2021-07-05T12%3A00%3A00%2B02%3A00";
        let (_, receipts) = report(REPORT_URL, Some("application/x-www-form-urlencoded"), form, RECEIVED).unwrap();
        assert_eq!(receipts[0].status, Some(DeliveryStatus::Delivered));
        assert_eq!(receipts[0].reported_at, Some(RECEIVED));
        let json = r#"{"id": "e8077d803532c0b5937c639b60216938", "status": "sent", "statusErrorCode": null}"#;
        let (_, receipts) = report(REPORT_URL, Some("application/json"), json, RECEIVED).unwrap();
        assert_eq!(receipts[0].status, Some(DeliveryStatus::Sent));
        assert_eq!(receipts[0].error_code, None);
    }

    #[test]
    fn maps_each_status() {
        let cases = [
            ("sent", Some(DeliveryStatus::Sent)),
            ("delivered", Some(DeliveryStatus::Delivered)),
            ("delivery_failed", Some(DeliveryStatus::Undelivered)),
            ("expired", Some(DeliveryStatus::Undelivered)),
            ("scheduled", None),
            ("buffered", None),
        ];
        for (status, expected) in cases {
            let (_, receipts) = report(&format!("{REPORT_URL}?id=1&status={status}"), None, "", RECEIVED).unwrap();
            assert_eq!(receipts[0].status, expected, "{status}");
        }
    }

    #[test]
    fn refuses_a_tampered_report() {
        let url = format!("{REPORT_URL}?id=1&status=delivery_failed");
        let token = signature_jwt(&url, b"", KEY, RECEIVED, "jti");
        let headers = [("messagebird-signature-jwt", token.as_str())];
        let tampered = format!("{REPORT_URL}?id=1&status=delivered");
        let callback = Callback { url: &tampered, headers: &headers, content_type: None, body: b"" };
        assert_eq!(verify_and_read(&callback, &[KEY], RECEIVED), Err(ReceiptError::BadSignature));
        let callback = Callback { url: &url, headers: &headers, content_type: None, body: b"" };
        assert!(verify_and_read(&callback, &[KEY], RECEIVED).is_ok());
    }
}

//! WhatsApp Cloud API status notifications, signed with `X-Hub-Signature-256`: the hex
//! HMAC-SHA256 of the raw body keyed by the app secret; and the `GET` handshake by which
//! Meta checks the webhook before sending to it.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{same_secret, Callback, DeliveryStatus, Receipt, ReceiptError};

const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Checks a notification against each configured app secret and reads it: the index of
/// the secret that signed it, and a receipt per status it carries (none for other
/// notifications, such as incoming messages).
pub fn verify_and_read(callback: &Callback<'_>, app_secrets: &[&str]) -> Result<(usize, Vec<Receipt>), ReceiptError> {
    let given = callback.header(SIGNATURE_HEADER).and_then(|value| value.trim().strip_prefix("sha256="));
    let given = given.and_then(|hex_digest| hex::decode(hex_digest).ok()).ok_or(ReceiptError::BadSignature)?;
    let signed_by = |secret: &&str| !secret.is_empty() && keyed(secret, callback.body).verify_slice(&given).is_ok();
    let matched = app_secrets.iter().position(signed_by).ok_or(ReceiptError::BadSignature)?;
    Ok((matched, read(callback.body)?))
}

/// The `X-Hub-Signature-256` value Meta sends with `body`.
pub fn signature(body: &[u8], app_secret: &str) -> String {
    format!("sha256={}", hex::encode(keyed(app_secret, body).finalize().into_bytes()))
}

/// The answer to Meta's verification request (its query string): the challenge to echo
/// when the mode is `subscribe` and the token is one of ours, else `None`.
pub fn verification_challenge(query: &str, verify_tokens: &[&str]) -> Option<String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_str(query.strip_prefix('?').unwrap_or(query)).ok()?;
    let value = |name: &str| fields.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let token = value("hub.verify_token")?;
    let ours = verify_tokens.iter().any(|ours| !ours.is_empty() && same_secret(token.as_bytes(), ours.as_bytes()));
    (value("hub.mode") == Some("subscribe") && ours).then(|| value("hub.challenge").map(str::to_string)).flatten()
}

fn keyed(secret: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    mac
}

#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    /// Read only for `messages`: other fields carry values of other shapes.
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    /// Unix seconds, sent as a string.
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    errors: Vec<StatusError>,
}

#[derive(Deserialize)]
struct StatusError {
    #[serde(default)]
    code: Option<serde_json::Value>,
}

fn read(body: &[u8]) -> Result<Vec<Receipt>, ReceiptError> {
    let malformed = |why: &str| ReceiptError::Malformed(why.to_string());
    let notification: Notification = serde_json::from_slice(body).map_err(|_| malformed("not a WhatsApp notification"))?;
    let mut receipts = Vec::new();
    for change in notification.entry.iter().flat_map(|entry| &entry.changes).filter(|change| change.field == "messages") {
        let Some(statuses) = change.value.get("statuses") else { continue };
        let statuses = Vec::<Status>::deserialize(statuses).map_err(|_| malformed("statuses of an unknown shape"))?;
        for status in statuses {
            if status.id.is_empty() {
                return Err(malformed("a status without an id"));
            }
            receipts.push(Receipt {
                status: delivery_status(&status.status),
                error_code: status.errors.first().and_then(|error| error.code.as_ref()).and_then(text),
                reported_at: status.timestamp.as_ref().and_then(text).and_then(|seconds| seconds.parse().ok()),
                message_id: status.id,
            });
        }
    }
    Ok(receipts)
}

/// A string or a number, as text.
fn text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A status's `status`; `read` implies delivered.
fn delivery_status(status: &str) -> Option<DeliveryStatus> {
    match status {
        "sent" => Some(DeliveryStatus::Sent),
        "delivered" | "read" => Some(DeliveryStatus::Delivered),
        "failed" => Some(DeliveryStatus::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "TEST_APP_SECRET";
    const URL: &str = "https://login.example.com/delivery/whatsapp";

    fn post(body: &str, signature: Option<&str>, secrets: &[&str]) -> Result<(usize, Vec<Receipt>), ReceiptError> {
        let headers: Vec<(&str, &str)> = signature.map(|value| ("X-Hub-Signature-256", value)).into_iter().collect();
        verify_and_read(&Callback { url: URL, headers: &headers, content_type: Some("application/json"), body: body.as_bytes() }, secrets)
    }

    fn signed(body: &str) -> Result<(usize, Vec<Receipt>), ReceiptError> {
        post(body, Some(&signature(body.as_bytes(), SECRET)), &[SECRET])
    }

    fn status(id: &str, status: &str, timestamp: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id, "status": status, "timestamp": timestamp, "recipient_id": "31612345678",
            "conversation": {"id": "c1", "origin": {"type": "authentication"}},
            "pricing": {"billable": true, "pricing_model": "CBP", "category": "authentication"},
        })
    }

    fn notification(entries: serde_json::Value) -> String {
        serde_json::json!({"object": "whatsapp_business_account", "entry": entries}).to_string()
    }

    fn messages_change(value: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"field": "messages", "value": value})
    }

    #[test]
    fn vector_test_app_secret() {
        let expected = "sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221";
        assert_eq!(signature(b"test", SECRET), expected);
        // Signed, but not a notification.
        assert!(matches!(post("test", Some(expected), &[SECRET]), Err(ReceiptError::Malformed(_))));
        assert!(matches!(post("test", Some(expected), &["other", SECRET]), Err(ReceiptError::Malformed(_))));
    }

    #[test]
    fn reads_every_status_of_every_entry_and_change() {
        let mut failed = status("wamid.C", "failed", "1603059203");
        failed["errors"] = serde_json::json!([{"code": 131026, "title": "Message undeliverable", "error_data": {"details": "…"}}]);
        let metadata = serde_json::json!({"display_phone_number": "15550001111", "phone_number_id": "106540352242922"});
        let body = notification(serde_json::json!([
            {"id": "WABA1", "changes": [
                messages_change(serde_json::json!({"messaging_product": "whatsapp", "metadata": metadata,
                    "statuses": [status("wamid.A", "sent", "1603059201"), status("wamid.A", "read", "1603059202")]})),
                // An incoming message: no statuses.
                messages_change(serde_json::json!({"messaging_product": "whatsapp", "metadata": metadata,
                    "messages": [{"from": "31612345678", "id": "wamid.IN", "type": "text", "text": {"body": "hi"}}]})),
                {"field": "message_template_status_update", "value": {"event": "APPROVED", "statuses": "not ours"}},
            ]},
            {"id": "WABA2", "changes": [messages_change(serde_json::json!({"statuses": [failed]}))]},
        ]));
        let (matched, receipts) = signed(&body).unwrap();
        assert_eq!(matched, 0);
        let receipt = |id: &str, status, error_code: Option<&str>, reported_at| Receipt {
            message_id: id.into(),
            status: Some(status),
            error_code: error_code.map(str::to_string),
            reported_at: Some(reported_at),
        };
        assert_eq!(
            receipts,
            vec![
                receipt("wamid.A", DeliveryStatus::Sent, None, 1_603_059_201),
                receipt("wamid.A", DeliveryStatus::Delivered, None, 1_603_059_202),
                receipt("wamid.C", DeliveryStatus::Failed, Some("131026"), 1_603_059_203),
            ]
        );
    }

    #[test]
    fn maps_each_status() {
        for (name, expected) in [
            ("sent", Some(DeliveryStatus::Sent)),
            ("delivered", Some(DeliveryStatus::Delivered)),
            ("read", Some(DeliveryStatus::Delivered)),
            ("failed", Some(DeliveryStatus::Failed)),
            ("deleted", None),
        ] {
            let body = notification(
                serde_json::json!([{"changes": [messages_change(serde_json::json!({"statuses": [status("wamid.A", name, "1")]}))]}]),
            );
            assert_eq!(signed(&body).unwrap().1[0].status, expected, "{name}");
        }
    }

    #[test]
    fn an_entry_without_statuses_gives_no_receipts() {
        let errors = serde_json::json!({"errors": [{"code": 130429, "title": "Rate limit hit"}]});
        let body = notification(serde_json::json!([{"id": "WABA1", "changes": [messages_change(errors)]}, {"id": "WABA2"}]));
        assert_eq!(signed(&body), Ok((0, Vec::new())));
    }

    #[test]
    fn a_signed_status_without_an_id_is_malformed() {
        let body = notification(serde_json::json!([{"changes": [messages_change(serde_json::json!({"statuses": [{"status": "sent"}]}))]}]));
        assert!(matches!(signed(&body), Err(ReceiptError::Malformed(_))));
    }

    fn one_status() -> String {
        notification(
            serde_json::json!([{"changes": [messages_change(serde_json::json!({"statuses": [status("wamid.A", "failed", "1")]}))]}]),
        )
    }

    #[test]
    fn refuses_a_tampered_body() {
        let body = one_status();
        let signed = signature(body.as_bytes(), SECRET);
        assert!(post(&body, Some(&signed), &[SECRET]).is_ok());
        assert_eq!(post(&body.replace("failed", "delivered"), Some(&signed), &[SECRET]), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_a_truncated_or_unprefixed_signature() {
        let body = one_status();
        let signed = signature(body.as_bytes(), SECRET);
        assert_eq!(post(&body, Some(&signed[..signed.len() - 2]), &[SECRET]), Err(ReceiptError::BadSignature));
        assert_eq!(post(&body, Some(&signed[..signed.len() - 1]), &[SECRET]), Err(ReceiptError::BadSignature));
        assert_eq!(post(&body, Some(signed.trim_start_matches("sha256=")), &[SECRET]), Err(ReceiptError::BadSignature));
        assert_eq!(post(&body, Some("sha256="), &[SECRET]), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_a_missing_signature() {
        assert_eq!(post(&one_status(), None, &[SECRET]), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_a_wrong_secret() {
        let body = one_status();
        let signed = signature(body.as_bytes(), SECRET);
        assert_eq!(post(&body, Some(&signed), &["another secret"]), Err(ReceiptError::BadSignature));
        assert_eq!(post(&body, Some(&signed), &["another secret", SECRET]).map(|(matched, _)| matched), Ok(1));
        assert_eq!(post(&body, Some(&signature(body.as_bytes(), "")), &[""]), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn answers_the_verification_challenge() {
        let tokens = ["first token", "second token"];
        let query = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=second+token";
        assert_eq!(verification_challenge(query, &tokens).as_deref(), Some("1158201444"));
        assert_eq!(verification_challenge(&format!("?{query}"), &tokens).as_deref(), Some("1158201444"));
    }

    #[test]
    fn refuses_the_verification_challenge() {
        let tokens = ["our token"];
        for query in [
            "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=their+token",
            "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=our+toke",
            "hub.mode=subscribe&hub.challenge=1158201444",
            "hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token=our+token",
            "hub.challenge=1158201444&hub.verify_token=our+token",
            "hub.mode=subscribe&hub.verify_token=our+token",
        ] {
            assert_eq!(verification_challenge(query, &tokens), None, "{query}");
        }
        assert_eq!(verification_challenge("hub.mode=subscribe&hub.challenge=1&hub.verify_token=", &[""]), None);
        assert_eq!(verification_challenge("hub.mode=subscribe&hub.challenge=1&hub.verify_token=our+token", &tokens).as_deref(), Some("1"));
    }
}

//! Vonage SMS delivery receipts (DLRs), as query parameters, a form or a JSON body,
//! signed with `sig`: a digest of every other field, sorted, by the account's signature
//! secret and signature method.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{field, same_secret, Callback, DeliveryStatus, Receipt, ReceiptError};
use crate::config::VonageSignatureMethod;

/// How far a receipt's `timestamp` may be from our clock, so that a captured receipt
/// cannot be replayed later.
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;

/// Checks a receipt against each configured signature secret and reads it: the index of
/// the secret that signed it, and its receipt. `now`: unix seconds.
pub fn verify_and_read(
    callback: &Callback<'_>,
    secrets: &[(&str, VonageSignatureMethod)],
    now: i64,
) -> Result<(usize, Vec<Receipt>), ReceiptError> {
    // Vonage sends the receipt either in the query string or as the body.
    let fields = if callback.body.is_empty() { callback.query_fields() } else { callback.body_fields() };
    let fields = fields.ok_or(ReceiptError::BadSignature)?;
    let matched = verify(&fields, secrets)?;
    let timestamp: i64 = field(&fields, "timestamp").and_then(|text| text.parse().ok()).ok_or(ReceiptError::BadSignature)?;
    if (now - timestamp).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(ReceiptError::BadSignature);
    }
    Ok((matched, vec![read(&fields)?]))
}

/// The `sig` of `params` (any `sig` among them left out), in lowercase hex.
pub fn signature(params: &[(&str, &str)], secret: &str, method: VonageSignatureMethod) -> String {
    hex::encode(digest(&signed_text(params), secret, method))
}

/// The index of the secret whose `sig` the fields carry.
fn verify(fields: &[(String, String)], secrets: &[(&str, VonageSignatureMethod)]) -> Result<usize, ReceiptError> {
    // Hex decoding accepts either case: Vonage's examples send uppercase, its SDKs lowercase.
    let given = field(fields, "sig").and_then(|sig| hex::decode(sig).ok()).ok_or(ReceiptError::BadSignature)?;
    let mut names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|pair| pair[0] == pair[1]) {
        // Which of two values was signed cannot be told.
        return Err(ReceiptError::BadSignature);
    }
    let params: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let text = signed_text(&params);
    secrets
        .iter()
        .position(|&(secret, method)| !secret.is_empty() && same_secret(&given, &digest(&text, secret, method)))
        .ok_or(ReceiptError::BadSignature)
}

/// The raw `sig`: MD5 of the text followed by the secret, or an HMAC keyed by it.
fn digest(text: &str, secret: &str, method: VonageSignatureMethod) -> Vec<u8> {
    match method {
        VonageSignatureMethod::Md5hash => Md5::new().chain_update(text).chain_update(secret).finalize().to_vec(),
        VonageSignatureMethod::Md5 => keyed::<Hmac<Md5>>(secret, text),
        VonageSignatureMethod::Sha1 => keyed::<Hmac<Sha1>>(secret, text),
        VonageSignatureMethod::Sha256 => keyed::<Hmac<Sha256>>(secret, text),
        VonageSignatureMethod::Sha512 => keyed::<Hmac<Sha512>>(secret, text),
    }
}

fn keyed<M: Mac + KeyInit>(secret: &str, text: &str) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    Mac::update(&mut mac, text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `&name=value` for every field but `sig`, sorted by name, with `&` and `=` in values
/// replaced by `_`.
fn signed_text(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().filter(|(name, _)| *name != "sig").collect();
    sorted.sort_by_key(|(name, _)| *name);
    sorted.iter().map(|(name, value)| format!("&{name}={}", value.replace(['&', '='], "_"))).collect()
}

fn read(fields: &[(String, String)]) -> Result<Receipt, ReceiptError> {
    let message_id = field(fields, "messageId").ok_or_else(|| ReceiptError::Malformed("no messageId".into()))?;
    let status = field(fields, "status").ok_or_else(|| ReceiptError::Malformed("no status".into()))?;
    Ok(Receipt {
        message_id: message_id.to_string(),
        status: delivery_status(status),
        error_code: field(fields, "err-code").filter(|code| *code != "0").map(str::to_string),
        reported_at: field(fields, "message-timestamp").and_then(utc_seconds),
    })
}

/// A DLR's `status`. `failed` and `expired` come after the message was handed to the
/// carrier; `rejected` before.
fn delivery_status(status: &str) -> Option<DeliveryStatus> {
    match status {
        "delivered" => Some(DeliveryStatus::Delivered),
        "expired" | "failed" => Some(DeliveryStatus::Undelivered),
        "rejected" => Some(DeliveryStatus::Failed),
        // accepted, buffered, unknown.
        _ => None,
    }
}

/// Unix seconds of a `message-timestamp` (`2020-01-01 12:00:00`, UTC).
fn utc_seconds(text: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text, format).ok().map(|at| at.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "dlr signature secret";
    /// The DLR example of Vonage's SMS API specification, less its signature fields.
    const DLR: &[(&str, &str)] = &[
        ("msisdn", "447700900000"),
        ("to", "AcmeInc"),
        ("network-code", "12345"),
        ("messageId", "0A0000001234567B"),
        ("price", "0.03330000"),
        ("status", "delivered"),
        ("scts", "2001011400"),
        ("err-code", "0"),
        ("api-key", "abcd1234"),
        ("client-ref", "my-personal-reference"),
        ("message-timestamp", "2020-01-01 12:00:00"),
        ("nonce", "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"),
    ];
    const NOW: i64 = 1_582_650_446;
    const URL: &str = "https://login.example.com/delivery/vonage";

    /// The DLR with `changes` applied (a field replaced, or added), stamped `timestamp`
    /// and signed.
    fn signed_dlr(changes: &[(&'static str, &'static str)], timestamp: i64, method: VonageSignatureMethod) -> Vec<(&'static str, String)> {
        let mut fields: Vec<(&str, String)> = DLR.iter().map(|(name, value)| (*name, value.to_string())).collect();
        for &(name, value) in changes {
            match fields.iter_mut().find(|(field, _)| *field == name) {
                Some(field) => field.1 = value.to_string(),
                None => fields.push((name, value.to_string())),
            }
        }
        fields.push(("timestamp", timestamp.to_string()));
        let params: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let sig = signature(&params, SECRET, method);
        fields.push(("sig", sig));
        fields
    }

    fn get(query: &str, secrets: &[(&str, VonageSignatureMethod)], now: i64) -> Result<(usize, Vec<Receipt>), ReceiptError> {
        let url = format!("{URL}?{query}");
        verify_and_read(&Callback { url: &url, headers: &[], content_type: None, body: b"" }, secrets, now)
    }

    fn get_signed(fields: &[(&str, String)]) -> Result<(usize, Vec<Receipt>), ReceiptError> {
        get(&serde_urlencoded::to_string(fields).unwrap(), &[(SECRET, VonageSignatureMethod::Md5hash)], NOW)
    }

    #[test]
    fn vgpy3_vectors() {
        let params = [("a", "1"), ("b", "2"), ("timestamp", "1461605396")];
        let cases = [
            (VonageSignatureMethod::Md5hash, "6af838ef94998832dbfc29020b564830"),
            (VonageSignatureMethod::Md5, "c15c21ced558c93a226c305f58f902f2"),
            (VonageSignatureMethod::Sha1, "3e19a4e6880fdc2c1426bfd0587c98b9532f0210"),
            (VonageSignatureMethod::Sha256, "a321e824b9b816be7c3f28859a31749a098713d39f613c80d455bbaffae1cd24"),
            (
                VonageSignatureMethod::Sha512,
                "812a18f76680fa0fe1b8bd9ee1625466ceb1bd96242e4d050d2cfd9a7b40166c63ed26ec9702168781b6edcf1633db8ff95af9341701004eec3fcf9550572ee8",
            ),
        ];
        for (method, expected) in cases {
            assert_eq!(signature(&params, "secret", method), expected, "{method:?}");
        }
    }

    #[test]
    fn vgpy4_vectors() {
        let secret = "signature_secret";
        let params = [("param1", "value1"), ("param2", "value2"), ("timestamp", "1234567890")];
        assert_eq!(
            signature(&params, secret, VonageSignatureMethod::Sha256),
            "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"
        );
        assert_eq!(signature(&params, secret, VonageSignatureMethod::Md5), "724c2bf6ca423c36e20631b11d1c5753");
        let special = [("param1", "value&1"), ("param2", "value=2"), ("timestamp", "1234567890")];
        assert_eq!(signature(&special, secret, VonageSignatureMethod::Md5), "2bbf0abafb2c55e5af6231513896a2ac");
        let stamped_now = [("param1", "value1"), ("param2", "value2"), ("timestamp", "12345")];
        assert_eq!(signature(&stamped_now, secret, VonageSignatureMethod::Md5), "bc7e95bb4e341090b3a202a2885903a5");
        let checked = [("param", "value"), ("timestamp", "1234567890"), ("sig", "655a4d0b7f064dff438defc52b012cf5")];
        assert_eq!(signature(&checked, secret, VonageSignatureMethod::Md5), "655a4d0b7f064dff438defc52b012cf5");
    }

    #[test]
    fn vgpy4_signed_params_verify_in_either_case() {
        let secrets = [("signature_secret", VonageSignatureMethod::Md5)];
        let query = "param=value&timestamp=1234567890&sig=";
        assert!(matches!(
            get(&format!("{query}655a4d0b7f064dff438defc52b012cf5"), &secrets, 1_234_567_890),
            Err(ReceiptError::Malformed(_))
        ));
        assert!(matches!(
            get(&format!("{query}655A4D0B7F064DFF438DEFC52B012CF5"), &secrets, 1_234_567_890),
            Err(ReceiptError::Malformed(_))
        ));
        assert_eq!(get(&format!("{query}invalid_signature"), &secrets, 1_234_567_890), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn reads_a_dlr_from_the_query_string() {
        let (matched, receipts) = get_signed(&signed_dlr(&[], NOW, VonageSignatureMethod::Md5hash)).unwrap();
        assert_eq!(matched, 0);
        let expected = Receipt {
            message_id: "0A0000001234567B".into(),
            status: Some(DeliveryStatus::Delivered),
            error_code: None,
            reported_at: Some(1_577_880_000),
        };
        assert_eq!(receipts, vec![expected]);
    }

    #[test]
    fn reads_a_form_body_signed_by_the_second_secret() {
        let fields = signed_dlr(&[("status", "failed"), ("err-code", "6")], NOW, VonageSignatureMethod::Sha512);
        let body = serde_urlencoded::to_string(&fields).unwrap();
        let callback = Callback { url: URL, headers: &[], content_type: Some("application/x-www-form-urlencoded"), body: body.as_bytes() };
        let secrets = [("another secret", VonageSignatureMethod::Sha512), (SECRET, VonageSignatureMethod::Sha512)];
        let (matched, receipts) = verify_and_read(&callback, &secrets, NOW).unwrap();
        assert_eq!(matched, 1);
        assert_eq!(receipts[0].status, Some(DeliveryStatus::Undelivered));
        assert_eq!(receipts[0].error_code.as_deref(), Some("6"));
    }

    #[test]
    fn reads_a_json_body_with_numbers() {
        let fields = signed_dlr(&[("status", "rejected"), ("err-code", "7")], NOW, VonageSignatureMethod::Sha256);
        let sig = &fields.iter().find(|(name, _)| *name == "sig").unwrap().1;
        // The same fields as JSON, the numeric ones as numbers, the signature uppercase.
        let body = serde_json::json!({
            "msisdn": "447700900000", "to": "AcmeInc", "network-code": 12345, "messageId": "0A0000001234567B",
            "price": "0.03330000", "status": "rejected", "scts": "2001011400", "err-code": 7, "api-key": "abcd1234",
            "client-ref": "my-personal-reference", "message-timestamp": "2020-01-01 12:00:00",
            "nonce": "ec11dd3e-1e7f-4db5-9467-82b02cd223b9", "timestamp": NOW, "sig": sig.to_uppercase(),
        })
        .to_string();
        let callback = Callback { url: URL, headers: &[], content_type: Some("application/json; charset=utf-8"), body: body.as_bytes() };
        let (_, receipts) = verify_and_read(&callback, &[(SECRET, VonageSignatureMethod::Sha256)], NOW).unwrap();
        assert_eq!(receipts[0].status, Some(DeliveryStatus::Failed));
        assert_eq!(receipts[0].error_code.as_deref(), Some("7"));
    }

    #[test]
    fn maps_each_status() {
        let cases = [
            ("delivered", Some(DeliveryStatus::Delivered)),
            ("expired", Some(DeliveryStatus::Undelivered)),
            ("failed", Some(DeliveryStatus::Undelivered)),
            ("rejected", Some(DeliveryStatus::Failed)),
            ("accepted", None),
            ("buffered", None),
            ("unknown", None),
        ];
        for (status, expected) in cases {
            let changes = [("status", status)];
            let (_, receipts) = get_signed(&signed_dlr(&changes, NOW, VonageSignatureMethod::Md5hash)).unwrap();
            assert_eq!(receipts[0].status, expected, "{status}");
        }
    }

    #[test]
    fn refuses_a_stale_or_future_timestamp() {
        for (timestamp, accepted) in [(NOW - 300, true), (NOW + 300, true), (NOW - 301, false), (NOW + 301, false), (NOW - 86_400, false)] {
            let outcome = get_signed(&signed_dlr(&[], timestamp, VonageSignatureMethod::Md5hash));
            assert_eq!(outcome.is_ok(), accepted, "{timestamp}");
            if !accepted {
                assert_eq!(outcome, Err(ReceiptError::BadSignature));
            }
        }
    }

    #[test]
    fn refuses_a_signed_dlr_without_a_timestamp() {
        let fields: Vec<(&str, &str)> = DLR.to_vec();
        let sig = signature(&fields, SECRET, VonageSignatureMethod::Md5hash);
        let mut query = serde_urlencoded::to_string(&fields).unwrap();
        query.push_str(&format!("&sig={sig}"));
        assert_eq!(get(&query, &[(SECRET, VonageSignatureMethod::Md5hash)], NOW), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_a_tampered_field() {
        let mut fields = signed_dlr(&[("status", "failed")], NOW, VonageSignatureMethod::Md5hash);
        assert!(get_signed(&fields).is_ok());
        fields.iter_mut().find(|(name, _)| *name == "status").unwrap().1 = "delivered".into();
        assert_eq!(get_signed(&fields), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_an_added_or_repeated_field() {
        let mut fields = signed_dlr(&[], NOW, VonageSignatureMethod::Md5hash);
        fields.push(("status", "failed".into()));
        assert_eq!(get_signed(&fields), Err(ReceiptError::BadSignature));
        fields.pop();
        fields.push(("extra", "1".into()));
        assert_eq!(get_signed(&fields), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_a_truncated_signature() {
        let mut fields = signed_dlr(&[], NOW, VonageSignatureMethod::Md5hash);
        // An odd length is not hex; an even one decodes to too few bytes.
        fields.last_mut().unwrap().1.truncate(31);
        assert_eq!(get_signed(&fields), Err(ReceiptError::BadSignature));
        fields.last_mut().unwrap().1.truncate(30);
        assert_eq!(get_signed(&fields), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_a_missing_signature() {
        let mut fields = signed_dlr(&[], NOW, VonageSignatureMethod::Md5hash);
        fields.pop();
        assert_eq!(get_signed(&fields), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn refuses_a_wrong_secret_or_method() {
        let query = serde_urlencoded::to_string(signed_dlr(&[], NOW, VonageSignatureMethod::Sha256)).unwrap();
        assert!(get(&query, &[(SECRET, VonageSignatureMethod::Sha256)], NOW).is_ok());
        assert_eq!(get(&query, &[("another secret", VonageSignatureMethod::Sha256)], NOW), Err(ReceiptError::BadSignature));
        assert_eq!(get(&query, &[(SECRET, VonageSignatureMethod::Sha512)], NOW), Err(ReceiptError::BadSignature));
        assert_eq!(get(&query, &[], NOW), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn a_signed_dlr_without_a_message_id_is_malformed() {
        let fields = signed_dlr(&[("messageId", "")], NOW, VonageSignatureMethod::Md5hash);
        assert!(matches!(get_signed(&fields), Err(ReceiptError::Malformed(_))));
    }

    #[test]
    fn reads_the_signature_method_as_configured() {
        for (text, method) in [
            ("md5hash", VonageSignatureMethod::Md5hash),
            ("md5", VonageSignatureMethod::Md5),
            ("sha1", VonageSignatureMethod::Sha1),
            ("sha256", VonageSignatureMethod::Sha256),
            ("sha512", VonageSignatureMethod::Sha512),
        ] {
            let config = crate::config::Config::from_vars([("VONAGE_SIGNATURE_METHOD", text)]).unwrap();
            assert_eq!(config.vonage.signature_method, method);
            assert_eq!(serde_json::from_value::<VonageSignatureMethod>(serde_json::json!(text)).unwrap(), method);
        }
        assert!(crate::config::Config::from_vars([("VONAGE_SIGNATURE_METHOD", "sha384")]).is_err());
        assert!(serde_json::from_value::<VonageSignatureMethod>(serde_json::json!("hmac")).is_err());
    }
}

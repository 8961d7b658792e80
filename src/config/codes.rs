//! One-time codes: their shape, life, message, sender, fixed test codes and the server secret.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::values::{choice, texts_by_app, unless_empty, Json, List, Secret};

/// One-time codes. (`OTP_*`, and `TEST_OTPS`, `REQUIRE_CHALLENGE`)
#[derive(Clone, Deserialize, Serialize)]
pub struct OtpSettings {
    /// OTP_SECRET, the server secret (keys code hashes and queued-message encryption); when
    /// unset it is read from OTP_SECRET_FILE, or from a key file created beside the database.
    #[serde(default, deserialize_with = "unless_empty", rename = "otp_secret")]
    pub secret: Option<Secret>,
    /// OTP_SECRET_FILE, holding the server secret in hex; unset: `DATABASE_PATH` + `.key`,
    /// created on first start.
    #[serde(default, deserialize_with = "unless_empty", rename = "otp_secret_file")]
    pub secret_file: Option<String>,

    #[serde(default = "defaults::otp_length", rename = "otp_length")]
    pub length: usize,
    #[serde(default = "defaults::otp_ttl_secs", rename = "otp_ttl_secs")]
    pub ttl_secs: u64,
    #[serde(default = "defaults::otp_max_attempts", rename = "otp_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "defaults::otp_resend_secs", rename = "otp_resend_secs")]
    pub resend_secs: u64,
    #[serde(default = "defaults::otp_message", rename = "otp_message")]
    pub message: String,

    #[serde(default = "defaults::otp_sender", rename = "otp_sender")]
    pub sender: SenderKind,
    /// JSON object appid → message template overriding `OTP_MESSAGE`, each with `{otp}`.
    #[serde(default, deserialize_with = "message_per_app", rename = "otp_message_per_app")]
    pub message_per_app: Json<BTreeMap<String, String>>,

    /// `phone:otp` pairs that accept a fixed code and send nothing.
    #[serde(default, deserialize_with = "test_codes")]
    pub test_otps: Secret<List<TestCode>>,
    /// Refuse a verify that does not send back the challenge id of its start reply.
    #[serde(default)]
    pub require_challenge: bool,
}

/// A fixed code of `TEST_OTPS`, for a phone that is sent nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct TestCode {
    /// As every phone is kept: [`normalize_phone`]'s digits.
    pub phone: String,
    /// 4 to 10 digits.
    pub code: String,
}

/// Strips spaces, dashes, dots, parentheses, one leading `+` and leading zeros;
/// what remains must be 9 to 15 digits. The form every phone is kept in (see
/// `domain::address`); here because `TEST_OTPS` is read in it at load.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let without_plus = compact.strip_prefix('+').unwrap_or(&compact);
    let digits = without_plus.trim_start_matches('0');
    let valid = (9..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| digits.to_string())
}

/// Characters of the GSM 03.38 default alphabet, one septet each.
const GSM7_BASIC: &str =
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the GSM extension table, two septets each (escape + char).
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// Fills a message template's placeholders: `{otp}`, `{appid}` (for an id-shaped appid
/// only, else empty), `{appname}` (`name`, else the shown appid) and `{minutes}`. Here
/// because the message's length is checked at load (`APP_SETTINGS`' `android_hash`)
/// with the text the service sends (`domain::templates`).
pub fn fill_message(template: &str, appid: &str, name: Option<&str>, otp: &str, minutes: u64) -> String {
    // The appid comes from the client: only an id-shaped one goes into a message, so
    // nobody can have arbitrary text sent in an SMS under this service's name.
    let shown_appid = if looks_like_an_app_id(appid) { appid } else { "" };
    template
        .replace("{otp}", otp)
        .replace("{appid}", shown_appid)
        .replace("{appname}", name.unwrap_or(shown_appid))
        .replace("{minutes}", &minutes.to_string())
}

/// A reverse-DNS style id such as `com.example.app`: letters, digits, `.`, `-`, `_`, at
/// most [`MAX_SHOWN_APPID_CHARS`].
pub fn looks_like_an_app_id(appid: &str) -> bool {
    !appid.is_empty()
        && appid.len() <= MAX_SHOWN_APPID_CHARS
        && appid.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The longest appid a message shows: `{appid}` and `{appname}` (of an app without a
/// name) are never longer.
pub const MAX_SHOWN_APPID_CHARS: usize = 64;

/// Septets the text needs in GSM-7, or `None` when it needs UCS-2.
pub fn gsm7_septets(text: &str) -> Option<usize> {
    text.chars().try_fold(0, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXTENDED.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    })
}

/// The encoding an SMS of `text` is sent in, and the bytes of its body: GSM-7 packs a
/// septet in 7 bits, UCS-2 takes 2 bytes per UTF-16 unit.
pub fn sms_bytes(text: &str) -> (SmsEncoding, usize) {
    match gsm7_septets(text) {
        Some(septets) => (SmsEncoding::Gsm7, (septets * 7).div_ceil(8)),
        None => (SmsEncoding::Ucs2, text.encode_utf16().count() * 2),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsEncoding {
    Gsm7,
    Ucs2,
}

/// `TEST_OTPS`: `phone:code` entries, comma-separated.
fn test_codes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret<List<TestCode>>, D::Error> {
    let entries = List::parse_with(&String::deserialize(deserializer)?, |entry| {
        let parsed = entry.split_once(':').and_then(|(phone, code)| {
            let phone = normalize_phone(phone)?;
            let code = code.trim();
            let valid = (4..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit());
            valid.then(|| TestCode { phone, code: code.to_string() })
        });
        parsed.ok_or("TEST_OTPS entries must look like 18005550000:123456")
    });
    entries.map(Secret::new).map_err(serde::de::Error::custom)
}

choice!(
    /// What sends codes, `OTP_SENDER`.
    SenderKind, "OTP_SENDER", "one of: log, http, smtp, twilio, vonage, messagebird, webhook", {
    Log = "log",
    Http = "http",
    Smtp = "smtp",
    Twilio = "twilio",
    Vonage = "vonage",
    Messagebird = "messagebird",
    Webhook = "webhook",
});

/// `OTP_MESSAGE_PER_APP`: a template without the code would send messages without it.
fn message_per_app<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json<BTreeMap<String, String>>, D::Error> {
    Json::parse_with(String::deserialize(deserializer)?, |text| {
        let templates = texts_by_app("OTP_MESSAGE_PER_APP", text)?;
        match templates.iter().find(|(_, template)| !template.contains("{otp}")) {
            Some((appid, _)) => Err(format!("OTP_MESSAGE_PER_APP template for {appid:?} must contain {{otp}}")),
            None => Ok(templates),
        }
    })
    .map_err(serde::de::Error::custom)
}

mod defaults {
    pub fn otp_length() -> usize {
        6
    }
    pub fn otp_ttl_secs() -> u64 {
        300
    }
    pub fn otp_max_attempts() -> u32 {
        5
    }
    pub fn otp_resend_secs() -> u64 {
        30
    }
    pub fn otp_message() -> String {
        "Your code is {otp}".into()
    }
    pub fn otp_sender() -> super::SenderKind {
        super::SenderKind::Log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_otps(value: &str) -> Result<Vec<(String, String)>, String> {
        let value = serde_json::Value::String(value.into());
        let codes = test_codes(value).map_err(|e| e.to_string())?;
        Ok(codes.expose().iter().map(|test| (test.phone.clone(), test.code.clone())).collect())
    }

    #[test]
    fn test_codes_are_normalised_and_bad_entries_name_the_variable() {
        let codes = test_otps("+1 800 555 0000:123456, 18005550001:0000").unwrap();
        assert_eq!(codes, [("18005550000".into(), "123456".into()), ("18005550001".into(), "0000".into())]);
        for bad in ["18005550000", "123:123456", "18005550000:12", "18005550000:12ab56"] {
            let error = test_otps(bad).unwrap_err();
            assert!(error.contains("TEST_OTPS") && !error.contains('\n'), "{error}");
        }
    }
}

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
    #[serde(default)]
    pub test_otps: Secret<List>,
    /// Refuse a verify that does not send back the challenge id of its start reply.
    #[serde(default)]
    pub require_challenge: bool,
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

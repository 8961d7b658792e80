//! What carries code messages: the e-mail sender, each provider's settings and the
//! courier that delivers and retries them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::codes::SenderKind;
use super::values::{choice, unless_empty, Secret};

/// E-mail logins. (`EMAIL_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct EmailSettings {
    #[serde(default, deserialize_with = "optional_email_sender", rename = "email_sender")]
    pub sender: Option<EmailSenderKind>,
    #[serde(default = "defaults::email_subject", rename = "email_subject")]
    pub subject: String,
}

/// What every provider's requests share. (`PROVIDER_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct ProviderSettings {
    /// Per-request timeout of the twilio, vonage, messagebird and webhook senders.
    #[serde(default = "defaults::provider_timeout_secs", rename = "provider_timeout_secs")]
    pub timeout_secs: u64,
}

/// The generic HTTP SMS gateway (`OTP_SENDER=http`). (`SMS_HTTP_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct SmsHttpSettings {
    #[serde(default, deserialize_with = "unless_empty", rename = "sms_http_url")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "unless_empty", rename = "sms_http_auth")]
    pub auth: Option<Secret>,
    #[serde(default = "super::routes::defaults::http_body", rename = "sms_http_body")]
    pub body: Secret,
    #[serde(default = "super::routes::defaults::http_timeout_secs", rename = "sms_http_timeout_secs")]
    pub timeout_secs: u64,
}

/// E-mail delivery (`smtp`). (`SMTP_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct SmtpSettings {
    #[serde(default, deserialize_with = "unless_empty", rename = "smtp_host")]
    pub host: Option<String>,
    #[serde(default = "defaults::smtp_port", rename = "smtp_port")]
    pub port: u16,
    #[serde(default = "defaults::smtp_tls", rename = "smtp_tls")]
    pub tls: SmtpTls,
    #[serde(default, deserialize_with = "unless_empty", rename = "smtp_user")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "unless_empty", rename = "smtp_password")]
    pub password: Option<Secret>,
    #[serde(default, deserialize_with = "unless_empty", rename = "smtp_from")]
    pub from: Option<String>,
}

impl SmtpSettings {
    /// SMTP_FROM, which the smtp sender requires, as a mailbox.
    pub fn from_mailbox(&self) -> Result<Mailbox, String> {
        let invalid = || "invalid configuration: SMTP_FROM must be an address like \"Login <login@example.com>\"".to_string();
        self.from.as_deref().unwrap_or_default().parse().map_err(|_| invalid())
    }
}

/// Twilio (`twilio`). (`TWILIO_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct TwilioSettings {
    #[serde(default, deserialize_with = "unless_empty", rename = "twilio_account_sid")]
    pub account_sid: Option<String>,
    #[serde(default, deserialize_with = "unless_empty", rename = "twilio_auth_token")]
    pub auth_token: Option<Secret>,
    #[serde(default, deserialize_with = "unless_empty", rename = "twilio_from")]
    pub from: Option<String>,
    #[serde(default, deserialize_with = "unless_empty", rename = "twilio_messaging_service_sid")]
    pub messaging_service_sid: Option<String>,
    #[serde(default = "super::routes::defaults::twilio_base_url", rename = "twilio_base_url")]
    pub base_url: String,
}

/// Vonage (`vonage`). (`VONAGE_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct VonageSettings {
    #[serde(default, deserialize_with = "unless_empty", rename = "vonage_api_key")]
    pub api_key: Option<Secret>,
    #[serde(default, deserialize_with = "unless_empty", rename = "vonage_api_secret")]
    pub api_secret: Option<Secret>,
    #[serde(default, deserialize_with = "unless_empty", rename = "vonage_from")]
    pub from: Option<String>,
    /// The key of signed delivery receipts; without it they are refused.
    #[serde(default, deserialize_with = "unless_empty", rename = "vonage_signature_secret")]
    pub signature_secret: Option<Secret>,
    #[serde(default, rename = "vonage_signature_method")]
    pub signature_method: super::VonageSignatureMethod,
    #[serde(default = "super::routes::defaults::vonage_base_url", rename = "vonage_base_url")]
    pub base_url: String,
}

/// MessageBird (`messagebird`). (`MESSAGEBIRD_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct MessageBirdSettings {
    #[serde(default, deserialize_with = "unless_empty", rename = "messagebird_access_key")]
    pub access_key: Option<Secret>,
    #[serde(default, deserialize_with = "unless_empty", rename = "messagebird_originator")]
    pub originator: Option<String>,
    /// The signing key of status reports; without it they are refused.
    #[serde(default, deserialize_with = "unless_empty", rename = "messagebird_signing_key")]
    pub signing_key: Option<Secret>,
    #[serde(default = "super::routes::defaults::messagebird_base_url", rename = "messagebird_base_url")]
    pub base_url: String,
}

/// The signed webhook (`webhook`). (`WEBHOOK_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct WebhookSettings {
    #[serde(default, deserialize_with = "unless_empty", rename = "webhook_url")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "unless_empty", rename = "webhook_secret")]
    pub secret: Option<Secret>,
}

impl WebhookSettings {
    /// The key WEBHOOK_SECRET stands for: a Standard Webhooks secret is `whsec_` and the
    /// key in base64; any other value is the key's bytes.
    pub fn signing_key(&self) -> Result<Vec<u8>, String> {
        let secret = self.secret.as_ref().map_or("", |secret| secret.expose());
        match secret.strip_prefix("whsec_") {
            Some(encoded) => {
                BASE64.decode(encoded).map_err(|_| "invalid configuration: WEBHOOK_SECRET after whsec_ must be base64".to_string())
            }
            None => Ok(secret.as_bytes().to_vec()),
        }
    }
}

/// The durable delivery of code messages. (`COURIER_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct CourierSettings {
    /// Delivery attempts per message (1 = no retries).
    #[serde(default = "defaults::courier_max_attempts", rename = "courier_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; each further retry waits twice as long.
    #[serde(default = "defaults::courier_retry_base_ms", rename = "courier_retry_base_ms")]
    pub retry_base_ms: u64,
    /// How long a login request waits for the first delivery attempt.
    #[serde(default = "defaults::courier_wait_ms", rename = "courier_wait_ms")]
    pub wait_ms: u64,
    /// How long a message being sent stays hidden from other senders; after a crash another
    /// instance (or the restart) sends it once this has passed. 0: twice the slowest
    /// provider timeout, at least a minute.
    #[serde(default, rename = "courier_lease_secs")]
    pub lease_secs: u64,
}

/// The circuit breaker of each SMS provider instance: one that failed most of its recent
/// sends is skipped for a cool-down. (`SMS_BREAKER_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct SmsBreakerSettings {
    /// How many of an instance's last outcomes are judged.
    #[serde(default = "defaults::sms_breaker_window", rename = "sms_breaker_window")]
    pub window: u32,
    /// Outcomes recorded before the breaker may open, so one early failure cannot.
    #[serde(default = "defaults::sms_breaker_min_sends", rename = "sms_breaker_min_sends")]
    pub min_sends: u32,
    /// How long an open breaker skips its instance before one trial send.
    #[serde(default = "defaults::sms_breaker_cooldown_secs", rename = "sms_breaker_cooldown_secs")]
    pub cooldown_secs: u64,
}

/// The longest `SMS_BREAKER_WINDOW`: each instance keeps that many outcomes in memory.
const MAX_SMS_BREAKER_WINDOW: u32 = 1000;

/// The longest `SMS_BREAKER_COOLDOWN_SECS`, a day: a longer one is an instance taken out by hand.
const MAX_SMS_BREAKER_COOLDOWN_SECS: u64 = 86_400;

impl SmsBreakerSettings {
    /// Refuses a window, minimum or cool-down the breaker cannot work with; run by `Config::from_vars`.
    pub(super) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_SMS_BREAKER_WINDOW).contains(&self.window) {
            return Err(format!("invalid configuration: SMS_BREAKER_WINDOW must be 1 to {MAX_SMS_BREAKER_WINDOW}"));
        }
        if !(1..=self.window).contains(&self.min_sends) {
            return Err("invalid configuration: SMS_BREAKER_MIN_SENDS must be 1 to SMS_BREAKER_WINDOW".into());
        }
        if !(1..=MAX_SMS_BREAKER_COOLDOWN_SECS).contains(&self.cooldown_secs) {
            return Err(format!("invalid configuration: SMS_BREAKER_COOLDOWN_SECS must be 1 to {MAX_SMS_BREAKER_COOLDOWN_SECS}"));
        }
        Ok(())
    }
}

choice!(
    /// What sends codes to e-mail addresses when it is not `OTP_SENDER`: `EMAIL_SENDER`.
    EmailSenderKind, "EMAIL_SENDER", "one of: log, smtp, webhook", {
    Log = "log",
    Smtp = "smtp",
    Webhook = "webhook",
});

impl From<EmailSenderKind> for SenderKind {
    fn from(kind: EmailSenderKind) -> SenderKind {
        match kind {
            EmailSenderKind::Log => SenderKind::Log,
            EmailSenderKind::Smtp => SenderKind::Smtp,
            EmailSenderKind::Webhook => SenderKind::Webhook,
        }
    }
}

choice!(
    /// How SMTP connections are secured, `SMTP_TLS`.
    SmtpTls, "SMTP_TLS", "one of: starttls, tls, none", {
    Starttls = "starttls",
    Tls = "tls",
    None = "none",
});

/// `EMAIL_SENDER`, where an empty value (an empty line in an env file) means "not set".
fn optional_email_sender<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<EmailSenderKind>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        Some(text) if !text.trim().is_empty() => {
            EmailSenderKind::deserialize(serde::de::value::StringDeserializer::<D::Error>::new(text)).map(Some)
        }
        _ => Ok(None),
    }
}

mod defaults {
    pub fn email_subject() -> String {
        "Your login code".into()
    }
    pub fn provider_timeout_secs() -> u64 {
        10
    }
    pub fn smtp_port() -> u16 {
        587
    }
    pub fn smtp_tls() -> super::SmtpTls {
        super::SmtpTls::Starttls
    }
    pub fn courier_max_attempts() -> u32 {
        5
    }
    pub fn courier_retry_base_ms() -> u64 {
        2000
    }
    pub fn courier_wait_ms() -> u64 {
        3000
    }
    pub fn sms_breaker_window() -> u32 {
        10
    }
    pub fn sms_breaker_min_sends() -> u32 {
        5
    }
    pub fn sms_breaker_cooldown_secs() -> u64 {
        60
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_breaker_that_could_never_open_or_close_is_refused() {
        let load = |vars: &[(&str, &str)]| Config::from_vars(vars.iter().copied());
        for (vars, refusal) in [
            (&[("SMS_BREAKER_WINDOW", "0")][..], "SMS_BREAKER_WINDOW must be 1 to 1000"),
            (&[("SMS_BREAKER_WINDOW", "1001")], "SMS_BREAKER_WINDOW must be 1 to 1000"),
            (&[("SMS_BREAKER_MIN_SENDS", "0")], "SMS_BREAKER_MIN_SENDS must be 1 to SMS_BREAKER_WINDOW"),
            (&[("SMS_BREAKER_WINDOW", "4"), ("SMS_BREAKER_MIN_SENDS", "5")], "SMS_BREAKER_MIN_SENDS must be 1 to SMS_BREAKER_WINDOW"),
            (&[("SMS_BREAKER_COOLDOWN_SECS", "0")], "SMS_BREAKER_COOLDOWN_SECS must be 1 to 86400"),
            (&[("SMS_BREAKER_COOLDOWN_SECS", "86401")], "SMS_BREAKER_COOLDOWN_SECS must be 1 to 86400"),
        ] {
            let error = load(vars).err().unwrap_or_else(|| panic!("{vars:?} was accepted"));
            assert_eq!(error, format!("invalid configuration: {refusal}"), "{vars:?}");
        }
        let widest = [("SMS_BREAKER_WINDOW", "1000"), ("SMS_BREAKER_MIN_SENDS", "1000"), ("SMS_BREAKER_COOLDOWN_SECS", "86400")];
        let narrowest = [("SMS_BREAKER_WINDOW", "1"), ("SMS_BREAKER_MIN_SENDS", "1"), ("SMS_BREAKER_COOLDOWN_SECS", "1")];
        for vars in [&widest, &narrowest] {
            assert!(load(vars).is_ok(), "{vars:?}: {:?}", load(vars).err());
        }
        let defaults = load(&[]).unwrap().sms_breaker;
        assert_eq!((defaults.window, defaults.min_sends, defaults.cooldown_secs), (10, 5, 60));
    }
}

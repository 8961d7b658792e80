//! Pluggable OTP delivery. A provider is one file implementing [`OtpSender`]
//! plus its name in [`build`]; the settings it requires are checked at load
//! (`config::validate`).

mod http;
mod log;
mod messagebird;
mod provider_http;
mod smtp;
mod twilio;
mod vonage;
mod webhook;

use async_trait::async_trait;
use std::sync::Arc;

use crate::config::Config;
use crate::domain::address::Address;

pub use self::http::HttpSmsSender;
pub use self::log::LogSender;
pub use self::messagebird::MessageBirdSender;
pub use self::smtp::SmtpSender;
pub use self::twilio::TwilioSender;
pub use self::vonage::VonageSender;
pub use self::webhook::WebhookSender;

/// One message to deliver.
#[derive(Clone, Debug)]
pub struct OtpMessage {
    pub to: Address,
    pub otp: String,
    /// The rendered `OTP_MESSAGE` template.
    pub text: String,
    pub appid: String,
}

#[async_trait]
pub trait OtpSender: Send + Sync {
    /// Short provider name for logs.
    fn name(&self) -> &'static str;

    /// Delivers the message. The error explains the failure for the log and must not contain credentials.
    async fn send(&self, message: &OtpMessage) -> Result<(), SendError>;
}

/// Why a message was not delivered, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// For the log; never holds credentials.
    pub reason: String,
    /// True when a retry cannot succeed (invalid number, rejected credentials).
    pub permanent: bool,
}

impl SendError {
    pub fn transient(reason: impl Into<String>) -> Self {
        SendError { reason: reason.into(), permanent: false }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        SendError { reason: reason.into(), permanent: true }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Plain reasons (test doubles, simple senders) count as transient.
impl From<&str> for SendError {
    fn from(reason: &str) -> Self {
        SendError::transient(reason)
    }
}

impl From<String> for SendError {
    fn from(reason: String) -> Self {
        SendError::transient(reason)
    }
}

/// The sender for each kind of address; `None` means such logins are not enabled.
#[derive(Clone)]
pub struct Senders {
    pub phone: Option<Arc<dyn OtpSender>>,
    pub email: Option<Arc<dyn OtpSender>>,
}

impl Senders {
    /// One sender for both phones and e-mail (the log sender, or a test double).
    pub fn all(sender: Arc<dyn OtpSender>) -> Self {
        Senders { phone: Some(sender.clone()), email: Some(sender) }
    }

    pub fn for_address(&self, address: &Address) -> Option<&Arc<dyn OtpSender>> {
        match address {
            Address::Phone(_) => self.phone.as_ref(),
            Address::Email(_) => self.email.as_ref(),
            Address::Account(_) => None,
        }
    }
}

use crate::config::SenderKind;

/// Whether the sender reaches (phones, e-mail addresses).
fn reaches(kind: SenderKind) -> (bool, bool) {
    match kind {
        SenderKind::Log | SenderKind::Webhook => (true, true),
        SenderKind::Smtp => (false, true),
        SenderKind::Http | SenderKind::Twilio | SenderKind::Vonage | SenderKind::Messagebird => (true, false),
    }
}

/// `OTP_SENDER` serves every kind of address it can deliver to; `EMAIL_SENDER` overrides it for e-mail.
pub fn build(config: &Config) -> Result<Senders, String> {
    let main = by_name(config.otp.sender, config)?;
    let (main_phone, main_email) = reaches(config.otp.sender);
    let email = match config.email.sender {
        Some(kind) => Some(by_name(kind.into(), config)?),
        None => main_email.then(|| main.clone()),
    };
    Ok(Senders { phone: main_phone.then_some(main), email })
}

fn by_name(kind: SenderKind, config: &Config) -> Result<Arc<dyn OtpSender>, String> {
    Ok(match kind {
        SenderKind::Log => Arc::new(LogSender),
        SenderKind::Http => Arc::new(HttpSmsSender::from_config(config)?),
        SenderKind::Smtp => Arc::new(SmtpSender::from_config(config)?),
        SenderKind::Twilio => Arc::new(TwilioSender::from_config(config)?),
        SenderKind::Vonage => Arc::new(VonageSender::from_config(config)?),
        SenderKind::Messagebird => Arc::new(MessageBirdSender::from_config(config)?),
        SenderKind::Webhook => Arc::new(WebhookSender::from_config(config)?),
    })
}

/// The `+`-prefixed international form providers expect (addresses are stored as E.164 digits).
fn e164(message: &OtpMessage) -> String {
    format!("+{}", message.to.as_str())
}

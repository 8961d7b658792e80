//! Pluggable OTP delivery. A provider is one file implementing [`OtpSender`]
//! plus its name in [`build`].

mod http;
mod log;
mod smtp;

use async_trait::async_trait;
use std::sync::Arc;

use crate::address::Address;
use crate::config::Config;

pub use self::http::HttpSmsSender;
pub use self::log::LogSender;
pub use self::smtp::SmtpSender;

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
    async fn send(&self, message: &OtpMessage) -> Result<(), String>;
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
        }
    }
}

/// `OTP_SENDER` serves every kind of address it can deliver to; `EMAIL_SENDER` overrides it for e-mail.
pub fn build(config: &Config) -> Result<Senders, String> {
    let main = by_name(&config.otp_sender, config)?;
    let (main_phone, main_email) = match config.otp_sender.as_str() {
        "log" => (true, true),
        "http" => (true, false),
        _ => (false, true),
    };
    let email = match &config.email_sender {
        Some(name) => Some(by_name(name, config)?),
        None => main_email.then(|| main.clone()),
    };
    Ok(Senders { phone: main_phone.then_some(main), email })
}

fn by_name(name: &str, config: &Config) -> Result<Arc<dyn OtpSender>, String> {
    Ok(match name {
        "log" => Arc::new(LogSender),
        "http" => Arc::new(HttpSmsSender::from_config(config)?),
        "smtp" => Arc::new(SmtpSender::from_config(config)?),
        other => return Err(format!("invalid configuration: unknown sender {other:?}")),
    })
}

/// Fills `OTP_MESSAGE`: `{otp}` is the code, `{appid}` the requesting app.
pub fn render(template: &str, otp: &str, appid: &str) -> String {
    template.replace("{otp}", otp).replace("{appid}", appid)
}

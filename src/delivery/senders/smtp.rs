//! E-mail delivery through an SMTP relay (lettre).

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Accepted, OtpMessage, OtpSender, SendError};
use crate::config::{Config, SmtpTls};
use crate::domain::address::Address;
use crate::domain::templates::Templates;

pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `EMAIL_SUBJECT`, filled in per message like `OTP_MESSAGE`.
    subject: String,
    templates: Templates,
}

impl SmtpSender {
    /// SMTP_HOST and SMTP_FROM are required, and checked, at load (`config::validate`).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let host = config.smtp.host.as_deref().unwrap_or_default();
        let from = config.smtp.from_mailbox()?;
        let builder = match config.smtp.tls {
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)),
        }
        .map_err(|e| format!("invalid configuration: SMTP_HOST: {e}"))?;
        // Bounded like the other providers, so the courier's lease outlasts any attempt.
        let mut builder = builder.port(config.smtp.port).timeout(Some(std::time::Duration::from_secs(config.provider.timeout_secs)));
        if let Some(user) = &config.smtp.user {
            let password = config.smtp.password.as_ref().map_or("", |secret| secret.expose());
            builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
        }
        Ok(SmtpSender {
            transport: builder.build(),
            from,
            subject: config.email.subject.clone(),
            templates: Templates::from_config(config),
        })
    }
}

#[async_trait]
impl OtpSender for SmtpSender {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let Address::Email(to) = &message.to else {
            return Err(SendError::permanent("the smtp sender delivers only to e-mail addresses"));
        };
        let to: Mailbox = to.parse().map_err(|e| SendError::permanent(format!("bad recipient: {e}")))?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(self.templates.fill(&self.subject, &message.appid, &message.otp))
            .body(message.text.clone())
            .map_err(|e| SendError::permanent(format!("cannot build the e-mail: {e}")))?;
        // 5xx SMTP replies (unknown mailbox, refused) will not change on a retry.
        self.transport
            .send(email)
            .await
            .map(|_| Accepted::default())
            .map_err(|e| SendError { permanent: e.is_permanent(), reason: format!("SMTP delivery failed: {e}") })
    }
}

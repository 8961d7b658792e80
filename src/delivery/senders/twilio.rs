//! Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded, HTTP basic auth with the account SID and auth token.

use async_trait::async_trait;

use super::{e164, provider_http, OtpMessage, OtpSender, SendError};
use crate::config::Config;

pub struct TwilioSender {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: String,
    /// `("From", number)` or `("MessagingServiceSid", sid)`: Twilio takes one of them.
    sender_field: (&'static str, String),
}

impl TwilioSender {
    /// The account, its token and a sender are required at load (`config::validate`).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let twilio = &config.twilio;
        let account_sid = twilio.account_sid.as_deref().unwrap_or_default();
        let auth_token = twilio.auth_token.as_ref().map_or("", |secret| secret.expose());
        let sender_field = match &twilio.messaging_service_sid {
            Some(sid) => ("MessagingServiceSid", sid.clone()),
            None => ("From", twilio.from.clone().unwrap_or_default()),
        };
        let base = config.twilio.base_url.trim_end_matches('/');
        Ok(TwilioSender {
            client: provider_http::client(config.provider.timeout_secs)?,
            url: format!("{base}/2010-04-01/Accounts/{account_sid}/Messages.json"),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            sender_field,
        })
    }
}

#[async_trait]
impl OtpSender for TwilioSender {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, message: &OtpMessage) -> Result<(), SendError> {
        let to = e164(message);
        let (sender_name, sender_value) = (self.sender_field.0, self.sender_field.1.as_str());
        let form = [("To", to.as_str()), (sender_name, sender_value), ("Body", message.text.as_str())];
        let request = self.client.post(&self.url).basic_auth(&self.account_sid, Some(&self.auth_token)).form(&form);
        provider_http::deliver("twilio", request, &[&self.auth_token], &message.otp).await.map(|_| ())
    }
}

//! Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded, HTTP basic auth with the account SID and auth token.

use async_trait::async_trait;

use super::{e164, provider_http, require, OtpMessage, OtpSender, SendError};
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
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let twilio = &config.twilio;
        let (account_sid, auth_token) = (twilio.account_sid.as_deref(), twilio.auth_token.as_ref().map(|secret| secret.expose()));
        require("twilio", &[("TWILIO_ACCOUNT_SID", account_sid), ("TWILIO_AUTH_TOKEN", auth_token)])?;
        let (account_sid, auth_token) = (account_sid.unwrap_or_default(), auth_token.unwrap_or_default());
        let sender_field = match (&twilio.from, &twilio.messaging_service_sid) {
            (_, Some(sid)) => ("MessagingServiceSid", sid.clone()),
            (Some(from), None) => ("From", from.clone()),
            (None, None) => {
                return Err(
                    "invalid configuration: TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID is required when the twilio sender is used".into()
                )
            }
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

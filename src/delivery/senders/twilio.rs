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
        require("twilio", &[("TWILIO_ACCOUNT_SID", &config.twilio.account_sid), ("TWILIO_AUTH_TOKEN", config.twilio.auth_token.expose())])?;
        let sender_field = match (config.twilio.from.as_str(), config.twilio.messaging_service_sid.as_str()) {
            (_, sid) if !sid.is_empty() => ("MessagingServiceSid", sid.to_string()),
            (from, _) if !from.is_empty() => ("From", from.to_string()),
            _ => {
                return Err(
                    "invalid configuration: TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID is required when the twilio sender is used".into()
                )
            }
        };
        let base = config.twilio.base_url.trim_end_matches('/');
        Ok(TwilioSender {
            client: provider_http::client(config.provider.timeout_secs)?,
            url: format!("{base}/2010-04-01/Accounts/{}/Messages.json", config.twilio.account_sid),
            account_sid: config.twilio.account_sid.clone(),
            auth_token: config.twilio.auth_token.expose().to_string(),
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

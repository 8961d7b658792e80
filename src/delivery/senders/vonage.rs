//! Vonage (Nexmo) SMS API: `POST /sms/json` with the key and secret in the body.
//! It answers 200 even when a message is refused; each message carries its own `status`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{provider_http, OtpMessage, OtpSender, SendError};
use crate::config::Config;

pub struct VonageSender {
    client: reqwest::Client,
    url: String,
    api_key: String,
    api_secret: String,
    from: String,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    messages: Vec<MessageStatus>,
}

#[derive(Deserialize)]
struct MessageStatus {
    status: String,
    #[serde(rename = "error-text", default)]
    error_text: String,
}

impl VonageSender {
    /// The key, the secret and the sender are required at load (`config::validate`).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let vonage = &config.vonage;
        Ok(VonageSender {
            client: provider_http::client(config.provider.timeout_secs)?,
            url: format!("{}/sms/json", vonage.base_url.trim_end_matches('/')),
            api_key: vonage.api_key.as_ref().map_or("", |secret| secret.expose()).to_string(),
            api_secret: vonage.api_secret.as_ref().map_or("", |secret| secret.expose()).to_string(),
            from: vonage.from.clone().unwrap_or_default(),
        })
    }
}

#[async_trait]
impl OtpSender for VonageSender {
    fn name(&self) -> &'static str {
        "vonage"
    }

    async fn send(&self, message: &OtpMessage) -> Result<(), SendError> {
        let body = json!({
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "from": self.from,
            "to": message.to.as_str(),
            "text": message.text,
        });
        let request = self.client.post(&self.url).json(&body);
        let reply = provider_http::deliver("vonage", request, &[&self.api_secret], &message.otp).await?;
        let reply: Reply = serde_json::from_str(&reply).map_err(|_| SendError::transient("vonage: unparseable reply"))?;
        let refused = reply.messages.iter().find(|m| m.status != "0");
        match (reply.messages.is_empty(), refused) {
            (true, _) => Err(SendError::transient("vonage: reply without message status")),
            (false, None) => Ok(()),
            // Status 1 is throttling and 5 an internal error: both may pass later.
            (false, Some(m)) => {
                let reason = provider_http::redact(
                    format!("vonage refused the message: status {}: {}", m.status, m.error_text),
                    &[&self.api_secret],
                );
                Err(SendError { permanent: !matches!(m.status.as_str(), "1" | "5"), reason })
            }
        }
    }
}

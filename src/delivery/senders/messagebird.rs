//! MessageBird (Bird) SMS: `POST /messages`, JSON, `Authorization: AccessKey ...`.

use async_trait::async_trait;
use serde_json::json;

use super::{provider_http, OtpMessage, OtpSender, SendError};
use crate::config::Config;

pub struct MessageBirdSender {
    client: reqwest::Client,
    url: String,
    authorization: String,
    originator: String,
}

impl MessageBirdSender {
    /// The access key and the originator are required at load (`config::validate`).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let messagebird = &config.messagebird;
        Ok(MessageBirdSender {
            client: provider_http::client(config.provider.timeout_secs)?,
            url: format!("{}/messages", messagebird.base_url.trim_end_matches('/')),
            authorization: format!("AccessKey {}", messagebird.access_key.as_ref().map_or("", |secret| secret.expose())),
            originator: messagebird.originator.clone().unwrap_or_default(),
        })
    }
}

#[async_trait]
impl OtpSender for MessageBirdSender {
    fn name(&self) -> &'static str {
        "messagebird"
    }

    async fn send(&self, message: &OtpMessage) -> Result<(), SendError> {
        let body = json!({ "originator": self.originator, "recipients": [message.to.as_str()], "body": message.text });
        let request = self.client.post(&self.url).header("authorization", &self.authorization).json(&body);
        provider_http::deliver("messagebird", request, &[&self.authorization], &message.otp).await.map(|_| ())
    }
}

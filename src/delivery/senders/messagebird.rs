//! MessageBird (Bird) SMS: `POST /messages`, JSON, `Authorization: AccessKey ...`.

use async_trait::async_trait;
use serde_json::json;

use super::{provider_http, require, OtpMessage, OtpSender, SendError};
use crate::config::Config;

pub struct MessageBirdSender {
    client: reqwest::Client,
    url: String,
    authorization: String,
    originator: String,
}

impl MessageBirdSender {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        require(
            "messagebird",
            &[
                ("MESSAGEBIRD_ACCESS_KEY", config.messagebird.access_key.expose()),
                ("MESSAGEBIRD_ORIGINATOR", &config.messagebird.originator),
            ],
        )?;
        Ok(MessageBirdSender {
            client: provider_http::client(config.provider.timeout_secs)?,
            url: format!("{}/messages", config.messagebird.base_url.trim_end_matches('/')),
            authorization: format!("AccessKey {}", config.messagebird.access_key.expose()),
            originator: config.messagebird.originator.clone(),
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

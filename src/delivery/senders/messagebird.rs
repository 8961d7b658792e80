//! MessageBird (Bird) SMS: `POST /messages`, JSON, `Authorization: AccessKey ...`.

use async_trait::async_trait;
use serde_json::json;

use super::{provider_http, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::MessageBirdInstance;

pub struct MessageBirdSender {
    client: reqwest::Client,
    url: String,
    authorization: String,
    originator: String,
    report_url: Option<String>,
}

#[derive(serde::Deserialize)]
struct Created {
    id: Option<String>,
}

impl MessageBirdSender {
    /// Settings checked at load (`config::routes`). `callbacks`: `PUBLIC_URL`, under
    /// which MessageBird is asked to report the message's status.
    pub fn new(messagebird: &MessageBirdInstance, timeout_secs: u64, callbacks: Option<&str>) -> Result<Self, String> {
        Ok(MessageBirdSender {
            client: provider_http::client(timeout_secs)?,
            url: format!("{}/messages", messagebird.base_url.trim_end_matches('/')),
            authorization: format!("AccessKey {}", messagebird.access_key.expose()),
            originator: messagebird.originator.clone(),
            report_url: callbacks.map(|base| format!("{base}/delivery/messagebird")),
        })
    }
}

#[async_trait]
impl OtpSender for MessageBirdSender {
    fn name(&self) -> &'static str {
        "messagebird"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let mut body = json!({ "originator": self.originator, "recipients": [message.to.as_str()], "body": message.text });
        if let Some(report_url) = &self.report_url {
            body["reportUrl"] = json!(report_url);
        }
        let request = self.client.post(&self.url).header("authorization", &self.authorization).json(&body);
        let reply = provider_http::deliver("messagebird", request, &[&self.authorization], &message.otp).await?;
        Ok(Accepted { message_id: serde_json::from_str::<Created>(&reply).ok().and_then(|created| created.id) })
    }
}

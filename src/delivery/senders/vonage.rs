//! Vonage (Nexmo) SMS API: `POST /sms/json` with the key and secret in the body.
//! It answers 200 even when a message is refused; each message carries its own `status`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{provider_http, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::VonageInstance;

pub struct VonageSender {
    client: reqwest::Client,
    url: String,
    api_key: String,
    api_secret: String,
    from: String,
    callback: Option<String>,
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
    #[serde(rename = "message-id", default)]
    message_id: Option<String>,
}

impl VonageSender {
    /// Settings checked at load (`config::routes`). `callbacks`: `PUBLIC_URL`, under
    /// which Vonage is asked to post delivery receipts.
    pub fn new(vonage: &VonageInstance, timeout_secs: u64, callbacks: Option<&str>) -> Result<Self, String> {
        Ok(VonageSender {
            client: provider_http::client(timeout_secs)?,
            url: format!("{}/sms/json", vonage.base_url.trim_end_matches('/')),
            api_key: vonage.api_key.expose().to_string(),
            api_secret: vonage.api_secret.expose().to_string(),
            from: vonage.from.clone(),
            callback: callbacks.map(|base| format!("{base}/delivery/vonage")),
        })
    }
}

#[async_trait]
impl OtpSender for VonageSender {
    fn name(&self) -> &'static str {
        "vonage"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let mut body = json!({
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "from": self.from,
            "to": message.to.as_str(),
            "text": message.text,
        });
        if let Some(callback) = &self.callback {
            body["status-report-req"] = json!(1);
            body["callback"] = json!(callback);
        }
        let request = self.client.post(&self.url).json(&body);
        let reply = provider_http::deliver("vonage", request, &[&self.api_secret], &message.otp).await?;
        let reply: Reply = serde_json::from_str(&reply).map_err(|_| SendError::transient("vonage: unparseable reply"))?;
        let refused = reply.messages.iter().find(|m| m.status != "0");
        match (reply.messages.is_empty(), refused) {
            (true, _) => Err(SendError::transient("vonage: reply without message status")),
            // A long text is sent in parts, each with its id; receipts come for each part.
            (false, None) => Ok(Accepted { message_id: reply.messages.into_iter().next().and_then(|m| m.message_id) }),
            // Refusals of the number or the text (invalid, unroutable, barred, too long, deactivated)
            // would be refused anywhere; the rest (throttling, an internal error, the account's
            // credentials, credit or sender ID) are this account's, which another instance may not share.
            (false, Some(m)) => {
                let reason = provider_http::redact(
                    format!("vonage refused the message: status {}: {}", m.status, m.error_text),
                    &[&self.api_secret],
                );
                Err(SendError { permanent: matches!(m.status.as_str(), "3" | "6" | "7" | "12" | "33"), reason })
            }
        }
    }
}

//! Generic webhook: POSTs a JSON event to the operator's URL, signed the way
//! Standard Webhooks are, so any provider can be plugged in without code.

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{provider_http, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::WebhookInstance;
use crate::domain::address::Address;
use crate::store;

pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    key: Vec<u8>,
}

impl WebhookSender {
    /// The URL and the secret are required, and checked, at load (`config::routes`).
    pub fn new(webhook: &WebhookInstance, timeout_secs: u64) -> Result<Self, String> {
        Ok(WebhookSender { client: provider_http::client(timeout_secs)?, url: webhook.url.clone(), key: webhook.signing_key()? })
    }
}

/// The same for every attempt at one message, so the receiver can drop retried duplicates;
/// keyed, so the id reveals nothing about the code to those who see only headers.
fn message_id(key: &[u8], message: &OtpMessage) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in [message.to.as_str(), &message.appid, &message.otp] {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    format!("msg_{}", hex::encode(&mac.finalize().into_bytes()[..12]))
}

/// `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl OtpSender for WebhookSender {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let channel = match message.to {
            Address::Phone(_) => "sms",
            Address::Email(_) => "email",
            Address::Account(_) => return Err("an account at a sign-in provider is sent no code".into()),
        };
        let body = json!({
            "type": "otp",
            "to": message.to.as_str(),
            "channel": channel,
            "message": message.text,
            "otp": message.otp,
            "appid": message.appid,
        })
        .to_string();
        let id = message_id(&self.key, message);
        let timestamp = store::now();
        let request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(&self.key, &id, timestamp, &body))
            .body(body);
        provider_http::deliver("webhook", request, &[], &message.otp).await?;
        Ok(Accepted::with_id(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        let config = crate::config::Config::from_vars([("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]).unwrap();
        let key = config.webhook.signing_key().unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}

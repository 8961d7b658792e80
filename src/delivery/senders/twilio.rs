//! Twilio: Programmable Messaging (`POST /2010-04-01/Accounts/{sid}/Messages.json`) or,
//! for the `twilio_voice` kind, a call that reads the code out (`Calls.json` with TwiML);
//! form-encoded, HTTP basic auth with the account SID and auth token.

use async_trait::async_trait;

use super::{e164, provider_http, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::TwilioInstance;

pub struct TwilioSender {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: String,
    /// `("From", number)` or `("MessagingServiceSid", sid)`: Twilio takes one of them.
    sender_field: (&'static str, String),
    status_callback: Option<String>,
}

#[derive(serde::Deserialize)]
struct Created {
    sid: Option<String>,
}

impl TwilioSender {
    /// Settings checked at load (`config::routes`). `callbacks`: `PUBLIC_URL`, under
    /// which Twilio is asked to post the message's status.
    pub fn new(twilio: &TwilioInstance, timeout_secs: u64, callbacks: Option<&str>) -> Result<Self, String> {
        let sender_field = match &twilio.messaging_service_sid {
            Some(sid) => ("MessagingServiceSid", sid.clone()),
            None => ("From", twilio.from.clone().unwrap_or_default()),
        };
        let base = twilio.base_url.trim_end_matches('/');
        let account_sid = &twilio.account_sid;
        Ok(TwilioSender {
            client: provider_http::client(timeout_secs)?,
            url: format!("{base}/2010-04-01/Accounts/{account_sid}/Messages.json"),
            account_sid: account_sid.clone(),
            auth_token: twilio.auth_token.expose().to_string(),
            sender_field,
            status_callback: callbacks.map(|base| format!("{base}/delivery/twilio")),
        })
    }
}

#[async_trait]
impl OtpSender for TwilioSender {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let to = e164(message);
        let (sender_name, sender_value) = (self.sender_field.0, self.sender_field.1.as_str());
        let mut form = vec![("To", to.as_str()), (sender_name, sender_value), ("Body", message.text.as_str())];
        if let Some(callback) = &self.status_callback {
            form.push(("StatusCallback", callback));
        }
        let request = self.client.post(&self.url).basic_auth(&self.account_sid, Some(&self.auth_token)).form(&form);
        let reply = provider_http::deliver("twilio", request, &[&self.auth_token], &message.otp).await?;
        Ok(Accepted { message_id: serde_json::from_str::<Created>(&reply).ok().and_then(|created| created.sid) })
    }
}

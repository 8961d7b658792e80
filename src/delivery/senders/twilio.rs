//! Twilio: Programmable Messaging (`POST /2010-04-01/Accounts/{sid}/Messages.json`);
//! the `twilio_voice` kind's calls (`Calls.json`) are in `twilio_voice.rs` and share
//! [`TwilioAccount`]: form-encoded, HTTP basic auth with the account SID and auth token.

use async_trait::async_trait;

use super::{e164, provider_http, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::TwilioInstance;

/// What both Twilio APIs share: the account, its credentials, and where Twilio is asked
/// to post the status of what it was given.
pub(super) struct TwilioAccount {
    client: reqwest::Client,
    /// `{base}/2010-04-01/Accounts/{sid}`.
    account_url: String,
    account_sid: String,
    auth_token: String,
    pub(super) status_callback: Option<String>,
}

#[derive(serde::Deserialize)]
struct Created {
    sid: Option<String>,
}

impl TwilioAccount {
    /// `callbacks`: `PUBLIC_URL`, under which Twilio is asked to post the status of each
    /// message or call (both to one path: its receipts name a `MessageSid` or a `CallSid`).
    pub(super) fn new(twilio: &TwilioInstance, timeout_secs: u64, callbacks: Option<&str>) -> Result<Self, String> {
        let base = twilio.base_url.trim_end_matches('/');
        let account_sid = &twilio.account_sid;
        Ok(TwilioAccount {
            client: provider_http::client(timeout_secs)?,
            account_url: format!("{base}/2010-04-01/Accounts/{account_sid}"),
            account_sid: account_sid.clone(),
            auth_token: twilio.auth_token.expose().to_string(),
            status_callback: callbacks.map(|base| format!("{base}/delivery/twilio")),
        })
    }

    /// Creates a `resource` (`Messages.json`, `Calls.json`) from `form`: its `sid` is the
    /// provider's id for it. `code`, and whatever else in `form` shows it (`also_hidden`),
    /// is blanked out of anything reported.
    pub(super) async fn create(
        &self,
        resource: &str,
        form: &[(&str, &str)],
        code: &str,
        also_hidden: &[&str],
    ) -> Result<Accepted, SendError> {
        let url = format!("{}/{resource}", self.account_url);
        let request = self.client.post(url).basic_auth(&self.account_sid, Some(&self.auth_token)).form(form);
        let secrets: Vec<&str> = [self.auth_token.as_str()].into_iter().chain(also_hidden.iter().copied()).collect();
        let reply = provider_http::deliver("twilio", request, &secrets, code).await?;
        Ok(Accepted { message_id: serde_json::from_str::<Created>(&reply).ok().and_then(|created| created.sid) })
    }
}

pub struct TwilioSender {
    account: TwilioAccount,
    /// `("From", number)` or `("MessagingServiceSid", sid)`: Twilio takes one of them.
    sender_field: (&'static str, String),
}

impl TwilioSender {
    /// Settings checked at load (`config::routes`). `callbacks`: `PUBLIC_URL`, under
    /// which Twilio is asked to post the message's status.
    pub fn new(twilio: &TwilioInstance, timeout_secs: u64, callbacks: Option<&str>) -> Result<Self, String> {
        let sender_field = match &twilio.messaging_service_sid {
            Some(sid) => ("MessagingServiceSid", sid.clone()),
            None => ("From", twilio.from.clone().unwrap_or_default()),
        };
        Ok(TwilioSender { account: TwilioAccount::new(twilio, timeout_secs, callbacks)?, sender_field })
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
        if let Some(callback) = &self.account.status_callback {
            form.push(("StatusCallback", callback));
        }
        self.account.create("Messages.json", &form, &message.otp, &[]).await
    }
}

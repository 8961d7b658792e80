//! The WhatsApp Cloud API (`whatsapp`): `POST {base_url}/{phone_number_id}/messages` with
//! `Authorization: Bearer <access token>` and an authentication template whose body and
//! copy-code button both carry the code. The rendered SMS text is not used: the template
//! approved at Meta says what the message says.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{e164, provider_http, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::WhatsappInstance;

/// The recipient cannot get this message on WhatsApp (not a user, terms not accepted, an
/// old client): SMS may still reach them.
const UNDELIVERABLE: i64 = 131026;
/// Meta's throughput limit, and too many messages to one recipient in a short time.
const RATE_LIMITED: i64 = 130429;
const PAIR_RATE_LIMITED: i64 = 131056;
/// More than 24 hours since the user last wrote: only templates are allowed, which this is.
const RE_ENGAGEMENT: i64 = 131047;
/// The access token is invalid or expired.
const INVALID_TOKEN: i64 = 190;
/// Errors of the template itself (missing, parameters not matching it).
const TEMPLATE_ERRORS: std::ops::RangeInclusive<i64> = 132000..=132999;

pub struct WhatsappSender {
    client: reqwest::Client,
    url: String,
    authorization: String,
    template: String,
    language: String,
}

impl WhatsappSender {
    /// Settings checked at load (`config::routes`).
    pub fn new(whatsapp: &WhatsappInstance, timeout_secs: u64) -> Result<Self, String> {
        Ok(WhatsappSender {
            client: provider_http::client(timeout_secs)?,
            url: format!("{}/{}/messages", whatsapp.base_url.trim_end_matches('/'), whatsapp.phone_number_id),
            authorization: format!("Bearer {}", whatsapp.access_token.expose()),
            template: whatsapp.template.clone(),
            language: whatsapp.language.clone(),
        })
    }

    /// The authentication template message: the code fills the body's parameter and the
    /// copy-code button (stored as a URL button, hence `sub_type` `url`).
    fn body(&self, to: &str, code: &str) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": {
                "name": self.template,
                "language": {"code": self.language},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": code}]},
                    {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": code}]},
                ],
            },
        })
    }
}

/// Whether a 4xx answer says nothing against the number, so that the route moves on to
/// its next instance (and a retry may come back here): the recipient is not on WhatsApp,
/// a rate limit, or the instance's own credentials or template. Other refusals are
/// permanent, as for every provider.
fn moves_on(status: u16, body: &str) -> bool {
    if matches!(status, 401 | 403) {
        return true;
    }
    let code = serde_json::from_str::<Value>(body).ok().and_then(|reply| reply["error"]["code"].as_i64());
    code.is_some_and(|code| {
        matches!(code, UNDELIVERABLE | RATE_LIMITED | PAIR_RATE_LIMITED | RE_ENGAGEMENT | INVALID_TOKEN) || TEMPLATE_ERRORS.contains(&code)
    })
}

#[derive(serde::Deserialize)]
struct Sent {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(serde::Deserialize)]
struct SentMessage {
    id: Option<String>,
}

#[async_trait]
impl OtpSender for WhatsappSender {
    fn name(&self) -> &'static str {
        "whatsapp"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let request =
            self.client.post(&self.url).header("authorization", &self.authorization).json(&self.body(&e164(message), &message.otp));
        let reply = provider_http::deliver_judged("whatsapp", request, &[&self.authorization], &message.otp, moves_on).await?;
        let id = serde_json::from_str::<Sent>(&reply).ok().and_then(|sent| sent.messages.into_iter().next()).and_then(|sent| sent.id);
        Ok(Accepted { message_id: id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: i64) -> String {
        json!({"error": {"message": format!("(#{code}) error"), "type": "OAuthException", "code": code, "fbtrace_id": "A1"}}).to_string()
    }

    #[test]
    fn a_number_off_whatsapp_rate_limits_and_the_instances_faults_move_on() {
        for code in [UNDELIVERABLE, RATE_LIMITED, PAIR_RATE_LIMITED, RE_ENGAGEMENT, INVALID_TOKEN, 132001] {
            assert!(moves_on(400, &error(code)), "{code}");
        }
        assert!(moves_on(401, "not json"), "bad credentials are the instance's fault");
        assert!(!moves_on(400, &error(100)), "an invalid parameter (such as the number) is refused for good");
        assert!(!moves_on(400, "not json"));
    }
}

//! Generic SMS gateway: POSTs a JSON body built from a template.

use async_trait::async_trait;

use super::{provider_http, Accepted, OtpMessage, OtpSender, SendError};
use crate::config::HttpInstance;

pub struct HttpSmsSender {
    client: reqwest::Client,
    url: String,
    authorization: String,
    body_template: String,
}

impl HttpSmsSender {
    /// The URL and the body template's placeholders are checked at load (`config::routes`).
    pub fn new(http: &HttpInstance) -> Result<Self, String> {
        Ok(HttpSmsSender {
            client: provider_http::client(http.timeout_secs)?,
            url: http.url.clone(),
            authorization: http.auth.as_ref().map_or("", |secret| secret.expose()).to_string(),
            body_template: http.body.expose().to_string(),
        })
    }
}

/// Substitutes JSON-escaped values, so a name or message cannot break the body's structure.
fn render_body(template: &str, phone: &str, message: &str) -> String {
    let escape = |s: &str| {
        let quoted = serde_json::to_string(s).expect("a string always serialises");
        quoted[1..quoted.len() - 1].to_string()
    };
    template.replace("{phone}", &escape(phone)).replace("{message}", &escape(message))
}

#[async_trait]
impl OtpSender for HttpSmsSender {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn send(&self, message: &OtpMessage) -> Result<Accepted, SendError> {
        let body = render_body(&self.body_template, message.to.as_str(), &message.text);
        let mut request = self.client.post(&self.url).header("content-type", "application/json").body(body);
        if !self.authorization.is_empty() {
            request = request.header("authorization", &self.authorization);
        }
        provider_http::deliver("SMS gateway", request, &[&self.authorization], &message.otp).await.map(|_| Accepted::default())
    }
}

#[cfg(test)]
mod tests {
    use super::render_body;

    #[test]
    fn body_values_are_json_escaped() {
        let body = render_body(r#"{"to":"{phone}","text":"{message}"}"#, "18005551234", "say \"hi\"\n");
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["to"], "18005551234");
        assert_eq!(parsed["text"], "say \"hi\"\n");
    }
}

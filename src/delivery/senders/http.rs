//! Generic SMS gateway: POSTs a JSON body built from a template.

use async_trait::async_trait;

use super::{provider_http, OtpMessage, OtpSender, SendError};
use crate::config::Config;

pub struct HttpSmsSender {
    client: reqwest::Client,
    url: String,
    authorization: String,
    body_template: String,
}

impl HttpSmsSender {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let Some(url) = &config.sms_http.url else {
            return Err("invalid configuration: SMS_HTTP_URL is required when the http sender is used".into());
        };
        let template = config.sms_http.body.expose();
        // Without them every message would reach the gateway without its number or its code.
        for placeholder in ["{phone}", "{message}"] {
            if !template.contains(placeholder) {
                return Err(format!(
                    "invalid configuration: SMS_HTTP_BODY has no {placeholder}; it must be a JSON template using {{phone}} and {{message}}"
                ));
            }
        }
        let sample = render_body(template, "18005551234", "Your code is 123456");
        if serde_json::from_str::<serde_json::Value>(&sample).is_err() {
            return Err("invalid configuration: SMS_HTTP_BODY must be a JSON template using {phone} and {message}".into());
        }
        Ok(HttpSmsSender {
            client: provider_http::client(config.sms_http.timeout_secs)?,
            url: url.clone(),
            authorization: config.sms_http.auth.as_ref().map_or("", |secret| secret.expose()).to_string(),
            body_template: config.sms_http.body.expose().to_string(),
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

    async fn send(&self, message: &OtpMessage) -> Result<(), SendError> {
        let body = render_body(&self.body_template, message.to.as_str(), &message.text);
        let mut request = self.client.post(&self.url).header("content-type", "application/json").body(body);
        if !self.authorization.is_empty() {
            request = request.header("authorization", &self.authorization);
        }
        provider_http::deliver("SMS gateway", request, &[&self.authorization], &message.otp).await.map(|_| ())
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

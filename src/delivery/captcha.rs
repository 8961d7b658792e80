//! Optional CAPTCHA on login start (hCaptcha or Cloudflare Turnstile): the app
//! sends the widget's `captcha_token`, verified at the provider's siteverify endpoint.

use serde::Deserialize;
use std::time::Duration;

use crate::config::{CaptchaProvider, Config};
use crate::delivery::upstream::describe;
use crate::domain::error::{ApiError, ErrorCode};

pub struct Captcha {
    client: reqwest::Client,
    url: String,
    secret: String,
}

#[derive(Deserialize)]
struct SiteverifyReply {
    #[serde(default)]
    success: bool,
    #[serde(rename = "error-codes", default)]
    error_codes: Vec<String>,
}

impl Captcha {
    /// `None` when `CAPTCHA_PROVIDER` is empty.
    pub fn from_config(config: &Config) -> Result<Option<Captcha>, String> {
        let default_url = match config.captcha.provider {
            CaptchaProvider::Off => return Ok(None),
            CaptchaProvider::Hcaptcha => "https://api.hcaptcha.com/siteverify",
            CaptchaProvider::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        };
        let url = config.captcha.verify_url.clone().unwrap_or_else(|| default_url.to_string());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.provider.timeout_secs))
            .build()
            .map_err(|e| format!("cannot build the CAPTCHA HTTP client: {e}"))?;
        Ok(Some(Captcha { client, url, secret: config.captcha.secret.as_ref().map_or("", |secret| secret.expose()).to_string() }))
    }

    pub async fn verify(&self, token: Option<&str>, client_ip: &str) -> Result<(), ApiError> {
        let failed = || ApiError::new(ErrorCode::Captcha, "the CAPTCHA was not solved; send a fresh captcha_token");
        let token = token.ok_or_else(|| ApiError::new(ErrorCode::Captcha, "captcha_token is required"))?;
        let form = [("secret", self.secret.as_str()), ("response", token), ("remoteip", client_ip)];
        let response = self.client.post(&self.url).form(&form).send().await.map_err(|e| {
            tracing::warn!("CAPTCHA verification request failed: {}", describe(e));
            failed()
        })?;
        let reply: SiteverifyReply = response.json().await.map_err(|_| {
            tracing::warn!("CAPTCHA verification reply unparseable");
            failed()
        })?;
        if reply.success {
            Ok(())
        } else {
            tracing::info!(errors = ?reply.error_codes, "CAPTCHA refused");
            Err(failed())
        }
    }
}

//! What every HTTP provider shares: the client, sending a request, and turning
//! transport errors and error replies into one clear, credential-free [`SendError`].

use serde_json::Value;
use std::time::Duration;

use super::SendError;
use crate::delivery::upstream::describe;

/// Longest part of a provider's error reply that is logged.
const LOGGED_BODY_LIMIT: usize = 300;

pub fn client(timeout_secs: u64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_secs))
        .pool_idle_timeout(crate::delivery::upstream::POOL_IDLE_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the provider HTTP client: {e}"))
}

/// Sends `request` and returns the reply body of a 2xx answer.
/// Timeouts, connection and TLS failures, 5xx, 408 and 429 are transient (worth a retry
/// or another instance), and so are refused credentials or payment (401, 402, 403):
/// that account's problem, which another instance of the route may not have. Other
/// 4xx answers are permanent: the number is refused. `secrets` and the
/// one-time `code` are blanked out of anything reported, since some providers echo
/// the request.
pub async fn deliver(provider: &str, request: reqwest::RequestBuilder, secrets: &[&str], code: &str) -> Result<String, SendError> {
    deliver_judged(provider, request, secrets, code, |_, _| false).await
}

/// [`deliver`], where `worth_another_try` (given the HTTP status and the reply body, its
/// secrets and code blanked) marks the 4xx answers that are transient for this provider:
/// those that say nothing against the number, so that the route moves on.
pub async fn deliver_judged(
    provider: &str,
    request: reqwest::RequestBuilder,
    secrets: &[&str],
    code: &str,
    worth_another_try: impl Fn(u16, &str) -> bool,
) -> Result<String, SendError> {
    let redact = |text: String| {
        let text = redact(text, secrets);
        if code.is_empty() {
            text
        } else {
            text.replace(code, "[code]")
        }
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            let what = if e.is_timeout() { "timed out" } else { "request failed" };
            return Err(SendError::transient(redact(format!("{provider}: {what}: {}", describe(e)))));
        }
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    // Blanked before anything is shortened, so no cut can leave part of a secret behind.
    let body = redact(body);
    let detail = provider_error(&body).unwrap_or_else(|| shorten(&body));
    let reason = format!("{provider} answered HTTP {}: {detail}", status.as_u16());
    if status.is_server_error() || matches!(status.as_u16(), 401 | 402 | 403 | 408 | 429) || worth_another_try(status.as_u16(), &body) {
        Err(SendError::transient(reason))
    } else {
        Err(SendError::permanent(reason))
    }
}

/// Blanks `secrets` out of `text`: some providers echo the request in their replies.
/// A header value such as `Bearer <token>` is blanked whole and by its credential
/// alone, since an echo may hold either.
pub fn redact(text: String, secrets: &[&str]) -> String {
    let credentials = secrets.iter().filter_map(|s| s.trim().rsplit_once(' ').map(|(_, credential)| credential));
    let mut all: Vec<&str> = secrets.iter().copied().chain(credentials).filter(|s| s.len() >= 4).collect();
    // Longest first, so a whole header is blanked before its credential part.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.into_iter().fold(text, |text, secret| text.replace(secret, "[secret]"))
}

/// The provider's own error code and text, from the reply shapes the supported
/// providers use (`code`/`message`, `error-text`, `errors[0]`, `error{}`, `title`/`detail`).
fn provider_error(body: &str) -> Option<String> {
    let reply: Value = serde_json::from_str(body).ok()?;
    let error = reply.get("errors").and_then(|e| e.get(0)).or_else(|| reply.get("error").filter(|e| e.is_object())).unwrap_or(&reply);
    let code = ["code", "status", "type"].iter().find_map(|k| error.get(*k)).map(plain);
    let text = ["message", "description", "error-text", "detail", "title"].iter().find_map(|k| error.get(*k)).map(plain);
    match (code, text) {
        (Some(code), Some(text)) => Some(format!("error {code}: {}", shorten(&text))),
        (None, Some(text)) => Some(shorten(&text)),
        (Some(code), None) => Some(format!("error {code}")),
        (None, None) => None,
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn shorten(text: &str) -> String {
    crate::delivery::upstream::shorten(text, LOGGED_BODY_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::provider_error;

    #[test]
    fn provider_error_shapes_are_understood() {
        let twilio = r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#;
        assert_eq!(provider_error(twilio).as_deref(), Some("error 21211: Invalid 'To' Phone Number"));
        let messagebird = r#"{"errors":[{"code":9,"description":"no (correct) recipients found","parameter":"recipients"}]}"#;
        assert_eq!(provider_error(messagebird).as_deref(), Some("error 9: no (correct) recipients found"));
        let whatsapp = r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"error_data":{"messaging_product":"whatsapp","details":"Cloud API message throughput has been reached."},"fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam"}}"#;
        assert_eq!(provider_error(whatsapp).as_deref(), Some("error 130429: (#130429) Rate limit hit"));
        assert_eq!(provider_error("not json"), None);
    }
}

//! Client for the messaging platform: `useradd`, which mints a user's access token,
//! `message`, which the outbox uses to notify users, and the group operations that
//! mirror the apps' groups.

pub mod builtin;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

use crate::config::{Config, BUILTIN_UPSTREAM};

/// Idle connections are closed after this, before common servers' keep-alive timeout
/// (5 s for actix-web, Node.js and Apache) closes them: a request written on a connection
/// the server is closing fails, and cannot safely be sent again. (Seen under load: one
/// UPSTREAM error in about 50 000 logins with reqwest's default of 90 s.)
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Longest part of an upstream error body that is logged.
const LOGGED_BODY_LIMIT: usize = 500;

pub struct Upstream {
    client: reqwest::Client,
    url: String,
    /// `UPSTREAM_URL=builtin`: tokens are minted in-process by [`builtin`], for local testing.
    builtin: bool,
    app_token: String,
    token_expiry_mins: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IssuedToken {
    /// Upstream user id: a number or a string, passed through as received.
    pub uid: Value,
    pub token: String,
    /// Multi-device fields, passed through to the app when present.
    pub linked: Option<Value>,
    pub linkto: Option<Value>,
}

/// What went wrong upstream, already free of the app token; fit for logs, not for clients.
#[derive(Debug)]
pub struct UpstreamError {
    pub detail: String,
    /// Why the platform could not be reached at all (`timed out`, `connection refused`...);
    /// `None` when it answered, but not with a token.
    pub unreachable: Option<&'static str>,
}

impl UpstreamError {
    fn answered(detail: impl Into<String>) -> UpstreamError {
        UpstreamError { detail: detail.into(), unreachable: None }
    }
}

#[derive(Serialize)]
struct UseraddRequest<'a> {
    op: &'static str,
    token: &'a str,
    user: UseraddRequestUser<'a>,
}

#[derive(Serialize)]
struct UseraddRequestUser<'a> {
    address: &'a str,
    name: &'a str,
    token: UseraddRequestToken<'a>,
}

#[derive(Serialize)]
struct UseraddRequestToken<'a> {
    appid: &'a str,
    expiry: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    /// The user's own address, when the token is for a linked one: the platform links them.
    #[serde(skip_serializing_if = "Option::is_none")]
    linkto: Option<&'a str>,
}

#[derive(Deserialize)]
struct UseraddReply {
    #[serde(default)]
    result: bool,
    user: Option<UseraddUser>,
    linked: Option<Value>,
    linkto: Option<Value>,
}

#[derive(Deserialize)]
struct UseraddUser {
    uid: Option<Value>,
    token: Option<String>,
    linked: Option<Value>,
    linkto: Option<Value>,
}

impl Upstream {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        // One client for the process: it keeps connections alive between logins.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.upstream.connect_timeout_secs))
            .timeout(Duration::from_secs(config.upstream.timeout_secs))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the upstream HTTP client: {e}"))?;
        let builtin = config.upstream.url == BUILTIN_UPSTREAM;
        Ok(Upstream {
            client,
            builtin,
            url: config.upstream.url.clone(),
            app_token: config.upstream.app_token.as_ref().map_or("", |secret| secret.expose()).to_string(),
            token_expiry_mins: config.upstream.token_expiry_mins,
        })
    }

    /// Has the platform mint a token for `address`; `linkto` names the user's own address
    /// when `address` is one linked to it.
    pub async fn useradd(
        &self,
        address: &str,
        name: &str,
        appid: &str,
        device: Option<&str>,
        linkto: Option<&str>,
    ) -> Result<IssuedToken, UpstreamError> {
        let token = UseraddRequestToken { appid, expiry: self.token_expiry_mins, device, linkto };
        let request = UseraddRequest { op: "useradd", token: &self.app_token, user: UseraddRequestUser { address, name, token } };
        let body = self.post(&request).await?;
        // A 2xx body may carry a freshly issued token: it is never quoted in an error.
        let reply: UseraddReply =
            serde_json::from_str(&body).map_err(|_| UpstreamError::answered(format!("unparseable reply of {} bytes", body.len())))?;
        match reply.user {
            Some(UseraddUser { uid: Some(uid), token: Some(token), linked, linkto }) if reply.result && !token.is_empty() => {
                if self.builtin {
                    tracing::warn!("{}", builtin::WARNING);
                }
                Ok(IssuedToken { uid, token, linked: linked.or(reply.linked), linkto: linkto.or(reply.linkto) })
            }
            _ if !reply.result => Err(self.error("result:false", &body)),
            _ => Err(UpstreamError::answered("reply with result:true but without user uid or token")),
        }
    }

    /// Sends one message from `from` to `to` (`op:"message"`); `payload` holds the
    /// message's other fields (type, flag, expiry, msg...).
    pub async fn message(&self, from: &str, to: &str, payload: &Value) -> Result<(), UpstreamError> {
        let mut request = json!({ "op": "message", "token": self.app_token, "from": from, "to": to });
        if let (Value::Object(request), Value::Object(fields)) = (&mut request, payload) {
            for (name, value) in fields {
                request.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        let body = self.post(&request).await?;
        let reply: Value = serde_json::from_str(&body).map_err(|_| self.error("unparseable reply", &body))?;
        if reply["result"] == true {
            Ok(())
        } else {
            Err(self.error("result:false", &body))
        }
    }

    /// A group operation (`groupadd`, `groupset`, `groupeditmembers`, `groupdel`) with
    /// `fields`, in the JSON form of `useradd`; returns the platform's reply.
    pub async fn group(&self, op: &'static str, fields: Value) -> Result<Value, UpstreamError> {
        self.call(op, fields).await
    }

    /// Deletes a user on the platform (`op:"userdel"`), named by its uid and address.
    pub async fn userdel(&self, uid: &str, address: &str) -> Result<(), UpstreamError> {
        self.call("userdel", json!({ "user": { "uid": uid, "address": address } })).await.map(|_| ())
    }

    /// An operation with `fields` in the JSON form of `useradd`; the platform's reply,
    /// when it says `result:true`.
    async fn call(&self, op: &'static str, fields: Value) -> Result<Value, UpstreamError> {
        let mut request = json!({ "op": op, "token": self.app_token });
        if let (Value::Object(request), Value::Object(fields)) = (&mut request, fields) {
            request.extend(fields);
        }
        let body = self.post(&request).await?;
        let reply: Value = serde_json::from_str(&body).map_err(|_| self.error("unparseable reply", &body))?;
        match reply["result"] == true {
            true => Ok(reply),
            false => Err(self.error("result:false", &body)),
        }
    }

    /// POSTs a request and returns the body of a 2xx reply.
    async fn post(&self, request: &impl Serialize) -> Result<String, UpstreamError> {
        if self.builtin {
            let request = serde_json::to_value(request).map_err(|e| UpstreamError::answered(e.to_string()))?;
            return Ok(builtin::answer(&request).to_string());
        }
        let _timer = crate::domain::metrics::UPSTREAM_DURATION.start_timer();
        let failed = |what: &str, e: reqwest::Error| {
            let unreachable = unreachable_cause(&e);
            UpstreamError { detail: self.redact(&format!("{what}: {}", describe(e))), unreachable }
        };
        let response = self.client.post(&self.url).json(request).send().await.map_err(|e| failed("request failed", e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| failed("reading the reply failed", e))?;
        if !status.is_success() {
            return Err(self.error(&format!("HTTP {status}"), &body));
        }
        Ok(body)
    }

    /// An error quoting the start of `body`, the app token blanked before the cut so
    /// that no cut can leave part of it behind.
    fn error(&self, what: &str, body: &str) -> UpstreamError {
        let mut detail = format!("{what}; body: {}", shorten(&self.redact(body), LOGGED_BODY_LIMIT));
        // The platform's own answer (often a bare AUTHFAIL) does not say why.
        if self.app_token.is_empty() && !self.builtin {
            detail.push_str("; APP_TOKEN is not set, and the platform refuses requests without it");
        }
        UpstreamError::answered(detail)
    }

    /// Upstreams sometimes echo the request; the app token must never reach a log.
    fn redact(&self, text: &str) -> String {
        if self.app_token.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.app_token, "[app token]")
        }
    }
}

/// At most `limit` characters of `text`, marked when cut. Blank secrets first.
pub(crate) fn shorten(text: &str, limit: usize) -> String {
    let mut shown: String = text.chars().take(limit).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// Why a request never got an answer, in words an operator can act on; `None` when the
/// connection was made (the platform answered, or broke off mid-reply).
fn unreachable_cause(e: &reqwest::Error) -> Option<&'static str> {
    if e.is_timeout() {
        return Some("timed out");
    }
    if !e.is_connect() {
        return None;
    }
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let chain = chain.to_ascii_lowercase();
    Some(if chain.contains("dns") || chain.contains("lookup") || chain.contains("resolve") {
        "DNS lookup failed"
    } else if chain.contains("refused") {
        "connection refused"
    } else if chain.contains("certificate") || chain.contains("tls") || chain.contains("handshake") {
        "TLS handshake failed"
    } else {
        "connection failed"
    })
}

/// reqwest's Display of an error leaves out the cause (refused, timed out, ...).
/// The URL is left out: operators sometimes put credentials in it.
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

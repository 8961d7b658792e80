//! The stable error codes of the wire protocol and their HTTP statuses.

/// Every error code, its HTTP status and meaning; the OpenAPI document lists them from here.
pub const ERROR_CODES: &[(&str, u16, &str)] = &[
    ("BADREQUEST", 400, "body is not a JSON object or form, not UTF-8, or over MAX_BODY_BYTES (MAX_CONTACTS_BODY_BYTES for contact ops)"),
    ("BADOP", 400, "op missing or unknown"),
    ("MISSINGAPPID", 400, "appid missing or empty"),
    ("BADPHONE", 400, "phone missing or malformed, or phone logins not enabled"),
    ("BADEMAIL", 400, "e-mail malformed, or e-mail logins not enabled"),
    ("BADPARAM", 400, "a field is missing, malformed or too long"),
    ("BADCODE", 401, "wrong code, or no valid code"),
    ("TOOMANYATTEMPTS", 401, "too many wrong guesses: ask for a new code"),
    ("AUTHFAIL", 401, "token missing, unknown or expired: log in again"),
    ("TOOMANY", 413, "more phones than MAX_CONTACTS_PER_REQUEST in one request, or more contacts than MAX_CONTACTS_PER_USER"),
    ("RATELIMIT", 429, "too many requests; retry_after says when to retry"),
    ("SENDFAILED", 502, "the code could not be delivered"),
    ("UPSTREAM", 502, "the platform did not issue a token; retry with the same code"),
    ("INTERNAL", 503, "the database failed; retry"),
    ("CAPTCHA", 400, "captcha_token missing or not accepted by the CAPTCHA provider"),
    ("TIMEOUT", 504, "the request took longer than REQUEST_TIMEOUT_SECS; retry"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `BADCODE`.
    pub code: &'static str,
    /// Human-readable explanation for the app developer.
    pub message: String,
    /// Seconds until a rate-limited request may be retried.
    pub retry_after: Option<u64>,
    /// A refusal of the HTTP request itself (a body over the limit): its status is kept
    /// in every dialect, where application errors answer 200 in the `mesibo` one.
    pub keeps_status: bool,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None, keeps_status: false }
    }

    pub fn rate_limited(retry_after: u64, message: impl Into<String>) -> Self {
        ApiError { code: "RATELIMIT", message: message.into(), retry_after: Some(retry_after.max(1)), keeps_status: false }
    }

    pub fn internal() -> Self {
        ApiError::new("INTERNAL", "internal error, please retry")
    }

    pub fn status(&self) -> u16 {
        ERROR_CODES.iter().find(|(code, _, _)| *code == self.code).map_or(400, |(_, status, _)| *status)
    }
}

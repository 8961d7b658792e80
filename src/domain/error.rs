//! The stable error codes of the wire protocol and their HTTP statuses.

use std::fmt;

/// The stable error codes of the wire protocol. A code is a variant, not a string, so a
/// misspelt one does not compile; its text, HTTP status and meaning are in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    BadOp,
    MissingAppid,
    BadPhone,
    BadEmail,
    BadParam,
    BadCode,
    TooManyAttempts,
    AuthFail,
    TooMany,
    RateLimit,
    SendFailed,
    Upstream,
    Internal,
    Captcha,
    Timeout,
    MissingFile,
    BadImage,
    ImageTooLarge,
    Busy,
    BadGroup,
    NotMember,
    MissingPara,
    BadIdToken,
    IdProvider,
}

impl ErrorCode {
    /// Every code, in the order the OpenAPI document lists them.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::BadRequest,
        ErrorCode::BadOp,
        ErrorCode::MissingAppid,
        ErrorCode::BadPhone,
        ErrorCode::BadEmail,
        ErrorCode::BadParam,
        ErrorCode::BadCode,
        ErrorCode::TooManyAttempts,
        ErrorCode::AuthFail,
        ErrorCode::TooMany,
        ErrorCode::RateLimit,
        ErrorCode::SendFailed,
        ErrorCode::Upstream,
        ErrorCode::Internal,
        ErrorCode::Captcha,
        ErrorCode::Timeout,
        ErrorCode::MissingFile,
        ErrorCode::BadImage,
        ErrorCode::ImageTooLarge,
        ErrorCode::Busy,
        ErrorCode::BadGroup,
        ErrorCode::NotMember,
        ErrorCode::MissingPara,
        ErrorCode::BadIdToken,
        ErrorCode::IdProvider,
    ];

    /// (the code as sent, its HTTP status in the `json` dialect, its meaning).
    fn describe(self) -> (&'static str, u16, &'static str) {
        match self {
            ErrorCode::BadRequest => (
                "BADREQUEST",
                400,
                "body is not a JSON object or form, not UTF-8, or over MAX_BODY_BYTES (MAX_CONTACTS_BODY_BYTES for contact ops)",
            ),
            ErrorCode::BadOp => ("BADOP", 400, "op missing or unknown"),
            ErrorCode::MissingAppid => ("MISSINGAPPID", 400, "appid missing or empty"),
            ErrorCode::BadPhone => ("BADPHONE", 400, "phone missing or malformed, or phone logins not enabled"),
            ErrorCode::BadEmail => ("BADEMAIL", 400, "e-mail malformed, or e-mail logins not enabled"),
            ErrorCode::BadParam => ("BADPARAM", 400, "a field is missing, malformed or too long"),
            ErrorCode::BadCode => ("BADCODE", 401, "wrong code, or no valid code"),
            ErrorCode::TooManyAttempts => ("TOOMANYATTEMPTS", 401, "too many wrong guesses: ask for a new code"),
            ErrorCode::AuthFail => ("AUTHFAIL", 401, "token missing, unknown or expired: log in again"),
            ErrorCode::TooMany => {
                ("TOOMANY", 413, "more phones than MAX_CONTACTS_PER_REQUEST in one request, or more contacts than MAX_CONTACTS_PER_USER")
            }
            ErrorCode::RateLimit => ("RATELIMIT", 429, "too many requests; retry_after says when to retry"),
            ErrorCode::SendFailed => ("SENDFAILED", 502, "the code could not be delivered"),
            ErrorCode::Upstream => ("UPSTREAM", 502, "the platform did not issue a token; retry with the same code"),
            ErrorCode::Internal => ("INTERNAL", 503, "the database failed; retry"),
            ErrorCode::Captcha => ("CAPTCHA", 400, "captcha_token missing or not accepted by the CAPTCHA provider"),
            ErrorCode::Timeout => ("TIMEOUT", 504, "the request took longer than REQUEST_TIMEOUT_SECS; retry"),
            ErrorCode::MissingFile => ("MISSINGFILE", 400, "upload without a file part"),
            ErrorCode::BadImage => ("BADIMAGE", 415, "a photo that is not a JPEG, PNG, GIF or WebP image"),
            ErrorCode::ImageTooLarge => ("IMAGETOOLARGE", 413, "a photo of more pixels than MAX_PHOTO_PIXELS"),
            ErrorCode::Busy => (
                "BUSY",
                503,
                "too many photos being processed, or too many uploads waiting for their token; retry after retry_after seconds",
            ),
            ErrorCode::BadGroup => ("BADGROUP", 403, "not a member of the group, or not its admin or owner where that is needed"),
            ErrorCode::NotMember => ("NOTMEMBER", 403, "getgroup of a group the caller is not a member of"),
            ErrorCode::MissingPara => ("MISSINGPARA", 400, "gid (or m) missing for a group op"),
            ErrorCode::BadIdToken => (
                "BADIDTOKEN",
                401,
                "ID token refused: bad signature, unknown key, another issuer or audience, expired, wrong nonce, or e-mail not verified",
            ),
            ErrorCode::IdProvider => ("IDPROVIDER", 502, "the sign-in provider's keys could not be fetched; retry"),
        }
    }

    /// The code as it appears in replies, e.g. `BADCODE`.
    pub fn as_str(self) -> &'static str {
        self.describe().0
    }

    pub fn status(self) -> u16 {
        self.describe().1
    }

    pub fn meaning(self) -> &'static str {
        self.describe().2
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets tests and logs compare a code with its text.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `BADCODE`.
    pub code: ErrorCode,
    /// Human-readable explanation for the app developer.
    pub message: String,
    /// Seconds until a rate-limited request may be retried.
    pub retry_after: Option<u64>,
    /// A refusal of the HTTP request itself (a body over the limit): its status is kept
    /// in every dialect, where application errors answer 200 in the `mesibo` one.
    pub keeps_status: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None, keeps_status: false }
    }

    pub fn rate_limited(retry_after: u64, message: impl Into<String>) -> Self {
        ApiError { code: ErrorCode::RateLimit, message: message.into(), retry_after: Some(retry_after.max(1)), keeps_status: false }
    }

    /// A refusal for want of capacity right now; the request may be sent again as it was.
    pub fn busy(retry_after: u64, message: impl Into<String>) -> Self {
        ApiError { code: ErrorCode::Busy, message: message.into(), retry_after: Some(retry_after.max(1)), keeps_status: false }
    }

    pub fn internal() -> Self {
        ApiError::new(ErrorCode::Internal, "internal error, please retry")
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

//! The stable error codes of the wire protocol and their HTTP statuses.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `BADCODE`.
    pub code: &'static str,
    /// Human-readable explanation for the app developer.
    pub message: String,
    /// Seconds until a rate-limited request may be retried.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None }
    }

    pub fn rate_limited(retry_after: u64, message: impl Into<String>) -> Self {
        ApiError { code: "RATELIMIT", message: message.into(), retry_after: Some(retry_after.max(1)) }
    }

    pub fn internal() -> Self {
        ApiError::new("INTERNAL", "internal error, please retry")
    }

    pub fn status(&self) -> u16 {
        match self.code {
            "RATELIMIT" => 429,
            "UPSTREAM" | "SENDFAILED" => 502,
            "BADCODE" | "TOOMANYATTEMPTS" | "AUTHFAIL" => 401,
            "TOOMANY" => 413,
            "INTERNAL" => 503,
            _ => 400,
        }
    }
}

/// A failed query: logged here, answered as `INTERNAL` (the details stay in the log).
impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        tracing::error!("database error: {e}");
        ApiError::internal()
    }
}

//! `op=logout`: ends this session, or with `all` every session of the user.

use super::common::TOKEN_FIELD;
use super::{ApiOp, Fields, OpDoc, SentToken};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::error::ApiError;

pub struct Logout;

/// The fields of `op=logout` besides the token.
pub struct LogoutRequest {
    /// End every session of the user, not only this one.
    all: bool,
}

impl ApiOp for Logout {
    type ActsFor = SentToken;
    type Request<'a> = LogoutRequest;

    const DOC: OpDoc = OpDoc {
        summary: "End this session, or with all:true every session of the user. An already ended token still succeeds.",
        request: &[TOKEN_FIELD, ("all", "boolean", "End every session of the user (1, true or yes).")],
        required: &[],
        reply: &[("ended", "integer", "How many sessions were ended.")],
    };

    fn read(sent: Sent<'_>) -> LogoutRequest {
        LogoutRequest { all: sent.flag("all") }
    }

    async fn answer(state: &AppState, token: SentToken, request: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        let ended = match token.0 {
            // No token: no session left to end, and still OK (see `SentToken`).
            None => 0,
            Some(token_sha256) => state.sessions.logout(token_sha256, request.all).await?,
        };
        Ok(Fields::from_iter([("ended".to_string(), ended.into())]))
    }
}

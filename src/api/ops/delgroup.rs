//! `op=delgroup`: the owner deletes the group; any other member leaves it.

use super::common::{GID_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;

pub struct DelGroup;

impl ApiOp for DelGroup {
    type ActsFor = Caller;
    /// The group's id.
    type Request<'a> = i64;

    const DOC: OpDoc = OpDoc {
        summary: "The owner deletes the group; any other member leaves it.",
        request: &[TOKEN_FIELD, GID_FIELD],
        required: &["gid"],
        reply: &[GID_FIELD],
    };

    fn read(sent: Sent<'_>) -> i64 {
        sent.number("gid")
    }

    async fn answer(state: &AppState, caller: Caller, gid: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        state.groups.delete(&caller, gid).await?;
        Ok(Fields::from_iter([("gid".to_string(), gid.into())]))
    }
}

//! `op=getgroup`: a group the caller is a member of.

use super::common::{GID_FIELD, GROUP_REPLY, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;

pub struct GetGroup;

impl ApiOp for GetGroup {
    type ActsFor = Caller;
    /// The group's id.
    type Request<'a> = i64;

    const DOC: OpDoc = OpDoc {
        summary: "A group the caller is a member of.",
        request: &[TOKEN_FIELD, GID_FIELD],
        required: &["gid"],
        reply: GROUP_REPLY,
    };

    fn read(sent: Sent<'_>) -> i64 {
        sent.number("gid")
    }

    async fn answer(state: &AppState, caller: Caller, gid: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        Ok(state.groups.get(&caller, gid).await?.fields())
    }
}

//! `op=editmembers`: adds members to a group the caller runs, or removes them.

use super::common::{self, GID_FIELD, MEMBERS_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::contacts::Phones;

pub struct EditMembers;

/// The fields of `op=editmembers` besides the token.
pub struct EditMembersRequest<'a> {
    pub gid: i64,
    pub members: Option<Phones<'a>>,
    /// Remove them rather than add them.
    pub delete: bool,
}

impl ApiOp for EditMembers {
    type ActsFor = Caller;
    type Request<'a> = EditMembersRequest<'a>;

    const DOC: OpDoc = OpDoc {
        summary: "Add members to a group the caller runs, or with delete=1 remove them (never the owner).",
        request: &[TOKEN_FIELD, GID_FIELD, ("m", "string", "Phones, comma-separated."), ("delete", "integer", "1: remove them.")],
        required: &["gid", "m"],
        reply: &[GID_FIELD, MEMBERS_FIELD],
    };

    fn read(sent: Sent<'_>) -> EditMembersRequest<'_> {
        EditMembersRequest { gid: sent.number("gid"), members: sent.phones("m"), delete: sent.flag("delete") }
    }

    async fn answer(state: &AppState, caller: Caller, request: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        let EditMembersRequest { gid, members, delete } = request;
        Ok(common::members(&state.groups.edit_members(&caller, gid, members, delete).await?))
    }
}

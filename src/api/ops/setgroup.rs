//! `op=setgroup`: creates a group, or changes one the caller runs.

use super::common::{GID_FIELD, GROUP_REPLY, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::groups::SetGroup as SetGroupRequest;

pub struct SetGroup;

impl ApiOp for SetGroup {
    type ActsFor = Caller;
    type Request<'a> = SetGroupRequest<'a>;
    const CARRIES_FILE: bool = true;

    const DOC: OpDoc = OpDoc {
        summary: "Create a group (gid 0; the caller becomes its owner) or change one the caller runs: name, photo (a multipart file part) and with m its members. The platform is asked first; nothing changes here if it refuses.",
        request: &[
            TOKEN_FIELD,
            GID_FIELD,
            ("name", "string", "The group's name, at most 64 characters (percent-encoding is decoded); empty keeps the old one."),
            ("m", "string", "Member phones, comma-separated, without the caller; replaces the members (the owner stays)."),
        ],
        required: &[],
        reply: GROUP_REPLY,
    };

    fn read(sent: Sent<'_>) -> SetGroupRequest<'_> {
        SetGroupRequest { gid: sent.number("gid"), name: sent.text("name"), members: sent.text("m"), photo: sent.file }
    }

    async fn answer(state: &AppState, caller: Caller, group: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        Ok(state.groups.set(&caller, group).await?.fields())
    }
}

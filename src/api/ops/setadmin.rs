//! `op=setadmin`: makes members of a group the caller runs admins, or members again.

use super::common::{self, GID_FIELD, MEMBERS_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::contacts::Phones;

pub struct SetAdmin;

/// The fields of `op=setadmin` besides the token.
pub struct SetAdminRequest<'a> {
    pub gid: i64,
    pub members: Option<Phones<'a>>,
    /// Admins (`admin` above 0), or members again.
    pub admin: bool,
}

impl ApiOp for SetAdmin {
    type ActsFor = Caller;
    type Request<'a> = SetAdminRequest<'a>;

    const DOC: OpDoc = OpDoc {
        summary: "Make members admins (admin=1) or members again (admin=0) in a group the caller runs; the owner's role never changes.",
        request: &[TOKEN_FIELD, GID_FIELD, ("m", "string", "Phones, comma-separated."), ("admin", "integer", "1: admin; 0: member.")],
        required: &["gid", "m"],
        reply: &[GID_FIELD, MEMBERS_FIELD],
    };

    fn read(sent: Sent<'_>) -> SetAdminRequest<'_> {
        SetAdminRequest { gid: sent.number("gid"), members: sent.phones("m"), admin: sent.number("admin") > 0 }
    }

    async fn answer(state: &AppState, caller: Caller, request: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        let SetAdminRequest { gid, members, admin } = request;
        Ok(common::members(&state.groups.set_admin(&caller, gid, members, admin).await?))
    }
}

//! `op=unlink`: unlinks a linked address and ends the sessions that came through it.

use super::common::{self, LINKED_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::authenticators::ProofFields;

pub struct Unlink;

/// The fields of `op=unlink` besides the token: the address to unlink, as `phone`,
/// `email` or `account`.
pub struct UnlinkRequest<'a> {
    pub proof: ProofFields<'a>,
    pub account: Option<&'a str>,
}

impl ApiOp for Unlink {
    type ActsFor = Caller;
    type Request<'a> = UnlinkRequest<'a>;

    const DOC: OpDoc = OpDoc {
        summary: "Unlinks a linked address and ends the sessions that logged in through it; the platform is asked to delete the user it made of it (userdel). The account's own address cannot be unlinked.",
        request: &[
            TOKEN_FIELD,
            ("phone", "string", "The linked phone to unlink."),
            ("email", "string", "The linked e-mail address to unlink."),
            ("account", "string", "The linked provider:subject to unlink."),
        ],
        required: &[],
        reply: &[LINKED_FIELD, ("ended", "integer", "How many sessions that came through the address ended.")],
    };

    fn read(sent: Sent<'_>) -> UnlinkRequest<'_> {
        UnlinkRequest { proof: sent.proof(), account: sent.text("account") }
    }

    async fn answer(state: &AppState, caller: Caller, request: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        let unlinked = state.links.unlink(&caller, &request.proof, request.account).await?;
        let mut fields = common::linked(&unlinked.linked);
        fields.insert("ended".into(), unlinked.ended.into());
        Ok(fields)
    }
}

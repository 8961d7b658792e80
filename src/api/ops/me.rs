//! `op=me`: the caller's own profile and linked addresses.

use super::common::{self, LINKED_FIELD, PROFILE_FIELD, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;

pub struct Me;

impl ApiOp for Me {
    type ActsFor = Caller;
    type Request<'a> = ();

    const DOC: OpDoc = OpDoc {
        summary: "The caller's own profile, and the addresses linked to the account.",
        request: &[TOKEN_FIELD],
        required: &[],
        reply: &[PROFILE_FIELD, LINKED_FIELD],
    };

    fn read(_: Sent<'_>) {}

    async fn answer(state: &AppState, caller: Caller, _: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        let me = state.users.me(&caller).await?;
        let mut fields = common::linked(&me.linked);
        fields.insert("profile".into(), common::own_profile(&me.profile));
        Ok(fields)
    }
}

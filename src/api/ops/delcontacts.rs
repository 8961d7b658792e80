//! `op=delcontacts`: removes phones from the caller's contacts.

use super::common::TOKEN_FIELD;
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::contacts::Phones;

pub struct DelContacts;

impl ApiOp for DelContacts {
    type ActsFor = Caller;
    /// The phones to remove.
    type Request<'a> = Option<Phones<'a>>;
    const CARRIES_ADDRESS_BOOK: bool = true;

    const DOC: OpDoc = OpDoc {
        summary: "Remove phones from the caller's contacts.",
        request: &[TOKEN_FIELD, ("phones", "string", "Phones as a JSON array or a comma-separated list.")],
        required: &["phones"],
        reply: &[("removed", "integer", "How many contacts were removed."), ("invalid", "integer", "Entries that were not phones.")],
    };

    fn read(sent: Sent<'_>) -> Option<Phones<'_>> {
        sent.phones("phones")
    }

    async fn answer(state: &AppState, caller: Caller, phones: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        let removed = state.contacts.remove(&caller, phones).await?;
        Ok(Fields::from_iter([("removed".to_string(), removed.removed.into()), ("invalid".to_string(), removed.invalid.into())]))
    }
}

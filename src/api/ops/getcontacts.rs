//! `op=getcontacts`: records uploaded phones as the caller's contacts and answers those
//! that use the app; without phones, the contacts (and groups) changed since `ts`.

use serde_json::Value;

use super::common::TOKEN_FIELD;
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::contacts::{SyncPage, SyncRequest};

pub struct GetContacts;

impl ApiOp for GetContacts {
    type ActsFor = Caller;
    type Request<'a> = SyncRequest<'a>;
    const CARRIES_ADDRESS_BOOK: bool = true;

    const DOC: OpDoc = OpDoc {
        summary: "Record uploaded phones as the caller's contacts and return those that use the app; without phones, the contacts changed since ts.",
        request: &[
            TOKEN_FIELD,
            ("phones", "string", "Phones as a JSON array or a comma-separated list; at most MAX_CONTACTS_PER_REQUEST."),
            ("ts", "integer", "Without phones: only contacts changed at or after this time (unix seconds). Default 0."),
            ("reset", "boolean", "Forget the caller's previous contacts first."),
            ("cursor", "string", "Continue a reply that had more:true."),
            ("hidden", "integer", "Sent by the 2021 apps; not used."),
        ],
        required: &[],
        reply: &[
            ("contacts", "array", "Entries with phone, name, status, photo, ts and tn; never the caller, never a non-user. Without phones, the caller's groups changed since ts follow (gid, name, photo, tn, ts, members, an empty phone)."),
            ("me", "object", "The caller's own profile: phone or email, name, status, photo, ts, tn."),
            ("more", "boolean", "More entries follow; ask again with cursor."),
            ("cursor", "string", "Where the next page starts (with more:true)."),
            ("invalid", "integer", "Uploaded entries that were not phones."),
            ("ts", "integer", "The value to send as ts next time."),
        ],
    };

    fn read(sent: Sent<'_>) -> SyncRequest<'_> {
        SyncRequest { phones: sent.phones("phones"), ts: sent.text("ts"), cursor: sent.text("cursor"), reset: sent.flag("reset") }
    }

    async fn answer(state: &AppState, caller: Caller, sync: Self::Request<'_>, client_ip: &str) -> Result<Fields, ApiError> {
        Ok(reply(state.contacts.sync(&caller, client_ip, sync).await?))
    }
}

/// The page's users, then the caller's groups, and the caller under `me`; its `ts`
/// takes the place of the reply's.
fn reply(page: SyncPage) -> Fields {
    let mut fields = Fields::new();
    if let Some(cursor) = page.cursor {
        fields.insert("cursor".into(), cursor.into());
    }
    fields.insert("more".into(), page.more.into());
    let users = page.contacts.iter().map(|contact| Value::Object(contact.public_fields()));
    let groups = page.groups.iter().map(|group| Value::Object(group.contact_entry()));
    fields.insert("contacts".into(), Value::Array(users.chain(groups).collect()));
    if let Some(invalid) = page.invalid {
        fields.insert("invalid".into(), invalid.into());
    }
    fields.insert("ts".into(), page.ts.into());
    fields.insert("me".into(), Value::Object(page.me.public_fields()));
    fields
}

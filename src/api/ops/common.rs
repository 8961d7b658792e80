//! What several ops share: fields their OpenAPI descriptions name alike, and parts of
//! their replies.

use serde_json::Value;

use super::{FieldDoc, Fields};
use crate::domain::account::Profile;
use crate::domain::groups::Group;
use crate::service::links::Linked;

/// Session ops also take the token as `Authorization: Bearer <token>` (the `session`
/// security scheme), so no op requires the field.
pub const TOKEN_FIELD: FieldDoc = ("token", "string", "The access token from login (or send Authorization: Bearer).");

pub const LINKED_FIELD: FieldDoc = (
    "linked",
    "array",
    "The addresses linked to the account, oldest first: entries with address, kind (phone, email or account) and linked_at.",
);
pub const PROFILE_FIELD: FieldDoc = ("profile", "object", "phone or email, name, status, photo, ts and uid.");

pub const PROVIDER_FIELD: FieldDoc =
    ("provider", "string", "A sign-in provider named in OIDC_PROVIDERS (e.g. google, apple), with id_token.");
pub const ID_TOKEN_FIELD: FieldDoc = (
    "id_token",
    "string",
    "The provider's ID token, as its sign-in SDK returned it: signature, issuer, audience and authorized party (OIDC_PROVIDERS client_ids), lifetime and e-mail verification are checked.",
);
pub const NONCE_FIELD: FieldDoc = ("nonce", "string", "The nonce the app asked the provider to embed; the token must carry it.");

pub const GID_FIELD: FieldDoc = ("gid", "integer", "The group's id (the platform's).");
pub const MEMBERS_FIELD: FieldDoc = ("members", "string", "n:phone,phone,...: the owner and admins first, n of them, then the members.");
pub const GROUP_REPLY: &[FieldDoc] = &[
    GID_FIELD,
    ("name", "string", "The group's name."),
    ("status", "string", "Always empty."),
    ("photo", "string", "The photo's file name under urls.download; empty without one."),
    ("tn", "string", "Base64 of the photo's 100x100 JPEG thumbnail, when there is a photo."),
    ("ts", "integer", "Unix seconds of the last change."),
    MEMBERS_FIELD,
];

/// The account's linked addresses, under `linked`.
pub fn linked(linked: &[Linked]) -> Fields {
    Fields::from_iter([("linked".to_string(), serde_json::to_value(linked).expect("linked addresses serialize"))])
}

/// The caller's own profile goes under `profile`, with its `uid`: its `ts` would clash
/// with the reply's.
pub fn own_profile(profile: &Profile) -> Value {
    let mut fields = profile.public_fields();
    fields.insert("uid".into(), profile.uid.as_str().into());
    Value::Object(fields)
}

/// A group's members as they are now.
pub fn members(group: &Group) -> Fields {
    Fields::from_iter([("gid".to_string(), group.gid.into()), ("members".to_string(), group.members_field().into())])
}

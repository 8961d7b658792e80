//! Each op's result as the fields of its reply, with the JSON types the apps read them
//! as. [`crate::api::reply`] adds `op`, `result` and `ts` around them; a field here named
//! like one of those (`ts` of a sync) takes its place.

use serde_json::{json, Map, Value};

use crate::config::Dialect;
use crate::domain::account::{thumbnail_field, Profile};
use crate::domain::app_settings::AppReply;
use crate::domain::groups::Group;
use crate::service::contacts::{Removed, SyncPage};
use crate::service::links::{Linked, Unlinked};
use crate::service::login::{LoggedIn, LoginOutcome};
use crate::service::sessions::Devices;
use crate::service::uploads::Uploaded;
use crate::service::users::Me;

/// The fields of a reply.
pub type Fields = Map<String, Value>;

/// A reply of no fields but the ones every reply has.
pub fn none() -> Fields {
    Fields::new()
}

/// The login reply: a start may carry the app's notice; a verify carries the token and
/// what the apps build the user's own profile and their invite and file-transfer
/// settings from.
pub fn login(outcome: LoginOutcome, app: &AppReply) -> Fields {
    let mut fields = Fields::new();
    match outcome {
        LoginOutcome::CodeSent { challenge } => {
            if let Some(challenge) = challenge {
                fields.insert("challenge".into(), challenge.into());
            }
            if let Some(title) = &app.start_title {
                fields.insert("title".into(), title.as_str().into());
            }
            if let Some(message) = &app.start_message {
                fields.insert("message".into(), message.as_str().into());
            }
            if let Some(delay) = app.start_delay {
                fields.insert("delay".into(), delay.into());
            }
        }
        LoginOutcome::LoggedIn(logged_in) => {
            let LoggedIn { address, issued, calling_code, profile } = *logged_in;
            fields.insert("token".into(), issued.token.into());
            fields.insert(address.field().into(), address.as_str().into());
            fields.insert("uid".into(), issued.uid);
            fields.insert("cc".into(), calling_code.map(|code| code.to_string()).unwrap_or_default().into());
            fields.insert("name".into(), profile.name.into());
            fields.insert("status".into(), profile.status.into());
            fields.insert("photo".into(), profile.photo.into());
            if let Some(thumbnail) = &profile.thumbnail {
                fields.insert("tn".into(), thumbnail_field(thumbnail));
            }
            fields.insert("urls".into(), json!({ "upload": app.upload_url, "download": app.download_url }));
            fields.insert("share".into(), json!({ "text": app.share_text, "subject": app.share_subject, "title": app.share_title }));
            fields.insert("invite".into(), app.invite.as_str().into());
            if let Some(linked) = issued.linked {
                fields.insert("linked".into(), linked);
            }
            if let Some(linkto) = issued.linkto {
                fields.insert("linkto".into(), linkto);
            }
        }
    }
    fields
}

/// `logout`: how many sessions ended.
pub fn ended(ended: usize) -> Fields {
    Fields::from_iter([("ended".to_string(), ended.into())])
}

/// `devices`.
pub fn devices(devices: Devices) -> Fields {
    let mut fields = linked(&devices.linked);
    fields.insert("devices".into(), serde_json::to_value(devices.sessions).expect("sessions serialize"));
    fields
}

/// `getcontacts`: the page's users, then the caller's groups, and the caller under `me`.
pub fn sync(page: SyncPage) -> Fields {
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

/// `delcontacts`.
pub fn removed(removed: Removed) -> Fields {
    Fields::from_iter([("removed".to_string(), removed.removed.into()), ("invalid".to_string(), removed.invalid.into())])
}

/// `me`: the caller's profile and linked addresses.
pub fn me(me: Me) -> Fields {
    let mut fields = linked(&me.linked);
    fields.insert("profile".into(), own_profile(&me.profile));
    fields
}

/// `profile`: the profile as changed. The 2021 Android app (the `mesibo` dialect) reads
/// `profile` as a number, and an object fails its whole reply: it gets none.
pub fn changed_profile(profile: &Profile, dialect: Dialect) -> Fields {
    let mut fields = Fields::new();
    if dialect == Dialect::Json {
        fields.insert("profile".into(), own_profile(profile));
    }
    fields
}

/// The caller's own profile goes under `profile`, with its `uid`: its `ts` would clash
/// with the reply's.
fn own_profile(profile: &Profile) -> Value {
    let mut fields = profile.public_fields();
    fields.insert("uid".into(), profile.uid.as_str().into());
    Value::Object(fields)
}

/// `upload` of an attachment or of the caller's own photo: every reply carries `profile`,
/// `gid` and `phone`, as the reference's did; an own photo's adds the profile as the 2021
/// apps rebuild it (`name`, `status`, `photo`, `ts`, `tn` and the caller's address).
pub fn uploaded(uploaded: Uploaded, gid: i64) -> Fields {
    let mut fields = Fields::new();
    fields.insert("gid".into(), gid.max(0).into());
    fields.insert("phone".into(), "".into());
    match uploaded {
        Uploaded::Attachment { url } => {
            fields.insert("profile".into(), 0.into());
            fields.insert("file".into(), url.as_str().into());
            fields.insert("url".into(), url.into());
        }
        Uploaded::OwnPhoto { profile, url } => {
            fields.insert("profile".into(), 1.into());
            if let Some(url) = url {
                fields.insert("file".into(), url.into());
            }
            fields.extend(profile.public_fields());
            fields.insert("gid".into(), 0.into());
        }
    }
    fields
}

/// `setgroup`, `getgroup`: what the apps build the group's profile from.
pub fn group(group: &Group) -> Fields {
    group.fields()
}

/// `profile` with a `gid`: the renamed group, in the `json` dialect only.
pub fn renamed_group(group: &Group, dialect: Dialect) -> Fields {
    let mut fields = Fields::new();
    if dialect == Dialect::Json {
        fields.insert("group".into(), Value::Object(group.fields()));
    }
    fields
}

/// `upload` of a group's photo: what the 2021 apps rebuild a group's profile from; no
/// `file`, as the reference.
pub fn group_photo(group: &Group) -> Fields {
    let mut fields = group.fields();
    fields.insert("profile".into(), 1.into());
    fields.insert("phone".into(), "".into());
    fields
}

/// `editmembers`, `setadmin`: the group's members as they are now.
pub fn members(group: &Group) -> Fields {
    Fields::from_iter([("gid".to_string(), group.gid.into()), ("members".to_string(), group.members_field().into())])
}

/// `delgroup`.
pub fn deleted_group(gid: i64) -> Fields {
    Fields::from_iter([("gid".to_string(), gid.into())])
}

/// `link`: the account's linked addresses.
pub fn linked(linked: &[Linked]) -> Fields {
    Fields::from_iter([("linked".to_string(), serde_json::to_value(linked).expect("linked addresses serialize"))])
}

/// `unlink`: the linked addresses left, and the sessions that logged in through the one
/// unlinked.
pub fn unlinked(unlinked: &Unlinked) -> Fields {
    let mut fields = linked(&unlinked.linked);
    fields.insert("ended".into(), unlinked.ended.into());
    fields
}

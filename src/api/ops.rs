//! Every op, answered from its typed [`Request`] in one match: `login`, and the ops an
//! app calls with the access token `login` gave it (sessions, contact sync, profiles,
//! groups, files and push registrations), which each need a live session.

use serde_json::{Map, Value};

use crate::api::request::{Request, Token};
use crate::api::AppState;
use crate::config::Dialect;
use crate::domain::account::{token_hash, Caller};
use crate::domain::app_settings::AppReply;
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::login::{LoggedIn, LoginOutcome};
use crate::{service::accounts, service::contacts, service::groups, service::links, service::sessions, service::uploads, service::users};

/// Answers a request; `checked` is its session when reading the request checked its
/// token already.
pub async fn handle<'r>(
    state: &AppState,
    request: Request<'r>,
    checked: Option<Caller>,
    client_ip: &str,
) -> Result<Map<String, Value>, ApiError> {
    // The session a request acts for, looked up unless reading the request did.
    let session = |token: Token<'r>| async move {
        match checked {
            Some(caller) => Ok(caller),
            None => caller_of(state, token).await,
        }
    };
    match request {
        Request::Login(login) => {
            let app = state.apps.for_app(login.appid.map(str::trim).unwrap_or_default());
            let outcome = state.login.login(login, client_ip).await?;
            Ok(login_fields(outcome, &app))
        }
        // Always OK, as the reference answers: an app logs out locally only on OK, and a
        // missing or unknown token has no session left to end.
        Request::Logout { token: None, .. } => Ok(Map::from_iter([("ended".to_string(), Value::from(0))])),
        Request::Logout { token: Some(token), all } => sessions::logout(&state.db, token_hash(token), all).await,
        Request::Devices { token } => sessions::devices(&state.db, &session(token).await?).await,
        Request::GetContacts { token, sync } => {
            let caller = session(token).await?;
            let first_page_of_changes = sync.phones.is_none_or(|p| p.trim().is_empty()) && sync.cursor.is_none_or(str::is_empty);
            let since = sync.ts.and_then(|ts| ts.trim().parse().ok()).unwrap_or(0);
            let mut reply = contacts::getcontacts(&state.db, &state.contact_limits, &caller, client_ip, sync).await?;
            // The caller's groups changed since `ts` follow the users, as the reference
            // sent them, with a sync of changes (not with an upload).
            let own = state.db.profile_of(caller.user_id).await?;
            if first_page_of_changes {
                let groups = groups::groups_for_sync(&state.db, &own.address, since).await?;
                if let Some(Value::Array(entries)) = reply.get_mut("contacts") {
                    entries.extend(groups);
                }
            }
            // The seeds: a sync also answers the caller's own profile and status.
            reply.insert("me".into(), Value::Object(own.public_fields()));
            Ok(reply)
        }
        Request::DelContacts { token, phones } => {
            let caller = session(token).await?;
            contacts::delcontacts(&state.db, &caller, phones, state.contact_limits.max_per_request).await
        }
        Request::GroupName { token, gid, name } => {
            let group = state.groups.rename(&session(token).await?, gid, name).await?;
            let mut reply = Map::new();
            if state.http.dialect == Dialect::Json {
                reply.insert("group".into(), Value::Object(group.fields()));
            }
            Ok(reply)
        }
        Request::Profile { token, fields, photo } => {
            // The 2021 apps may send the new photo as a file part of the same request.
            let mut reply = users::change_profile(&state.db, &session(token).await?, fields, &state.files, photo).await?;
            // The 2021 Android app reads `profile` as a number: an object fails its whole reply.
            if state.http.dialect == Dialect::Mesibo {
                reply.remove("profile");
            }
            Ok(reply)
        }
        Request::Me { token } => users::me(&state.db, &session(token).await?).await,
        Request::GroupPhoto { token, gid, delete, file } => {
            let group = state.groups.set_photo(&state.files, &session(token).await?, gid, delete, file).await?;
            // What the 2021 apps rebuild a group's profile from; no `file`, as the reference.
            let mut reply = group.fields();
            reply.insert("profile".into(), 1.into());
            reply.insert("phone".into(), "".into());
            Ok(reply)
        }
        Request::Upload { token, upload } => uploads::upload(&state.db, &state.files, &session(token).await?, upload).await,
        Request::SetGroup { token, group } => state.groups.set(&state.files, &session(token).await?, group).await,
        Request::GetGroup { token, gid } => state.groups.get(&session(token).await?, gid).await,
        Request::EditMembers { token, gid, members, delete } => {
            state.groups.edit_members(&session(token).await?, gid, members, delete).await
        }
        Request::SetAdmin { token, gid, members, admin } => state.groups.set_admin(&session(token).await?, gid, members, admin).await,
        Request::DelGroup { token, gid } => state.groups.delete(&session(token).await?, gid).await,
        Request::SetNotify { token, fields } => sessions::set_notify(&state.db, &session(token).await?, fields).await,
        Request::DeleteAccount { token, delete } => {
            let caller = session(token).await?;
            accounts::delete_own_account(&state.login, &state.db, &state.files, &caller, delete, client_ip).await
        }
        Request::Link { token, appid, proof } => {
            links::link(&state.login, &state.db, &session(token).await?, appid, proof, client_ip).await
        }
        Request::Unlink { token, proof, account } => links::unlink(&state.db, &session(token).await?, &proof, account).await,
    }
}

/// The login reply's fields, with the JSON types the apps read them as: a start may
/// carry the app's notice; a verify carries the token and what the apps build the
/// user's own profile and their invite and file-transfer settings from.
fn login_fields(outcome: LoginOutcome, app: &AppReply) -> Map<String, Value> {
    let mut fields = Map::new();
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
                fields.insert("tn".into(), crate::domain::account::thumbnail_field(thumbnail));
            }
            fields.insert("urls".into(), serde_json::json!({ "upload": app.upload_url, "download": app.download_url }));
            fields.insert(
                "share".into(),
                serde_json::json!({ "text": app.share_text, "subject": app.share_subject, "title": app.share_title }),
            );
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

/// The session of an access token; `AUTHFAIL` without one.
pub async fn caller_of(state: &AppState, token: Token<'_>) -> Result<Caller, ApiError> {
    let token_sha256 = token_hash(token.ok_or_else(|| authfail("token is required"))?);
    state.db.authenticate(token_sha256, state.db.clock().now_ms()).await?.ok_or_else(|| authfail("unknown or expired token; log in again"))
}

pub fn authfail(message: &str) -> ApiError {
    ApiError::new(ErrorCode::AuthFail, message)
}

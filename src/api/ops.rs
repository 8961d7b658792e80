//! Every op, answered from its typed [`Request`] in one match: `login`, and the ops an
//! app calls with the access token `login` gave it (sessions, contact sync, profiles,
//! groups, files and push registrations), which each need a live session.

use crate::api::request::{Request, Token};
use crate::api::results::{self, Fields};
use crate::api::AppState;
use crate::domain::account::{token_hash, Caller};
use crate::domain::error::{ApiError, ErrorCode};

/// Answers a request; `checked` is its session when reading the request checked its
/// token already.
pub async fn handle<'r>(state: &AppState, request: Request<'r>, checked: Option<Caller>, client_ip: &str) -> Result<Fields, ApiError> {
    // The session a request acts for, looked up unless reading the request did.
    let session = |token: Token<'r>| async move {
        match checked {
            Some(caller) => Ok(caller),
            None => caller_of(state, token).await,
        }
    };
    let dialect = state.http.dialect;
    match request {
        Request::Login(login) => {
            let app = state.apps.for_app(login.appid.map(str::trim).unwrap_or_default());
            Ok(results::login(state.login.login(login, client_ip).await?, &app))
        }
        // Always OK, as the reference answers: an app logs out locally only on OK, and a
        // missing or unknown token has no session left to end.
        Request::Logout { token: None, .. } => Ok(results::ended(0)),
        Request::Logout { token: Some(token), all } => Ok(results::ended(state.sessions.logout(token_hash(token), all).await?)),
        Request::Devices { token } => Ok(results::devices(state.sessions.devices(&session(token).await?).await?)),
        Request::GetContacts { token, sync } => {
            let caller = session(token).await?;
            Ok(results::sync(state.contacts.sync(&caller, client_ip, sync).await?))
        }
        Request::DelContacts { token, phones } => {
            let caller = session(token).await?;
            Ok(results::removed(state.contacts.remove(&caller, phones).await?))
        }
        Request::GroupName { token, gid, name } => {
            Ok(results::renamed_group(&state.groups.rename(&session(token).await?, gid, name).await?, dialect))
        }
        Request::Profile { token, fields, photo } => {
            // The 2021 apps may send the new photo as a file part of the same request.
            let profile = state.users.change_profile(&session(token).await?, fields, photo).await?;
            Ok(results::changed_profile(&profile, dialect))
        }
        Request::Me { token } => Ok(results::me(state.users.me(&session(token).await?).await?)),
        Request::GroupPhoto { token, gid, delete, file } => {
            Ok(results::group_photo(&state.groups.set_photo(&session(token).await?, gid, delete, file).await?))
        }
        Request::Upload { token, upload } => {
            let gid = upload.gid;
            Ok(results::uploaded(state.files.upload(&session(token).await?, upload).await?, gid))
        }
        Request::SetGroup { token, group } => Ok(results::group(&state.groups.set(&session(token).await?, group).await?)),
        Request::GetGroup { token, gid } => Ok(results::group(&state.groups.get(&session(token).await?, gid).await?)),
        Request::EditMembers { token, gid, members, delete } => {
            Ok(results::members(&state.groups.edit_members(&session(token).await?, gid, members, delete).await?))
        }
        Request::SetAdmin { token, gid, members, admin } => {
            Ok(results::members(&state.groups.set_admin(&session(token).await?, gid, members, admin).await?))
        }
        Request::DelGroup { token, gid } => {
            state.groups.delete(&session(token).await?, gid).await?;
            Ok(results::deleted_group(gid))
        }
        Request::SetNotify { token, fields } => {
            state.sessions.set_notify(&session(token).await?, fields).await?;
            Ok(results::none())
        }
        Request::DeleteAccount { token, delete } => {
            let caller = session(token).await?;
            state.accounts.delete_own(&caller, delete, client_ip).await?;
            Ok(results::none())
        }
        Request::Link { token, appid, proof } => {
            Ok(results::linked(&state.links.link(&session(token).await?, appid, proof, client_ip).await?))
        }
        Request::Unlink { token, proof, account } => {
            Ok(results::unlinked(&state.links.unlink(&session(token).await?, &proof, account).await?))
        }
    }
}

/// The session of an access token; `AUTHFAIL` without one.
pub async fn caller_of(state: &AppState, token: Token<'_>) -> Result<Caller, ApiError> {
    let token_sha256 = token_hash(token.ok_or_else(|| authfail("token is required"))?);
    state.db.authenticate(token_sha256, state.db.clock().now_ms()).await?.ok_or_else(|| authfail("unknown or expired token; log in again"))
}

pub fn authfail(message: &str) -> ApiError {
    ApiError::new(ErrorCode::AuthFail, message)
}

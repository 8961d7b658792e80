//! The ops an app calls with the access token `login` gave it: sessions, contact sync,
//! profiles, files and push registrations. Each needs a live session.

use actix_web::http::header;
use actix_web::HttpRequest;
use serde_json::{Map, Value};

use crate::api::op::Op;
use crate::api::op::Params;
use crate::config::Dialect;
use crate::domain::account::{token_hash, Caller};
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::authenticators::ProofFields;
use crate::service::groups::{self, SetGroup};
use crate::service::uploads::{self, UploadRequest, UploadedFile};
use crate::{api::AppState, service::accounts, service::contacts, service::links, service::sessions, service::users};

/// Answers a session op; `caller` is the session when reading the request checked its
/// token already.
pub async fn handle(
    state: &AppState,
    op: Op,
    params: &Params,
    (file, caller): (Option<UploadedFile>, Option<Caller>),
    request: &HttpRequest,
    client_ip: &str,
) -> Result<Map<String, Value>, ApiError> {
    let token = access_token(params, request);
    if op == Op::Logout {
        // Always OK, as the reference answers: an app logs out locally only on OK, and a
        // missing or unknown token has no session left to end.
        return match token {
            Some(token) => sessions::logout(&state.db, token_hash(&token), flag(params, "all")).await,
            None => Ok(Map::from_iter([("ended".to_string(), Value::from(0))])),
        };
    }
    let caller = match caller {
        Some(caller) => caller,
        None => caller_of(state, token.as_deref()).await?,
    };
    let field = |name: &str| params.get(name).map(String::as_str);
    match op {
        Op::Devices => sessions::devices(&state.db, &caller).await,
        Op::GetContacts => {
            let request =
                contacts::SyncRequest { phones: field("phones"), ts: field("ts"), cursor: field("cursor"), reset: flag(params, "reset") };
            let first_page_of_changes = request.phones.is_none_or(|p| p.trim().is_empty()) && request.cursor.is_none_or(str::is_empty);
            let mut reply = contacts::getcontacts(&state.db, &state.contact_limits, &caller, client_ip, request).await?;
            // The caller's groups changed since `ts` follow the users, as the reference
            // sent them, with a sync of changes (not with an upload).
            let own = state.db.profile_of(caller.user_id).await?;
            if first_page_of_changes {
                let groups = groups::groups_for_sync(&state.db, &own.address, number(params, "ts")).await?;
                if let Some(Value::Array(entries)) = reply.get_mut("contacts") {
                    entries.extend(groups);
                }
            }
            // The seeds: a sync also answers the caller's own profile and status.
            reply.insert("me".into(), Value::Object(own.public_fields()));
            Ok(reply)
        }
        Op::DelContacts => contacts::delcontacts(&state.db, &caller, field("phones"), state.contact_limits.max_per_request).await,
        Op::Profile if number(params, "gid") > 0 => {
            let group = state.groups.rename(&caller, number(params, "gid"), field("name")).await?;
            let mut reply = Map::new();
            if state.http.dialect == Dialect::Json {
                reply.insert("group".into(), Value::Object(group.fields()));
            }
            Ok(reply)
        }
        Op::Profile => {
            let fields = users::ProfileFields { name: field("name"), status: field("status"), photo: field("photo") };
            // The 2021 apps may send the new photo as a file part of the same request.
            let mut reply = users::change_profile(&state.db, &caller, fields, &state.files, file).await?;
            // The 2021 Android app reads `profile` as a number: an object fails its whole reply.
            if state.http.dialect == Dialect::Mesibo {
                reply.remove("profile");
            }
            Ok(reply)
        }
        Op::Me => users::me(&state.db, &caller).await,
        Op::Upload if number(params, "profile") > 0 && number(params, "gid") > 0 => {
            let gid = number(params, "gid");
            let group = state.groups.set_photo(&state.files, &caller, gid, flag(params, "delete"), file).await?;
            // What the 2021 apps rebuild a group's profile from; no `file`, as the reference.
            let mut reply = group.fields();
            reply.insert("profile".into(), 1.into());
            reply.insert("phone".into(), "".into());
            Ok(reply)
        }
        Op::Upload => {
            let request =
                UploadRequest { profile: number(params, "profile") > 0, gid: number(params, "gid"), delete: flag(params, "delete"), file };
            uploads::upload(&state.db, &state.files, &caller, request).await
        }
        Op::SetGroup => {
            let request = SetGroup { gid: number(params, "gid"), name: field("name"), members: field("m"), photo: file };
            state.groups.set(&state.files, &caller, request).await
        }
        Op::GetGroup => state.groups.get(&caller, number(params, "gid")).await,
        Op::EditMembers => state.groups.edit_members(&caller, number(params, "gid"), field("m"), flag(params, "delete")).await,
        Op::SetAdmin => state.groups.set_admin(&caller, number(params, "gid"), field("m"), number(params, "admin") > 0).await,
        Op::DelGroup => state.groups.delete(&caller, number(params, "gid")).await,
        Op::SetNotify => {
            let fields = sessions::SetNotify { notify_token: field("notifytoken"), fcm_id: field("fcmid"), device_type: field("dt") };
            sessions::set_notify(&state.db, &caller, fields).await
        }
        Op::DeleteAccount => {
            let request = accounts::DeleteRequest { appid: field("appid"), proof: proof_fields(params) };
            accounts::delete_own_account(&state.login, &state.db, &state.files, &caller, request, client_ip).await
        }
        Op::Link => links::link(&state.login, &state.db, &caller, field("appid"), proof_fields(params), client_ip).await,
        Op::Unlink => links::unlink(&state.db, &caller, &proof_fields(params), field("account")).await,
        Op::Login | Op::Logout => Err(ApiError::new(ErrorCode::BadOp, "this op needs no session")),
    }
}

/// The fields that may prove an address: a code (`code` is the name older apps send),
/// or an ID token.
pub fn proof_fields(params: &Params) -> ProofFields<'_> {
    let field = |name: &str| params.get(name).map(String::as_str);
    ProofFields {
        phone: field("phone"),
        email: field("email"),
        code: field("otp").or_else(|| field("code")),
        challenge: field("challenge"),
        provider: field("provider"),
        id_token: field("id_token"),
        nonce: field("nonce"),
    }
}

/// The session of an access token; `AUTHFAIL` without one.
pub async fn caller_of(state: &AppState, token: Option<&str>) -> Result<Caller, ApiError> {
    let token_sha256 = token_hash(token.ok_or_else(|| authfail("token is required"))?);
    state.db.authenticate(token_sha256, state.db.clock().now_ms()).await?.ok_or_else(|| authfail("unknown or expired token; log in again"))
}

/// The token from the `token` field (`auth`, as the iOS app names it with attachments),
/// or else from `Authorization: Bearer`.
pub fn access_token(params: &Params, request: &HttpRequest) -> Option<String> {
    let field = |name: &str| params.get(name).map(|t| t.trim()).filter(|t| !t.is_empty());
    let from_field = field("token").or_else(|| field("auth"));
    let from_header = || {
        let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    };
    from_field.or_else(from_header).map(String::from)
}

pub fn authfail(message: &str) -> ApiError {
    ApiError::new(ErrorCode::AuthFail, message)
}

/// An integer request field; missing or not a number reads as 0, as the reference read it.
pub fn number(params: &Params, name: &str) -> i64 {
    params.get(name).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// A boolean request field: `1`, `true` or `yes`.
pub fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

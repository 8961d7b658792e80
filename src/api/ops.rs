//! The ops an app calls with the access token `login` gave it: sessions,
//! contact sync and profiles. Each needs a live session.

use actix_web::http::header;
use actix_web::HttpRequest;
use serde_json::{Map, Value};

use crate::api::http::Params;
use crate::api::op::Op;
use crate::domain::account::token_hash;
use crate::domain::error::{ApiError, ErrorCode};
use crate::{api::AppState, service::contacts, service::sessions, service::users};

pub async fn handle(
    state: &AppState,
    op: Op,
    params: &Params,
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
    let token_sha256 = token_hash(&token.ok_or_else(|| authfail("token is required"))?);
    let caller = state
        .db
        .authenticate(token_sha256, state.db.clock().now_ms())
        .await?
        .ok_or_else(|| authfail("unknown or expired token; log in again"))?;
    let field = |name: &str| params.get(name).map(String::as_str);
    match op {
        Op::Devices => sessions::devices(&state.db, &caller).await,
        Op::GetContacts => {
            let request =
                contacts::SyncRequest { phones: field("phones"), ts: field("ts"), cursor: field("cursor"), reset: flag(params, "reset") };
            contacts::getcontacts(&state.db, &state.contact_limits, &caller, client_ip, request).await
        }
        Op::DelContacts => contacts::delcontacts(&state.db, &caller, field("phones"), state.contact_limits.max_per_request).await,
        Op::Profile => {
            let fields = users::ProfileFields { name: field("name"), status: field("status"), photo: field("photo") };
            users::change_profile(&state.db, &caller, fields).await
        }
        Op::Me => users::me(&state.db, &caller).await,
        Op::Login | Op::Logout => Err(ApiError::new(ErrorCode::BadOp, "this op needs no session")),
    }
}

/// The token from the `token` field, or else from `Authorization: Bearer`.
fn access_token(params: &Params, request: &HttpRequest) -> Option<String> {
    let from_field = params.get("token").map(|t| t.trim()).filter(|t| !t.is_empty());
    let from_header = || {
        let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    };
    from_field.or_else(from_header).map(String::from)
}

fn authfail(message: &str) -> ApiError {
    ApiError::new(ErrorCode::AuthFail, message)
}

/// A boolean request field: `1`, `true` or `yes`.
pub fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

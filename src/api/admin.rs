//! The operator API: a listener of its own (`ADMIN_BIND`), never the public port, where
//! a bearer token (`ADMIN_TOKEN`) finds users, revokes their sessions and deletes them.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::{request_log, AppState};
use crate::config::Secret;
use crate::domain::address::Address;
use crate::domain::error::ApiError;
use crate::service::operators;
use crate::service::operators::Operator;
use crate::store::audit;
use crate::store::operators::UserKey;

/// The SHA-256 of the operator token: compared in constant time, whatever the lengths.
#[derive(Clone)]
struct OperatorToken([u8; 32]);

/// The operator API as an actix `App`, for the `ADMIN_BIND` listener only.
pub fn app(
    state: web::Data<AppState>,
    token: &Secret,
) -> App<
    impl ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error, InitError = ()>,
> {
    App::new()
        .app_data(state)
        .app_data(web::Data::new(OperatorToken(Sha256::digest(token.expose().as_bytes()).into())))
        // A path or query that does not parse gets the API's own JSON error, not actix's text.
        .app_data(web::PathConfig::default().error_handler(|e, _| bad_param(e)))
        .app_data(web::QueryConfig::default().error_handler(|e, _| bad_param(e)))
        .wrap(from_fn(require_token))
        .wrap(from_fn(request_log::log_requests))
        // One resource per path: another method answers 405 with Allow, not 404.
        .service(web::resource("/admin/users").route(web::get().to(find_user)))
        .service(web::resource("/admin/events").route(web::get().to(events)))
        .service(web::resource("/admin/events/operator").route(web::get().to(operator_events)))
        .service(web::resource("/admin/users/{id}").route(web::get().to(user_by_id)).route(web::delete().to(delete_user)))
        .service(web::resource("/admin/users/{id}/sessions").route(web::delete().to(revoke_all)))
        .service(web::resource("/admin/users/{id}/sessions/{session}").route(web::delete().to(revoke_one)))
}

fn bad_param(e: impl std::fmt::Display) -> actix_web::Error {
    let reply = error(StatusCode::BAD_REQUEST, "BADPARAM", &e.to_string());
    actix_web::error::InternalError::from_response(e.to_string(), reply).into()
}

/// Answers 401 unless the request carries `Authorization: Bearer <ADMIN_TOKEN>`. Each
/// failure goes in the operator trail; a client IP out of failures (ADMIN_FAILURES_PER_IP_PER_HOUR)
/// is answered 429 for any other token, unrecorded. The request goes on with the
/// [`operators::Operator`] the trail names.
async fn require_token(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let Some(state) = request.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(request.into_response(error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "the operator API has no state")));
    };
    let client_ip = state.proxies.client_ip(request.request());
    let expected = request.app_data::<web::Data<OperatorToken>>().map(|token| token.0);
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| <[u8; 32]>::from(Sha256::digest(token.trim().as_bytes())));
    let failure = match (expected, given) {
        (Some(expected), Some(given)) if bool::from(expected.ct_eq(&given)) => None,
        (_, Some(_)) => Some("wrong token"),
        (_, None) => Some("no token"),
    };
    let Some(failure) = failure else {
        // The right token gets in even from a client IP out of failures: a guesser behind
        // the operators' own address (a bastion, a NAT) must not lock them out. That answer
        // tells a locked-out IP that a guess was right, so the count is not what stops
        // guessing: the token is (32+ random characters, 2^128 guesses and more). The count
        // keeps a guesser from filling the trail and the log, and every other guess from a
        // locked-out IP gets the same 429, whatever it presented.
        request.extensions_mut().insert(operators::Operator::from_client_ip(client_ip));
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    if let Some(wait) = state.operator_failures.refusal(&client_ip) {
        let mut reply =
            api_error(ApiError::rate_limited(wait, format!("too many failed operator logins from {client_ip}; retry in {wait} seconds")));
        reply.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        return Ok(request.into_response(reply));
    }
    state.operator_failures.record_failure(&client_ip);
    tracing::warn!(client_ip = %client_ip, "operator API login failed: {failure}");
    let detail = format!("{client_ip}: {failure}");
    if let Err(e) = state.db.audit(audit::OPERATOR_TRAIL, audit::OPERATOR_AUTH_FAILED, detail).await {
        tracing::error!("recording a failed operator login failed: {e}");
    }
    let mut reply = error(StatusCode::UNAUTHORIZED, "AUTHFAIL", "send Authorization: Bearer with the ADMIN_TOKEN");
    reply.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    Ok(request.into_response(reply))
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "code": code, "error": message }))
}

fn api_error(e: ApiError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.code.as_str(), &e.message)
}

fn no_such_user() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "NOUSER", "no such user")
}

fn found(user: Result<Option<operators::UserDetails>, ApiError>) -> HttpResponse {
    match user {
        Ok(Some(details)) => HttpResponse::Ok().json(user_fields(details)),
        Ok(None) => no_such_user(),
        Err(e) => api_error(e),
    }
}

/// A looked-up user as the operator API answers it: the address under its kind
/// (`phone` or `email`), no token, no photo.
fn user_fields(details: operators::UserDetails) -> Value {
    let user = details.user;
    let kind = Address::from_stored(&user.address).field();
    json!({
        "user": {
            "id": user.id,
            kind: user.address,
            "uid": user.uid,
            "name": user.name,
            "created": user.created_at,
            "last_login": user.last_login,
        },
        "sessions": details.sessions,
        "linked": details.linked,
    })
}

#[derive(Deserialize)]
struct Lookup {
    phone: Option<String>,
    email: Option<String>,
    uid: Option<String>,
}

/// `GET /admin/users?phone=…` (or `email=…`, `uid=…`).
async fn find_user(state: web::Data<AppState>, operator: web::ReqData<Operator>, lookup: web::Query<Lookup>) -> HttpResponse {
    match operators::user_key(lookup.phone.as_deref(), lookup.email.as_deref(), lookup.uid.as_deref()) {
        Ok(key) => found(state.operators.user(&operator, key).await),
        Err(e) => api_error(e),
    }
}

/// `GET /admin/events?phone=…` (or `email=…`): the address's security events.
async fn events(state: web::Data<AppState>, operator: web::ReqData<Operator>, lookup: web::Query<Lookup>) -> HttpResponse {
    let events = match operators::user_key(lookup.phone.as_deref(), lookup.email.as_deref(), lookup.uid.as_deref()) {
        Ok(key) => state.operators.events(&operator, key).await,
        Err(e) => Err(e),
    };
    match events {
        Ok(events) => HttpResponse::Ok().json(json!({ "events": events })),
        Err(e) => api_error(e),
    }
}

/// `GET /admin/events/operator`: the operator API's own events (failed logins, lookups,
/// revokes), newest first.
async fn operator_events(state: web::Data<AppState>) -> HttpResponse {
    match state.operators.operator_events().await {
        Ok(events) => HttpResponse::Ok().json(json!({ "events": events })),
        Err(e) => api_error(e),
    }
}

/// `GET /admin/users/{id}`.
async fn user_by_id(state: web::Data<AppState>, operator: web::ReqData<Operator>, id: web::Path<i64>) -> HttpResponse {
    found(state.operators.user(&operator, UserKey::Id(id.into_inner())).await)
}

/// `DELETE /admin/users/{id}`: the account and everything kept for it, as the user's own
/// `deleteaccount` does, without a code.
async fn delete_user(state: web::Data<AppState>, id: web::Path<i64>) -> HttpResponse {
    match state.accounts.delete(id.into_inner(), "operator").await {
        Ok(true) => HttpResponse::Ok().json(json!({ "deleted": true })),
        Ok(false) => no_such_user(),
        Err(e) => api_error(e),
    }
}

/// `DELETE /admin/users/{id}/sessions`: every session of the user.
async fn revoke_all(state: web::Data<AppState>, operator: web::ReqData<Operator>, id: web::Path<i64>) -> HttpResponse {
    revoked(state.operators.revoke(&operator, id.into_inner(), None).await)
}

/// `DELETE /admin/users/{id}/sessions/{session}`: one session, by the id `GET` shows.
async fn revoke_one(state: web::Data<AppState>, operator: web::ReqData<Operator>, path: web::Path<(i64, String)>) -> HttpResponse {
    let (id, session) = path.into_inner();
    revoked(state.operators.revoke(&operator, id, Some(session)).await)
}

fn revoked(outcome: Result<Option<usize>, ApiError>) -> HttpResponse {
    match outcome {
        Ok(Some(ended)) => HttpResponse::Ok().json(json!({ "ended": ended })),
        Ok(None) => no_such_user(),
        Err(e) => api_error(e),
    }
}

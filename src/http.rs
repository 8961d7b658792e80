//! The HTTP surface: `/api` (JSON, form or query string in; JSON out) and the
//! operational routes (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use std::collections::HashMap;

use crate::error::ApiError;
use crate::login::{LoginOutcome, LoginRequest};
use crate::ops;
use crate::server::HttpSettings;
use crate::storage;
use crate::AppState;
use crate::{health, metrics, openapi, request_log, server};

/// Every op the dispatcher in [`api`] knows; the OpenAPI document must describe each.
pub const OPS: &[&str] = &["login", "logout", "devices", "getcontacts", "delcontacts", "profile", "me"];

/// Registers the routes and the shared state on an actix `App`.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            // The timeout wraps the resource, not the App: it must not hold the request while routing.
            .service(web::resource("/api").wrap(from_fn(server::time_limit)).route(web::post().to(api)).route(web::get().to(api)))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::serve))
            .route("/openapi.json", web::get().to(openapi::serve));
    }
}

pub type Params = HashMap<String, String>;

async fn api(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let params = match read_params(&request, payload, &state.http).await {
        Ok(params) => params,
        Err(e) => {
            request_log::note_api_call(&request, "", OPS, Some(e.code));
            return reply("", Err(e));
        }
    };
    let op = params.get("op").map(|op| op.trim()).unwrap_or("");
    let client_ip = state.proxies.client_ip(&request);
    let result = match op {
        // An op missing from OPS is refused, so a new op cannot skip the OpenAPI document and metrics.
        _ if !op.is_empty() && !OPS.contains(&op) => Err(ApiError::new("BADOP", "unknown op")),
        "login" => state.login.login(login_request(&params), &client_ip).await.map(login_fields),
        "" => Err(ApiError::new("BADOP", "op is required")),
        _ if ops::is_session_op(op) => ops::handle(&state, op, &params, &request).await,
        _ => Err(ApiError::new("BADOP", "unknown op")),
    };
    request_log::note_api_call(&request, op, OPS, result.as_ref().err().map(|e| e.code));
    let echoed: String = op.chars().take(32).collect();
    reply(&echoed, result)
}

fn login_request(params: &Params) -> LoginRequest {
    let field = |name: &str| params.get(name).cloned();
    LoginRequest {
        appid: field("appid"),
        phone: field("phone"),
        email: field("email"),
        name: field("name"),
        // `code` is the field name older apps send.
        otp: field("otp").or_else(|| field("code")),
        device: field("device"),
        captcha_token: field("captcha_token"),
    }
}

fn login_fields(outcome: LoginOutcome) -> Map<String, Value> {
    let mut fields = Map::new();
    if let LoginOutcome::LoggedIn { address, issued } = outcome {
        fields.insert("token".into(), issued.token.into());
        fields.insert(address.field().into(), address.as_str().into());
        fields.insert("uid".into(), issued.uid);
        if let Some(linked) = issued.linked {
            fields.insert("linked".into(), linked);
        }
        if let Some(linkto) = issued.linkto {
            fields.insert("linkto".into(), linkto);
        }
    }
    fields
}

/// Every reply carries `op`, `result` and `ts`; failures add `error`, `errmsg` and maybe `retry_after`.
pub(crate) fn reply(op: &str, result: Result<Map<String, Value>, ApiError>) -> HttpResponse {
    let mut body = Map::new();
    body.insert("op".into(), op.into());
    body.insert("ts".into(), storage::now().into());
    let mut response = match result {
        Ok(fields) => {
            body.insert("result".into(), true.into());
            body.extend(fields);
            HttpResponse::Ok()
        }
        Err(error) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
            body.insert("result".into(), false.into());
            body.insert("error".into(), error.code.into());
            body.insert("errmsg".into(), error.message.into());
            let mut response = HttpResponse::build(status);
            if let Some(wait) = error.retry_after {
                body.insert("retry_after".into(), wait.into());
                response.insert_header((header::RETRY_AFTER, wait.to_string()));
            }
            response
        }
    };
    // Replies may carry access tokens: no cache may keep them.
    response.insert_header((header::CACHE_CONTROL, "no-store")).content_type(ContentType::json()).body(Value::Object(body).to_string())
}

/// Merges query-string parameters with the body's (JSON object or form); body fields win.
/// Contact ops carry whole address books and may send up to `max_contacts_body_bytes`;
/// every other op is held to `max_body_bytes`, checked once the op is known.
async fn read_params(request: &HttpRequest, payload: web::Payload, limits: &HttpSettings) -> Result<Params, ApiError> {
    let bad = |message: &str| ApiError::new("BADREQUEST", message);
    let mut params: Params = serde_urlencoded::from_str::<Vec<(String, String)>>(request.query_string())
        .map_err(|_| bad("the query string is not valid URL encoding"))?
        .into_iter()
        .collect();
    let too_large = |limit: usize| bad(&format!("the request body is larger than {limit} bytes"));
    let read_limit = limits.max_body_bytes.max(limits.max_contacts_body_bytes);
    let body = payload
        .to_bytes_limited(read_limit)
        .await
        .map_err(|_| too_large(read_limit))?
        .map_err(|_| bad("the request body could not be read"))?;
    let text = std::str::from_utf8(&body).map_err(|_| bad("the request body is not UTF-8"))?.trim();
    if text.is_empty() {
        return Ok(params);
    }
    let is_json = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.contains("json"));
    // Also take JSON sent with a form content type, as `curl -d '{...}'` does.
    if is_json || text.starts_with('{') {
        let object: Map<String, Value> = serde_json::from_str(text).map_err(|_| bad("the request body is not a JSON object"))?;
        for (key, value) in object {
            let value = match value {
                Value::Null => continue,
                Value::String(s) => s,
                other => other.to_string(),
            };
            params.insert(key, value);
        }
    } else {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_str(text).map_err(|_| bad("the request body is not valid form encoding"))?;
        params.extend(form);
    }
    let op = params.get("op").map(|op| op.trim()).unwrap_or("");
    let limit = if ops::is_contacts_op(op) { limits.max_contacts_body_bytes } else { limits.max_body_bytes };
    if body.len() > limit {
        return Err(too_large(limit));
    }
    Ok(params)
}

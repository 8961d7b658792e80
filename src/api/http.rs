//! The HTTP surface: the API (JSON, relaxed JSON, form, multipart or query string in;
//! JSON out, in the dialect of `API_DIALECT`) at every path the apps post to, uploaded
//! files (`/files/...`), and the operational routes (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`).

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use std::collections::HashMap;

use crate::api::op::Op;
use crate::api::ops;
use crate::api::server::HttpSettings;
use crate::api::AppState;
use crate::config::Dialect;
use crate::domain::app_settings::AppReply;
use crate::domain::error::{ApiError, ErrorCode};
use crate::service::login::{LoggedIn, LoginOutcome, LoginRequest};
use crate::service::uploads::UploadedFile;
use crate::store;
use crate::{api::health, api::openapi, api::request_log, api::server, domain::metrics};

/// Where the API answers: the apps post to their configured base URL itself (current
/// apps), to `api.php` under it, or to `/messenger/api.php` (the 2021 apps).
pub const API_PATHS: &[&str] = &["/", "/api", "/api.php", "/messenger/api.php"];

/// Registers the routes and the shared state on an actix `App`.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state);
        for path in API_PATHS {
            // The timeout wraps the resource, not the App: it must not hold the request while routing.
            cfg.service(web::resource(*path).wrap(from_fn(server::time_limit)).route(web::post().to(api)).route(web::get().to(api)));
        }
        cfg.route("/files/{name}", web::get().to(serve_file))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::serve))
            .route("/openapi.json", web::get().to(openapi::serve));
    }
}

pub type Params = HashMap<String, String>;

async fn api(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let dialect = state.http.dialect;
    let (params, file) = match read_params(&request, payload, &state.http).await {
        Ok(read) => read,
        Err(e) => {
            request_log::note_api_call(&request, Op::label(""), Some(e.code.as_str()));
            return reply(dialect, "", Err(e));
        }
    };
    // The reference lower-cases the op before dispatch.
    let op = params.get("op").map(|op| op.trim().to_ascii_lowercase()).unwrap_or_default();
    let op = op.as_str();
    let client_ip = state.proxies.client_ip(&request);
    let result = match Op::parse(op) {
        Some(Op::Login) => {
            let request = login_request(&params);
            let app = state.apps.for_app(request.appid.map(str::trim).unwrap_or_default());
            state.login.login(request, &client_ip).await.map(|outcome| login_fields(outcome, &app))
        }
        Some(session_op) => ops::handle(&state, session_op, &params, file, &request, &client_ip).await,
        None if op.is_empty() => Err(ApiError::new(ErrorCode::BadOp, "op is required")),
        None => Err(ApiError::new(ErrorCode::BadOp, "unknown op")),
    };
    request_log::note_api_call(&request, Op::label(op), result.as_ref().err().map(|e| e.code.as_str()));
    let echoed: String = op.chars().take(32).collect();
    reply(dialect, &echoed, result)
}

fn login_request(params: &Params) -> LoginRequest<'_> {
    let field = |name: &str| params.get(name).map(String::as_str);
    LoginRequest {
        appid: field("appid"),
        name: field("name"),
        device: field("device"),
        captcha_token: field("captcha_token"),
        proof: ops::proof_fields(params),
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

/// Every reply carries `op`, `result` and `ts`; failures add `error`, `errmsg` and maybe
/// `retry_after`. In the `mesibo` dialect `result` is "OK" or "FAIL" and an application
/// error answers HTTP 200: the apps read the error from the body and take any other
/// status for a lost connection. Only refusals of the request itself keep their status.
pub(crate) fn reply(dialect: Dialect, op: &str, result: Result<Map<String, Value>, ApiError>) -> HttpResponse {
    let result_field = |ok: bool| -> Value {
        match dialect {
            Dialect::Mesibo => (if ok { "OK" } else { "FAIL" }).into(),
            Dialect::Json => ok.into(),
        }
    };
    let mut body = Map::new();
    body.insert("op".into(), op.into());
    body.insert("ts".into(), store::now().into());
    let mut response = match result {
        Ok(fields) => {
            body.insert("result".into(), result_field(true));
            body.extend(fields);
            HttpResponse::Ok()
        }
        Err(error) => {
            let status = match dialect {
                Dialect::Mesibo if !error.keeps_status => StatusCode::OK,
                _ => StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            };
            body.insert("result".into(), result_field(false));
            body.insert("error".into(), error.code.as_str().into());
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

/// Reads the request's fields and its first file part (see [`parse_request`]). Contact
/// ops carry whole address books and may send up to `max_contacts_body_bytes`; ops that
/// take a file may add `max_upload_bytes` in a multipart body; every other op is held to
/// `max_body_bytes`, checked once the op is known.
async fn read_params(
    request: &HttpRequest,
    payload: web::Payload,
    limits: &HttpSettings,
) -> Result<(Params, Option<UploadedFile>), ApiError> {
    let bad = |message: &str| ApiError::new(ErrorCode::BadRequest, message);
    let too_large = |limit: usize| ApiError { keeps_status: true, ..bad(&format!("the request body is larger than {limit} bytes")) };
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let with_file = limits.max_body_bytes + limits.max_upload_bytes;
    let read_limit = match is_multipart(content_type) {
        true => limits.max_contacts_body_bytes.max(with_file),
        false => limits.max_contacts_body_bytes.max(limits.max_body_bytes),
    };
    let body = payload
        .to_bytes_limited(read_limit)
        .await
        .map_err(|_| too_large(read_limit))?
        .map_err(|_| bad("the request body could not be read"))?;
    let size = body.len();
    let (params, file) = parse_request(request.query_string(), content_type, body).await?;
    let op = Op::parse(&params.get("op").map(|op| op.trim().to_ascii_lowercase()).unwrap_or_default());
    let limit = match op {
        Some(op) if op.carries_address_book() => limits.max_contacts_body_bytes,
        Some(op) if op.carries_file() && is_multipart(content_type) => with_file,
        _ => limits.max_body_bytes,
    };
    if size > limit {
        return Err(too_large(limit));
    }
    let file = file.filter(|_| op.is_some_and(Op::carries_file));
    if file.as_ref().is_some_and(|file| file.bytes.len() > limits.max_upload_bytes) {
        return Err(ApiError { keeps_status: true, ..bad(&format!("the file is larger than {} bytes", limits.max_upload_bytes)) });
    }
    Ok((params, file))
}

fn is_multipart(content_type: &str) -> bool {
    content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data")
}

/// The request's fields (see [`parse_request`]) without its file.
pub async fn parse_fields(query: &str, content_type: &str, body: web::Bytes) -> Result<Params, ApiError> {
    Ok(parse_request(query, content_type, body).await?.0)
}

/// Merges query-string parameters with the body's (JSON object, relaxed JSON, form or
/// multipart form); body fields win. A multipart body's first file part comes apart.
pub async fn parse_request(query: &str, content_type: &str, body: web::Bytes) -> Result<(Params, Option<UploadedFile>), ApiError> {
    let bad = |message: &str| ApiError::new(ErrorCode::BadRequest, message);
    let mut params: Params =
        url_encoded(query).ok_or_else(|| bad("the query string is not valid URL encoding of UTF-8 text"))?.into_iter().collect();
    let mut file = None;
    if is_multipart(content_type) {
        let (fields, first_file) = multipart_fields(content_type, body).await?;
        params.extend(fields);
        file = first_file;
    } else {
        let text = std::str::from_utf8(&body).map_err(|_| bad("the request body is not UTF-8"))?.trim();
        // JSON whatever the Content-Type (the iOS app sends none, `curl -d` a form type).
        if content_type.contains("json") || text.starts_with('{') {
            params.extend(json_fields(text)?);
        } else if !text.is_empty() {
            params.extend(url_encoded(text).ok_or_else(|| bad("the request body is not valid form encoding of UTF-8 text"))?);
        }
    }
    Ok((params, file))
}

/// The fields of a URL-encoded form or query string. serde_urlencoded decodes bytes that
/// are not UTF-8 into U+FFFD, which turned a malformed request into a bad phone or code:
/// every part is checked first.
fn url_encoded(text: &str) -> Option<Vec<(String, String)>> {
    let utf8 = |part: &str| percent_encoding::percent_decode_str(&part.replace('+', " ")).decode_utf8().is_ok();
    text.split(['&', '=']).all(utf8).then(|| serde_urlencoded::from_str(text).ok()).flatten()
}

/// The fields of a JSON object; numbers and booleans as their JSON text. JavaScript-style
/// objects (unquoted keys, single quotes), as the platform's own examples write them, are
/// read as JSON5 when strict JSON fails.
fn json_fields(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let object: Map<String, Value> = serde_json::from_str(text)
        .or_else(|_| json5::from_str(text))
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "the request body is not a JSON object"))?;
    Ok(object
        .into_iter()
        .filter_map(|(key, value)| match value {
            Value::Null => None,
            Value::String(s) => Some((key, s)),
            other => Some((key, other.to_string())),
        })
        .collect())
}

/// The text fields of a multipart form (the 2021 apps' encoding when a file is attached)
/// and its first file part, whatever its name, as the reference took it.
async fn multipart_fields(content_type: &str, body: web::Bytes) -> Result<(Vec<(String, String)>, Option<UploadedFile>), ApiError> {
    let bad = |message: &str| ApiError::new(ErrorCode::BadRequest, message);
    let boundary = multer::parse_boundary(content_type).map_err(|_| bad("the multipart Content-Type has no boundary"))?;
    let mut form = multer::Multipart::new(futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) }), boundary);
    let mut fields = Vec::new();
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(|_| bad("the request body is not a valid multipart form"))? {
        if let Some(file_name) = field.file_name().map(String::from) {
            if file.is_none() {
                let bytes = field.bytes().await.map_err(|_| bad("the request body is not a valid multipart form"))?;
                file = Some(UploadedFile { file_name, bytes: bytes.to_vec() });
            }
            continue;
        }
        let Some(name) = field.name().map(String::from) else { continue };
        let value = field.text().await.map_err(|_| bad("a multipart field is not text"))?;
        fields.push((name, value));
    }
    Ok((fields, file))
}

/// `GET /files/{name}`: an uploaded file. Names are content hashes, so a file never
/// changes and may be cached for good; types outside a short list are served as
/// downloads, and nothing is run by a browser (`nosniff`, a sandboxing CSP).
async fn serve_file(name: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let found = match state.files.store.get(&name).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!("reading an uploaded file failed: {e}");
            return HttpResponse::ServiceUnavailable().finish();
        }
    };
    let Some((bytes, extension)) = found else { return HttpResponse::NotFound().finish() };
    let (content_type, inline) = crate::domain::images::served_type(&extension);
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox"));
    if !inline {
        response.insert_header((header::CONTENT_DISPOSITION, "attachment"));
    }
    response.body(bytes)
}

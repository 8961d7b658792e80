//! Replies in both dialects: `op`, `result` and `ts` on every one, the error fields on a failure.

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{Map, Value};

use crate::config::Dialect;
use crate::domain::error::ApiError;
use crate::store;

/// Every reply carries `op`, `result` and `ts`; failures add `error`, `errmsg` and maybe
/// `retry_after`. In the `mesibo` dialect `result` is "OK" or "FAIL" and an application
/// error answers HTTP 200: the apps read the error from the body and take any other
/// status for a lost connection. Only refusals of the request itself keep their status.
pub fn reply(dialect: Dialect, op: &str, result: Result<Map<String, Value>, ApiError>) -> HttpResponse {
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
    response.insert_header((header::CACHE_CONTROL, "no-store")).content_type(ContentType::json()).body(json_bytes(&Value::Object(body)))
}

/// Compact JSON, as `Value`'s `Display` writes it, but straight into a buffer rather than
/// through a formatter one piece at a time.
fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value always serializes")
}

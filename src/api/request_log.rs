//! One log line per request (method, route, op, result, status, latency, request id)
//! and the HTTP metrics. The request id comes from `X-Request-Id` when the caller
//! sent a sane one, else it is generated; it is echoed in the reply and attached to
//! every log line written while the request runs.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use rand::RngCore;
use std::time::Instant;
use tracing::Instrument;

use crate::domain::metrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the `/api` handler learned about a call, for the log line and metrics.
#[derive(Clone)]
struct ApiCall {
    op: &'static str,
    result: &'static str,
}

/// Called by the `/api` handler once it knows the op and the outcome (`None` = success).
/// `op` is an [`Op::label`](crate::api::ops::Op::label), so neither logs nor metrics take arbitrary input.
pub fn note_api_call(request: &HttpRequest, op: &'static str, error: Option<&'static str>) {
    let result = error.unwrap_or("ok");
    metrics::API_REQUESTS.with_label_values(&[op, result]).inc();
    request.extensions_mut().insert(ApiCall { op, result });
}

pub async fn log_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane_request_id(id))
        .map(String::from)
        .unwrap_or_else(new_request_id);
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %request_id);
    let outcome = next.call(request).instrument(span.clone()).await;

    let (status, route, api_call) = match &outcome {
        Ok(response) => (
            response.status(),
            // The route pattern, never the path or query string: those may carry phones and codes.
            response.request().match_pattern().unwrap_or_else(|| "unmatched".into()),
            response.request().extensions().get::<ApiCall>().cloned(),
        ),
        Err(error) => (error.as_response_error().status_code(), "unmatched".into(), None),
    };
    let latency = started.elapsed();
    metrics::HTTP_REQUESTS.with_label_values(&[&route, status.as_str()]).inc();
    metrics::HTTP_DURATION.with_label_values(&[&route]).observe(latency.as_secs_f64());
    let (op, result) = api_call.map_or(("", ""), |call| (call.op, call.result));
    macro_rules! request_line {
        ($level:expr) => {
            tracing::event!(target: "otpgate::request", $level, method, route, op, result, status = status.as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "request")
        };
    }
    // Probes come every few seconds from load balancers and scrapers: log them only at debug.
    let probe = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics");
    span.in_scope(|| if probe { request_line!(tracing::Level::DEBUG) } else { request_line!(tracing::Level::INFO) });
    outcome.map(|mut response| {
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
        }
        response
    })
}

/// Up to 128 characters a log line and a header can carry safely.
fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_honoured() {
        assert!(is_sane_request_id("req-42_a.b:c"));
        for bad in ["", "a b", "x\u{7f}", "new\nline", &"x".repeat(129)] {
            assert!(!is_sane_request_id(bad), "{bad:?}");
        }
        let generated = new_request_id();
        assert!(is_sane_request_id(&generated) && generated.len() == 32);
        assert_ne!(generated, new_request_id());
    }
}

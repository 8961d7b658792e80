//! The providers' delivery receipts: `POST /delivery/twilio`, `/delivery/vonage`,
//! `/delivery/messagebird` and `/delivery/whatsapp` (Vonage and MessageBird may report in
//! the query string of a `GET`; WhatsApp's `GET` is Meta's check of the webhook). Public,
//! without the app token or a session: each provider's signature is the proof. Described
//! in the OpenAPI document beside the other routes that are not ops.
//!
//! 200: taken (a receipt for a message we do not know is ignored); 403: a missing or
//! wrong signature; 400: signed, but not a receipt; 413: a body over
//! [`MAX_RECEIPT_BYTES`]; 404: `PUBLIC_URL` is not set, so no receipts are taken.
//!
//! The client-IP rate limits of the API are not applied: they sit in the ops (login
//! starts, verifies), not around every route, and a provider posts a burst from a few
//! addresses when many messages change status at once. What a request may cost is
//! bounded by the body limit and one signature check per configured key.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::AppState;
use crate::domain::metrics;
use crate::service::receipts::{Posted, Provider, Refusal};

/// The largest receipt body read: a provider's report on one message (WhatsApp's on a
/// few) is a few KiB.
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;

pub async fn twilio(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    take(Provider::Twilio, request, payload, state).await
}

pub async fn vonage(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    take(Provider::Vonage, request, payload, state).await
}

pub async fn messagebird(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    take(Provider::MessageBird, request, payload, state).await
}

pub async fn whatsapp(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    take(Provider::Whatsapp, request, payload, state).await
}

/// Meta's check of the webhook: the challenge echoed as plain text when the verify token
/// is one of ours.
pub async fn whatsapp_handshake(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match state.receipts.whatsapp_challenge(request.query_string()) {
        Ok(Some(challenge)) => plain(HttpResponse::Ok(), challenge),
        Ok(None) => refused(Provider::Whatsapp, Refusal::BadSignature),
        Err(refusal) => refused(Provider::Whatsapp, refusal),
    }
}

async fn take(provider: Provider, request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let body = match read_body(&request, payload).await {
        Ok(body) => body,
        Err(response) => {
            if response.status() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                metrics::RECEIPTS_REFUSED.with_label_values(&[provider.as_str(), "too_large"]).inc();
            }
            return response;
        }
    };
    let headers: Vec<(&str, &str)> =
        request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
    let posted = Posted {
        // As requested, byte for byte: the signatures cover it.
        path_and_query: request.uri().path_and_query().map_or(request.path(), |sent| sent.as_str()),
        headers: &headers,
        content_type: request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()),
        body: &body,
    };
    match state.receipts.take(provider, posted).await {
        Ok(_) => HttpResponse::Ok().finish(),
        Err(refusal) => refused(provider, refusal),
    }
}

/// The body, at most [`MAX_RECEIPT_BYTES`]: a larger one is refused by its length before
/// any of it is read, or once the limit is passed.
async fn read_body(request: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, HttpResponse> {
    let too_large = || plain(HttpResponse::PayloadTooLarge(), format!("a delivery receipt is at most {MAX_RECEIPT_BYTES} bytes"));
    let length = request.headers().get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|length| length > MAX_RECEIPT_BYTES as u64) {
        return Err(too_large());
    }
    match payload.to_bytes_limited(MAX_RECEIPT_BYTES).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(plain(HttpResponse::BadRequest(), "the body could not be read".into())),
        Err(_) => Err(too_large()),
    }
}

fn refused(provider: Provider, refusal: Refusal) -> HttpResponse {
    let count = |reason: &str| metrics::RECEIPTS_REFUSED.with_label_values(&[provider.as_str(), reason]).inc();
    match refusal {
        Refusal::NotTaken => plain(HttpResponse::NotFound(), "delivery receipts are not taken: PUBLIC_URL is not set".into()),
        Refusal::BadSignature => {
            count("signature");
            plain(HttpResponse::Forbidden(), "missing or invalid signature".into())
        }
        Refusal::Malformed(why) => {
            count("malformed");
            tracing::warn!(provider = provider.as_str(), "a signed delivery receipt could not be read: {why}");
            plain(HttpResponse::BadRequest(), "not a delivery receipt".into())
        }
        Refusal::Storage(e) => {
            tracing::error!(provider = provider.as_str(), "a delivery receipt could not be applied: {e}");
            // An error status, so that a provider that retries does.
            HttpResponse::InternalServerError().finish()
        }
    }
}

fn plain(mut reply: actix_web::HttpResponseBuilder, text: String) -> HttpResponse {
    reply.content_type("text/plain; charset=utf-8").body(text)
}

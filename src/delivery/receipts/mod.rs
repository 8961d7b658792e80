//! Delivery receipts: the status callbacks SMS and WhatsApp providers post about the
//! messages we sent, checked against each provider's signature and read into
//! [`Receipt`]s. Pure functions over the request as received, so that the HTTP handler
//! only gathers what was sent and answers by the outcome: 403 for
//! [`ReceiptError::BadSignature`], 400 for [`ReceiptError::Malformed`].

pub mod messagebird;
pub mod twilio;
pub mod vonage;
pub mod whatsapp;

use std::fmt;

use subtle::ConstantTimeEq;

/// What a provider posted, as received. (Not `Debug`: its headers hold signatures.)
#[derive(Clone, Copy)]
pub struct Callback<'a> {
    /// The full URL the provider requested: the operator's public URL, the path and the
    /// query string exactly as sent (signatures cover it byte for byte).
    pub url: &'a str,
    /// The request's headers as (name, value); names are matched without regard to case.
    pub headers: &'a [(&'a str, &'a str)],
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> Callback<'a> {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| *value)
    }

    /// The query string of the URL, without the `?`.
    fn query(&self) -> &'a str {
        let query = self.url.split_once('?').map_or("", |(_, query)| query);
        query.split_once('#').map_or(query, |(query, _)| query)
    }

    /// The fields of the query string, decoded; `None` when it is not a query string.
    fn query_fields(&self) -> Option<Fields> {
        serde_urlencoded::from_str(self.query()).ok()
    }

    /// The fields of a form or flat JSON body (by its content type, a form when none is
    /// given); `None` for any other body. An empty body has no fields.
    fn body_fields(&self) -> Option<Fields> {
        if self.body.is_empty() {
            return Some(Vec::new());
        }
        match self.media_type().as_deref() {
            Some("application/json") => json_fields(self.body),
            Some("application/x-www-form-urlencoded") | None => serde_urlencoded::from_bytes(self.body).ok(),
            Some(_) => None,
        }
    }

    /// The content type without its parameters (`; charset=…`), in lower case.
    fn media_type(&self) -> Option<String> {
        let content_type = self.content_type?;
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        (!media_type.is_empty()).then(|| media_type.to_ascii_lowercase())
    }
}

/// How far a message got, as far as we act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Handed to the carrier (or to WhatsApp's servers).
    Sent,
    /// On the recipient's device.
    Delivered,
    /// Handed on, but the carrier could not deliver it.
    Undelivered,
    /// Never handed to a carrier.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One message's status, as a provider reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id of the message (Twilio `MessageSid`, Vonage `messageId`,
    /// MessageBird `id`, WhatsApp `statuses[].id`).
    pub message_id: String,
    /// `None` for the statuses we do not act on (queued, accepted, buffered, …).
    pub status: Option<DeliveryStatus>,
    /// The provider's error code, when it gives one.
    pub error_code: Option<String>,
    /// Unix seconds of the status, when the provider gives them.
    pub reported_at: Option<i64>,
}

/// Why a callback is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptError {
    /// The signature is missing, malformed, stale or does not match any configured secret
    /// (answer 403).
    BadSignature,
    /// Signed, but not a receipt we understand (answer 400).
    Malformed(String),
}

impl fmt::Display for ReceiptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiptError::BadSignature => f.write_str("missing or invalid signature"),
            ReceiptError::Malformed(why) => write!(f, "malformed delivery receipt: {why}"),
        }
    }
}

impl std::error::Error for ReceiptError {}

/// Decoded (name, value) pairs in the order sent.
type Fields = Vec<(String, String)>;

/// The first value of a field, if it is not empty.
fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str()).filter(|value| !value.is_empty())
}

/// The members of a JSON object whose values are strings, numbers or booleans (numbers
/// as written); `None` for anything else, as no provider signs nested values here.
/// Nulls stand for absent fields.
fn json_fields(body: &[u8]) -> Option<Fields> {
    let serde_json::Value::Object(object) = serde_json::from_slice(body).ok()? else { return None };
    let mut fields = Vec::with_capacity(object.len());
    for (name, value) in object {
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Bool(flag) => flag.to_string(),
            serde_json::Value::Null => continue,
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => return None,
        };
        fields.push((name, text));
    }
    Some(fields)
}

/// Compares secrets (tokens, digests) in constant time.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// Unix seconds of an RFC 3339 date.
fn rfc3339_seconds(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok().map(|at| at.unix_timestamp())
}

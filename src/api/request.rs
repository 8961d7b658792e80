//! A request as sent: its fields by name ([`Params`]), its headers and its first file
//! part ([`Sent`]), and the readings every op shares, as lenient as the reference's: a
//! missing or non-numeric integer is 0, a flag is `1`, `true` or `yes`, the code may come
//! as `otp` or `code`, the access token as `token`, `auth` or `Authorization: Bearer`.

use actix_web::http::header::{self, HeaderMap};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::service::authenticators::ProofFields;
use crate::service::contacts::Phones;
use crate::service::uploads::UploadedFile;

/// A request's fields as sent, by name.
pub type Params = HashMap<String, Field>;

/// A request field as sent: text, or an array of a JSON body, kept as its items so that
/// a list of phones is read from them rather than written out as JSON text to be parsed
/// again. An array is boxed: a field of text, as nearly every field is, stays the size
/// of its `String`.
#[derive(Debug)]
pub enum Field {
    Text(String),
    Array(Box<JsonArray>),
}

/// The items of an array field, and its JSON text once something read it as text.
#[derive(Debug)]
pub struct JsonArray {
    pub items: Vec<Value>,
    text: OnceLock<String>,
}

impl Field {
    pub fn array(items: Vec<Value>) -> Field {
        Field::Array(Box::new(JsonArray { items, text: OnceLock::new() }))
    }

    /// The field as text; an array as its compact JSON text, written the first time it
    /// is asked for.
    pub fn text(&self) -> &str {
        match self {
            Field::Text(text) => text,
            Field::Array(array) => array.text.get_or_init(|| serde_json::to_string(&array.items).expect("a JSON value always serializes")),
        }
    }
}

impl From<String> for Field {
    fn from(text: String) -> Field {
        Field::Text(text)
    }
}

/// The access token a request carries, if any (see [`access_token`]).
pub type Token<'a> = Option<&'a str>;

/// What a request sent, for its op to read its fields from.
pub struct Sent<'a> {
    params: &'a Params,
    /// Where the token may be, when no field carries it.
    headers: &'a HeaderMap,
    /// The request's first file part, kept by the ops that take one.
    pub file: Option<UploadedFile>,
}

impl<'a> Sent<'a> {
    pub fn new(params: &'a Params, headers: &'a HeaderMap, file: Option<UploadedFile>) -> Sent<'a> {
        Sent { params, headers, file }
    }

    /// A field as text, as sent.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.params.get(name).map(Field::text)
    }

    /// An integer field; missing or not a number reads as 0, as the reference read it.
    pub fn number(&self, name: &str) -> i64 {
        self.params.get(name).and_then(|v| v.text().trim().parse().ok()).unwrap_or(0)
    }

    /// A boolean field: `1`, `true` or `yes`.
    pub fn flag(&self, name: &str) -> bool {
        self.params.get(name).is_some_and(|v| matches!(v.text().trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    }

    /// A list of phones (see [`phones`]).
    pub fn phones(&self, name: &str) -> Option<Phones<'a>> {
        phones(self.params, name)
    }

    /// The fields that may prove an address: a code (`code` is the name older apps
    /// send), or an ID token.
    pub fn proof(&self) -> ProofFields<'a> {
        ProofFields {
            phone: self.text("phone"),
            email: self.text("email"),
            code: self.text("otp").or_else(|| self.text("code")),
            challenge: self.text("challenge"),
            provider: self.text("provider"),
            id_token: self.text("id_token"),
            nonce: self.text("nonce"),
        }
    }

    /// The access token (see [`access_token`]).
    pub fn access_token(&self) -> Token<'a> {
        access_token(self.params, self.headers)
    }
}

/// The token from the `token` field (`auth`, as the iOS app names it with attachments),
/// or else from `Authorization: Bearer`; trimmed, and never blank.
pub fn access_token<'a>(params: &'a Params, headers: &'a HeaderMap) -> Token<'a> {
    let field = |name: &str| params.get(name).map(|t| t.text().trim()).filter(|t| !t.is_empty());
    let from_header = || {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    };
    field("token").or_else(|| field("auth")).or_else(from_header)
}

/// A list of phones: a JSON body's array as its items, anything else as its text.
pub fn phones<'a>(params: &'a Params, name: &str) -> Option<Phones<'a>> {
    params.get(name).map(|field| match field {
        Field::Array(array) => Phones::Items(&array.items),
        Field::Text(text) => Phones::Text(text),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    /// Text fields, as a form sends them.
    pub(crate) fn params(fields: &[(&str, &str)]) -> Params {
        fields.iter().map(|(name, value)| (name.to_string(), Field::Text(value.to_string()))).collect()
    }

    #[test]
    fn numbers_flags_and_phones_read_leniently() {
        let sent = params(&[("gid", " 7 "), ("admin", "x"), ("delete", " YES "), ("all", "0"), ("m", "18005550001")]);
        let headers = HeaderMap::new();
        let sent = Sent::new(&sent, &headers, None);
        assert_eq!((sent.number("gid"), sent.number("admin"), sent.number("missing")), (7, 0, 0), "not a number, or missing, reads 0");
        assert_eq!((sent.flag("delete"), sent.flag("all"), sent.flag("missing")), (true, false, false));
        assert!(matches!(sent.phones("m"), Some(Phones::Text("18005550001"))));
    }

    #[test]
    fn the_token_is_a_field_or_a_bearer_header() {
        let token = |fields: &[(&str, &str)], authorization: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(authorization));
            access_token(&params(fields), &headers).map(String::from)
        };
        let bearer = "bearer  from-header ";
        assert_eq!(token(&[("token", " t1 "), ("auth", "t2")], bearer).as_deref(), Some("t1"));
        assert_eq!(token(&[("token", " "), ("auth", "t2")], bearer).as_deref(), Some("t2"));
        assert_eq!(token(&[], bearer).as_deref(), Some("from-header"));
        assert_eq!(token(&[], "Basic abc"), None);
        assert_eq!(token(&[], "Bearer "), None);
    }

    #[test]
    fn an_array_field_reads_as_its_json_text() {
        let array = Field::array(vec!["18005550001".into(), 18005550002_i64.into(), Value::Null]);
        assert_eq!(array.text(), r#"["18005550001",18005550002,null]"#);
        assert_eq!(Field::from(" x ".to_string()).text(), " x ");
        assert_eq!(std::mem::size_of::<Field>(), std::mem::size_of::<String>(), "a text field costs no more than its text");
    }
}

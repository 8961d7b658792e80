//! Fuzz targets: what the request parser and the phone checks must survive, whatever
//! the bytes. `fuzz/` runs them under libFuzzer (cargo-fuzz, nightly); `tests/it/fuzz.rs`
//! replays the corpus in `fuzz/corpus/` and a bounded, seeded run of mutations of it
//! on stable, in every test run.

use futures_util::FutureExt;
use std::sync::OnceLock;

use crate::config::Config;
use crate::domain::phone::PhonePolicy;
use crate::{api::http, api::request, domain::address, service::contacts};

/// The Content-Types a request body is parsed under; the first input byte picks one.
pub const CONTENT_TYPES: [&str; 5] =
    ["", "application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=XBOUNDARY", "text/plain"];

/// Request fields: the first byte picks the Content-Type, the bytes up to the first
/// newline are the query string and the rest is the body. Parsing may refuse, never
/// panic, and the phones of a contact upload parse too.
pub fn request_fields(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(kind) % CONTENT_TYPES.len()];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&[][..], rest),
    };
    // The server hands the query string over as text.
    let Ok(query) = std::str::from_utf8(query) else { return };
    let parsed = http::parse_fields(query, content_type, actix_web::web::Bytes::copy_from_slice(body))
        .now_or_never()
        .expect("parsing a body held in memory never waits");
    if let Ok(params) = parsed {
        if let Some(phones) = request::phones(&params, "phones") {
            if let Ok(list) = contacts::parse_phones(phones, 5000) {
                assert!(list.phones.iter().all(|p| address::normalize_phone(p).as_deref() == Some(p.as_str())));
            }
        }
    }
}

/// Phone and e-mail normalisation and the libphonenumber checks: what they accept is in
/// its final form, and accepting it again gives the same form.
pub fn phone(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Some(digits) = address::normalize_phone(raw) {
        assert!((9..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()), "{digits:?}");
        assert_eq!(address::normalize_phone(&digits).as_deref(), Some(digits.as_str()));
    }
    if let Ok(valid) = policy().check(raw) {
        assert!(valid.digits.bytes().all(|b| b.is_ascii_digit()), "{valid:?}");
        let again = policy().check(&format!("+{}", valid.digits)).ok();
        assert_eq!(again.as_ref(), Some(&valid), "{raw:?} was accepted as {valid:?}, but its own form is not");
    }
    if let Some(email) = address::normalize_email(raw) {
        assert_eq!(address::normalize_email(&email).as_deref(), Some(email.as_str()));
    }
}

fn policy() -> &'static PhonePolicy {
    static POLICY: OnceLock<PhonePolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let config = Config::from_vars([("DEFAULT_REGION", "GB"), ("PHONE_MOBILE_ONLY", "false")]).expect("a valid configuration");
        PhonePolicy::from_config(&config)
    })
}

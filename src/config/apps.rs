//! What the apps are told: the shape of replies, the service's address, each app's name
//! and login reply, and the issuers whose ID tokens sign users in.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::values::{choice, texts_by_app, unless_empty, Json};

/// What the apps read.
#[derive(Clone, Deserialize, Serialize)]
pub struct AppsSettings {
    /// `mesibo`: the replies the mesibo messenger apps parse (`result` "OK"/"FAIL", HTTP 200
    /// for application errors); `json`: boolean `result` and HTTP statuses.
    #[serde(default = "defaults::api_dialect")]
    pub api_dialect: Dialect,
    /// The service's address as apps reach it, e.g. `https://login.example.com`; the base of
    /// the default upload and download URLs. Unset: `http://` and BIND.
    #[serde(default, deserialize_with = "unless_empty")]
    pub public_url: Option<String>,
    /// JSON object appid → display name for `{appname}`.
    #[serde(default, deserialize_with = "app_names", rename = "app_names")]
    pub names: Json<BTreeMap<String, String>>,
    /// JSON object appid → what the login reply tells that app (share and invite text,
    /// upload and download URLs, a message shown at login start); `default` applies to all.
    #[serde(default, deserialize_with = "app_settings", rename = "app_settings")]
    pub settings: Json<BTreeMap<String, AppEntry>>,
}

/// One entry of `APP_SETTINGS`; an appid's entry overrides `default`'s field by field.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    #[serde(default)]
    pub share: ShareEntry,
    pub invite: Option<String>,
    #[serde(default)]
    pub urls: UrlsEntry,
    #[serde(default)]
    pub start: StartEntry,
    /// The app's signature hash for Android's SMS Retriever (11 Base64 characters): its
    /// SMS end with it on a line of its own, and must fit 140 bytes.
    pub android_hash: Option<String>,
    /// The host of the web app, for WebOTP: its SMS end with the line `@host #code`.
    pub webotp_domain: Option<String>,
}

/// The lines an app's SMS end with so that the phone or the browser fills the code in:
/// `APP_SETTINGS`' `android_hash` and `webotp_domain`, the app's own or `default`'s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmsAutofill {
    pub android_hash: Option<String>,
    pub webotp_domain: Option<String>,
}

impl SmsAutofill {
    /// `template` as an SMS with the auto-fill lines: the hash on a line of its own, then
    /// `@host #{otp}`, which WebOTP reads only as the last line. Without a hash a blank
    /// line sets the WebOTP line apart from the text, as in Chrome's example. `None` when
    /// the app has neither.
    pub fn sms_template(&self, template: &str) -> Option<String> {
        if self.android_hash.is_none() && self.webotp_domain.is_none() {
            return None;
        }
        let mut sms = template.trim_end().to_string();
        if let Some(hash) = &self.android_hash {
            sms.push('\n');
            sms.push_str(hash);
        }
        if let Some(host) = &self.webotp_domain {
            sms.push_str(if self.android_hash.is_some() { "\n@" } else { "\n\n@" });
            sms.push_str(host);
            sms.push_str(" #{otp}");
        }
        Some(sms)
    }
}

impl AppsSettings {
    /// The auto-fill lines of `appid`'s SMS: each field its own entry's, else `default`'s.
    pub fn sms_autofill(&self, appid: &str) -> SmsAutofill {
        let own = self.settings.get(appid);
        let default = self.settings.get("default");
        let pick =
            |field: fn(&AppEntry) -> &Option<String>| own.and_then(|e| field(e).clone()).or_else(|| default.and_then(|e| field(e).clone()));
        SmsAutofill { android_hash: pick(|e| &e.android_hash), webotp_domain: pick(|e| &e.webotp_domain) }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareEntry {
    pub text: Option<String>,
    pub subject: Option<String>,
    pub title: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlsEntry {
    pub upload: Option<String>,
    pub download: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartEntry {
    pub title: Option<String>,
    pub message: Option<String>,
    /// Milliseconds the Android app waits before showing the code field.
    pub delay: Option<u64>,
}

/// Sign-in with OpenID Connect ID tokens. (`OIDC_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct OidcSettings {
    /// JSON object provider name → `issuer`, `client_ids`, `address_claim` (`email` or
    /// `sub`), `email_verified_if_absent` (default false): the OpenID Connect issuers whose
    /// ID tokens sign users in (`delivery::oidc`). Unset: none.
    #[serde(default, deserialize_with = "oidc_providers", rename = "oidc_providers")]
    pub providers: Json<BTreeMap<String, OidcProvider>>,
}

/// One issuer of `OIDC_PROVIDERS`, checked and with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcProvider {
    /// Without a trailing slash; Google's or Apple's for the providers named `google`
    /// and `apple` when not set.
    pub issuer: String,
    /// The app's client ids: a token's audience must be one of them.
    pub client_ids: Vec<String>,
    pub address_claim: AddressClaim,
    /// Whether a token without `email_verified` counts as verified: only for an issuer that
    /// puts no e-mail address in a token before verifying it.
    pub email_verified_if_absent: bool,
}

/// Which claim of a verified token becomes the address the user is known by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressClaim {
    /// The verified e-mail address: the same user as an e-mail code login to it.
    Email,
    /// The issuer's subject, as `provider:sub`, for issuers that may hide the e-mail.
    Sub,
}

/// One provider as `OIDC_PROVIDERS` writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    #[serde(default)]
    issuer: Option<String>,
    client_ids: Vec<String>,
    #[serde(default)]
    address_claim: Option<AddressClaim>,
    #[serde(default)]
    email_verified_if_absent: bool,
}

fn app_names<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json<BTreeMap<String, String>>, D::Error> {
    Json::parse_with(String::deserialize(deserializer)?, |text| texts_by_app("APP_NAMES", text)).map_err(serde::de::Error::custom)
}

fn app_settings<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json<BTreeMap<String, AppEntry>>, D::Error> {
    Json::parse_with(String::deserialize(deserializer)?, |text| {
        let entries: BTreeMap<String, AppEntry> = serde_json::from_str(text).map_err(|e| {
            format!("APP_SETTINGS must be a JSON object of appid -> {{share, invite, urls, start, android_hash, webotp_domain}}: {e}")
        })?;
        for (appid, entry) in &entries {
            if entry.android_hash.as_deref().is_some_and(|hash| !is_app_signature_hash(hash)) {
                return Err(format!(
                    "APP_SETTINGS android_hash of {appid} must be the app's signature hash: 11 Base64 characters, such as FA+9qCX9VSu"
                ));
            }
            if let Some(why) = entry.webotp_domain.as_deref().and_then(why_not_a_bare_host) {
                return Err(format!("APP_SETTINGS webotp_domain of {appid} must be a host such as login.example.com: {why}"));
            }
        }
        Ok(entries)
    })
    .map_err(serde::de::Error::custom)
}

/// What SMS Retriever looks for: the first 11 characters of a standard Base64 text.
fn is_app_signature_hash(hash: &str) -> bool {
    hash.len() == 11 && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Why `host` is not what a WebOTP line names: a host alone, in lower case (an
/// internationalised name in its `xn--` form), without scheme, port, path or blanks.
fn why_not_a_bare_host(host: &str) -> Option<&'static str> {
    if host.contains("://") {
        return Some("no scheme");
    }
    if host.contains(['/', ':', '?', '#', '@']) {
        return Some("no port, path or user");
    }
    if host.contains(char::is_whitespace) {
        return Some("no blanks");
    }
    if !host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return Some("lower-case letters, digits, dots and dashes only (an internationalised name in its xn-- form)");
    }
    let labels_well_formed = host.len() <= 253
        && host.split('.').all(|label| (1..=63).contains(&label.len()) && !label.starts_with('-') && !label.ends_with('-'));
    (!labels_well_formed).then_some("each dot-separated label 1 to 63 characters, not starting or ending with a dash")
}

fn oidc_providers<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json<BTreeMap<String, OidcProvider>>, D::Error> {
    Json::parse_with(String::deserialize(deserializer)?, parse_oidc_providers).map_err(serde::de::Error::custom)
}

/// `OIDC_PROVIDERS`: a JSON object of provider name → [`ProviderEntry`].
fn parse_oidc_providers(json: &str) -> Result<BTreeMap<String, OidcProvider>, String> {
    let bad = |why: String| format!("OIDC_PROVIDERS {why}");
    let entries: BTreeMap<String, ProviderEntry> =
        serde_json::from_str(json).map_err(|e| bad(format!("must be a JSON object of provider name to settings: {e}")))?;
    let mut providers = BTreeMap::new();
    for (name, entry) in entries {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(bad(format!("names a provider {name:?}: names are lower-case letters, digits and dashes")));
        }
        let issuer = match (entry.issuer, name.as_str()) {
            (Some(issuer), _) => issuer.trim_end_matches('/').to_string(),
            (None, "google") => "https://accounts.google.com".to_string(),
            (None, "apple") => "https://appleid.apple.com".to_string(),
            (None, _) => return Err(bad(format!("provider {name} needs an issuer"))),
        };
        let url = reqwest::Url::parse(&issuer).map_err(|e| bad(format!("provider {name} has an issuer that is not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        // Keys fetched in clear could be swapped on the way; plain HTTP is for a local test issuer.
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(bad(format!("provider {name} must have an https issuer")));
        }
        if entry.client_ids.is_empty() || entry.client_ids.iter().any(|id| id.trim().is_empty()) {
            return Err(bad(format!("provider {name} needs client_ids, the app's client ids at the provider")));
        }
        let address_claim = entry.address_claim.unwrap_or(AddressClaim::Email);
        if entry.email_verified_if_absent && address_claim != AddressClaim::Email {
            return Err(bad(format!("provider {name} sets email_verified_if_absent, which only applies with address_claim \"email\"")));
        }
        let provider =
            OidcProvider { issuer, client_ids: entry.client_ids, address_claim, email_verified_if_absent: entry.email_verified_if_absent };
        providers.insert(name, provider);
    }
    Ok(providers)
}

choice!(
    /// The shape of replies, `API_DIALECT`.
    Dialect, "API_DIALECT", "mesibo or json", {
    /// What the mesibo messenger apps parse: `result` is "OK" or "FAIL", and application
    /// errors answer HTTP 200, because the apps take any other status for "no internet".
    Mesibo = "mesibo",
    /// Boolean `result` and an HTTP status per error, for clients that prefer them.
    Json = "json",
});

mod defaults {
    pub fn api_dialect() -> super::Dialect {
        super::Dialect::Mesibo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_parsed_with_google_and_apple_defaults() {
        let providers = parse_oidc_providers(
            r#"{"google": {"client_ids": ["web.apps.example"]},
                "apple": {"client_ids": ["com.example.app"]},
                "corp": {"issuer": "https://login.example.com/", "client_ids": ["messenger"], "address_claim": "sub"}}"#,
        )
        .unwrap();
        assert_eq!(providers["google"].issuer, "https://accounts.google.com");
        assert_eq!(providers["apple"].issuer, "https://appleid.apple.com");
        assert_eq!(providers["corp"].issuer, "https://login.example.com");
        assert_eq!(providers["corp"].address_claim, AddressClaim::Sub);
        assert_eq!(providers["apple"].address_claim, AddressClaim::Email);
        assert!(!providers["corp"].email_verified_if_absent, "a missing email_verified is not trusted unless asked");
        let trusting = parse_oidc_providers(
            r#"{"corp": {"issuer": "https://login.example.com", "client_ids": ["x"], "email_verified_if_absent": true}}"#,
        );
        assert!(trusting.unwrap()["corp"].email_verified_if_absent);
    }

    #[test]
    fn bad_provider_settings_are_refused_with_a_reason() {
        for (json, why) in [
            (r#"{"corp": {"client_ids": ["x"]}}"#, "needs an issuer"),
            (r#"{"corp": {"issuer": "http://login.example.com", "client_ids": ["x"]}}"#, "https issuer"),
            (r#"{"google": {"client_ids": []}}"#, "needs client_ids"),
            (r#"{"Google": {"client_ids": ["x"]}}"#, "lower-case"),
            (r#"{"google": {"client_ids": ["x"], "audience": "y"}}"#, "unknown field"),
            (r#"["google"]"#, "JSON object"),
            (r#"{"google": {"client_ids": ["x"], "email_verified_if_absent": "yes"}}"#, "expected a boolean"),
            (r#"{"google": {"client_ids": ["x"], "address_claim": "sub", "email_verified_if_absent": true}}"#, "only applies with"),
        ] {
            let error = parse_oidc_providers(json).err().unwrap_or_else(|| panic!("{json} was accepted"));
            assert!(error.contains(why), "{json}: {error}");
        }
        assert!(parse_oidc_providers(r#"{"local": {"issuer": "http://127.0.0.1:9", "client_ids": ["x"]}}"#).is_ok());
    }

    fn load(vars: &[(&str, &str)]) -> Result<crate::config::Config, String> {
        crate::config::Config::from_vars(vars.iter().copied())
    }

    fn refusal(vars: &[(&str, &str)]) -> String {
        let error = load(vars).err().unwrap_or_else(|| panic!("{vars:?} was accepted"));
        assert!(error.starts_with("invalid configuration: APP_SETTINGS ") && !error.contains('\n'), "one line: {error}");
        error
    }

    fn settings_of(appid: &str, fields: &str) -> String {
        format!(r#"{{"{appid}":{{{fields}}}}}"#)
    }

    #[test]
    fn auto_fill_fields_are_read_with_defaults_field_by_field() {
        let json = r#"{"default":{"android_hash":"FA+9qCX9VSu","webotp_domain":"example.com"},
                       "com.a":{"webotp_domain":"login.example.com"},"com.b":{"android_hash":"Ab0/+zZ9aQ1"}}"#;
        let apps = load(&[("APP_SETTINGS", json)]).unwrap().apps;
        let autofill = |hash: &str, host: &str| SmsAutofill { android_hash: Some(hash.into()), webotp_domain: Some(host.into()) };
        assert_eq!(apps.sms_autofill("com.a"), autofill("FA+9qCX9VSu", "login.example.com"));
        assert_eq!(apps.sms_autofill("com.b"), autofill("Ab0/+zZ9aQ1", "example.com"));
        assert_eq!(apps.sms_autofill("org.other"), autofill("FA+9qCX9VSu", "example.com"));
        assert_eq!(load(&[]).unwrap().apps.sms_autofill("com.a"), SmsAutofill::default());
        for host in ["localhost", "xn--bcher-kva.example", "a-b.c0.example", "192.0.2.1"] {
            assert!(load(&[("APP_SETTINGS", &settings_of("com.a", &format!(r#""webotp_domain":"{host}""#)))]).is_ok(), "{host}");
        }
    }

    #[test]
    fn a_bad_hash_or_host_is_refused_naming_the_app() {
        for hash in ["FA+9qCX9VS", "FA+9qCX9VSuu", "FA-9qCX9VSu", "FA+9qCX9VS=", "FA+9qCX9VS ", ""] {
            let error = refusal(&[("APP_SETTINGS", &settings_of("com.a", &format!(r#""android_hash":"{hash}""#)))]);
            assert!(error.contains("android_hash of com.a must be the app's signature hash: 11 Base64 characters"), "{hash:?}: {error}");
        }
        for (host, why) in [
            ("https://login.example.com", "no scheme"),
            ("login.example.com:443", "no port"),
            ("login.example.com/otp", "no port, path"),
            ("login example.com", "no blanks"),
            ("Login.Example.com", "lower-case letters"),
            ("bücher.example", "xn-- form"),
            ("login..example.com", "label 1 to 63"),
            ("-login.example.com", "not starting or ending with a dash"),
            ("", "label 1 to 63"),
        ] {
            let error = refusal(&[("APP_SETTINGS", &settings_of("default", &format!(r#""webotp_domain":"{host}""#)))]);
            assert!(
                error.contains("webotp_domain of default must be a host such as login.example.com") && error.contains(why),
                "{host:?}: {error}"
            );
        }
    }

    #[test]
    fn a_template_that_would_break_the_auto_fill_lines_is_refused() {
        let web = settings_of("com.a", r#""webotp_domain":"login.example.com""#);
        let hash = settings_of("com.a", r#""android_hash":"FA+9qCX9VSu""#);
        let own_line = r#"{"com.a":"Your code is {otp}\n\n@login.example.com #{otp}\n"}"#;
        for settings in [&web, &hash] {
            let error = refusal(&[("APP_SETTINGS", settings), ("OTP_MESSAGE_PER_APP", own_line)]);
            assert!(error.contains("for com.a: OTP_MESSAGE_PER_APP[com.a] ends with a line of the WebOTP form"), "{error}");
        }
        let default_hash = settings_of("default", r#""android_hash":"FA+9qCX9VSu""#);
        let error = refusal(&[("APP_SETTINGS", &default_hash), ("OTP_MESSAGE", "Your code:\n@{appid} #{otp}")]);
        assert!(error.contains("for any other appid (shown up to 64 characters): OTP_MESSAGE ends with"), "{error}");
        assert!(load(&[("OTP_MESSAGE_PER_APP", own_line)]).is_ok(), "a WebOTP line of its own is the operator's, without auto-fill fields");
        let mid_line = r#"{"com.a":"@login.example.com is where {otp} works"}"#;
        assert!(load(&[("APP_SETTINGS", &web), ("OTP_MESSAGE_PER_APP", mid_line)]).is_ok(), "not of the form");
        // A message without the code is refused for every app, these included.
        let error = load(&[("APP_SETTINGS", &hash), ("OTP_MESSAGE_PER_APP", r#"{"com.a":"no code"}"#)]).err().unwrap_or_default();
        assert!(error.ends_with(r#"OTP_MESSAGE_PER_APP template for "com.a" must contain {otp}"#), "{error}");
    }

    #[test]
    fn an_sms_with_a_hash_longer_than_140_bytes_is_refused() {
        // "Your " + name + " code is " + 6 digits, then a line of 11: 32 characters and the name.
        let with_name = |name: &str| {
            let names = serde_json::json!({ "com.a": name }).to_string();
            let settings = settings_of("com.a", r#""android_hash":"FA+9qCX9VSu""#);
            load(&[
                ("OTP_MESSAGE_PER_APP", r#"{"com.a":"Your {appname} code is {otp}"}"#),
                ("APP_NAMES", &names),
                ("APP_SETTINGS", &settings),
            ])
        };
        let over = |name: &str| with_name(name).err().unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(with_name(&format!("é{}", "x".repeat(127))).is_ok(), "é is GSM-7: 160 septets, 140 bytes");
        let error = over(&format!("é{}", "x".repeat(128)));
        assert!(error.starts_with("invalid configuration: APP_SETTINGS for com.a: its SMS with android_hash can be 141 bytes"), "{error}");
        assert!(error.contains("over the 140 SMS Retriever reads (GSM-7: 160 characters"), "{error}");
        assert!(with_name(&format!("€{}", "x".repeat(126))).is_ok());
        assert!(over(&format!("€{}", "x".repeat(127))).contains("141 bytes"), "€ takes two septets");
        assert!(with_name(&format!("ł{}", "x".repeat(37))).is_ok(), "ł needs UCS-2: 70 characters, 140 bytes");
        let error = over(&format!("ł{}", "x".repeat(38)));
        assert!(
            error.contains("can be 142 bytes") && error.contains("(UCS-2, as it has a character outside GSM-7: 70 characters)"),
            "{error}"
        );
        assert!(with_name(&format!("😀{}", "x".repeat(36))).is_ok());
        assert!(over(&format!("😀{}", "x".repeat(37))).contains("142 bytes"), "an emoji takes two UTF-16 units");
        // Without a hash a long SMS is only dearer (a warning at start): WebOTP reads it.
        let long = serde_json::json!({ "com.a": format!("{} {{otp}}", "x".repeat(300)) }).to_string();
        let web = settings_of("com.a", r#""webotp_domain":"example.com""#);
        assert!(load(&[("APP_SETTINGS", &web), ("OTP_MESSAGE_PER_APP", &long)]).is_ok());
    }

    #[test]
    fn the_longest_sms_counts_the_code_the_webotp_line_and_any_appid() {
        let both = settings_of("default", r#""android_hash":"FA+9qCX9VSu","webotp_domain":"example.com""#);
        // The text and 10 digits, "\n" and 11, "\n@example.com #" and 10: 27 + 2 × 10 and the text.
        let message = |text_chars: usize| format!("{} {{otp}}", "x".repeat(text_chars - 1));
        assert!(load(&[("APP_SETTINGS", &both), ("OTP_LENGTH", "10"), ("OTP_MESSAGE", &message(113))]).is_ok(), "113 + 47 = 160");
        let error = refusal(&[("APP_SETTINGS", &both), ("OTP_LENGTH", "10"), ("OTP_MESSAGE", &message(114))]);
        assert!(error.contains("for any other appid (shown up to 64 characters): its SMS with android_hash can be 141 bytes"), "{error}");
        // An appid no setting names shows up to 64 characters in {appname} (and {appid}).
        let hash = settings_of("default", r#""android_hash":"FA+9qCX9VSu""#);
        let named = |text_chars: usize| format!("{} {{appname}} {{otp}}", "x".repeat(text_chars));
        assert!(load(&[("APP_SETTINGS", &hash), ("OTP_MESSAGE", &named(76))]).is_ok(), "76 + 1 + 64 + 1 + 6 + 12 = 160");
        assert!(refusal(&[("APP_SETTINGS", &hash), ("OTP_MESSAGE", &named(77))]).contains("for any other appid"));
        // A named app shows its name; an app's own hash applies to it alone.
        let names = serde_json::json!({ "com.long": "y".repeat(80) }).to_string();
        let error = refusal(&[("APP_SETTINGS", &hash), ("OTP_MESSAGE", &named(70)), ("APP_NAMES", &names)]);
        assert!(error.contains("for com.long: its SMS"), "{error}");
        let own = settings_of("com.a", r#""android_hash":"FA+9qCX9VSu""#);
        assert!(load(&[("APP_SETTINGS", &own), ("OTP_MESSAGE", &named(70)), ("APP_NAMES", &names)]).is_ok());
    }
}

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
        serde_json::from_str(text)
            .map_err(|e| format!("APP_SETTINGS must be a JSON object of appid -> {{share, invite, urls, start}}: {e}"))
    })
    .map_err(serde::de::Error::custom)
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
}

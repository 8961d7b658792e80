//! What the apps are told: the shape of replies, the service's address, each app's name
//! and login reply, and the issuers whose ID tokens sign users in.

use serde::{Deserialize, Serialize};

use super::values::{choice, unless_empty};

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
    #[serde(default, rename = "app_names")]
    pub names: String,
    /// JSON object appid → what the login reply tells that app (share and invite text,
    /// upload and download URLs, a message shown at login start); `default` applies to all.
    #[serde(default, rename = "app_settings")]
    pub settings: String,
}

/// Sign-in with OpenID Connect ID tokens. (`OIDC_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct OidcSettings {
    /// JSON object provider name → `issuer`, `client_ids`, `address_claim` (`email` or
    /// `sub`), `email_verified_if_absent` (default false): the OpenID Connect issuers whose
    /// ID tokens sign users in, parsed and checked by `delivery::oidc`. Empty: none.
    #[serde(default, rename = "oidc_providers")]
    pub providers: String,
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

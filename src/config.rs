//! Configuration from environment variables (names are the upper-case field names).
//! Every variable and its default is documented in `.env.example`.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::address;

#[derive(Clone, Deserialize, Serialize)]
pub struct Config {
    #[serde(default = "defaults::bind")]
    pub bind: String,
    #[serde(default = "defaults::database_path")]
    pub database_path: String,
    #[serde(default = "defaults::db_pool_size")]
    pub db_pool_size: usize,

    /// Secret app token for the upstream `useradd` call. Never logged or returned.
    #[serde(default)]
    pub app_token: String,
    /// Key for hashing stored OTPs; when empty a random key is generated once and kept in the database.
    #[serde(default)]
    pub otp_secret: String,

    #[serde(default = "defaults::upstream_url")]
    pub upstream_url: String,
    #[serde(default = "defaults::upstream_connect_timeout_secs")]
    pub upstream_connect_timeout_secs: u64,
    #[serde(default = "defaults::upstream_timeout_secs")]
    pub upstream_timeout_secs: u64,
    #[serde(default = "defaults::token_expiry_mins")]
    pub token_expiry_mins: u64,

    #[serde(default = "defaults::otp_length")]
    pub otp_length: usize,
    #[serde(default = "defaults::otp_ttl_secs")]
    pub otp_ttl_secs: u64,
    #[serde(default = "defaults::otp_max_attempts")]
    pub otp_max_attempts: u32,
    #[serde(default = "defaults::otp_resend_secs")]
    pub otp_resend_secs: u64,
    #[serde(default = "defaults::otp_message")]
    pub otp_message: String,
    /// `phone:otp` pairs, comma-separated, that accept a fixed code and send nothing.
    #[serde(default)]
    pub test_otps: String,

    #[serde(default = "defaults::otp_sender")]
    pub otp_sender: String,
    #[serde(default)]
    pub email_sender: Option<String>,

    #[serde(default = "defaults::limit_start_per_phone")]
    pub limit_start_per_phone_per_hour: u32,
    #[serde(default = "defaults::limit_start_per_ip")]
    pub limit_start_per_ip_per_hour: u32,
    #[serde(default = "defaults::limit_verify_per_phone")]
    pub limit_verify_per_phone_per_hour: u32,
    #[serde(default = "defaults::limit_verify_per_ip")]
    pub limit_verify_per_ip_per_hour: u32,

    #[serde(default)]
    pub sms_http_url: String,
    #[serde(default)]
    pub sms_http_auth: String,
    #[serde(default = "defaults::sms_http_body")]
    pub sms_http_body: String,
    #[serde(default = "defaults::sms_http_timeout_secs")]
    pub sms_http_timeout_secs: u64,

    #[serde(default)]
    pub smtp_host: String,
    #[serde(default = "defaults::smtp_port")]
    pub smtp_port: u16,
    #[serde(default = "defaults::smtp_tls")]
    pub smtp_tls: String,
    #[serde(default)]
    pub smtp_user: String,
    #[serde(default)]
    pub smtp_password: String,
    #[serde(default)]
    pub smtp_from: String,
    #[serde(default = "defaults::email_subject")]
    pub email_subject: String,

    // --- Sessions, contact sync, notifications (issue 3) ---
    /// Live sessions per user; a login beyond it evicts the least recently used.
    #[serde(default = "defaults::max_devices")]
    pub max_devices: usize,
    /// Most phones in one `getcontacts` / `delcontacts` request (`TOOMANY` beyond).
    #[serde(default = "defaults::max_contacts_per_request")]
    pub max_contacts_per_request: usize,
    /// Upstream address that "contact joined" messages come from.
    #[serde(default = "defaults::system_address")]
    pub system_address: String,
    /// First retry delay of a failed outbox message; doubles per attempt up to an hour.
    #[serde(default = "defaults::outbox_retry_secs")]
    pub outbox_retry_secs: u64,

    // --- Operations (issue 6): logs, HTTP limits, readiness, shutdown ---
    /// `text` for people, `json` (one object per line) for log shippers.
    #[serde(default = "defaults::log_format")]
    pub log_format: String,
    /// Browser origins allowed by CORS, comma-separated; `*` allows any; empty turns CORS off.
    #[serde(default)]
    pub cors_origins: String,
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// A request still unanswered after this long gets `TIMEOUT`.
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// How long SIGTERM/SIGINT waits for in-flight requests before closing them.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// 0: `/readyz` does not contact upstream; N: it does, and keeps the answer N seconds.
    #[serde(default)]
    pub readyz_upstream_cache_secs: u64,
}

mod defaults {
    pub fn bind() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn database_path() -> String {
        "./otpgate.db".into()
    }
    pub fn db_pool_size() -> usize {
        4
    }
    pub fn upstream_url() -> String {
        "https://api.mesibo.com/backend/".into()
    }
    pub fn upstream_connect_timeout_secs() -> u64 {
        5
    }
    pub fn upstream_timeout_secs() -> u64 {
        10
    }
    pub fn token_expiry_mins() -> u64 {
        525_600
    }
    pub fn otp_length() -> usize {
        6
    }
    pub fn otp_ttl_secs() -> u64 {
        300
    }
    pub fn otp_max_attempts() -> u32 {
        5
    }
    pub fn otp_resend_secs() -> u64 {
        30
    }
    pub fn otp_message() -> String {
        "Your code is {otp}".into()
    }
    pub fn otp_sender() -> String {
        "log".into()
    }
    pub fn limit_start_per_phone() -> u32 {
        10
    }
    pub fn limit_start_per_ip() -> u32 {
        100
    }
    pub fn limit_verify_per_phone() -> u32 {
        30
    }
    pub fn limit_verify_per_ip() -> u32 {
        300
    }
    pub fn sms_http_body() -> String {
        r#"{"to":"{phone}","text":"{message}"}"#.into()
    }
    pub fn sms_http_timeout_secs() -> u64 {
        10
    }
    pub fn smtp_port() -> u16 {
        587
    }
    pub fn smtp_tls() -> String {
        "starttls".into()
    }
    pub fn email_subject() -> String {
        "Your login code".into()
    }

    // Sessions, contact sync, notifications (issue 3).
    pub fn max_devices() -> usize {
        8
    }
    pub fn max_contacts_per_request() -> usize {
        5000
    }
    pub fn system_address() -> String {
        "system".into()
    }
    pub fn outbox_retry_secs() -> u64 {
        5
    }
    // Operations (issue 6)
    pub fn log_format() -> String {
        "text".into()
    }
    /// A contact upload of MAX_CONTACTS_PER_REQUEST (5000) formatted phones fits.
    pub fn max_body_bytes() -> usize {
        256 * 1024
    }
    pub fn request_timeout_secs() -> u64 {
        30
    }
    pub fn shutdown_grace_secs() -> u64 {
        20
    }
}

impl Config {
    /// Reads the process environment. The error is one line naming the offending variable.
    pub fn from_env() -> Result<Config, String> {
        Self::from_vars(std::env::vars())
    }

    /// Reads configuration from `(NAME, value)` pairs; unknown names are ignored.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars.into_iter().map(|(k, v)| (k.into(), v.into()));
        let mut config: Config = envy::from_iter(vars).map_err(|e| format!("invalid configuration: {e}"))?;
        // An empty line in an env file means "not set".
        config.email_sender = config.email_sender.filter(|s| !s.is_empty());
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if !(4..=10).contains(&self.otp_length) {
            return bad("OTP_LENGTH", "must be between 4 and 10");
        }
        if self.otp_ttl_secs == 0 {
            return bad("OTP_TTL_SECS", "must be at least 1");
        }
        if self.otp_max_attempts == 0 {
            return bad("OTP_MAX_ATTEMPTS", "must be at least 1");
        }
        if self.db_pool_size == 0 {
            return bad("DB_POOL_SIZE", "must be at least 1");
        }
        if !self.otp_message.contains("{otp}") {
            return bad("OTP_MESSAGE", "must contain {otp}");
        }
        if !matches!(self.otp_sender.as_str(), "log" | "http" | "smtp") {
            return bad("OTP_SENDER", "must be one of: log, http, smtp");
        }
        if let Some(email_sender) = &self.email_sender {
            if !matches!(email_sender.as_str(), "log" | "smtp") {
                return bad("EMAIL_SENDER", "must be one of: log, smtp");
            }
        }
        if !matches!(self.smtp_tls.as_str(), "starttls" | "tls" | "none") {
            return bad("SMTP_TLS", "must be one of: starttls, tls, none");
        }
        self.test_otps()?;
        self.validate_sessions()?;
        self.validate_operations()?;
        Ok(())
    }

    /// The settings of sessions, contact sync and notifications (issue 3).
    fn validate_sessions(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if self.max_devices == 0 {
            return bad("MAX_DEVICES", "must be at least 1");
        }
        if self.max_contacts_per_request == 0 {
            return bad("MAX_CONTACTS_PER_REQUEST", "must be at least 1");
        }
        if self.system_address.trim().is_empty() {
            return bad("SYSTEM_ADDRESS", "must not be empty");
        }
        if self.outbox_retry_secs == 0 {
            return bad("OUTBOX_RETRY_SECS", "must be at least 1");
        }
        Ok(())
    }

    fn validate_operations(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("LOG_FORMAT", "must be text or json");
        }
        if self.max_body_bytes < 1024 {
            return bad("MAX_BODY_BYTES", "must be at least 1024");
        }
        if self.request_timeout_secs == 0 {
            return bad("REQUEST_TIMEOUT_SECS", "must be at least 1");
        }
        for origin in self.cors_origin_list() {
            let well_formed = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://")) && !origin.ends_with('/') && !origin.contains(' '));
            if !well_formed {
                return bad("CORS_ORIGINS", "must be * or origins like https://app.example.com, comma-separated");
            }
        }
        Ok(())
    }

    /// `CORS_ORIGINS` split into its entries.
    pub fn cors_origin_list(&self) -> Vec<&str> {
        self.cors_origins.split(',').map(str::trim).filter(|o| !o.is_empty()).collect()
    }

    /// Parses `TEST_OTPS` into normalised phone → fixed code.
    pub fn test_otps(&self) -> Result<HashMap<String, String>, String> {
        let mut map = HashMap::new();
        for entry in self.test_otps.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once(':').and_then(|(phone, code)| {
                let phone = address::normalize_phone(phone)?;
                let code = code.trim();
                let valid = (4..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit());
                valid.then(|| (phone, code.to_string()))
            });
            match parsed {
                Some((phone, code)) => map.insert(phone, code),
                None => return Err("invalid configuration: TEST_OTPS entries must look like 18005550000:123456".into()),
            };
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = load(&[]).unwrap();
        assert_eq!(config.bind, "127.0.0.1:8080");
        assert_eq!(config.otp_ttl_secs, 300);
        assert_eq!(config.otp_max_attempts, 5);
        assert_eq!(config.otp_resend_secs, 30);
        assert_eq!(config.otp_sender, "log");
        assert_eq!(config.token_expiry_mins, 525_600);
        assert_eq!(config.upstream_url, "https://api.mesibo.com/backend/");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("OTP_TTL_SECS", "five"),
            ("OTP_TTL_SECS", "0"),
            ("OTP_LENGTH", "3"),
            ("OTP_SENDER", "pigeon"),
            ("EMAIL_SENDER", "http"),
            ("SMTP_TLS", "maybe"),
            ("OTP_MESSAGE", "no code here"),
            ("TEST_OTPS", "18005550000"),
            ("TEST_OTPS", "123:123456"),
            ("MAX_DEVICES", "0"),
            ("MAX_CONTACTS_PER_REQUEST", "0"),
            ("OUTBOX_RETRY_SECS", "0"),
            ("LOG_FORMAT", "xml"),
            ("MAX_BODY_BYTES", "10"),
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("CORS_ORIGINS", "app.example.com"),
            ("CORS_ORIGINS", "https://app.example.com/"),
        ] {
            let error = load(&[(name, value)]).err().unwrap_or_else(|| panic!("{name}={value} was accepted"));
            assert!(error.contains(name), "{error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    /// `.env.example` must document every variable, with the real defaults, in a form a shell can load.
    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let text = include_str!("../.env.example");
        let mut vars = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {line}"));
            let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
            let unquoted = unquoted.or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')));
            assert!(unquoted.is_some() || !value.contains(' '), "{name}: a value with spaces must be quoted for the shell");
            vars.push((name.to_string(), unquoted.unwrap_or(value).to_string()));
        }
        let from_example = serde_json::to_value(Config::from_vars(vars.clone()).unwrap()).unwrap();
        let defaults = serde_json::to_value(load(&[]).unwrap()).unwrap();
        assert_eq!(from_example, defaults, ".env.example values differ from the defaults");
        for field in defaults.as_object().unwrap().keys() {
            assert!(
                vars.iter().any(|(name, _)| name == &field.to_uppercase()),
                "{} is not documented in .env.example",
                field.to_uppercase()
            );
        }
    }

    #[test]
    fn test_otps_are_normalised() {
        let config = load(&[("TEST_OTPS", "+1 800 555 0000:123456, 18005550001:0000")]).unwrap();
        let map = config.test_otps().unwrap();
        assert_eq!(map.get("18005550000").map(String::as_str), Some("123456"));
        assert_eq!(map.get("18005550001").map(String::as_str), Some("0000"));
    }
}

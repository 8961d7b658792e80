//! Configuration from environment variables, grouped into typed sections: `smtp.host` is
//! SMTP_HOST, `otp.length` is OTP_LENGTH, `http.bind` is BIND. A section is read from
//! every variable; each field's variable is its serde name in upper case (the field's
//! name, or its `rename`). Every variable and its default is in `.env.example`.
//!
//! The files hold the sections by concern; `values` the kinds of value they take
//! (secrets, lists, JSON, choices), parsed here once; `validate` the checks across them.
//! Every check of the settings' values is made here, as they are read (what `serve`
//! needs of the world beyond them is `runtime::check_surroundings`), so that `serve` and
//! `check-config` refuse the same settings.

mod accounts;
mod apps;
mod codes;
mod defences;
mod http;
mod operations;
mod redis_url;
mod routes;
mod senders;
mod storage;
mod upstream;
mod validate;
mod values;

use serde::Serialize;

pub use accounts::{ContactSettings, FileSettings, OutboxSettings, SessionSettings};
pub use apps::{AddressClaim, AppEntry, AppsSettings, Dialect, OidcProvider, OidcSettings, ShareEntry, SmsAutofill, StartEntry, UrlsEntry};
pub use codes::{
    fill_message, gsm7_septets, looks_like_an_app_id, normalize_phone, sms_bytes, OtpSettings, SenderKind, SmsEncoding, TestCode,
    MAX_SHOWN_APPID_CHARS,
};
pub use defences::{CaptchaProvider, CaptchaSettings, Country, LimitSettings, PhoneSettings, SmsBudgetSettings};
pub use http::{parse_trusted_proxies, HttpSettings, ProxyHeader};
pub use operations::{AdminSettings, LogFormat, LoggingSettings};
pub use redis_url::RedisTopology;
pub use routes::{
    route_in, Channel, HttpInstance, MessageBirdInstance, ProviderInstance, Providers, RouteSettings, Routing, TwilioInstance,
    VonageInstance, VonageSignatureMethod, WebhookInstance, WhatsappInstance,
};
pub use senders::SmsBreakerSettings;
pub use senders::{
    CourierSettings, EmailSenderKind, EmailSettings, MessageBirdSettings, ProviderSettings, SmsHttpSettings, SmtpSettings, SmtpTls,
    TwilioSettings, VonageSettings, WebhookSettings,
};
pub use storage::{DatabaseSettings, DbStatements, RateLimitOnError, RedisSettings};
pub use upstream::{UpstreamSettings, BUILTIN_UPSTREAM, BUILTIN_UPSTREAM_WARNING};
pub use values::{Json, List, Secret};

#[derive(Clone, Serialize)]
pub struct Config {
    /// The public listener. (`BIND`, `CORS_ORIGINS`, `TRUSTED_PROXIES`, `MAX_BODY_BYTES`...)
    pub http: HttpSettings,
    /// The SQLite file or PostgreSQL. (`DATABASE_*`, `DB_*`)
    pub database: DatabaseSettings,
    /// The shared rate limits. (`REDIS_*`, `RATE_LIMIT_ON_ERROR`)
    pub redis: RedisSettings,
    /// The platform's backend API. (`UPSTREAM_*`, `APP_TOKEN`, `TOKEN_EXPIRY_MINS`...)
    pub upstream: UpstreamSettings,
    /// One-time codes. (`OTP_*`, `TEST_OTPS`, `REQUIRE_CHALLENGE`)
    pub otp: OtpSettings,
    /// E-mail logins. (`EMAIL_*`)
    pub email: EmailSettings,
    /// What the apps are told. (`API_DIALECT`, `PUBLIC_URL`, `APP_NAMES`, `APP_SETTINGS`)
    pub apps: AppsSettings,
    /// ID-token sign-in. (`OIDC_*`)
    pub oidc: OidcSettings,
    /// (`MAX_DEVICES`)
    pub sessions: SessionSettings,
    /// Contact sync. (`MAX_CONTACTS_*`)
    pub contacts: ContactSettings,
    /// Notices. (`OUTBOX_*`, `SYSTEM_ADDRESS`)
    pub outbox: OutboxSettings,
    /// Uploads and photos. (`FILES_DIR`, `MAX_UPLOAD_BYTES`, `PHOTO_*`...)
    pub files: FileSettings,
    /// Rate limits per key; 0 turns one off. (`LIMIT_*`)
    pub limit: LimitSettings,
    /// Which numbers are served. (`PHONE_*`, `DEFAULT_REGION`, `*_COUNTRIES`)
    pub phone: PhoneSettings,
    /// (`SMS_BUDGET_*`)
    pub sms_budget: SmsBudgetSettings,
    /// CAPTCHA at login start. (`CAPTCHA_*`)
    pub captcha: CaptchaSettings,
    /// (`PROVIDER_*`)
    pub provider: ProviderSettings,
    /// The generic HTTP SMS gateway (`OTP_SENDER=http`). (`SMS_HTTP_*`)
    pub sms_http: SmsHttpSettings,
    /// E-mail delivery (`smtp`). (`SMTP_*`)
    pub smtp: SmtpSettings,
    /// Twilio (`twilio`). (`TWILIO_*`)
    pub twilio: TwilioSettings,
    /// Vonage (`vonage`). (`VONAGE_*`)
    pub vonage: VonageSettings,
    /// MessageBird (`messagebird`). (`MESSAGEBIRD_*`)
    pub messagebird: MessageBirdSettings,
    /// The signed webhook (`webhook`). (`WEBHOOK_*`)
    pub webhook: WebhookSettings,
    /// Named provider instances and the routes over them. (`SMS_PROVIDERS`, `SMS_ROUTES`)
    pub routing: RouteSettings,
    /// The durable delivery of code messages. (`COURIER_*`)
    pub courier: CourierSettings,
    /// The circuit breaker of each SMS provider instance. (`SMS_BREAKER_*`)
    pub sms_breaker: SmsBreakerSettings,
    /// (`LOG_FORMAT`)
    pub logging: LoggingSettings,
    /// The operator API. (`ADMIN_*`, `AUDIT_RETENTION_DAYS`)
    pub admin: AdminSettings,
}

/// A section read from the variables; an error names the variable.
fn section<T: serde::de::DeserializeOwned>(vars: &[(String, String)]) -> Result<T, String> {
    envy::from_iter(vars.iter().cloned()).map_err(|e| format!("invalid configuration: {e}"))
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
        let vars: Vec<(String, String)> = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let mut config = Config {
            http: section(&vars)?,
            database: section(&vars)?,
            redis: section(&vars)?,
            upstream: section(&vars)?,
            otp: section(&vars)?,
            email: section(&vars)?,
            apps: section(&vars)?,
            oidc: section(&vars)?,
            sessions: section(&vars)?,
            contacts: section(&vars)?,
            outbox: section(&vars)?,
            files: section(&vars)?,
            limit: section(&vars)?,
            phone: section(&vars)?,
            sms_budget: section(&vars)?,
            captcha: section(&vars)?,
            provider: section(&vars)?,
            sms_http: section(&vars)?,
            smtp: section(&vars)?,
            twilio: section(&vars)?,
            vonage: section(&vars)?,
            messagebird: section(&vars)?,
            webhook: section(&vars)?,
            routing: section(&vars)?,
            courier: section(&vars)?,
            sms_breaker: section(&vars)?,
            logging: section(&vars)?,
            admin: section(&vars)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Every setting by its variable's name in lower case (`smtp_host`, `otp_length`): the
    /// sections flattened back into the names operators set.
    pub fn settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(sections) = serde_json::to_value(self).expect("the configuration serialises") else {
            unreachable!("a struct serialises to an object")
        };
        let mut flat = serde_json::Map::new();
        for (_, section) in sections {
            let serde_json::Value::Object(settings) = section else { unreachable!("a section serialises to an object") };
            flat.extend(settings);
        }
        flat
    }

    /// Every setting's variable name (`BIND`, `OTP_LENGTH`...).
    pub fn setting_names() -> Vec<String> {
        let defaults = Config::from_vars(std::iter::empty::<(String, String)>()).expect("the defaults are a valid configuration");
        defaults.settings().keys().map(|name| name.to_uppercase()).collect()
    }

    /// A warning for each of `names` that starts as a setting does (`OTP_`, `SMTP_`,
    /// `MAX_`...) but is none, naming the setting closest to it: otherwise a misspelled
    /// setting (`OTP_LENGHT`) would be ignored without a word. Variables read elsewhere
    /// (`RUST_LOG`) start as no setting does.
    pub fn unknown_variable_warnings<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Vec<String> {
        let known = Config::setting_names();
        let prefixes: std::collections::BTreeSet<&str> = known.iter().filter_map(|name| name.find('_').map(|end| &name[..=end])).collect();
        let mut warnings = Vec::new();
        for name in names {
            let name = name.as_ref();
            if known.iter().any(|k| k == name) || !prefixes.iter().any(|prefix| name.starts_with(prefix)) {
                continue;
            }
            let closest = known.iter().min_by_key(|k| edit_distance(k, name)).expect("there are settings");
            warnings.push(format!("{name} is not a setting of otpgate and is ignored (the closest setting is {closest})"));
        }
        warnings
    }

    /// True when BIND listens on a loopback address only.
    pub fn binds_loopback_only(&self) -> bool {
        validate::is_loopback_bind(&self.http.bind)
    }

    pub fn dialect(&self) -> Dialect {
        self.apps.api_dialect
    }

    /// The directory of uploaded files: FILES_DIR, or `files` beside DATABASE_PATH.
    pub fn files_directory(&self) -> std::path::PathBuf {
        if let Some(dir) = &self.files.dir {
            return dir.into();
        }
        let database = std::path::Path::new(&self.database.path);
        database.parent().unwrap_or(std::path::Path::new(".")).join("files")
    }

    /// The base URL apps reach the service at: `PUBLIC_URL`, or else `http://` and BIND
    /// (a wildcard address replaced by loopback), without a trailing slash.
    pub fn public_base_url(&self) -> String {
        if let Some(url) = &self.apps.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let address = self.http.bind.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
        format!("http://{address}")
    }
}

/// The Levenshtein distance: characters inserted, deleted or replaced to turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let replaced = previous[j] + usize::from(ca != *cb);
            current.push(replaced.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::validate::{postgres_url_hosts, MIN_ADMIN_TOKEN_CHARS};
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = load(&[]).unwrap();
        assert_eq!(config.http.bind, "127.0.0.1:8080");
        assert_eq!(config.otp.ttl_secs, 300);
        assert_eq!(config.otp.max_attempts, 5);
        assert_eq!(config.otp.resend_secs, 30);
        assert_eq!(config.otp.sender, "log");
        assert_eq!(config.upstream.token_expiry_mins, 525_600);
        assert_eq!(config.upstream.url, "https://api.mesibo.com/backend/");
    }

    #[test]
    fn a_setting_left_empty_is_unset() {
        let unset = load(&[]).unwrap();
        let empty = load(&[("SMTP_HOST", ""), ("OTP_SECRET", ""), ("DATABASE_URL", ""), ("FILES_DIR", "")]).unwrap();
        for config in [&unset, &empty] {
            assert_eq!(config.smtp.host, None);
            assert!(config.otp.secret.is_none() && config.database.url.is_none());
            assert_eq!(config.files_directory(), std::path::Path::new(".").join("files"));
        }
        let set = load(&[("SMTP_HOST", " mail.example.com"), ("OTP_SECRET", "  ")]).unwrap();
        assert_eq!(set.smtp.host.as_deref(), Some(" mail.example.com"), "the value as set");
        assert_eq!(set.otp.secret.as_ref().map(|secret| secret.expose()), Some("  "), "blanks are a value");
    }

    #[test]
    fn postgres_urls_in_libpq_forms_are_accepted() {
        for (url, hosts) in [
            ("postgres://u:p@db.example.com/otpgate", 1),
            ("postgresql://db:5432/otpgate?sslmode=require", 1),
            ("postgres://u@h1:5432,h2:5433/db?target_session_attrs=read-write", 2),
            ("postgres://u@[::1]:5432,[fd00::2]/db", 2),
            ("postgres:///db?host=h1,h2&port=5432,5433", 2),
            ("postgres://u@/db?host=h1", 1),
        ] {
            assert_eq!(postgres_url_hosts(url), Ok(hosts), "{url}");
            let with_secret = [("DATABASE_URL", url), ("OTP_SECRET", "s")];
            assert!(load(&with_secret).is_ok(), "{url}");
        }
        for url in [
            "mysql://db/otpgate",
            "postgres:///db",
            "postgres://u@h1,,h2/db",
            "postgres://h1:port/db",
            "postgres://[::1/db",
            "host=h1 dbname=db",
        ] {
            assert!(postgres_url_hosts(url).is_err(), "{url} was accepted");
            let refused = load(&[("DATABASE_URL", url), ("OTP_SECRET", "s")]).err().unwrap_or_default();
            assert!(refused.contains("DATABASE_URL must be a URL"), "{url}: {refused}");
        }
        for name in ["DB_CONNECT_TIMEOUT_MS", "DB_QUERY_TIMEOUT_MS"] {
            let refused = load(&[("DATABASE_URL", "postgres://db/otpgate"), ("OTP_SECRET", "s"), (name, "0")]).err().unwrap_or_default();
            assert!(refused.contains(name), "{name}=0: {refused}");
        }
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
            ("MAX_DEVICES", "0"),
            ("MAX_CONTACTS_PER_REQUEST", "0"),
            ("OUTBOX_RETRY_SECS", "0"),
            ("LOG_FORMAT", "xml"),
            ("MAX_BODY_BYTES", "10"),
            ("MAX_CONTACTS_BODY_BYTES", "2048"),
            ("LIMIT_UPLOAD_BYTES_PER_USER_PER_DAY", "1000000"),
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("REQUEST_TIMEOUT_SECS", "10"),
            ("CORS_ORIGINS", "app.example.com"),
            ("CORS_ORIGINS", "https://app.example.com/"),
            ("API_DIALECT", "xml"),
            ("BIND", "8080"),
            ("BIND", "localhost:http"),
            ("UPSTREAM_URL", "api.mesibo.com/backend"),
            ("UPSTREAM_URL", "ftp://api.example.com/"),
            ("PUBLIC_URL", "login.example.com"),
        ] {
            let error = load(&[(name, value)]).err().unwrap_or_else(|| panic!("{name}={value} was accepted"));
            assert!(error.contains(name), "{error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn json_settings_are_parsed_at_load_and_their_errors_name_them() {
        for (name, value) in [
            ("OTP_MESSAGE_PER_APP", r#"{"com.a":"no code"}"#),
            ("OTP_MESSAGE_PER_APP", "[1]"),
            ("APP_NAMES", "Alpha"),
            ("APP_SETTINGS", "{not json"),
            ("APP_SETTINGS", r#"{"default":{"share":{"txt":"x"}}}"#),
            ("APP_SETTINGS", r#"{"default":{"start":{"delay":"soon"}}}"#),
            ("OIDC_PROVIDERS", r#"{"corp":{"client_ids":["x"]}}"#),
        ] {
            let error = load(&[(name, value)]).err().unwrap_or_else(|| panic!("{name}={value} was accepted"));
            assert!(error.starts_with(&format!("invalid configuration: {name} ")), "{error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
        let error = load(&[("OTP_MESSAGE_PER_APP", r#"{"com.a":"{otp}","com.b":"no code"}"#)]).err().unwrap_or_default();
        assert!(error.ends_with(r#"template for "com.b" must contain {otp}"#), "{error}");

        let config = load(&[("APP_NAMES", r#"{"com.a":"Alpha"}"#), ("APP_SETTINGS", " "), ("OTP_MESSAGE_PER_APP", "")]).unwrap();
        assert_eq!(config.apps.names["com.a"], "Alpha");
        assert!(config.apps.settings.is_empty() && config.otp.message_per_app.is_empty(), "blank: none set");
        assert_eq!(config.settings()["app_names"], r#"{"com.a":"Alpha"}"#, "printed as set");
    }

    #[test]
    fn phone_settings_are_read_at_load() {
        use phonenumber::country::Id;
        let vars = [("DEFAULT_REGION", " gb "), ("BLOCKED_COUNTRIES", "GB, +33"), ("SMS_BUDGET_HOME_COUNTRIES", "DE, +44, 1")];
        let config = load(&vars).unwrap();
        assert_eq!(config.phone.default_region, Some(Id::GB));
        assert_eq!(&config.phone.blocked_countries[..], [Country::Region(Id::GB), Country::CallingCode(33)]);
        assert_eq!(config.sms_budget.home_calling_codes(), [49, 44, 1]);
        assert_eq!(config.settings()["blocked_countries"], "GB, +33", "printed as set");
        assert_eq!(load(&[("DEFAULT_REGION", "DE")]).unwrap().sms_budget.home_calling_codes(), [49], "none listed: DEFAULT_REGION's");
        assert!(load(&[("DEFAULT_REGION", " ")]).unwrap().sms_budget.home_calling_codes().is_empty());
        for (name, value) in [
            ("DEFAULT_REGION", "Narnia"),
            ("ALLOWED_COUNTRIES", "Narnia"),
            ("BLOCKED_COUNTRIES", "GB, 1000"),
            ("SMS_BUDGET_HOME_COUNTRIES", "Narnia"),
            ("TEST_OTPS", "18005550000"),
        ] {
            let error = load(&[(name, value)]).err().unwrap_or_else(|| panic!("{name}={value} was accepted"));
            assert!(error.starts_with(&format!("invalid configuration: {name} ")), "{error}");
        }
    }

    #[test]
    fn the_senders_in_use_need_their_settings() {
        let http = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")];
        let smtp = [("OTP_SENDER", "smtp"), ("SMTP_HOST", "mail.example.com")];
        let twilio = [("OTP_SENDER", "twilio"), ("TWILIO_ACCOUNT_SID", "AC1"), ("TWILIO_AUTH_TOKEN", "token")];
        let webhook = [("OTP_SENDER", "webhook"), ("WEBHOOK_URL", "https://hooks.example.com/otp")];
        for (vars, refusal) in [
            (&[("OTP_SENDER", "http")][..], "SMS_HTTP_URL is required when the http sender is used"),
            (&[&http[..], &[("SMS_HTTP_BODY", r#"{"text":"{message}"}"#)]].concat(), "SMS_HTTP_BODY has no {phone}"),
            (&[&http[..], &[("SMS_HTTP_BODY", "to={phone}&text={message}")]].concat(), "SMS_HTTP_BODY must be a JSON template"),
            (&[("EMAIL_SENDER", "smtp")], "SMTP_HOST is required when the smtp sender is used"),
            (&smtp, "SMTP_FROM must be an address"),
            (&[&smtp[..], &[("SMTP_FROM", "nobody")]].concat(), "SMTP_FROM must be an address"),
            (&[("OTP_SENDER", "twilio"), ("TWILIO_ACCOUNT_SID", "AC1")], "TWILIO_AUTH_TOKEN required when the twilio sender is used"),
            (&twilio, "TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID is required"),
            (&[("OTP_SENDER", "vonage")], "VONAGE_API_KEY, VONAGE_API_SECRET, VONAGE_FROM required when the vonage sender is used"),
            (&[("OTP_SENDER", "messagebird"), ("MESSAGEBIRD_ORIGINATOR", "Example")], "MESSAGEBIRD_ACCESS_KEY required"),
            (&webhook, "WEBHOOK_SECRET required when the webhook sender is used"),
            (&[&webhook[..], &[("WEBHOOK_SECRET", "whsec_!")]].concat(), "WEBHOOK_SECRET after whsec_ must be base64"),
        ] {
            let error = load(vars).err().unwrap_or_else(|| panic!("{vars:?} was accepted"));
            assert!(error.starts_with("invalid configuration: ") && error.contains(refusal), "{vars:?}: {error}");
        }
        for vars in [
            &[&http[..], &[("SMS_HTTP_BODY", r#"{"to":"{phone}","text":"{message}","n":1}"#)]].concat()[..],
            &[&smtp[..], &[("SMTP_FROM", "Login <login@example.com>")]].concat(),
            &[&twilio[..], &[("TWILIO_MESSAGING_SERVICE_SID", "MG1")]].concat(),
            &[&webhook[..], &[("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]].concat(),
        ] {
            assert!(load(vars).is_ok(), "{vars:?}: {:?}", load(vars).err());
        }
        // A sender's settings matter only when it is in use.
        assert!(load(&[("SMTP_FROM", "nobody"), ("SMS_HTTP_BODY", "{}"), ("WEBHOOK_SECRET", "whsec_!")]).is_ok());
    }

    #[test]
    fn an_operator_api_off_loopback_is_warned_about() {
        let token = "t".repeat(MIN_ADMIN_TOKEN_CHARS);
        let warned = |bind: &str| {
            let config = load(&[("ADMIN_BIND", bind), ("ADMIN_TOKEN", &token)]).unwrap();
            config.warnings().iter().any(|w| w.starts_with("ADMIN_BIND is not a loopback address") && w.contains("TLS"))
        };
        for bind in ["0.0.0.0:9090", "10.0.0.5:9090", "[::]:9090", "admin.internal:9090"] {
            assert!(warned(bind), "ADMIN_BIND={bind}");
        }
        for bind in ["127.0.0.1:9090", "[::1]:9090", "localhost:9090", ""] {
            assert!(!warned(bind), "ADMIN_BIND={bind}");
        }
    }

    /// `.env.example` must document every variable, with the real defaults, in a form a shell can load.
    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let text = include_str!("../../.env.example");
        let mut vars = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (name, value) = line.split_once('=').unwrap_or_else(|| panic!("not NAME=value: {line}"));
            let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
            let unquoted = unquoted.or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')));
            assert!(unquoted.is_some() || !value.contains(' '), "{name}: a value with spaces must be quoted for the shell");
            vars.push((name.to_string(), unquoted.unwrap_or(value).to_string()));
        }
        let (example, default) = (Config::from_vars(vars.clone()).unwrap(), load(&[]).unwrap());
        let (from_example, defaults) = (example.settings(), default.settings());
        assert_eq!(from_example, defaults, ".env.example values differ from the defaults");
        // Secrets serialise redacted; the one with a default is compared by value.
        assert_eq!(example.sms_http.body, default.sms_http.body, "SMS_HTTP_BODY in .env.example differs from the default");
        for field in defaults.keys() {
            assert!(
                vars.iter().any(|(name, _)| name == &field.to_uppercase()),
                "{} is not documented in .env.example",
                field.to_uppercase()
            );
        }
    }

    #[test]
    fn a_variable_that_looks_like_a_setting_is_warned_about_with_the_closest_one() {
        assert_eq!(edit_distance("OTP_LENGHT", "OTP_LENGTH"), 2);
        assert_eq!(edit_distance("", "ABC"), 3);
        assert_eq!(edit_distance("SMTP_HOST", "SMTP_HOST"), 0);
        let warnings = Config::unknown_variable_warnings(["OTP_LENGHT", "SMTP_PASWORD", "MAX_DEVICE"]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        for (warning, (name, closest)) in
            warnings.iter().zip([("OTP_LENGHT", "OTP_LENGTH"), ("SMTP_PASWORD", "SMTP_PASSWORD"), ("MAX_DEVICE", "MAX_DEVICES")])
        {
            assert!(warning.starts_with(&format!("{name} is not a setting")), "{warning}");
            assert!(warning.ends_with(&format!("the closest setting is {closest})")), "{warning}");
        }
        // Every setting is known, and variables that start as no setting does are not otpgate's.
        let mut quiet = Config::setting_names();
        quiet.extend(["RUST_LOG", "PATH", "HOME", "BINDING", "HTTPS_PROXY", "otp_lenght"].map(String::from));
        assert_eq!(Config::unknown_variable_warnings(&quiet), Vec::<String>::new());
        assert!(Config::setting_names().contains(&"SMS_HTTP_BODY".to_string()));
    }

    #[test]
    fn the_builtin_upstream_is_refused_unless_bind_is_loopback() {
        for bind in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
            assert!(load(&[("UPSTREAM_URL", "builtin"), ("BIND", bind)]).is_ok(), "{bind}");
        }
        for bind in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080", "example.com:8080"] {
            let error = load(&[("UPSTREAM_URL", "builtin"), ("BIND", bind)]).err().unwrap_or_else(|| panic!("{bind} accepted"));
            assert!(error.contains("UPSTREAM_URL") && error.contains("loopback"), "{error}");
        }
    }

    #[test]
    fn the_public_url_defaults_to_bind() {
        assert_eq!(load(&[]).unwrap().public_base_url(), "http://127.0.0.1:8080");
        assert_eq!(load(&[("BIND", "0.0.0.0:9000")]).unwrap().public_base_url(), "http://127.0.0.1:9000");
        assert_eq!(load(&[("PUBLIC_URL", "https://login.example.com/")]).unwrap().public_base_url(), "https://login.example.com");
    }
}

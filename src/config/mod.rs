//! Configuration from environment variables. A setting's variable is its field name in
//! upper case, after its section's prefix: `smtp.host` is SMTP_HOST, `otp.length` is
//! OTP_LENGTH, `bind` is BIND. Every variable and its default is in `.env.example`.

mod redis_url;

use serde::{Deserialize, Serialize};

pub use redis_url::RedisTopology;

#[derive(Clone, Deserialize, Serialize)]
pub struct Config {
    #[serde(default = "defaults::bind")]
    pub bind: String,
    #[serde(default = "defaults::database_path")]
    pub database_path: String,
    /// SQLite: reader connections; PostgreSQL: connections per instance. 0: sized to the
    /// HTTP workers (see `runtime::pool_size`).
    #[serde(default)]
    pub db_pool_size: usize,
    /// `postgres://user:password@host/db`: keep the data in PostgreSQL, shared by several
    /// instances; empty: the SQLite file at DATABASE_PATH. `?sslmode=require` asks for TLS.
    /// Several hosts (`host1:5432,host2:5432`, or `?host=h1,h2`) are tried in turn;
    /// `?target_session_attrs=read-write` skips standbys.
    #[serde(default)]
    pub database_url: String,
    /// PostgreSQL: longest one host may take to accept a connection and finish its
    /// handshake (TLS, startup, authentication, the read-write check); then the next is tried.
    #[serde(default = "defaults::db_connect_timeout_ms")]
    pub db_connect_timeout_ms: u64,
    /// PostgreSQL: longest one operation waits for the server's answers (a frozen server
    /// answers nothing); then it fails, or runs again on a fresh connection where that is safe.
    #[serde(default = "defaults::db_query_timeout_ms")]
    pub db_query_timeout_ms: u64,
    /// `redis://host:6379` (or `redis+cluster://…`, `redis+sentinel://…/master`, see
    /// [`RedisTopology`]): keep every rate limit in Redis, shared by every instance;
    /// empty: in each process's memory.
    #[serde(default)]
    pub redis_url: String,
    /// Starts the name of every Redis key, so several services can share one Redis.
    #[serde(default = "defaults::redis_prefix")]
    pub redis_prefix: String,
    /// What a limit does when Redis cannot be asked: `deny` (refuse with INTERNAL) or `allow`.
    #[serde(default = "defaults::rate_limit_on_error")]
    pub rate_limit_on_error: RateLimitOnError,

    /// Secret app token for the upstream `useradd` call. Never logged or returned.
    #[serde(default)]
    pub app_token: Secret,
    #[serde(default = "defaults::token_expiry_mins")]
    pub token_expiry_mins: u64,
    /// Refuse a verify that does not send back the challenge id of its start reply.
    #[serde(default)]
    pub require_challenge: bool,
    /// `phone:otp` pairs, comma-separated, that accept a fixed code and send nothing.
    #[serde(default)]
    pub test_otps: Secret,
    #[serde(default, deserialize_with = "optional_email_sender")]
    pub email_sender: Option<EmailSenderKind>,
    #[serde(default = "defaults::email_subject")]
    pub email_subject: String,

    // --- Sessions, contact sync, notifications ---
    /// Live sessions per user; a login beyond it evicts the least recently used.
    #[serde(default = "defaults::max_devices")]
    pub max_devices: usize,
    /// Most phones in one `getcontacts` / `delcontacts` request (`TOOMANY` beyond).
    #[serde(default = "defaults::max_contacts_per_request")]
    pub max_contacts_per_request: usize,
    /// Most contacts one user may have stored (`TOOMANY` beyond).
    #[serde(default = "defaults::max_contacts_per_user")]
    pub max_contacts_per_user: usize,
    /// Upstream address that "contact joined" messages come from.
    #[serde(default = "defaults::system_address")]
    pub system_address: String,
    /// First retry delay of a failed outbox message; doubles per attempt up to an hour.
    #[serde(default = "defaults::outbox_retry_secs")]
    pub outbox_retry_secs: u64,

    // --- Operations: logs, HTTP limits, readiness, shutdown ---
    /// `text` for people, `json` (one object per line) for log shippers.
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// Browser origins allowed by CORS, comma-separated; `*` allows any; empty turns CORS off.
    #[serde(default = "defaults::cors_origins")]
    pub cors_origins: String,
    /// Largest request body of every op but the contact ops.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest body of `getcontacts`/`delcontacts`, which carry whole address books.
    #[serde(default = "defaults::max_contacts_body_bytes")]
    pub max_contacts_body_bytes: usize,
    /// Largest file part of `upload` (and of `profile` with a photo).
    #[serde(default = "defaults::max_upload_bytes")]
    pub max_upload_bytes: usize,
    /// Largest photo, in pixels (width × height), that is decoded; larger ones get
    /// `IMAGETOOLARGE`, refused from their header.
    #[serde(default = "defaults::max_photo_pixels")]
    pub max_photo_pixels: u64,
    /// Photos decoded at once (each may take 4 bytes a pixel while it runs).
    #[serde(default = "defaults::photo_decodes")]
    pub photo_decodes: usize,
    /// Photos that may wait for a decode's turn; one more gets `BUSY`.
    #[serde(default = "defaults::photo_decode_queue")]
    pub photo_decode_queue: usize,
    /// Uploads whose file part comes before their token, read at once (their file is held
    /// in memory until the token is checked); one more gets `BUSY`.
    #[serde(default = "defaults::max_uploads_before_token")]
    pub max_uploads_before_token: usize,
    /// Where uploaded photos and attachments are kept (served at `/files/`); empty: a
    /// `files` directory beside DATABASE_PATH.
    #[serde(default)]
    pub files_dir: String,
    /// A request still unanswered after this long gets `TIMEOUT`.
    #[serde(default = "defaults::request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// How long SIGTERM/SIGINT waits for in-flight requests before closing them.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// `host:port` of the operator API, a listener of its own apart from BIND; empty: off.
    #[serde(default)]
    pub admin_bind: String,
    /// Bearer token of the operator API: required with ADMIN_BIND, 32 characters or more.
    #[serde(default)]
    pub admin_token: Secret,
    /// Failed operator API logins a client IP may make per hour; beyond them it is refused,
    /// even with the right token, until the hour is over. 0: no limit.
    #[serde(default = "defaults::admin_failures_per_ip_per_hour")]
    pub admin_failures_per_ip_per_hour: u32,
    /// Days the audit trail keeps a security event.
    #[serde(default = "defaults::audit_retention_days")]
    pub audit_retention_days: u64,
    /// 0: `/readyz` does not contact upstream; N: it does, and keeps the answer N seconds.
    #[serde(default)]
    pub readyz_upstream_cache_secs: u64,

    // --- Production sending, phone checks and SMS-fraud defences ---
    /// Per-request timeout of the twilio, vonage, messagebird and webhook senders.
    #[serde(default = "defaults::provider_timeout_secs")]
    pub provider_timeout_secs: u64,
    /// JSON object appid → display name for `{appname}`.
    #[serde(default)]
    pub app_names: String,
    /// ISO region for numbers given in national format, e.g. `GB`.
    #[serde(default)]
    pub default_region: String,
    /// Refuse numbers that cannot receive SMS (fixed lines, toll-free, premium...).
    #[serde(default = "defaults::phone_mobile_only")]
    pub phone_mobile_only: bool,
    /// Serve satellite and international-network numbers (+870, +881, +882, +883).
    #[serde(default)]
    pub phone_allow_satellite: bool,
    /// ISO codes or calling codes, comma-separated; empty = all.
    #[serde(default)]
    pub allowed_countries: String,
    #[serde(default)]
    pub blocked_countries: String,
    /// CIDR list of reverse proxies whose `X-Forwarded-For` / `Forwarded` is believed.
    #[serde(default)]
    pub trusted_proxies: String,
    #[serde(default = "defaults::sms_budget_per_hour")]
    pub sms_budget_per_hour: u32,
    /// Percent of SMS_BUDGET_PER_HOUR one country calling code may spend (0 or 100: no share).
    #[serde(default = "defaults::sms_budget_country_share")]
    pub sms_budget_country_share: u32,
    /// Countries (ISO or calling codes) held to no country share; empty = DEFAULT_REGION's.
    #[serde(default)]
    pub sms_budget_home_countries: String,
    /// Percent of SMS_BUDGET_PER_HOUR one client network (IPv4 /24, IPv6 /64) may spend.
    #[serde(default = "defaults::sms_budget_network_share")]
    pub sms_budget_network_share: u32,

    // --- What the apps read ---
    /// `mesibo`: the replies the mesibo messenger apps parse (`result` "OK"/"FAIL", HTTP 200
    /// for application errors); `json`: boolean `result` and HTTP statuses.
    #[serde(default = "defaults::api_dialect")]
    pub api_dialect: Dialect,
    /// The service's address as apps reach it, e.g. `https://login.example.com`; the base of
    /// the default upload and download URLs. Empty: `http://` and BIND.
    #[serde(default)]
    pub public_url: String,
    /// JSON object appid → what the login reply tells that app (share and invite text,
    /// upload and download URLs, a message shown at login start); `default` applies to all.
    #[serde(default)]
    pub app_settings: String,
    /// JSON object provider name → `issuer`, `client_ids`, `address_claim` (`email` or
    /// `sub`), `email_verified_if_absent` (default false): the OpenID Connect issuers whose
    /// ID tokens sign users in, parsed and checked by `delivery::oidc`. Empty: none.
    #[serde(default)]
    pub oidc_providers: String,

    /// The platform's backend API (`useradd`, messages). (`UPSTREAM_*`)
    #[serde(skip_deserializing)]
    pub upstream: UpstreamSettings,
    /// One-time codes: their shape, life, message, sender and the server secret. (`OTP_*`)
    #[serde(skip_deserializing)]
    pub otp: OtpSettings,
    /// Rate limits per key; 0 turns one off. (`LIMIT_*`)
    #[serde(skip_deserializing)]
    pub limit: LimitSettings,
    /// The generic HTTP SMS gateway (`OTP_SENDER=http`). (`SMS_HTTP_*`)
    #[serde(skip_deserializing)]
    pub sms_http: SmsHttpSettings,
    /// E-mail delivery (`smtp`). (`SMTP_*`)
    #[serde(skip_deserializing)]
    pub smtp: SmtpSettings,
    /// Twilio (`twilio`). (`TWILIO_*`)
    #[serde(skip_deserializing)]
    pub twilio: TwilioSettings,
    /// Vonage (`vonage`). (`VONAGE_*`)
    #[serde(skip_deserializing)]
    pub vonage: VonageSettings,
    /// MessageBird (`messagebird`). (`MESSAGEBIRD_*`)
    #[serde(skip_deserializing)]
    pub messagebird: MessageBirdSettings,
    /// The signed webhook (`webhook`). (`WEBHOOK_*`)
    #[serde(skip_deserializing)]
    pub webhook: WebhookSettings,
    /// CAPTCHA at login start. (`CAPTCHA_*`)
    #[serde(skip_deserializing)]
    pub captcha: CaptchaSettings,
    /// The durable delivery of code messages. (`COURIER_*`)
    #[serde(skip_deserializing)]
    pub courier: CourierSettings,
}

/// The platform's backend API (`useradd`, messages). Read from the variables that start with `UPSTREAM_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct UpstreamSettings {
    #[serde(default = "defaults::upstream_url")]
    pub url: String,
    #[serde(default = "defaults::upstream_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    #[serde(default = "defaults::upstream_timeout_secs")]
    pub timeout_secs: u64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// One-time codes: their shape, life, message, sender and the server secret. Read from the variables that start with `OTP_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct OtpSettings {
    /// OTP_SECRET, the server secret (keys code hashes and queued-message encryption); when
    /// empty it is read from OTP_SECRET_FILE, or from a key file created beside the database.
    #[serde(default)]
    pub secret: Secret,
    /// OTP_SECRET_FILE, holding the server secret in hex; empty: `DATABASE_PATH` + `.key`,
    /// created on first start.
    #[serde(default)]
    pub secret_file: String,

    #[serde(default = "defaults::otp_length")]
    pub length: usize,
    #[serde(default = "defaults::otp_ttl_secs")]
    pub ttl_secs: u64,
    #[serde(default = "defaults::otp_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "defaults::otp_resend_secs")]
    pub resend_secs: u64,
    #[serde(default = "defaults::otp_message")]
    pub message: String,

    #[serde(default = "defaults::otp_sender")]
    pub sender: SenderKind,
    /// JSON object appid → message template overriding `OTP_MESSAGE`.
    #[serde(default)]
    pub message_per_app: String,
}

impl Default for OtpSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// Rate limits per key; 0 turns one off. Read from the variables that start with `LIMIT_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct LimitSettings {
    #[serde(default = "defaults::limit_start_per_phone")]
    pub start_per_phone_per_hour: u32,
    #[serde(default = "defaults::limit_start_per_ip")]
    pub start_per_ip_per_hour: u32,
    #[serde(default = "defaults::limit_verify_per_phone")]
    pub verify_per_phone_per_hour: u32,
    #[serde(default = "defaults::limit_verify_per_ip")]
    pub verify_per_ip_per_hour: u32,
    /// Numbers a user may look up per day that are not already among their contacts; 0 = no limit.
    #[serde(default = "defaults::limit_new_contacts_per_user_per_day")]
    pub new_contacts_per_user_per_day: u32,
    /// The same per client IP, over all its users; 0 = no limit.
    #[serde(default = "defaults::limit_new_contacts_per_ip_per_day")]
    pub new_contacts_per_ip_per_day: u32,
    /// Files (attachments and photos) a user may upload per hour; 0 = no limit.
    #[serde(default = "defaults::limit_uploads_per_user_per_hour")]
    pub uploads_per_user_per_hour: u32,
    /// Bytes of files a user may upload per day; 0 = no limit.
    #[serde(default = "defaults::limit_upload_bytes_per_user_per_day")]
    pub upload_bytes_per_user_per_day: u32,
    #[serde(default = "defaults::limit_start_per_subnet")]
    pub start_per_subnet_per_hour: u32,
    #[serde(default = "defaults::limit_start_per_calling_code")]
    pub start_per_calling_code_per_hour: u32,
    /// Members a user may add to groups per hour (those already members cost nothing); 0 = no limit.
    #[serde(default = "defaults::limit_group_adds_per_user")]
    pub group_adds_per_user_per_hour: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// The generic HTTP SMS gateway (`OTP_SENDER=http`). Read from the variables that start with `SMS_HTTP_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct SmsHttpSettings {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub auth: Secret,
    #[serde(default = "defaults::sms_http_body")]
    pub body: Secret,
    #[serde(default = "defaults::sms_http_timeout_secs")]
    pub timeout_secs: u64,
}

impl Default for SmsHttpSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// E-mail delivery (`smtp`). Read from the variables that start with `SMTP_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct SmtpSettings {
    #[serde(default)]
    pub host: String,
    #[serde(default = "defaults::smtp_port")]
    pub port: u16,
    #[serde(default = "defaults::smtp_tls")]
    pub tls: SmtpTls,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub from: String,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// Twilio (`twilio`). Read from the variables that start with `TWILIO_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct TwilioSettings {
    #[serde(default)]
    pub account_sid: String,
    #[serde(default)]
    pub auth_token: Secret,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub messaging_service_sid: String,
    #[serde(default = "defaults::twilio_base_url")]
    pub base_url: String,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// Vonage (`vonage`). Read from the variables that start with `VONAGE_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct VonageSettings {
    #[serde(default)]
    pub api_key: Secret,
    #[serde(default)]
    pub api_secret: Secret,
    #[serde(default)]
    pub from: String,
    #[serde(default = "defaults::vonage_base_url")]
    pub base_url: String,
}

impl Default for VonageSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// MessageBird (`messagebird`). Read from the variables that start with `MESSAGEBIRD_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct MessageBirdSettings {
    #[serde(default)]
    pub access_key: Secret,
    #[serde(default)]
    pub originator: String,
    #[serde(default = "defaults::messagebird_base_url")]
    pub base_url: String,
}

impl Default for MessageBirdSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// The signed webhook (`webhook`). Read from the variables that start with `WEBHOOK_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct WebhookSettings {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub secret: Secret,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// CAPTCHA at login start. Read from the variables that start with `CAPTCHA_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct CaptchaSettings {
    /// `hcaptcha`, `turnstile`, or empty for no CAPTCHA.
    #[serde(default = "defaults::captcha_provider")]
    pub provider: CaptchaProvider,
    #[serde(default)]
    pub secret: Secret,
    /// Siteverify endpoint; empty = the provider's own.
    #[serde(default)]
    pub verify_url: String,
}

impl Default for CaptchaSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// The durable delivery of code messages. Read from the variables that start with `COURIER_`.
#[derive(Clone, Deserialize, Serialize)]
pub struct CourierSettings {
    /// Delivery attempts per message (1 = no retries).
    #[serde(default = "defaults::courier_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; each further retry waits twice as long.
    #[serde(default = "defaults::courier_retry_base_ms")]
    pub retry_base_ms: u64,
    /// How long a login request waits for the first delivery attempt.
    #[serde(default = "defaults::courier_wait_ms")]
    pub wait_ms: u64,
    /// How long a message being sent stays hidden from other senders; after a crash another
    /// instance (or the restart) sends it once this has passed. 0: twice the slowest
    /// provider timeout, at least a minute.
    #[serde(default)]
    pub lease_secs: u64,
}

impl Default for CourierSettings {
    fn default() -> Self {
        defaults_of()
    }
}

/// The section read from the variables starting with `prefix`; an error names the whole variable.
fn section<T: serde::de::DeserializeOwned>(prefix: &str, vars: &[(String, String)]) -> Result<T, String> {
    envy::prefixed(prefix)
        .from_iter(vars.iter().cloned())
        .map_err(|e| format!("invalid configuration: {}", e.to_string().replace("provided by ", &format!("provided by {prefix}"))))
}

/// A section with every setting at its default.
fn defaults_of<T: serde::de::DeserializeOwned>() -> T {
    envy::from_iter(std::iter::empty::<(String, String)>()).expect("every setting of a section has a default")
}

/// A setting that takes one of a few words: parsed once into an enum, and refused with
/// a line naming the setting and its choices.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident, $setting:literal, $expected:literal, { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word that selects it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::ALL
                    .iter()
                    .copied()
                    .find(|choice| choice.as_str() == text.trim())
                    .ok_or_else(|| serde::de::Error::custom(concat!($setting, " must be ", $expected)))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        /// Compares with the word, as the settings are written.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
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

choice!(
    /// What a rate limit does when its shared store (Redis) cannot be asked, `RATE_LIMIT_ON_ERROR`.
    RateLimitOnError, "RATE_LIMIT_ON_ERROR", "deny or allow", {
    /// Refuse: an open limiter is an open SMS bill.
    Deny = "deny",
    Allow = "allow",
});

choice!(
    /// What sends codes, `OTP_SENDER`.
    SenderKind, "OTP_SENDER", "one of: log, http, smtp, twilio, vonage, messagebird, webhook", {
    Log = "log",
    Http = "http",
    Smtp = "smtp",
    Twilio = "twilio",
    Vonage = "vonage",
    Messagebird = "messagebird",
    Webhook = "webhook",
});

choice!(
    /// What sends codes to e-mail addresses when it is not `OTP_SENDER`: `EMAIL_SENDER`.
    EmailSenderKind, "EMAIL_SENDER", "one of: log, smtp, webhook", {
    Log = "log",
    Smtp = "smtp",
    Webhook = "webhook",
});

impl From<EmailSenderKind> for SenderKind {
    fn from(kind: EmailSenderKind) -> SenderKind {
        match kind {
            EmailSenderKind::Log => SenderKind::Log,
            EmailSenderKind::Smtp => SenderKind::Smtp,
            EmailSenderKind::Webhook => SenderKind::Webhook,
        }
    }
}

choice!(
    /// How SMTP connections are secured, `SMTP_TLS`.
    SmtpTls, "SMTP_TLS", "one of: starttls, tls, none", {
    Starttls = "starttls",
    Tls = "tls",
    None = "none",
});

choice!(
    /// `LOG_FORMAT`: text for people, JSON (one object per line) for log shippers.
    LogFormat, "LOG_FORMAT", "text or json", {
    Text = "text",
    Json = "json",
});

choice!(
    /// Who checks CAPTCHA tokens at login start, `CAPTCHA_PROVIDER`; empty: nobody.
    CaptchaProvider, "CAPTCHA_PROVIDER", "hcaptcha, turnstile or empty", {
    Off = "",
    Hcaptcha = "hcaptcha",
    Turnstile = "turnstile",
});

/// `EMAIL_SENDER`, where an empty value (an empty line in an env file) means "not set".
fn optional_email_sender<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<EmailSenderKind>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        Some(text) if !text.trim().is_empty() => {
            EmailSenderKind::deserialize(serde::de::value::StringDeserializer::<D::Error>::new(text)).map(Some)
        }
        _ => Ok(None),
    }
}

/// A setting whose value is a credential (or, for `TEST_OTPS` and `SMS_HTTP_BODY`, may
/// hold one): its Debug form and the printed configuration show `<redacted>` (or `""`
/// when unset, so an operator sees what is missing), whatever the setting is called.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            "<redacted>"
        }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

/// Below this length `OTP_SECRET` draws a warning.
const MIN_OTP_SECRET_BYTES: usize = 16;
/// The value of `UPSTREAM_URL` that selects the built-in stand-in for the platform.
pub const BUILTIN_UPSTREAM: &str = "builtin";
/// Logged at start and with every token the built-in stand-in mints.
pub const BUILTIN_UPSTREAM_WARNING: &str =
    "UPSTREAM_URL=builtin: tokens are minted locally for testing and are not valid on the messaging platform; set UPSTREAM_URL and APP_TOKEN for real logins";

mod defaults {
    pub fn bind() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn database_path() -> String {
        "./otpgate.db".into()
    }
    pub fn db_connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn db_query_timeout_ms() -> u64 {
        10_000
    }
    pub fn redis_prefix() -> String {
        "otpgate".into()
    }

    pub fn rate_limit_on_error() -> super::RateLimitOnError {
        super::RateLimitOnError::Deny
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
    pub fn otp_sender() -> super::SenderKind {
        super::SenderKind::Log
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
    pub fn sms_http_body() -> super::Secret {
        r#"{"to":"{phone}","text":"{message}"}"#.into()
    }
    pub fn sms_http_timeout_secs() -> u64 {
        10
    }
    pub fn smtp_port() -> u16 {
        587
    }
    pub fn smtp_tls() -> super::SmtpTls {
        super::SmtpTls::Starttls
    }
    pub fn email_subject() -> String {
        "Your login code".into()
    }

    // Sessions, contact sync, notifications.
    pub fn max_devices() -> usize {
        8
    }
    pub fn max_contacts_per_request() -> usize {
        5000
    }
    pub fn max_contacts_per_user() -> usize {
        10_000
    }
    pub fn limit_new_contacts_per_user_per_day() -> u32 {
        10_000
    }
    pub fn limit_new_contacts_per_ip_per_day() -> u32 {
        50_000
    }
    pub fn limit_uploads_per_user_per_hour() -> u32 {
        100
    }
    /// 512 MiB: 32 files of the largest size a day.
    pub fn limit_upload_bytes_per_user_per_day() -> u32 {
        512 * 1024 * 1024
    }
    pub fn system_address() -> String {
        "system".into()
    }
    pub fn outbox_retry_secs() -> u64 {
        5
    }
    pub fn audit_retention_days() -> u64 {
        90
    }
    // Operations
    pub fn log_format() -> super::LogFormat {
        super::LogFormat::Text
    }
    pub fn captcha_provider() -> super::CaptchaProvider {
        super::CaptchaProvider::Off
    }
    pub fn max_body_bytes() -> usize {
        64 * 1024
    }
    pub fn max_upload_bytes() -> usize {
        16 * 1024 * 1024
    }
    /// The full resolution of the 48 and 50 megapixel phone cameras (8160 × 6120).
    pub fn max_photo_pixels() -> u64 {
        50_000_000
    }
    pub fn photo_decodes() -> usize {
        2
    }
    pub fn photo_decode_queue() -> usize {
        16
    }
    pub fn max_uploads_before_token() -> usize {
        4
    }

    /// A contact upload of MAX_CONTACTS_PER_REQUEST (5000) formatted phones fits.
    pub fn max_contacts_body_bytes() -> usize {
        256 * 1024
    }
    pub fn request_timeout_secs() -> u64 {
        30
    }
    pub fn shutdown_grace_secs() -> u64 {
        20
    }
    pub fn admin_failures_per_ip_per_hour() -> u32 {
        10
    }
    // --- Production sending, phone checks and SMS-fraud defences ---
    pub fn provider_timeout_secs() -> u64 {
        10
    }
    pub fn twilio_base_url() -> String {
        "https://api.twilio.com".into()
    }
    pub fn vonage_base_url() -> String {
        "https://rest.nexmo.com".into()
    }
    pub fn messagebird_base_url() -> String {
        "https://rest.messagebird.com".into()
    }
    pub fn phone_mobile_only() -> bool {
        true
    }
    pub fn limit_start_per_subnet() -> u32 {
        300
    }
    pub fn limit_start_per_calling_code() -> u32 {
        1000
    }
    pub fn limit_group_adds_per_user() -> u32 {
        200
    }
    pub fn sms_budget_per_hour() -> u32 {
        1000
    }
    pub fn sms_budget_country_share() -> u32 {
        25
    }
    pub fn sms_budget_network_share() -> u32 {
        10
    }
    pub fn courier_max_attempts() -> u32 {
        5
    }
    pub fn courier_retry_base_ms() -> u64 {
        2000
    }
    pub fn courier_wait_ms() -> u64 {
        3000
    }
    pub fn api_dialect() -> super::Dialect {
        super::Dialect::Mesibo
    }
    /// The web app calls from its own origin; tokens travel in bodies or bearer headers,
    /// never in cookies, so allowing any origin grants other sites nothing.
    pub fn cors_origins() -> String {
        "*".into()
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
        let vars: Vec<(String, String)> = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let mut config: Config = envy::from_iter(vars.clone()).map_err(|e| format!("invalid configuration: {e}"))?;
        config.upstream = section("UPSTREAM_", &vars)?;
        config.otp = section("OTP_", &vars)?;
        config.limit = section("LIMIT_", &vars)?;
        config.sms_http = section("SMS_HTTP_", &vars)?;
        config.smtp = section("SMTP_", &vars)?;
        config.twilio = section("TWILIO_", &vars)?;
        config.vonage = section("VONAGE_", &vars)?;
        config.messagebird = section("MESSAGEBIRD_", &vars)?;
        config.webhook = section("WEBHOOK_", &vars)?;
        config.captcha = section("CAPTCHA_", &vars)?;
        config.courier = section("COURIER_", &vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Every setting by its variable's name in lower case (`smtp_host`, `otp_length`): the
    /// sections flattened back into the names operators set.
    pub fn settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(nested) = serde_json::to_value(self).expect("the configuration serialises") else {
            unreachable!("a struct serialises to an object")
        };
        let mut flat = serde_json::Map::new();
        for (name, value) in nested {
            match value {
                serde_json::Value::Object(section) => {
                    flat.extend(section.into_iter().map(|(field, value)| (format!("{name}_{field}"), value)));
                }
                value => {
                    flat.insert(name, value);
                }
            }
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

    fn validate(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if !(4..=10).contains(&self.otp.length) {
            return bad("OTP_LENGTH", "must be between 4 and 10");
        }
        if self.otp.ttl_secs == 0 {
            return bad("OTP_TTL_SECS", "must be at least 1");
        }
        if self.otp.max_attempts == 0 {
            return bad("OTP_MAX_ATTEMPTS", "must be at least 1");
        }
        if !self.otp.message.contains("{otp}") {
            return bad("OTP_MESSAGE", "must contain {otp}");
        }
        if !self.otp.secret.is_empty() && !self.otp.secret_file.is_empty() {
            return bad("OTP_SECRET_FILE", "and OTP_SECRET are both set; keep one");
        }
        self.validate_shared_state()?;
        self.validate_addresses()?;
        self.validate_sessions()?;
        self.validate_operations()?;
        self.validate_fraud_defences()?;
        Ok(())
    }

    /// DATABASE_URL and REDIS_URL, and what sharing a database asks of the secret.
    fn validate_shared_state(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if !self.database_url.is_empty() {
            if let Err(why) = postgres_url_hosts(&self.database_url) {
                let why = format!(
                    "must be a URL such as postgres://otpgate:password@db.example.com/otpgate or, with a standby, \
                     postgres://otpgate:password@db1:5432,db2:5432/otpgate?target_session_attrs=read-write: {why}"
                );
                return bad("DATABASE_URL", &why);
            }
            if self.db_connect_timeout_ms == 0 {
                return bad("DB_CONNECT_TIMEOUT_MS", "must be at least 1");
            }
            if self.db_query_timeout_ms == 0 {
                return bad("DB_QUERY_TIMEOUT_MS", "must be at least 1");
            }
            // Instances that hash codes with different keys would refuse each other's codes.
            if self.otp.secret.is_empty() && self.otp.secret_file.is_empty() {
                return bad(
                    "DATABASE_URL",
                    "needs OTP_SECRET or OTP_SECRET_FILE: every instance on one database must hash codes with the same key",
                );
            }
        }
        self.redis_topology().map_err(|e| format!("invalid configuration: {e}"))?;
        // Braces would make Redis Cluster hash the prefix instead of each key's own tag.
        if self.redis_prefix.trim().is_empty() || self.redis_prefix.contains(char::is_whitespace) || self.redis_prefix.contains(['{', '}'])
        {
            return bad("REDIS_PREFIX", "must be a word without spaces or braces");
        }
        Ok(())
    }

    /// The settings of sessions, contact sync and notifications.
    fn validate_sessions(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if self.max_devices == 0 {
            return bad("MAX_DEVICES", "must be at least 1");
        }
        if self.max_contacts_per_request == 0 {
            return bad("MAX_CONTACTS_PER_REQUEST", "must be at least 1");
        }
        if self.max_contacts_per_user == 0 {
            return bad("MAX_CONTACTS_PER_USER", "must be at least 1");
        }
        if self.system_address.trim().is_empty() {
            return bad("SYSTEM_ADDRESS", "must not be empty");
        }
        if self.outbox_retry_secs == 0 {
            return bad("OUTBOX_RETRY_SECS", "must be at least 1");
        }
        if !(1..=3650).contains(&self.audit_retention_days) {
            return bad("AUDIT_RETENTION_DAYS", "must be 1 to 3650");
        }
        Ok(())
    }

    fn validate_operations(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if self.max_body_bytes < 1024 {
            return bad("MAX_BODY_BYTES", "must be at least 1024");
        }
        if self.max_upload_bytes == 0 {
            return bad("MAX_UPLOAD_BYTES", "must be at least 1");
        }
        let daily_bytes = usize::try_from(self.limit.upload_bytes_per_user_per_day).unwrap_or(usize::MAX);
        if daily_bytes != 0 && daily_bytes < self.max_upload_bytes {
            // Else a file that MAX_UPLOAD_BYTES admits could never be uploaded.
            return bad("LIMIT_UPLOAD_BYTES_PER_USER_PER_DAY", "must be 0 or at least MAX_UPLOAD_BYTES");
        }
        // Photos are kept at up to 1024 pixels a side: a smaller bound would refuse a photo
        // that needs no scaling.
        if self.max_photo_pixels < 1024 * 1024 {
            return bad("MAX_PHOTO_PIXELS", "must be at least 1048576 (1024 × 1024)");
        }
        if self.photo_decodes == 0 {
            return bad("PHOTO_DECODES", "must be at least 1");
        }
        if self.max_contacts_body_bytes < self.max_body_bytes {
            return bad("MAX_CONTACTS_BODY_BYTES", "must be at least MAX_BODY_BYTES");
        }
        // A login must not time out while upstream may still issue its token, or the user
        // would lose both the token and the code.
        if self.request_timeout_secs <= self.upstream.timeout_secs {
            return bad("REQUEST_TIMEOUT_SECS", "must be longer than UPSTREAM_TIMEOUT_SECS");
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

    /// BIND, UPSTREAM_URL and PUBLIC_URL: caught here, before anything tries to use them.
    fn validate_addresses(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if bind_host(&self.bind).is_none() {
            return bad("BIND", "must be an address and port such as 127.0.0.1:8080 or 0.0.0.0:8080");
        }
        if self.upstream.url == BUILTIN_UPSTREAM {
            if !self.binds_loopback_only() {
                return bad("UPSTREAM_URL", "builtin mints fake tokens for local testing and is refused unless BIND is a loopback address");
            }
        } else if !is_http_url(&self.upstream.url) {
            return bad("UPSTREAM_URL", "must be an http:// or https:// URL (or builtin, for local testing)");
        }
        if !self.public_url.is_empty() && !is_http_url(&self.public_url) {
            return bad("PUBLIC_URL", "must be an http:// or https:// URL such as https://login.example.com");
        }
        if !self.admin_bind.is_empty() {
            if bind_host(&self.admin_bind).is_none() {
                return bad("ADMIN_BIND", "must be an address and port such as 127.0.0.1:9090, or empty to turn the operator API off");
            }
            // Port 0 asks the system for a free port: two of them never collide.
            if self.admin_bind.trim() == self.bind.trim() && !self.bind.trim().ends_with(":0") {
                return bad("ADMIN_BIND", "must differ from BIND: the operator API is never served on the public port");
            }
            if self.admin_token.expose().len() < MIN_ADMIN_TOKEN_CHARS {
                return bad("ADMIN_TOKEN", "must be set, 32 characters or more (openssl rand -hex 32), when ADMIN_BIND is");
            }
        }
        Ok(())
    }

    /// Where the shared rate limits live; `None` without `REDIS_URL`.
    pub fn redis_topology(&self) -> Result<Option<RedisTopology>, String> {
        match self.redis_url.trim() {
            "" => Ok(None),
            url => RedisTopology::parse(url).map(Some),
        }
    }

    /// What is allowed but probably not meant; `serve` and `check-config` log each line.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.upstream.url == BUILTIN_UPSTREAM {
            warnings.push(BUILTIN_UPSTREAM_WARNING);
        } else if self.app_token.is_empty() {
            warnings.push("APP_TOKEN is not set: the upstream platform will refuse to issue tokens until it is (UPSTREAM_URL=builtin tries the service without one)");
        }
        if !self.database_url.is_empty() && self.redis_url.is_empty() {
            warnings.push("DATABASE_URL without REDIS_URL: rate limits and the SMS budget are kept per instance, so N instances allow N times as much; set REDIS_URL to share them");
        }
        if !self.admin_bind.is_empty() && !is_loopback_bind(&self.admin_bind) {
            warnings.push("ADMIN_BIND is not a loopback address and the operator API speaks plain HTTP: ADMIN_TOKEN and users' data cross the network in clear; bind it to 127.0.0.1 (and reach it through an SSH tunnel) or put a TLS proxy in front on the same host");
        }
        if !self.otp.secret.is_empty() && self.otp.secret.expose().len() < MIN_OTP_SECRET_BYTES {
            warnings.push("OTP_SECRET is shorter than 16 characters: a copy of the database could be matched against guesses of it; use `openssl rand -hex 32`");
        }
        warnings
    }

    /// True when BIND listens on a loopback address only.
    pub fn binds_loopback_only(&self) -> bool {
        is_loopback_bind(&self.bind)
    }

    pub fn dialect(&self) -> Dialect {
        self.api_dialect
    }

    /// The directory of uploaded files: FILES_DIR, or `files` beside DATABASE_PATH.
    pub fn files_directory(&self) -> std::path::PathBuf {
        if !self.files_dir.is_empty() {
            return self.files_dir.clone().into();
        }
        let database = std::path::Path::new(&self.database_path);
        database.parent().unwrap_or(std::path::Path::new(".")).join("files")
    }

    /// The base URL apps reach the service at: `PUBLIC_URL`, or else `http://` and BIND
    /// (a wildcard address replaced by loopback), without a trailing slash.
    pub fn public_base_url(&self) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.trim_end_matches('/').to_string();
        }
        let address = self.bind.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
        format!("http://{address}")
    }

    /// `CORS_ORIGINS` split into its entries.
    pub fn cors_origin_list(&self) -> Vec<&str> {
        self.cors_origins.split(',').map(str::trim).filter(|o| !o.is_empty()).collect()
    }
}

/// The host part of a `host:port` BIND, if the port is a number.
/// Shortest operator token accepted: it guards every user's sessions.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Whether a `host:port` listens on a loopback address only.
fn is_loopback_bind(bind: &str) -> bool {
    match bind_host(bind) {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn bind_host(bind: &str) -> Option<&str> {
    let (host, port) = bind.trim().rsplit_once(':')?;
    let well_formed = !host.is_empty() && !host.contains(['/', ' ']) && port.parse::<u16>().is_ok();
    well_formed.then_some(host)
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

/// An absolute http(s) URL with a host.
fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()))
}

impl Config {
    /// The CAPTCHA, provider and courier settings. Templates, the phone policy, trusted
    /// proxies and test codes are checked where they are built, once (`runtime`).
    fn validate_fraud_defences(&self) -> Result<(), String> {
        if self.captcha.provider != CaptchaProvider::Off && self.captcha.secret.is_empty() {
            return Err("invalid configuration: CAPTCHA_SECRET is required when CAPTCHA_PROVIDER is set".into());
        }
        if self.provider_timeout_secs == 0 {
            return Err("invalid configuration: PROVIDER_TIMEOUT_SECS must be at least 1".into());
        }
        if self.courier.max_attempts == 0 {
            return Err("invalid configuration: COURIER_MAX_ATTEMPTS must be at least 1".into());
        }
        for (name, share) in
            [("SMS_BUDGET_COUNTRY_SHARE", self.sms_budget_country_share), ("SMS_BUDGET_NETWORK_SHARE", self.sms_budget_network_share)]
        {
            if share > 100 {
                return Err(format!("invalid configuration: {name} is a percentage of SMS_BUDGET_PER_HOUR: 0 to 100"));
            }
        }
        Ok(())
    }
}

/// How many hosts a PostgreSQL URL names, in libpq's forms: `postgres://` or `postgresql://`, then
/// `user:password@` if any, then one host or several (`h1:5432,h2:5433`, `[::1]:5432`),
/// or none with `?host=h1,h2` (and `?port=`) instead. The driver parses it in full when
/// the pool is made; this catches what is not a PostgreSQL URL at all.
fn postgres_url_hosts(url: &str) -> Result<usize, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("it does not start with postgres:// or postgresql://")?;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
    let mut found = 0;
    if !hosts.is_empty() {
        for host in hosts.split(',') {
            let (name, port) = match host.strip_prefix('[') {
                Some(v6) => {
                    let (name, after) = v6.split_once(']').ok_or("an IPv6 host lacks its closing ]")?;
                    (name, after.strip_prefix(':'))
                }
                None => host.split_once(':').map_or((host, None), |(name, port)| (name, Some(port))),
            };
            if name.is_empty() {
                return Err("a host in the list is empty".into());
            }
            if port.is_some_and(|port| port.parse::<u16>().is_err()) {
                return Err(format!("the port of {name} is not a number"));
            }
            found += 1;
        }
    }
    for pair in query.split('&') {
        if let Some(("host" | "hostaddr", value)) = pair.split_once('=') {
            found += value.split(',').filter(|name| !name.is_empty()).count();
        }
    }
    if found == 0 {
        return Err("it names no host".into());
    }
    Ok(found)
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
        assert_eq!(config.otp.ttl_secs, 300);
        assert_eq!(config.otp.max_attempts, 5);
        assert_eq!(config.otp.resend_secs, 30);
        assert_eq!(config.otp.sender, "log");
        assert_eq!(config.token_expiry_mins, 525_600);
        assert_eq!(config.upstream.url, "https://api.mesibo.com/backend/");
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

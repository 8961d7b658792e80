//! The checks of the settings together, run once at load in this order: the first one
//! failed is the error, one line naming the variable.

use super::codes::{fill_message, sms_bytes, SmsEncoding, MAX_SHOWN_APPID_CHARS};
use super::upstream::BUILTIN_UPSTREAM;
use super::{CaptchaProvider, Config, Country, Secret, SenderKind};

/// Below this length `OTP_SECRET` draws a warning.
pub(super) const MIN_OTP_SECRET_BYTES: usize = 16;
/// Shortest operator token accepted: it guards every user's sessions.
pub(super) const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl Config {
    /// Refuses what is wrong, and keeps what had to be parsed to know it (REDIS_URL's form).
    pub(super) fn validate(&mut self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        let otp = &self.otp;
        if !(4..=10).contains(&otp.length) {
            return bad("OTP_LENGTH", "must be between 4 and 10");
        }
        if otp.ttl_secs == 0 {
            return bad("OTP_TTL_SECS", "must be at least 1");
        }
        if otp.max_attempts == 0 {
            return bad("OTP_MAX_ATTEMPTS", "must be at least 1");
        }
        if !otp.message.contains("{otp}") {
            return bad("OTP_MESSAGE", "must contain {otp}");
        }
        if otp.secret.is_some() && otp.secret_file.is_some() {
            return bad("OTP_SECRET_FILE", "and OTP_SECRET are both set; keep one");
        }
        self.validate_shared_state()?;
        self.validate_addresses()?;
        self.validate_sessions()?;
        self.validate_operations()?;
        self.validate_fraud_defences()?;
        self.validate_senders()?;
        self.validate_routes()?;
        self.validate_sms_autofill()?;
        Ok(())
    }

    /// DATABASE_URL and REDIS_URL, and what sharing a database asks of the secret.
    fn validate_shared_state(&mut self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        let database = &self.database;
        if let Some(url) = &database.url {
            if let Err(why) = postgres_url_hosts(url) {
                let why = format!(
                    "must be a URL such as postgres://otpgate:password@db.example.com/otpgate or, with a standby, \
                     postgres://otpgate:password@db1:5432,db2:5432/otpgate?target_session_attrs=read-write: {why}"
                );
                return bad("DATABASE_URL", &why);
            }
            if database.connect_timeout_ms == 0 {
                return bad("DB_CONNECT_TIMEOUT_MS", "must be at least 1");
            }
            if database.query_timeout_ms == 0 {
                return bad("DB_QUERY_TIMEOUT_MS", "must be at least 1");
            }
            // Instances that hash codes with different keys would refuse each other's codes.
            if self.otp.secret.is_none() && self.otp.secret_file.is_none() {
                return bad(
                    "DATABASE_URL",
                    "needs OTP_SECRET or OTP_SECRET_FILE: every instance on one database must hash codes with the same key",
                );
            }
        }
        self.redis.topology = self.redis.parse_topology().map_err(|e| format!("invalid configuration: {e}"))?;
        // Braces would make Redis Cluster hash the prefix instead of each key's own tag.
        let prefix = &self.redis.prefix;
        if prefix.trim().is_empty() || prefix.contains(char::is_whitespace) || prefix.contains(['{', '}']) {
            return bad("REDIS_PREFIX", "must be a word without spaces or braces");
        }
        Ok(())
    }

    /// BIND, UPSTREAM_URL and PUBLIC_URL: caught here, before anything tries to use them.
    fn validate_addresses(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        let bind = &self.http.bind;
        if bind_host(bind).is_none() {
            return bad("BIND", "must be an address and port such as 127.0.0.1:8080 or 0.0.0.0:8080");
        }
        if self.upstream.url == BUILTIN_UPSTREAM {
            if !self.binds_loopback_only() {
                return bad("UPSTREAM_URL", "builtin mints fake tokens for local testing and is refused unless BIND is a loopback address");
            }
        } else if !is_http_url(&self.upstream.url) {
            return bad("UPSTREAM_URL", "must be an http:// or https:// URL (or builtin, for local testing)");
        }
        if self.apps.public_url.as_deref().is_some_and(|url| !is_http_url(url)) {
            return bad("PUBLIC_URL", "must be an http:// or https:// URL such as https://login.example.com");
        }
        let admin = &self.admin;
        if let Some(admin_bind) = &admin.bind {
            if bind_host(admin_bind).is_none() {
                return bad("ADMIN_BIND", "must be an address and port such as 127.0.0.1:9090, or empty to turn the operator API off");
            }
            // Port 0 asks the system for a free port: two of them never collide.
            if admin_bind.trim() == bind.trim() && !bind.trim().ends_with(":0") {
                return bad("ADMIN_BIND", "must differ from BIND: the operator API is never served on the public port");
            }
            if admin.token.as_ref().map_or(0, |token| token.expose().len()) < MIN_ADMIN_TOKEN_CHARS {
                return bad("ADMIN_TOKEN", "must be set, 32 characters or more (openssl rand -hex 32), when ADMIN_BIND is");
            }
        }
        Ok(())
    }

    /// The settings of sessions, contact sync and notifications.
    fn validate_sessions(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        if self.sessions.max_devices == 0 {
            return bad("MAX_DEVICES", "must be at least 1");
        }
        if self.contacts.max_per_request == 0 {
            return bad("MAX_CONTACTS_PER_REQUEST", "must be at least 1");
        }
        if self.contacts.max_per_user == 0 {
            return bad("MAX_CONTACTS_PER_USER", "must be at least 1");
        }
        if self.outbox.system_address.trim().is_empty() {
            return bad("SYSTEM_ADDRESS", "must not be empty");
        }
        if self.outbox.retry_secs == 0 {
            return bad("OUTBOX_RETRY_SECS", "must be at least 1");
        }
        if !(1..=3650).contains(&self.admin.audit_retention_days) {
            return bad("AUDIT_RETENTION_DAYS", "must be 1 to 3650");
        }
        Ok(())
    }

    fn validate_operations(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("invalid configuration: {name} {why}"));
        let (http, files) = (&self.http, &self.files);
        if http.max_body_bytes < 1024 {
            return bad("MAX_BODY_BYTES", "must be at least 1024");
        }
        if files.max_upload_bytes == 0 {
            return bad("MAX_UPLOAD_BYTES", "must be at least 1");
        }
        let daily_bytes = usize::try_from(self.limit.upload_bytes_per_user_per_day).unwrap_or(usize::MAX);
        if daily_bytes != 0 && daily_bytes < files.max_upload_bytes {
            // Else a file that MAX_UPLOAD_BYTES admits could never be uploaded.
            return bad("LIMIT_UPLOAD_BYTES_PER_USER_PER_DAY", "must be 0 or at least MAX_UPLOAD_BYTES");
        }
        // Photos are kept at up to 1024 pixels a side: a smaller bound would refuse a photo
        // that needs no scaling.
        if files.max_photo_pixels < 1024 * 1024 {
            return bad("MAX_PHOTO_PIXELS", "must be at least 1048576 (1024 × 1024)");
        }
        if files.photo_decodes == 0 {
            return bad("PHOTO_DECODES", "must be at least 1");
        }
        if files.max_concurrent_uploads_per_user == 0 {
            return bad("MAX_CONCURRENT_UPLOADS_PER_USER", "must be at least 1");
        }
        if files.upload_before_token_timeout_secs == 0 {
            return bad("UPLOAD_BEFORE_TOKEN_TIMEOUT_SECS", "must be at least 1");
        }
        if http.max_contacts_body_bytes < http.max_body_bytes {
            return bad("MAX_CONTACTS_BODY_BYTES", "must be at least MAX_BODY_BYTES");
        }
        // A login must not time out while upstream may still issue its token, or the user
        // would lose both the token and the code.
        if http.request_timeout_secs <= self.upstream.timeout_secs {
            return bad("REQUEST_TIMEOUT_SECS", "must be longer than UPSTREAM_TIMEOUT_SECS");
        }
        for origin in http.cors_origins.iter() {
            let well_formed = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://")) && !origin.ends_with('/') && !origin.contains(' '));
            if !well_formed {
                return bad("CORS_ORIGINS", "must be * or origins like https://app.example.com, comma-separated");
            }
        }
        Ok(())
    }

    /// The CAPTCHA, provider, courier, SMS breaker and SMS budget settings; keeps the home countries'
    /// calling codes.
    fn validate_fraud_defences(&mut self) -> Result<(), String> {
        if self.captcha.provider != CaptchaProvider::Off && self.captcha.secret.is_none() {
            return Err("invalid configuration: CAPTCHA_SECRET is required when CAPTCHA_PROVIDER is set".into());
        }
        if self.provider.timeout_secs == 0 {
            return Err("invalid configuration: PROVIDER_TIMEOUT_SECS must be at least 1".into());
        }
        if self.courier.max_attempts == 0 {
            return Err("invalid configuration: COURIER_MAX_ATTEMPTS must be at least 1".into());
        }
        self.sms_breaker.check()?;
        let budget = &self.sms_budget;
        let shares = [
            ("SMS_BUDGET_COUNTRY_SHARE", budget.country_share),
            ("SMS_BUDGET_NETWORK_SHARE", budget.network_share),
            ("SMS_BUDGET_IP_SHARE", budget.ip_share),
            ("SMS_BUDGET_HOME_RESERVE", budget.home_reserve),
        ];
        for (name, share) in shares {
            if share > 100 {
                return Err(format!("invalid configuration: {name} is a percentage of SMS_BUDGET_PER_HOUR: 0 to 100"));
            }
        }
        if budget.home_reserve == 100 {
            return Err("invalid configuration: SMS_BUDGET_HOME_RESERVE of 100 would leave nothing for the other countries: 0 to 99".into());
        }
        let (setting, home) = match (&budget.home_countries[..], self.phone.default_region) {
            ([], None) => ("DEFAULT_REGION", Vec::new()),
            ([], Some(region)) => ("DEFAULT_REGION", vec![Country::Region(region)]),
            (listed, _) => ("SMS_BUDGET_HOME_COUNTRIES", listed.to_vec()),
        };
        let codes = home.into_iter().map(Country::calling_code).collect::<Option<Vec<u16>>>();
        let codes = codes.ok_or_else(|| format!("invalid configuration: {setting} names a country without a calling code"))?;
        self.sms_budget.home_calling_codes = codes;
        Ok(())
    }

    /// The settings each sender in use requires: OTP_SENDER's, and EMAIL_SENDER's when set.
    fn validate_senders(&self) -> Result<(), String> {
        for kind in std::iter::once(self.otp.sender).chain(self.email.sender.map(SenderKind::from)) {
            self.validate_sender(kind)?;
        }
        Ok(())
    }

    pub(super) fn validate_sender(&self, kind: SenderKind) -> Result<(), String> {
        fn secret(secret: &Option<Secret>) -> Option<&str> {
            secret.as_ref().map(|secret| secret.expose())
        }
        match kind {
            SenderKind::Log => Ok(()),
            SenderKind::Http => {
                if self.sms_http.url.is_none() {
                    return Err("invalid configuration: SMS_HTTP_URL is required when the http sender is used".into());
                }
                let template = self.sms_http.body.expose();
                // Without them every message would reach the gateway without its number or its code.
                for placeholder in ["{phone}", "{message}"] {
                    if !template.contains(placeholder) {
                        return Err(format!(
                            "invalid configuration: SMS_HTTP_BODY has no {placeholder}; it must be a JSON template using {{phone}} and {{message}}"
                        ));
                    }
                }
                let sample = template.replace("{phone}", "18005551234").replace("{message}", "Your code is 123456");
                if serde_json::from_str::<serde_json::Value>(&sample).is_err() {
                    return Err("invalid configuration: SMS_HTTP_BODY must be a JSON template using {phone} and {message}".into());
                }
                Ok(())
            }
            SenderKind::Smtp => {
                if self.smtp.host.is_none() {
                    return Err("invalid configuration: SMTP_HOST is required when the smtp sender is used".into());
                }
                self.smtp.from_mailbox().map(|_| ())
            }
            SenderKind::Twilio => {
                let twilio = &self.twilio;
                require(
                    "twilio",
                    &[("TWILIO_ACCOUNT_SID", twilio.account_sid.as_deref()), ("TWILIO_AUTH_TOKEN", secret(&twilio.auth_token))],
                )?;
                if twilio.from.is_none() && twilio.messaging_service_sid.is_none() {
                    return Err(
                        "invalid configuration: TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID is required when the twilio sender is used"
                            .into(),
                    );
                }
                Ok(())
            }
            SenderKind::Vonage => {
                let vonage = &self.vonage;
                let vars = [
                    ("VONAGE_API_KEY", secret(&vonage.api_key)),
                    ("VONAGE_API_SECRET", secret(&vonage.api_secret)),
                    ("VONAGE_FROM", vonage.from.as_deref()),
                ];
                require("vonage", &vars)
            }
            SenderKind::Messagebird => {
                let messagebird = &self.messagebird;
                let vars = [
                    ("MESSAGEBIRD_ACCESS_KEY", secret(&messagebird.access_key)),
                    ("MESSAGEBIRD_ORIGINATOR", messagebird.originator.as_deref()),
                ];
                require("messagebird", &vars)
            }
            SenderKind::Webhook => {
                require("webhook", &[("WEBHOOK_URL", self.webhook.url.as_deref()), ("WEBHOOK_SECRET", secret(&self.webhook.secret))])?;
                self.webhook.signing_key().map(|_| ())
            }
        }
    }

    /// The SMS of each app with `android_hash` or `webotp_domain` (`APP_SETTINGS`): its
    /// template must not end with a WebOTP line of its own, and with a hash the whole SMS
    /// must fit the 140 bytes SMS Retriever reads, with the longest values its placeholders
    /// take: an `OTP_LENGTH` code, the app's name, or an appid of `MAX_SHOWN_APPID_CHARS`
    /// for the apps no setting names.
    fn validate_sms_autofill(&self) -> Result<(), String> {
        let (apps, otp) = (&self.apps, &self.otp);
        let code = "0".repeat(otp.length);
        let minutes = otp.ttl_secs.div_ceil(60);
        let any_other = "x".repeat(MAX_SHOWN_APPID_CHARS);
        let named = apps.settings.keys().chain(apps.names.keys()).chain(otp.message_per_app.keys()).filter(|appid| *appid != "default");
        for appid in named.map(String::as_str).chain([any_other.as_str()]) {
            let (which, name) = match appid == any_other {
                true => (format!("any other appid (shown up to {MAX_SHOWN_APPID_CHARS} characters)"), None),
                false => (appid.to_string(), apps.names.get(appid).map(String::as_str)),
            };
            let autofill = apps.sms_autofill(if appid == any_other { "default" } else { appid });
            let (template_name, template) = match otp.message_per_app.get(appid) {
                Some(template) => (format!("OTP_MESSAGE_PER_APP[{appid}]"), template),
                None => ("OTP_MESSAGE".to_string(), &otp.message),
            };
            let Some(sms) = autofill.sms_template(template) else { continue };
            let body = fill_message(template.trim_end(), appid, name, &code, minutes);
            if body.lines().last().is_some_and(looks_like_a_webotp_line) {
                return Err(format!(
                    "invalid configuration: APP_SETTINGS for {which}: {template_name} ends with a line of the WebOTP form @host #code, \
                     which the auto-fill lines would follow; set webotp_domain instead"
                ));
            }
            if autofill.android_hash.is_none() {
                continue;
            }
            let (encoding, bytes) = sms_bytes(&fill_message(&sms, appid, name, &code, minutes));
            if bytes > SMS_RETRIEVER_MAX_BYTES {
                let characters = match encoding {
                    SmsEncoding::Gsm7 => "GSM-7: 160 characters, extension characters such as [ ] € counting two",
                    SmsEncoding::Ucs2 => "UCS-2, as it has a character outside GSM-7: 70 characters",
                };
                return Err(format!(
                    "invalid configuration: APP_SETTINGS for {which}: its SMS with android_hash can be {bytes} bytes, over the \
                     {SMS_RETRIEVER_MAX_BYTES} SMS Retriever reads ({characters}); shorten {template_name} or the app's name"
                ));
            }
        }
        Ok(())
    }

    /// What is allowed but probably not meant; `serve` and `check-config` log each line.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.upstream.url == BUILTIN_UPSTREAM {
            warnings.push(super::BUILTIN_UPSTREAM_WARNING);
        } else if self.upstream.app_token.is_none() {
            warnings.push("APP_TOKEN is not set: the upstream platform will refuse to issue tokens until it is (UPSTREAM_URL=builtin tries the service without one)");
        }
        if self.database.url.is_some() && self.redis.url.is_none() {
            warnings.push("DATABASE_URL without REDIS_URL: rate limits and the SMS budget are kept per instance, so N instances allow N times as much; set REDIS_URL to share them");
        }
        if self.admin.bind.as_deref().is_some_and(|bind| !is_loopback_bind(bind)) {
            warnings.push("ADMIN_BIND is not a loopback address and the operator API speaks plain HTTP: ADMIN_TOKEN and users' data cross the network in clear; bind it to 127.0.0.1 (and reach it through an SSH tunnel) or put a TLS proxy in front on the same host");
        }
        if self.otp.secret.as_ref().is_some_and(|secret| secret.expose().len() < MIN_OTP_SECRET_BYTES) {
            warnings.push("OTP_SECRET is shorter than 16 characters: a copy of the database could be matched against guesses of it; use `openssl rand -hex 32`");
        }
        warnings
    }
}

/// The longest SMS Android's SMS Retriever reads.
const SMS_RETRIEVER_MAX_BYTES: usize = 140;

/// A line WebOTP would read: `@host #code`, with nothing before the `@`.
fn looks_like_a_webotp_line(line: &str) -> bool {
    line.starts_with('@') && line.split_once(' ').is_some_and(|(_, rest)| rest.starts_with('#'))
}

/// Fails with `sender` and the variables it lacks when a sender is chosen but not configured.
fn require(sender: &str, vars: &[(&str, Option<&str>)]) -> Result<(), String> {
    let missing: Vec<&str> = vars.iter().filter(|(_, value)| value.is_none()).map(|(name, _)| *name).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid configuration: {} required when the {sender} sender is used", missing.join(", ")))
    }
}

/// Whether a `host:port` listens on a loopback address only.
pub(super) fn is_loopback_bind(bind: &str) -> bool {
    match bind_host(bind) {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The host part of a `host:port` BIND, if the port is a number.
fn bind_host(bind: &str) -> Option<&str> {
    let (host, port) = bind.trim().rsplit_once(':')?;
    let well_formed = !host.is_empty() && !host.contains(['/', ' ']) && port.parse::<u16>().is_ok();
    well_formed.then_some(host)
}

/// An absolute http(s) URL with a host.
fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()))
}

/// How many hosts a PostgreSQL URL names, in libpq's forms: `postgres://` or `postgresql://`, then
/// `user:password@` if any, then one host or several (`h1:5432,h2:5433`, `[::1]:5432`),
/// or none with `?host=h1,h2` (and `?port=`) instead. The driver parses it in full when
/// the pool is made; this catches what is not a PostgreSQL URL at all.
pub(super) fn postgres_url_hosts(url: &str) -> Result<usize, String> {
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

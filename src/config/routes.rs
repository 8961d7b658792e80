//! Which providers carry codes to which numbers: named provider instances
//! (`SMS_PROVIDERS`), and routes from a number's prefix to an ordered list of them
//! (`SMS_ROUTES`). The flat `TWILIO_*`, `VONAGE_*`, ... settings stand for the instance
//! named after their kind, so a configuration of one provider keeps working unchanged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::values::{Json, Secret};
use super::{Config, SenderKind};

/// Named provider instances and the routes over them. (`SMS_PROVIDERS`, `SMS_ROUTES`)
#[derive(Clone, Deserialize, Serialize)]
pub struct RouteSettings {
    /// JSON object name → `{"kind": ..., its settings}`. Printed with its secrets hidden.
    #[serde(default, deserialize_with = "providers", rename = "sms_providers")]
    pub providers: Providers,
    /// JSON object prefix (`"44"`, `"1876"`, `"*"`) → ordered instance names. Unset:
    /// `{"*": [OTP_SENDER]}`.
    #[serde(default, deserialize_with = "routes", rename = "sms_routes")]
    pub routes: Json<BTreeMap<String, Vec<String>>>,
    /// The routes as checked at load: every instance they use, and each prefix's list of
    /// indexes into it, longest prefix first, `"*"` last.
    #[serde(skip)]
    pub resolved: Routing,
}

/// `SMS_PROVIDERS` as parsed; serialized with every credential as `<redacted>`.
#[derive(Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Providers(pub BTreeMap<String, ProviderInstance>);

/// One provider instance: its kind and that kind's settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderInstance {
    Twilio(TwilioInstance),
    Vonage(VonageInstance),
    Messagebird(MessageBirdInstance),
    Http(HttpInstance),
    Webhook(WebhookInstance),
    Whatsapp(WhatsappInstance),
    TwilioVoice(TwilioInstance),
    /// Writes codes to the log (local testing); only as `OTP_SENDER=log`.
    #[serde(skip_deserializing)]
    Log,
}

/// How a code reaches the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Whatsapp,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Voice => "voice",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        match text {
            "sms" => Some(Channel::Sms),
            "whatsapp" => Some(Channel::Whatsapp),
            "voice" => Some(Channel::Voice),
            _ => None,
        }
    }
}

impl ProviderInstance {
    /// The kind as written in `SMS_PROVIDERS`; also the label of metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderInstance::Twilio(_) => "twilio",
            ProviderInstance::Vonage(_) => "vonage",
            ProviderInstance::Messagebird(_) => "messagebird",
            ProviderInstance::Http(_) => "http",
            ProviderInstance::Webhook(_) => "webhook",
            ProviderInstance::Whatsapp(_) => "whatsapp",
            ProviderInstance::TwilioVoice(_) => "twilio_voice",
            ProviderInstance::Log => "log",
        }
    }

    pub fn channel(&self) -> Channel {
        match self {
            ProviderInstance::Whatsapp(_) => Channel::Whatsapp,
            ProviderInstance::TwilioVoice(_) => Channel::Voice,
            _ => Channel::Sms,
        }
    }

    /// What is wrong with the settings, beyond what reading them checked.
    fn problem(&self) -> Option<String> {
        let blank = |value: &str| value.trim().is_empty();
        let not_url = |value: &str| !(value.starts_with("https://") || value.starts_with("http://"));
        match self {
            ProviderInstance::Twilio(twilio) | ProviderInstance::TwilioVoice(twilio) => {
                if blank(&twilio.account_sid) || twilio.auth_token.is_empty() {
                    return Some("needs account_sid and auth_token".into());
                }
                let voice = matches!(self, ProviderInstance::TwilioVoice(_));
                match (&twilio.from, &twilio.messaging_service_sid) {
                    (None, _) if voice => return Some("needs from, the number calls come from".into()),
                    (None, None) => return Some("needs from or messaging_service_sid".into()),
                    _ => {}
                }
                not_url(&twilio.base_url).then(|| "has a base_url that is not an http(s) URL".into())
            }
            ProviderInstance::Vonage(vonage) => {
                if vonage.api_key.is_empty() || vonage.api_secret.is_empty() || blank(&vonage.from) {
                    return Some("needs api_key, api_secret and from".into());
                }
                not_url(&vonage.base_url).then(|| "has a base_url that is not an http(s) URL".into())
            }
            ProviderInstance::Messagebird(messagebird) => {
                if messagebird.access_key.is_empty() || blank(&messagebird.originator) {
                    return Some("needs access_key and originator".into());
                }
                not_url(&messagebird.base_url).then(|| "has a base_url that is not an http(s) URL".into())
            }
            ProviderInstance::Http(http) => {
                if not_url(&http.url) {
                    return Some("needs url, an http(s) URL".into());
                }
                let template = http.body.expose();
                if !template.contains("{phone}") || !template.contains("{message}") {
                    return Some("has a body template without {phone} and {message}".into());
                }
                let sample = template.replace("{phone}", "18005551234").replace("{message}", "Your code is 123456");
                serde_json::from_str::<serde_json::Value>(&sample).is_err().then(|| "has a body template that is not JSON".into())
            }
            ProviderInstance::Webhook(webhook) => {
                if not_url(&webhook.url) || webhook.secret.is_empty() {
                    return Some("needs url and secret".into());
                }
                webhook.signing_key().err()
            }
            ProviderInstance::Whatsapp(whatsapp) => {
                if blank(&whatsapp.phone_number_id) || whatsapp.access_token.is_empty() || blank(&whatsapp.template) {
                    return Some("needs phone_number_id, access_token and template".into());
                }
                not_url(&whatsapp.base_url).then(|| "has a base_url that is not an http(s) URL".into())
            }
            ProviderInstance::Log => None,
        }
    }
}

/// Twilio's Messages API (`twilio`) or Calls API (`twilio_voice`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioInstance {
    pub account_sid: String,
    /// Also the key of its status callbacks' signatures.
    pub auth_token: Secret,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    #[serde(default = "defaults::twilio_base_url")]
    pub base_url: String,
}

/// Vonage's SMS API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VonageInstance {
    pub api_key: Secret,
    pub api_secret: Secret,
    pub from: String,
    /// The key of signed delivery receipts; without it they are refused.
    #[serde(default)]
    pub signature_secret: Option<Secret>,
    #[serde(default)]
    pub signature_method: VonageSignatureMethod,
    #[serde(default = "defaults::vonage_base_url")]
    pub base_url: String,
}

/// How Vonage signs: the method chosen in its dashboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VonageSignatureMethod {
    #[default]
    Md5hash,
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

/// MessageBird's SMS API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBirdInstance {
    pub access_key: Secret,
    pub originator: String,
    /// The signing key of its status reports; without it they are refused.
    #[serde(default)]
    pub signing_key: Option<Secret>,
    #[serde(default = "defaults::messagebird_base_url")]
    pub base_url: String,
}

/// A generic SMS gateway taking a JSON body built from a template.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpInstance {
    pub url: String,
    #[serde(default)]
    pub auth: Option<Secret>,
    #[serde(default = "defaults::http_body")]
    pub body: Secret,
    #[serde(default = "defaults::http_timeout_secs")]
    pub timeout_secs: u64,
}

/// The signed webhook.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookInstance {
    pub url: String,
    pub secret: Secret,
}

impl WebhookInstance {
    /// The key the secret stands for: a Standard Webhooks secret is `whsec_` and the key in
    /// base64; any other value is the key's bytes.
    pub fn signing_key(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let secret = self.secret.expose();
        match secret.strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| "has a secret whose part after whsec_ is not base64".to_string()),
            None => Ok(secret.as_bytes().to_vec()),
        }
    }
}

/// The WhatsApp Cloud API, sending an authentication template with a copy-code button.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappInstance {
    pub phone_number_id: String,
    pub access_token: Secret,
    /// The approved authentication template's name.
    pub template: String,
    #[serde(default = "defaults::whatsapp_language")]
    pub language: String,
    /// The app secret that signs status webhooks; without it they are refused.
    #[serde(default)]
    pub app_secret: Option<Secret>,
    /// What Meta sends back when the webhook is registered.
    #[serde(default)]
    pub verify_token: Option<Secret>,
    #[serde(default = "defaults::whatsapp_base_url")]
    pub base_url: String,
}

/// The checked routes: the instances in use and each prefix's ordered list of them.
#[derive(Clone, Default)]
pub struct Routing {
    pub instances: Vec<(String, ProviderInstance)>,
    /// Longest prefix first; `"*"` (the empty prefix here) last.
    pub routes: Vec<(String, Vec<usize>)>,
}

impl Routing {
    /// The route of a number in E.164 digits (see [`route_in`]).
    pub fn route_for(&self, digits: &str) -> &[usize] {
        route_in(&self.routes, digits)
    }
}

/// The route of a number in E.164 digits among `routes` (longest prefix first, as
/// [`Routing::routes`] keeps them): the first whose prefix matches, which is the longest.
pub fn route_in<'a>(routes: &'a [(String, Vec<usize>)], digits: &str) -> &'a [usize] {
    routes.iter().find(|(prefix, _)| digits.starts_with(prefix.as_str())).map_or(&[], |(_, route)| &route[..])
}

fn providers<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Providers, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(Providers::default());
    }
    let entries: BTreeMap<String, ProviderInstance> = serde_json::from_str(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "SMS_PROVIDERS must be a JSON object of instance name to {{\"kind\": \"twilio\"|\"vonage\"|\"messagebird\"|\"http\"|\"webhook\"|\"whatsapp\"|\"twilio_voice\", ...}}: {e}"
        ))
    })?;
    Ok(Providers(entries))
}

fn routes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json<BTreeMap<String, Vec<String>>>, D::Error> {
    Json::parse_with(String::deserialize(deserializer)?, |text| {
        serde_json::from_str(text).map_err(|e| format!("SMS_ROUTES must be a JSON object of prefix to a list of instance names: {e}"))
    })
    .map_err(serde::de::Error::custom)
}

impl Config {
    /// The instance a flat sender's settings stand for, named after its kind; `None` for
    /// kinds that do not carry codes to phones.
    pub fn flat_instance(&self, kind: SenderKind) -> Option<ProviderInstance> {
        let secret = |secret: &Option<Secret>| secret.clone().unwrap_or_default();
        Some(match kind {
            SenderKind::Log => ProviderInstance::Log,
            SenderKind::Smtp => return None,
            SenderKind::Twilio => ProviderInstance::Twilio(TwilioInstance {
                account_sid: self.twilio.account_sid.clone().unwrap_or_default(),
                auth_token: secret(&self.twilio.auth_token),
                from: self.twilio.from.clone(),
                messaging_service_sid: self.twilio.messaging_service_sid.clone(),
                base_url: self.twilio.base_url.clone(),
            }),
            SenderKind::Vonage => ProviderInstance::Vonage(VonageInstance {
                api_key: secret(&self.vonage.api_key),
                api_secret: secret(&self.vonage.api_secret),
                from: self.vonage.from.clone().unwrap_or_default(),
                signature_secret: self.vonage.signature_secret.clone(),
                signature_method: self.vonage.signature_method,
                base_url: self.vonage.base_url.clone(),
            }),
            SenderKind::Messagebird => ProviderInstance::Messagebird(MessageBirdInstance {
                access_key: secret(&self.messagebird.access_key),
                originator: self.messagebird.originator.clone().unwrap_or_default(),
                signing_key: self.messagebird.signing_key.clone(),
                base_url: self.messagebird.base_url.clone(),
            }),
            SenderKind::Http => ProviderInstance::Http(HttpInstance {
                url: self.sms_http.url.clone().unwrap_or_default(),
                auth: self.sms_http.auth.clone(),
                body: self.sms_http.body.clone(),
                timeout_secs: self.sms_http.timeout_secs,
            }),
            SenderKind::Webhook => ProviderInstance::Webhook(WebhookInstance {
                url: self.webhook.url.clone().unwrap_or_default(),
                secret: secret(&self.webhook.secret),
            }),
        })
    }

    /// Checks `SMS_PROVIDERS` and `SMS_ROUTES` together and keeps the routes resolved.
    pub(super) fn validate_routes(&mut self) -> Result<(), String> {
        let bad = |name: &str, why: String| Err(format!("invalid configuration: {name} {why}"));
        for (name, instance) in &self.routing.providers.0 {
            if !valid_name(name) {
                return bad("SMS_PROVIDERS", format!("names an instance {name:?}: names are letters, digits, _ and -"));
            }
            if let Some(problem) = instance.problem() {
                return bad("SMS_PROVIDERS", format!("instance {name} {problem}"));
            }
        }
        let table: BTreeMap<String, Vec<String>> = if self.routing.routes.is_empty() {
            match self.flat_instance(self.otp.sender) {
                Some(_) => BTreeMap::from([("*".to_string(), vec![self.otp.sender.as_str().to_string()])]),
                // OTP_SENDER reaches only e-mail: no phone logins.
                None => BTreeMap::new(),
            }
        } else {
            (*self.routing.routes).clone()
        };
        if !table.is_empty() && !table.contains_key("*") {
            return bad("SMS_ROUTES", "needs a \"*\" route for the numbers no other prefix matches".into());
        }
        let mut instances: Vec<(String, ProviderInstance)> = Vec::new();
        let mut routes = Vec::new();
        for (prefix, names) in &table {
            if prefix != "*" && (prefix.is_empty() || prefix.len() > 15 || !prefix.bytes().all(|b| b.is_ascii_digit())) {
                return bad(
                    "SMS_ROUTES",
                    format!("has a prefix {prefix:?}: prefixes are a calling code or longer number prefix in digits, or \"*\""),
                );
            }
            if names.is_empty() {
                return bad("SMS_ROUTES", format!("route {prefix:?} lists no instance"));
            }
            let mut route = Vec::with_capacity(names.len());
            for name in names {
                let index = match instances.iter().position(|(known, _)| known == name) {
                    Some(index) => index,
                    None => {
                        let instance = self.instance_named(name)?.ok_or_else(|| {
                            format!("invalid configuration: SMS_ROUTES route {prefix:?} names {name:?}, which is not an instance of SMS_PROVIDERS nor a sender kind that reaches phones")
                        })?;
                        instances.push((name.to_string(), instance));
                        instances.len() - 1
                    }
                };
                if route.contains(&index) {
                    return bad("SMS_ROUTES", format!("route {prefix:?} lists {name:?} twice"));
                }
                route.push(index);
            }
            routes.push((if prefix == "*" { String::new() } else { prefix.clone() }, route));
        }
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        self.routing.resolved = Routing { instances, routes };
        Ok(())
    }

    /// An instance of `SMS_PROVIDERS`, or else the flat settings of the kind so named,
    /// checked as that sender's settings are.
    fn instance_named(&self, name: &str) -> Result<Option<ProviderInstance>, String> {
        if let Some(instance) = self.routing.providers.0.get(name) {
            return Ok(Some(instance.clone()));
        }
        let Some(kind) = SenderKind::ALL.iter().copied().find(|kind| kind.as_str() == name) else {
            return Ok(None);
        };
        let instance = self.flat_instance(kind);
        if instance.is_some() {
            self.validate_sender(kind)?;
        }
        Ok(instance)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The defaults of the instances' fields; also those of the flat `TWILIO_*`, ... settings.
pub(super) mod defaults {
    pub fn twilio_base_url() -> String {
        "https://api.twilio.com".into()
    }
    pub fn vonage_base_url() -> String {
        "https://rest.nexmo.com".into()
    }
    pub fn messagebird_base_url() -> String {
        "https://rest.messagebird.com".into()
    }
    pub fn whatsapp_base_url() -> String {
        "https://graph.facebook.com/v21.0".into()
    }
    pub fn whatsapp_language() -> String {
        "en_US".into()
    }
    pub fn http_body() -> super::Secret {
        r#"{"to":"{phone}","text":"{message}"}"#.into()
    }
    pub fn http_timeout_secs() -> u64 {
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_PROVIDERS: &str = r#"{
        "twilio_uk": {"kind": "twilio", "account_sid": "AC1", "auth_token": "uk-token-secret", "from": "Example"},
        "twilio_us": {"kind": "twilio", "account_sid": "AC2", "auth_token": "us-token-secret", "messaging_service_sid": "MG1"},
        "vonage": {"kind": "vonage", "api_key": "key", "api_secret": "vonage-secret", "from": "Example"}
    }"#;

    fn names(config: &Config, digits: &str) -> Vec<String> {
        let routing = &config.routing.resolved;
        routing.route_for(digits).iter().map(|&i| routing.instances[i].0.clone()).collect()
    }

    #[test]
    fn the_default_route_is_otp_sender() {
        let config =
            Config::from_vars([("OTP_SENDER", "twilio"), ("TWILIO_ACCOUNT_SID", "AC1"), ("TWILIO_AUTH_TOKEN", "t"), ("TWILIO_FROM", "X")])
                .unwrap();
        assert_eq!(names(&config, "447400123456"), ["twilio"]);
        assert!(matches!(config.routing.resolved.instances[0].1, ProviderInstance::Twilio(ref t) if t.account_sid == "AC1"));
        let log = Config::from_vars([("OTP_SENDER", "log")]).unwrap();
        assert_eq!(names(&log, "15551234567"), ["log"]);
        let smtp = Config::from_vars([("OTP_SENDER", "smtp"), ("SMTP_HOST", "mail"), ("SMTP_FROM", "a@example.com")]).unwrap();
        assert!(smtp.routing.resolved.route_for("15551234567").is_empty(), "an e-mail sender has no route to phones");
    }

    #[test]
    fn the_longest_prefix_wins_and_flat_settings_are_an_instance() {
        let routes = r#"{"44": ["twilio_uk", "vonage"], "1876": ["vonage"], "1": ["twilio_us"], "*": ["messagebird", "twilio_uk"]}"#;
        let config = Config::from_vars([
            ("SMS_PROVIDERS", TWO_PROVIDERS),
            ("SMS_ROUTES", routes),
            ("MESSAGEBIRD_ACCESS_KEY", "k"),
            ("MESSAGEBIRD_ORIGINATOR", "Example"),
        ])
        .unwrap();
        assert_eq!(names(&config, "447400123456"), ["twilio_uk", "vonage"]);
        assert_eq!(names(&config, "18765550123"), ["vonage"]);
        assert_eq!(names(&config, "12025550123"), ["twilio_us"]);
        assert_eq!(names(&config, "33612345678"), ["messagebird", "twilio_uk"]);
        assert_eq!(config.routing.resolved.instances.len(), 4, "an instance on several routes is built once");
    }

    #[test]
    fn printed_settings_hide_every_credential() {
        let config = Config::from_vars([("SMS_PROVIDERS", TWO_PROVIDERS), ("SMS_ROUTES", r#"{"*": ["twilio_uk"]}"#)]).unwrap();
        let printed = serde_json::to_string(&config).unwrap();
        for secret in ["uk-token-secret", "us-token-secret", "vonage-secret"] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
        assert!(printed.contains("twilio_uk") && printed.contains("<redacted>"));
    }

    #[test]
    fn bad_routes_and_instances_are_refused_with_a_reason() {
        let flat_twilio = [("TWILIO_ACCOUNT_SID", "AC1"), ("TWILIO_AUTH_TOKEN", "t"), ("TWILIO_FROM", "X")];
        for (providers, routes, why) in [
            ("", r#"{"*": ["nobody"]}"#, "names \"nobody\", which is not an instance"),
            ("", r#"{"*": ["smtp"]}"#, "names \"smtp\", which is not an instance of SMS_PROVIDERS nor a sender kind that reaches phones"),
            ("", r#"{"44": ["log"]}"#, "needs a \"*\" route"),
            ("", r#"{"+44": ["log"], "*": ["log"]}"#, "has a prefix \"+44\""),
            ("", r#"{"*": []}"#, "lists no instance"),
            ("", r#"{"*": ["log", "log"]}"#, "lists \"log\" twice"),
            ("", r#"{"*": ["vonage"]}"#, "VONAGE_API_KEY, VONAGE_API_SECRET, VONAGE_FROM required"),
            ("", r#"["log"]"#, "SMS_ROUTES must be a JSON object"),
            (r#"{"x": {"kind": "twilio", "account_sid": "AC1", "auth_token": "t"}}"#, "", "instance x needs from or messaging_service_sid"),
            (
                r#"{"x": {"kind": "twilio_voice", "account_sid": "AC1", "auth_token": "t", "messaging_service_sid": "MG"}}"#,
                "",
                "needs from, the number calls come from",
            ),
            (r#"{"x": {"kind": "twilio", "account_sid": "AC1", "auth_token": "t", "from": "X", "form": "Y"}}"#, "", "unknown field `form`"),
            (r#"{"x": {"kind": "pigeon"}}"#, "", "unknown variant `pigeon`"),
            (r#"{"x": {"kind": "log"}}"#, "", "unknown variant `log`"),
            (r#"{"a b": {"kind": "vonage", "api_key": "k", "api_secret": "s", "from": "X"}}"#, "", "names an instance \"a b\""),
            (r#"{"x": {"kind": "http", "url": "gateway", "body": "{}"}}"#, "", "instance x needs url"),
            (r#"{"x": {"kind": "http", "url": "https://sms.example.com", "body": "{}"}}"#, "", "without {phone} and {message}"),
            (r#"{"x": {"kind": "whatsapp", "phone_number_id": "1", "access_token": "t"}}"#, "", "missing field `template`"),
            (r#"{"x": {"kind": "webhook", "url": "https://hooks.example.com", "secret": "whsec_!"}}"#, "", "not base64"),
        ] {
            let vars = [&flat_twilio[..], &[("SMS_PROVIDERS", providers), ("SMS_ROUTES", routes)]].concat();
            let error = Config::from_vars(vars).err().unwrap_or_else(|| panic!("{providers} {routes} was accepted"));
            assert!(error.contains(why), "{providers} {routes}: {error}");
        }
    }
}

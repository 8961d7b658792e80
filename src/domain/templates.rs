//! The text of the code message: `OTP_MESSAGE` or a per-app override, with
//! `{otp}`, `{appid}`, `{appname}` and `{minutes}` filled in; an SMS ends with the
//! app's auto-fill lines (`APP_SETTINGS`' `android_hash` and `webotp_domain`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub use crate::config::gsm7_septets;
pub(crate) use crate::config::looks_like_an_app_id;
use crate::config::{fill_message, Config};
use crate::domain::address::Address;
use crate::domain::recent::Recent;

pub struct Templates {
    default: String,
    per_app: HashMap<String, String>,
    app_names: HashMap<String, String>,
    minutes: u64,
    /// The SMS template, auto-fill lines included, of each app a setting names (`None`:
    /// its SMS has none); every other appid's is `sms_default`.
    sms_per_app: HashMap<String, Option<String>>,
    sms_default: Option<String>,
    /// The messages of each app named in the configuration, filled in but for the code,
    /// made at start; other appids' as they come (see [`Templates::render`]).
    filled: HashMap<String, Arc<Filled>>,
    recent: Mutex<Recent<Arc<Filled>>>,
}

/// An app's messages with every placeholder but `{otp}` filled in.
struct Filled {
    text: AroundCode,
    /// The SMS, when the app's has auto-fill lines; else it is `text`.
    sms: Option<AroundCode>,
}

/// A message with every placeholder but `{otp}` filled in: the text around each `{otp}`.
struct AroundCode(Vec<String>);

impl Templates {
    pub fn from_config(config: &Config) -> Templates {
        let per_app = by_app(&config.otp.message_per_app);
        let app_names = by_app(&config.apps.names);
        let settings = config.apps.settings.keys().filter(|appid| *appid != "default");
        let named: Vec<String> = per_app.keys().chain(app_names.keys()).chain(settings).cloned().collect();
        let template = |appid: &str| per_app.get(appid).unwrap_or(&config.otp.message);
        let sms_per_app =
            named.iter().map(|appid| (appid.clone(), config.apps.sms_autofill(appid).sms_template(template(appid)))).collect();
        let sms_default = config.apps.sms_autofill("default").sms_template(&config.otp.message);
        let mut templates = Templates {
            default: config.otp.message.clone(),
            per_app,
            app_names,
            minutes: config.otp.ttl_secs.div_ceil(60),
            sms_per_app,
            sms_default,
            filled: HashMap::new(),
            recent: Mutex::default(),
        };
        templates.filled = named.into_iter().map(|appid| (appid.clone(), Arc::new(templates.around_code(&appid)))).collect();
        templates
    }

    /// The message to `to` for `appid`: an SMS (to a phone) with the app's auto-fill
    /// lines, an e-mail without them.
    pub fn render_to(&self, to: &Address, appid: &str, otp: &str) -> String {
        self.render_as(appid, otp, matches!(to, Address::Phone(_)))
    }

    /// The message text for `appid`: its override or `OTP_MESSAGE`, filled in, without
    /// auto-fill lines.
    pub fn render(&self, appid: &str, otp: &str) -> String {
        self.render_as(appid, otp, false)
    }

    fn render_as(&self, appid: &str, otp: &str, sms: bool) -> String {
        // Filling the text around the code gives what filling the code first does, as long
        // as the code cannot be part of a placeholder: digits cannot, the empty text can.
        if otp.is_empty() || !otp.bytes().all(|b| b.is_ascii_digit()) {
            let template = if sms { self.sms_template(appid).unwrap_or(self.template(appid)) } else { self.template(appid) };
            return self.fill(template, appid, otp);
        }
        let filled = match self.filled.get(appid) {
            Some(filled) => Arc::clone(filled),
            None => {
                let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                recent.get_or_insert_with(appid, || Arc::new(self.around_code(appid)))
            }
        };
        match (sms, &filled.sms) {
            (true, Some(around)) => around.0.join(otp),
            _ => filled.text.0.join(otp),
        }
    }

    fn template(&self, appid: &str) -> &str {
        self.per_app.get(appid).unwrap_or(&self.default)
    }

    fn sms_template(&self, appid: &str) -> Option<&str> {
        self.sms_per_app.get(appid).map_or(self.sms_default.as_deref(), Option::as_deref)
    }

    fn around_code(&self, appid: &str) -> Filled {
        let around = |template: &str| AroundCode(template.split("{otp}").map(|part| self.fill(part, appid, "")).collect());
        Filled { text: around(self.template(appid)), sms: self.sms_template(appid).map(around) }
    }

    /// Fills the placeholders of any template (e.g. `EMAIL_SUBJECT`).
    pub fn fill(&self, template: &str, appid: &str, otp: &str) -> String {
        fill_message(template, appid, self.app_names.get(appid).map(String::as_str), otp, self.minutes)
    }

    /// Warns when an SMS renders longer than one segment, which costs double.
    pub fn warn_if_over_one_segment(&self, otp_length: usize) {
        let sample_otp = "0".repeat(otp_length);
        let with_autofill = self.sms_per_app.iter().filter(|(_, sms)| sms.is_some()).map(|(appid, _)| appid);
        let mut appids: Vec<&str> = self.per_app.keys().chain(with_autofill).map(String::as_str).collect();
        appids.sort_unstable();
        appids.dedup();
        appids.push("");
        for appid in appids {
            let text = self.render_as(appid, &sample_otp, true);
            let (length, limit) = match gsm7_septets(&text) {
                Some(septets) => (septets, 160),
                None => (text.encode_utf16().count(), 70),
            };
            if length > limit {
                let which = match (appid, self.per_app.contains_key(appid)) {
                    ("", _) => "OTP_MESSAGE".to_string(),
                    (_, true) => format!("OTP_MESSAGE_PER_APP[{appid}]"),
                    (_, false) => format!("OTP_MESSAGE for {appid}"),
                };
                tracing::warn!(
                    "{which} renders to {length} characters, over the {limit} of one SMS segment: each code will cost several messages"
                );
            }
        }
    }
}

/// A setting's texts by appid (`APP_NAMES`, `OTP_MESSAGE_PER_APP`), for lookups by appid.
pub(crate) fn by_app(texts: &BTreeMap<String, String>) -> HashMap<String, String> {
    texts.iter().map(|(appid, text)| (appid.clone(), text.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(vars: &[(&str, &str)]) -> Templates {
        Templates::from_config(&Config::from_vars(vars.iter().copied()).unwrap())
    }

    #[test]
    fn client_text_cannot_ride_in_a_message() {
        let t = templates(&[("OTP_MESSAGE", "{appname} code {otp}")]);
        assert_eq!(t.render("com.example.app", "123456"), "com.example.app code 123456");
        assert_eq!(t.render("Your bank account is locked, call 555", "123456"), " code 123456");
    }

    #[test]
    fn placeholders_and_per_app_overrides() {
        let t = templates(&[
            ("OTP_MESSAGE", "{appname}: {otp}, valid {minutes} min"),
            ("OTP_TTL_SECS", "90"),
            ("APP_NAMES", r#"{"com.a":"Alpha"}"#),
            ("OTP_MESSAGE_PER_APP", r#"{"com.b":"B code {otp} for {appid}"}"#),
        ]);
        assert_eq!(t.render("com.a", "123456"), "Alpha: 123456, valid 2 min");
        assert_eq!(t.render("com.c", "123456"), "com.c: 123456, valid 2 min");
        assert_eq!(t.render("com.b", "123456"), "B code 123456 for com.b");
    }

    #[test]
    fn messages_filled_around_the_code_are_those_filled_with_it() {
        let t = templates(&[
            ("OTP_MESSAGE", "{otp} is your {appname} code ({appid}, {minutes} min). {otp}"),
            ("APP_NAMES", r#"{"com.a":"Alpha {minutes}"}"#),
            ("OTP_MESSAGE_PER_APP", r#"{"com.b":"{otp}{otp}{appid}{ap{otp}pid}"}"#),
            ("APP_SETTINGS", r#"{"com.b":{"android_hash":"FA+9qCX9VSu"},"com.d":{"webotp_domain":"login.example.com"}}"#),
        ]);
        for appid in ["com.a", "com.b", "com.c", "com.d", "not an id", ""] {
            for otp in ["123456", "0042", "", "{appid}"] {
                let template = t.template(appid);
                assert_eq!(t.render(appid, otp), t.fill(template, appid, otp), "{appid:?} {otp:?}");
                assert_eq!(t.render(appid, otp), t.fill(template, appid, otp), "{appid:?} {otp:?}, kept");
                let sms = t.sms_template(appid).unwrap_or(template);
                assert_eq!(t.render_sms(appid, otp), t.fill(sms, appid, otp), "{appid:?} {otp:?}, SMS");
            }
        }
        assert_eq!(t.render("com.a", "123456"), "123456 is your Alpha 5 code (com.a, 5 min). 123456");
        assert!(t.filled.contains_key("com.a") && t.filled.contains_key("com.b"), "the configured apps are filled at start");
        assert!(t.recent.lock().unwrap().len() <= 3, "other appids as they come");
    }

    const HASH: &str = "FA+9qCX9VSu";
    const PHONE: &str = "18005551234";

    impl Templates {
        fn render_sms(&self, appid: &str, otp: &str) -> String {
            self.render_to(&Address::Phone(PHONE.into()), appid, otp)
        }

        fn render_email(&self, appid: &str, otp: &str) -> String {
            self.render_to(&Address::Email("ann@example.com".into()), appid, otp)
        }
    }

    #[test]
    fn an_sms_ends_with_its_apps_auto_fill_lines() {
        let t = templates(&[
            ("OTP_MESSAGE", "Your {appname} code is {otp}.\n"),
            ("APP_NAMES", r#"{"com.hash":"Hashed","com.both":"Both"}"#),
            (
                "APP_SETTINGS",
                r#"{"com.hash":{"android_hash":"FA+9qCX9VSu"},
                    "com.web":{"webotp_domain":"login.example.com"},
                    "com.both":{"android_hash":"FA+9qCX9VSu","webotp_domain":"xn--bcher-kva.example"}}"#,
            ),
        ]);
        assert_eq!(t.render_sms("com.hash", "123456"), "Your Hashed code is 123456.\nFA+9qCX9VSu");
        assert_eq!(t.render_sms("com.web", "123456"), "Your com.web code is 123456.\n\n@login.example.com #123456");
        assert_eq!(t.render_sms("com.both", "004815"), "Your Both code is 004815.\nFA+9qCX9VSu\n@xn--bcher-kva.example #004815");
        assert_eq!(t.render_sms("com.none", "123456"), "Your com.none code is 123456.\n", "neither: the message as written");
        for appid in ["com.hash", "com.web", "com.both", "com.none"] {
            assert_eq!(t.render_email(appid, "123456"), t.render(appid, "123456"), "{appid}: an e-mail has no auto-fill lines");
            assert!(!t.render_email(appid, "123456").contains(HASH) && !t.render_email(appid, "123456").contains('@'), "{appid}");
        }
    }

    #[test]
    fn an_apps_own_auto_fill_fields_override_defaults_field_by_field() {
        let t = templates(&[
            ("OTP_MESSAGE_PER_APP", r#"{"com.own":"{otp} is your code"}"#),
            (
                "APP_SETTINGS",
                r#"{"default":{"android_hash":"FA+9qCX9VSu","webotp_domain":"example.com"},
                    "com.own":{"webotp_domain":"login.example.com"}}"#,
            ),
        ]);
        assert_eq!(t.render_sms("com.own", "123456"), "123456 is your code\nFA+9qCX9VSu\n@login.example.com #123456");
        assert_eq!(t.render_sms("org.other", "123456"), "Your code is 123456\nFA+9qCX9VSu\n@example.com #123456");
        assert_eq!(t.render_sms("not an id", "123456"), "Your code is 123456\nFA+9qCX9VSu\n@example.com #123456");
        assert!(t.filled.contains_key("com.own") && t.recent.lock().unwrap().len() == 2, "the named app filled at start");
    }

    #[test]
    fn an_sms_with_a_hash_accepted_at_load_fits_140_bytes() {
        // "Your " + name + " code is " + 6 digits, then a line of 11: 32 characters and the name.
        let at_the_limit = |name: &str| {
            let names = serde_json::json!({ "com.a": name }).to_string();
            let vars = [
                ("OTP_MESSAGE_PER_APP", r#"{"com.a":"Your {appname} code is {otp}"}"#),
                ("APP_NAMES", names.as_str()),
                ("APP_SETTINGS", r#"{"com.a":{"android_hash":"FA+9qCX9VSu"}}"#),
            ];
            let sms = templates(&vars).render_sms("com.a", "123456");
            assert!(sms.ends_with("123456\nFA+9qCX9VSu"), "{sms}");
            crate::config::sms_bytes(&sms)
        };
        use crate::config::SmsEncoding::{Gsm7, Ucs2};
        assert_eq!(at_the_limit(&format!("é{}", "x".repeat(127))), (Gsm7, 140), "160 septets");
        assert_eq!(at_the_limit(&format!("€{}", "x".repeat(126))), (Gsm7, 140), "€ takes two septets");
        assert_eq!(at_the_limit(&format!("ł{}", "x".repeat(37))), (Ucs2, 140), "70 UCS-2 characters");
        assert_eq!(at_the_limit(&format!("😀{}", "x".repeat(36))), (Ucs2, 140), "an emoji takes two UTF-16 units");
    }

    #[test]
    fn gsm7_length_counts_extension_characters_twice() {
        assert_eq!(gsm7_septets("Your code is 123456"), Some(19));
        assert_eq!(gsm7_septets("[x]"), Some(5));
        assert_eq!(gsm7_septets("код 123456"), None);
    }
}

//! The text of the code message: `OTP_MESSAGE` or a per-app override, with
//! `{otp}`, `{appid}`, `{appname}` and `{minutes}` filled in.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::domain::recent::Recent;

/// Characters of the GSM 03.38 default alphabet, one septet each.
const GSM7_BASIC: &str =
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the GSM extension table, two septets each (escape + char).
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{c}";

pub struct Templates {
    default: String,
    per_app: HashMap<String, String>,
    app_names: HashMap<String, String>,
    minutes: u64,
    /// The message of each app named in the configuration, filled in but for the code,
    /// made at start; other appids' as they come (see [`Templates::render`]).
    filled: HashMap<String, Arc<AroundCode>>,
    recent: Mutex<Recent<Arc<AroundCode>>>,
}

/// A message with every placeholder but `{otp}` filled in: the text around each `{otp}`.
struct AroundCode(Vec<String>);

impl Templates {
    pub fn from_config(config: &Config) -> Templates {
        let mut templates = Templates {
            default: config.otp.message.clone(),
            per_app: by_app(&config.otp.message_per_app),
            app_names: by_app(&config.apps.names),
            minutes: config.otp.ttl_secs.div_ceil(60),
            filled: HashMap::new(),
            recent: Mutex::default(),
        };
        let named: Vec<String> = templates.per_app.keys().chain(templates.app_names.keys()).cloned().collect();
        templates.filled = named.into_iter().map(|appid| (appid.clone(), Arc::new(templates.around_code(&appid)))).collect();
        templates
    }

    /// The message text for `appid`: its override or `OTP_MESSAGE`, filled in.
    pub fn render(&self, appid: &str, otp: &str) -> String {
        // Filling the text around the code gives what filling the code first does, as long
        // as the code cannot be part of a placeholder: digits cannot, the empty text can.
        if otp.is_empty() || !otp.bytes().all(|b| b.is_ascii_digit()) {
            return self.fill(self.template(appid), appid, otp);
        }
        let around = match self.filled.get(appid) {
            Some(around) => Arc::clone(around),
            None => {
                let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                recent.get_or_insert_with(appid, || Arc::new(self.around_code(appid)))
            }
        };
        around.0.join(otp)
    }

    fn template(&self, appid: &str) -> &str {
        self.per_app.get(appid).unwrap_or(&self.default)
    }

    fn around_code(&self, appid: &str) -> AroundCode {
        AroundCode(self.template(appid).split("{otp}").map(|part| self.fill(part, appid, "")).collect())
    }

    /// Fills the placeholders of any template (e.g. `EMAIL_SUBJECT`).
    pub fn fill(&self, template: &str, appid: &str, otp: &str) -> String {
        // The appid comes from the client: only an id-shaped one goes into a message, so
        // nobody can have arbitrary text sent in an SMS under this service's name.
        let shown_appid = if looks_like_an_app_id(appid) { appid } else { "" };
        let appname = self.app_names.get(appid).map_or(shown_appid, String::as_str);
        template
            .replace("{otp}", otp)
            .replace("{appid}", shown_appid)
            .replace("{appname}", appname)
            .replace("{minutes}", &self.minutes.to_string())
    }

    /// Warns when a template renders longer than one SMS segment, which costs double.
    pub fn warn_if_over_one_segment(&self, otp_length: usize) {
        let sample_otp = "0".repeat(otp_length);
        let mut appids: Vec<&str> = self.per_app.keys().map(String::as_str).collect();
        appids.push("");
        for appid in appids {
            let text = self.render(appid, &sample_otp);
            let (length, limit) = match gsm7_septets(&text) {
                Some(septets) => (septets, 160),
                None => (text.encode_utf16().count(), 70),
            };
            if length > limit {
                let which = if appid.is_empty() { "OTP_MESSAGE".to_string() } else { format!("OTP_MESSAGE_PER_APP[{appid}]") };
                tracing::warn!(
                    "{which} renders to {length} characters, over the {limit} of one SMS segment: each code will cost several messages"
                );
            }
        }
    }
}

/// Septets the text needs in GSM-7, or `None` when it needs UCS-2.
/// A reverse-DNS style id such as `com.example.app`: letters, digits, `.`, `-`, `_`, at most 64.
pub(crate) fn looks_like_an_app_id(appid: &str) -> bool {
    !appid.is_empty() && appid.len() <= 64 && appid.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

pub fn gsm7_septets(text: &str) -> Option<usize> {
    text.chars().try_fold(0, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXTENDED.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    })
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
        ]);
        for appid in ["com.a", "com.b", "com.c", "not an id", ""] {
            for otp in ["123456", "0042", "", "{appid}"] {
                let template = t.template(appid);
                assert_eq!(t.render(appid, otp), t.fill(template, appid, otp), "{appid:?} {otp:?}");
                assert_eq!(t.render(appid, otp), t.fill(template, appid, otp), "{appid:?} {otp:?}, kept");
            }
        }
        assert_eq!(t.render("com.a", "123456"), "123456 is your Alpha 5 code (com.a, 5 min). 123456");
        assert!(t.filled.contains_key("com.a") && t.filled.contains_key("com.b"), "the configured apps are filled at start");
        assert!(t.recent.lock().unwrap().len() <= 3, "other appids as they come");
    }

    #[test]
    fn gsm7_length_counts_extension_characters_twice() {
        assert_eq!(gsm7_septets("Your code is 123456"), Some(19));
        assert_eq!(gsm7_septets("[x]"), Some(5));
        assert_eq!(gsm7_septets("код 123456"), None);
    }
}

//! What the login reply tells each app besides its token (`APP_SETTINGS`): the invite
//! and share text, where files are uploaded and downloaded, and an optional notice the
//! apps show when a code is sent. Every field has a default built from `PUBLIC_URL`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{AppEntry, Config};
use crate::domain::recent::Recent;
use crate::domain::templates::{by_app, looks_like_an_app_id};

/// What one app is told, placeholders filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppReply {
    pub share_text: String,
    pub share_subject: String,
    pub share_title: String,
    pub invite: String,
    pub upload_url: String,
    pub download_url: String,
    /// Shown by the Android app as an alert when a code was sent; none by default.
    pub start_title: Option<String>,
    pub start_message: Option<String>,
    pub start_delay: Option<u64>,
}

pub struct AppSettings {
    default: AppEntry,
    per_app: HashMap<String, AppEntry>,
    app_names: HashMap<String, String>,
    public_url: String,
    /// What each app named in the configuration is told, made at start; other appids'
    /// as they come (every login reply carries it).
    filled: HashMap<String, Arc<AppReply>>,
    recent: Mutex<Recent<Arc<AppReply>>>,
}

const DEFAULT_SHARE_TEXT: &str = "Let's chat on {appname}: {public_url}";
const DEFAULT_SHARE_SUBJECT: &str = "Join me on {appname}";
const DEFAULT_SHARE_TITLE: &str = "Invite a friend";

impl AppSettings {
    pub fn from_config(config: &Config) -> AppSettings {
        let mut per_app: HashMap<String, AppEntry> =
            config.apps.settings.iter().map(|(appid, entry)| (appid.clone(), entry.clone())).collect();
        let default = per_app.remove("default").unwrap_or_default();
        let mut settings = AppSettings {
            default,
            per_app,
            app_names: by_app(&config.apps.names),
            public_url: config.public_base_url(),
            filled: HashMap::new(),
            recent: Mutex::default(),
        };
        let named: Vec<String> = settings.per_app.keys().chain(settings.app_names.keys()).cloned().collect();
        settings.filled = named.into_iter().map(|appid| (appid.clone(), Arc::new(settings.fill_in(&appid)))).collect();
        settings
    }

    /// The settings of `appid`: its own entry, then `default`, then the built-in defaults.
    pub fn for_app(&self, appid: &str) -> Arc<AppReply> {
        if let Some(filled) = self.filled.get(appid) {
            return Arc::clone(filled);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        recent.get_or_insert_with(appid, || Arc::new(self.fill_in(appid)))
    }

    fn fill_in(&self, appid: &str) -> AppReply {
        let own = self.per_app.get(appid);
        let pick = |field: fn(&AppEntry) -> Option<&String>| own.and_then(field).or_else(|| field(&self.default)).cloned();
        let appname = self.app_names.get(appid).map_or(if looks_like_an_app_id(appid) { appid } else { "the app" }, String::as_str);
        let fill = |text: String| text.replace("{appname}", appname).replace("{public_url}", &self.public_url);
        let share_text = fill(pick(|e| e.share.text.as_ref()).unwrap_or_else(|| DEFAULT_SHARE_TEXT.into()));
        AppReply {
            invite: pick(|e| e.invite.as_ref()).map_or_else(|| share_text.clone(), fill),
            share_text,
            share_subject: fill(pick(|e| e.share.subject.as_ref()).unwrap_or_else(|| DEFAULT_SHARE_SUBJECT.into())),
            share_title: fill(pick(|e| e.share.title.as_ref()).unwrap_or_else(|| DEFAULT_SHARE_TITLE.into())),
            upload_url: fill(pick(|e| e.urls.upload.as_ref()).unwrap_or_else(|| "{public_url}/api.php".into())),
            download_url: fill(pick(|e| e.urls.download.as_ref()).unwrap_or_else(|| "{public_url}/files/".into())),
            start_title: pick(|e| e.start.title.as_ref()).map(fill),
            start_message: pick(|e| e.start.message.as_ref()).map(fill),
            start_delay: own.and_then(|e| e.start.delay).or(self.default.start.delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> AppSettings {
        AppSettings::from_config(&Config::from_vars(vars.iter().copied()).unwrap())
    }

    #[test]
    fn defaults_come_from_the_public_url_and_the_app_name() {
        let app = settings(&[("PUBLIC_URL", "https://login.example.com"), ("APP_NAMES", r#"{"com.example.app":"Example Chat"}"#)])
            .for_app("com.example.app");
        assert_eq!(app.upload_url, "https://login.example.com/api.php");
        assert_eq!(app.download_url, "https://login.example.com/files/");
        assert_eq!(app.share_text, "Let's chat on Example Chat: https://login.example.com");
        assert_eq!(app.invite, app.share_text);
        assert_eq!(app.share_subject, "Join me on Example Chat");
        assert_eq!((&app.start_title, &app.start_message, app.start_delay), (&None, &None, None));
    }

    #[test]
    fn an_app_entry_overrides_the_default_entry_field_by_field() {
        let json = r#"{
            "default": {"share": {"title": "Share via"}, "start": {"message": "Your code is on its way", "delay": 2000}},
            "com.example.app": {"share": {"text": "Get {appname}"}, "urls": {"download": "https://cdn.example.com/"}}
        }"#;
        let all = settings(&[("APP_SETTINGS", json)]);
        let app = all.for_app("com.example.app");
        assert_eq!((app.share_text.as_str(), app.invite.as_str()), ("Get com.example.app", "Get com.example.app"));
        assert_eq!(app.share_title, "Share via");
        assert_eq!(app.download_url, "https://cdn.example.com/");
        assert_eq!(app.upload_url, "http://127.0.0.1:8080/api.php");
        assert_eq!((app.start_message.as_deref(), app.start_delay), (Some("Your code is on its way"), Some(2000)));
        let other = all.for_app("org.other");
        assert_eq!(other.share_text, "Let's chat on org.other: http://127.0.0.1:8080");
        assert_eq!(other.share_title, "Share via");
    }

    #[test]
    fn settings_are_filled_once_per_app() {
        let all = settings(&[("APP_SETTINGS", r#"{"com.example.app": {"invite": "Get {appname}"}}"#), ("APP_NAMES", r#"{"com.b":"B"}"#)]);
        assert!(all.filled.contains_key("com.example.app") && all.filled.contains_key("com.b"), "filled at start");
        assert!(all.recent.lock().unwrap().is_empty());
        for appid in ["com.example.app", "com.b", "org.other", "not an id", ""] {
            let first = all.for_app(appid);
            assert_eq!(*first, all.fill_in(appid), "{appid:?}");
            assert!(Arc::ptr_eq(&first, &all.for_app(appid)), "{appid:?} is filled once");
        }
        assert_eq!(all.for_app("com.example.app").invite, "Get com.example.app");
        assert_eq!(all.recent.lock().unwrap().len(), 3, "the other appids as they come");
    }
}

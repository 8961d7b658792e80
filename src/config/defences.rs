//! What keeps abuse and SMS bills down: rate limits, the phone policy, the SMS budget and
//! CAPTCHA.

use phonenumber::country::Id;
use serde::{Deserialize, Serialize};

use super::values::{choice, unless_empty, List, Secret};

/// Rate limits per key; 0 turns one off. (`LIMIT_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct LimitSettings {
    #[serde(default = "defaults::limit_start_per_phone", rename = "limit_start_per_phone_per_hour")]
    pub start_per_phone_per_hour: u32,
    /// Codes sent per address per day, beside the hourly bound: each code's first guess
    /// bound to its challenge is free, so this bounds those guesses.
    #[serde(default = "defaults::limit_start_per_phone_per_day", rename = "limit_start_per_phone_per_day")]
    pub start_per_phone_per_day: u32,
    #[serde(default = "defaults::limit_start_per_ip", rename = "limit_start_per_ip_per_hour")]
    pub start_per_ip_per_hour: u32,
    #[serde(default = "defaults::limit_verify_per_phone", rename = "limit_verify_per_phone_per_hour")]
    pub verify_per_phone_per_hour: u32,
    /// Guesses at an address's codes per day, bound to a challenge or not, beside the
    /// hourly bound: what bounds a year of guessing.
    #[serde(default = "defaults::limit_verify_per_phone_per_day", rename = "limit_verify_per_phone_per_day")]
    pub verify_per_phone_per_day: u32,
    #[serde(default = "defaults::limit_verify_per_ip", rename = "limit_verify_per_ip_per_hour")]
    pub verify_per_ip_per_hour: u32,
    /// Numbers a user may look up per day that are not already among their contacts; 0 = no limit.
    #[serde(default = "defaults::limit_new_contacts_per_user_per_day", rename = "limit_new_contacts_per_user_per_day")]
    pub new_contacts_per_user_per_day: u32,
    /// The same per client IP, over all its users; 0 = no limit.
    #[serde(default = "defaults::limit_new_contacts_per_ip_per_day", rename = "limit_new_contacts_per_ip_per_day")]
    pub new_contacts_per_ip_per_day: u32,
    /// Files (attachments and photos) a user may upload per hour; 0 = no limit.
    #[serde(default = "defaults::limit_uploads_per_user_per_hour", rename = "limit_uploads_per_user_per_hour")]
    pub uploads_per_user_per_hour: u32,
    /// Bytes of files a user may upload per day; 0 = no limit.
    #[serde(default = "defaults::limit_upload_bytes_per_user_per_day", rename = "limit_upload_bytes_per_user_per_day")]
    pub upload_bytes_per_user_per_day: u32,
    #[serde(default = "defaults::limit_start_per_subnet", rename = "limit_start_per_subnet_per_hour")]
    pub start_per_subnet_per_hour: u32,
    #[serde(default = "defaults::limit_start_per_calling_code", rename = "limit_start_per_calling_code_per_hour")]
    pub start_per_calling_code_per_hour: u32,
    /// Members a user may add to groups per hour (those already members cost nothing); 0 = no limit.
    #[serde(default = "defaults::limit_group_adds_per_user", rename = "limit_group_adds_per_user_per_hour")]
    pub group_adds_per_user_per_hour: u32,
}

/// Which phone numbers are served (`domain::phone`). The countries are ISO codes or
/// calling codes ([`Country`]).
#[derive(Clone, Deserialize, Serialize)]
pub struct PhoneSettings {
    /// ISO region for numbers given in national format, e.g. `GB`.
    #[serde(default, deserialize_with = "default_region")]
    pub default_region: Option<Id>,
    /// Refuse numbers that cannot receive SMS (fixed lines, toll-free, premium...).
    #[serde(default = "defaults::phone_mobile_only", rename = "phone_mobile_only")]
    pub mobile_only: bool,
    /// Serve satellite and international-network numbers (+870, +881, +882, +883).
    #[serde(default, rename = "phone_allow_satellite")]
    pub allow_satellite: bool,
    /// None: all.
    #[serde(default, deserialize_with = "allowed_countries")]
    pub allowed_countries: List<Country>,
    #[serde(default, deserialize_with = "blocked_countries")]
    pub blocked_countries: List<Country>,
}

/// One entry of a country list: an ISO code (`GB`) or a calling code (`44`, `+44`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Country {
    Region(Id),
    CallingCode(u16),
}

impl Country {
    /// Reads an entry of the list `setting`.
    fn parse(setting: &str, entry: &str) -> Result<Country, String> {
        let calling_code = entry.trim_start_matches('+').parse::<u16>().ok().filter(|c| (1..=999).contains(c));
        calling_code
            .map(Country::CallingCode)
            .or_else(|| parse_region(entry).map(Country::Region))
            .ok_or_else(|| format!("{setting} entry {entry:?} is neither an ISO country code nor a calling code"))
    }

    /// Its calling code: `None` for a region the numbering plans give none.
    pub fn calling_code(self) -> Option<u16> {
        match self {
            Country::CallingCode(code) => Some(code),
            Country::Region(id) => phonenumber::metadata::DATABASE.by_id(id.as_ref()).map(|metadata| metadata.country_code()),
        }
    }
}

fn parse_region(code: &str) -> Option<Id> {
    code.trim().to_ascii_uppercase().parse().ok()
}

/// `DEFAULT_REGION`: blank is unset.
fn default_region<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Id>, D::Error> {
    match String::deserialize(deserializer)?.trim() {
        "" => Ok(None),
        region => {
            parse_region(region).map(Some).ok_or_else(|| serde::de::Error::custom("DEFAULT_REGION must be an ISO country code such as GB"))
        }
    }
}

fn countries<'de, D: serde::Deserializer<'de>>(setting: &str, deserializer: D) -> Result<List<Country>, D::Error> {
    List::parse_with(&String::deserialize(deserializer)?, |entry| Country::parse(setting, entry)).map_err(serde::de::Error::custom)
}

fn allowed_countries<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<List<Country>, D::Error> {
    countries("ALLOWED_COUNTRIES", deserializer)
}

fn blocked_countries<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<List<Country>, D::Error> {
    countries("BLOCKED_COUNTRIES", deserializer)
}

fn home_countries<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<List<Country>, D::Error> {
    countries("SMS_BUDGET_HOME_COUNTRIES", deserializer)
}

/// The SMS the whole service may send per hour, and the shares of it. (`SMS_BUDGET_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct SmsBudgetSettings {
    #[serde(default = "defaults::sms_budget_per_hour", rename = "sms_budget_per_hour")]
    pub per_hour: u32,
    /// Percent of SMS_BUDGET_PER_HOUR one country calling code may spend (0 or 100: no share).
    #[serde(default = "defaults::sms_budget_country_share", rename = "sms_budget_country_share")]
    pub country_share: u32,
    /// Countries (ISO or calling codes) held to no country share; none = DEFAULT_REGION's.
    #[serde(default, deserialize_with = "home_countries", rename = "sms_budget_home_countries")]
    pub home_countries: List<Country>,
    /// Percent of SMS_BUDGET_PER_HOUR one client network (IPv4 /24, IPv6 /64) may spend.
    #[serde(default = "defaults::sms_budget_network_share", rename = "sms_budget_network_share")]
    pub network_share: u32,
    /// Percent of SMS_BUDGET_PER_HOUR one client IP may spend, inside its network's share.
    #[serde(default = "defaults::sms_budget_ip_share", rename = "sms_budget_ip_share")]
    pub ip_share: u32,
    /// Percent of SMS_BUDGET_PER_HOUR kept for the home countries: the rest of the
    /// world together may not spend it.
    #[serde(default = "defaults::sms_budget_home_reserve", rename = "sms_budget_home_reserve")]
    pub home_reserve: u32,
    /// The home countries' calling codes, found at load.
    #[serde(skip)]
    pub(super) home_calling_codes: Vec<u16>,
}

impl SmsBudgetSettings {
    /// The calling codes of SMS_BUDGET_HOME_COUNTRIES, or of DEFAULT_REGION when none are
    /// listed; none without either.
    pub fn home_calling_codes(&self) -> &[u16] {
        &self.home_calling_codes
    }
}

/// CAPTCHA at login start. (`CAPTCHA_*`)
#[derive(Clone, Deserialize, Serialize)]
pub struct CaptchaSettings {
    /// `hcaptcha`, `turnstile`, or empty for no CAPTCHA.
    #[serde(default = "defaults::captcha_provider", rename = "captcha_provider")]
    pub provider: CaptchaProvider,
    #[serde(default, deserialize_with = "unless_empty", rename = "captcha_secret")]
    pub secret: Option<Secret>,
    /// Siteverify endpoint; unset: the provider's own.
    #[serde(default, deserialize_with = "unless_empty", rename = "captcha_verify_url")]
    pub verify_url: Option<String>,
}

choice!(
    /// Who checks CAPTCHA tokens at login start, `CAPTCHA_PROVIDER`; empty: nobody.
    CaptchaProvider, "CAPTCHA_PROVIDER", "hcaptcha, turnstile or empty", {
    Off = "",
    Hcaptcha = "hcaptcha",
    Turnstile = "turnstile",
});

mod defaults {
    pub fn limit_start_per_phone() -> u32 {
        10
    }
    pub fn limit_start_per_phone_per_day() -> u32 {
        12
    }
    pub fn limit_verify_per_phone_per_day() -> u32 {
        12
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
    pub fn limit_start_per_subnet() -> u32 {
        300
    }
    pub fn limit_start_per_calling_code() -> u32 {
        1000
    }
    pub fn limit_group_adds_per_user() -> u32 {
        200
    }
    pub fn phone_mobile_only() -> bool {
        true
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
    pub fn sms_budget_ip_share() -> u32 {
        3
    }
    pub fn sms_budget_home_reserve() -> u32 {
        20
    }
    pub fn captcha_provider() -> super::CaptchaProvider {
        super::CaptchaProvider::Off
    }
}

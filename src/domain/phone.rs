//! Phone number validation with libphonenumber's metadata (the `phonenumber`
//! crate), and the operator's country policy. SMS pumping targets expensive
//! destinations and number ranges, so what cannot or should not get an SMS is
//! refused before anything is sent.

use phonenumber::country::Id;
use phonenumber::{PhoneNumber, Type};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use crate::config::{Config, Country};
use crate::domain::address;
use crate::domain::error::{ApiError, ErrorCode};

/// Re-parses of a number's E.164 form before it must parse to itself (each drops zeros).
const MAX_CANONICAL_ROUNDS: usize = 4;

/// Satellite (+870 Inmarsat, +881 the global mobile satellite system) and international
/// networks (+882, +883): no country's, priced far above any, and the ranges SMS
/// pumping favours.
pub const SATELLITE_CALLING_CODES: [u16; 4] = [870, 881, 882, 883];

/// A number that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPhone {
    /// E.164 digits without `+`: the stored and returned form.
    pub digits: String,
    /// The country calling code, e.g. 44.
    pub calling_code: u16,
}

pub struct PhonePolicy {
    default_region: Option<Id>,
    mobile_only: bool,
    /// `OTP_SENDER=log`: nothing is sent, so a number that cannot receive SMS is let
    /// through (with a warning) for local testing.
    sends_nothing: bool,
    allowed: Vec<Country>,
    blocked: Vec<Country>,
    /// `PHONE_ALLOW_SATELLITE`: serve [`SATELLITE_CALLING_CODES`].
    allow_satellite: bool,
    recent: Mutex<RecentlyValid>,
}

/// Numbers that passed lately, by the text the app sent. A verify sends its start's
/// phone again moments later, and a check runs dozens of metadata regexes (the largest
/// cost of a login start, where every number is new).
/// The policy never changes while the process runs, so a number that passed still
/// passes; refusals are not kept.
#[derive(Default)]
struct RecentlyValid {
    current: HashMap<String, ValidPhone>,
    /// The generation before `current`: a number in neither is checked afresh.
    previous: HashMap<String, ValidPhone>,
}

/// Numbers per generation: at most twice this many are kept (under a megabyte).
const RECENT_GENERATION: usize = 4096;
/// Longer input (a number padded with separators) is checked every time: keeping it
/// would let a client fill memory with a few large requests.
const RECENT_MAX_INPUT_BYTES: usize = 32;

impl RecentlyValid {
    fn get(&self, raw: &str) -> Option<ValidPhone> {
        self.current.get(raw).or_else(|| self.previous.get(raw)).cloned()
    }

    fn insert(&mut self, raw: &str, phone: &ValidPhone) {
        if raw.len() > RECENT_MAX_INPUT_BYTES {
            return;
        }
        if self.current.len() >= RECENT_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(raw.to_string(), phone.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Whether `number` is of `country` (an entry of a country list).
fn is_of(country: &Country, number: &PhoneNumber) -> bool {
    match country {
        Country::Region(id) => number.country().id() == Some(*id),
        Country::CallingCode(code) => number.code().value() == *code,
    }
}

impl PhonePolicy {
    pub fn from_config(config: &Config) -> PhonePolicy {
        // The metadata is loaded on first use (about a second in debug builds): do it now, not in a request.
        let _ = phonenumber::parse(None, "+447400123456").map(|n| n.is_valid());
        PhonePolicy {
            default_region: config.phone.default_region,
            mobile_only: config.phone.mobile_only,
            sends_nothing: config
                .routing
                .resolved
                .instances
                .iter()
                .all(|(_, instance)| matches!(instance, crate::config::ProviderInstance::Log)),
            allowed: config.phone.allowed_countries.to_vec(),
            blocked: config.phone.blocked_countries.to_vec(),
            allow_satellite: config.phone.allow_satellite,
            recent: Mutex::default(),
        }
    }

    /// Parses and checks a phone as the user typed it. International input
    /// (`+44...`, `0044...`, or bare digits with the country code) is tried
    /// first; national input (`020 ...`) needs `DEFAULT_REGION`.
    pub fn check(&self, raw: &str) -> Result<ValidPhone, ApiError> {
        if let Some(known) = self.recent().get(raw) {
            return Ok(known);
        }
        let valid = self.check_afresh(raw)?;
        self.recent().insert(raw, &valid);
        Ok(valid)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentlyValid> {
        self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_afresh(&self, raw: &str) -> Result<ValidPhone, ApiError> {
        let malformed = || {
            let hint = if self.default_region.is_none() { " (national numbers need DEFAULT_REGION)" } else { "" };
            tracing::info!("phone refused: not a valid number in international format{hint}");
            ApiError::new(ErrorCode::BadPhone, "phone is not a valid number; use the international format, e.g. +44 20 7946 0958")
        };
        // A number is valid when its type is known: one type look-up answers both questions
        // (each look-up runs dozens of metadata regexes: the largest cost of our own code in a login start).
        let typed = |number: PhoneNumber| {
            let kind = number.number_type(&phonenumber::metadata::DATABASE);
            (kind != Type::Unknown).then_some((number, kind))
        };
        let international_text = address::normalize_phone(raw).map(|digits| format!("+{digits}"));
        let international = international_text.as_deref().and_then(|text| phonenumber::parse(None, text).ok()).and_then(typed);
        let ((mut number, mut kind), parsed_text) = match international {
            Some(typed_number) => (typed_number, international_text),
            None => {
                let national = self.default_region.and_then(|region| phonenumber::parse(Some(region), raw).ok()).and_then(typed);
                (national.ok_or_else(malformed)?, None)
            }
        };

        // Zeros typed after the country code (`+91 0 98765 43210`) come back from the
        // parser in the E.164 form, and that form parses to one with fewer zeros: the
        // same phone under two addresses, each with its own account and limits. The
        // stored form is the one that parses to itself. A number parsed from its own
        // E.164 text is that form already (parsing is a function of the text alone), so
        // the common case parses once and looks the type up once.
        let mut e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        if parsed_text.as_deref() != Some(e164.as_str()) {
            for _ in 0..MAX_CANONICAL_ROUNDS {
                let (again, again_kind) = phonenumber::parse(None, &e164).ok().and_then(typed).ok_or_else(malformed)?;
                let again_e164 = again.format().mode(phonenumber::Mode::E164).to_string();
                if again_e164 == e164 {
                    break;
                }
                (number, kind, e164) = (again, again_kind, again_e164);
            }
            let reparsed = phonenumber::parse(None, &e164).ok().map(|n| n.format().mode(phonenumber::Mode::E164).to_string());
            if reparsed.as_ref() != Some(&e164) {
                return Err(malformed());
            }
        }
        let masked = || crate::domain::address::Address::Phone(e164.trim_start_matches('+').to_string()).masked();
        let refused_by = |setting: &str, message: &str| {
            tracing::info!(phone = %masked(), "phone refused by {setting}");
            ApiError::new(ErrorCode::BadPhone, message)
        };
        if self.blocked.iter().any(|c| is_of(c, &number)) {
            return Err(refused_by("BLOCKED_COUNTRIES", "phone numbers from this country are not served"));
        }
        if !(self.allowed.is_empty() || self.allowed.iter().any(|c| is_of(c, &number))) {
            return Err(refused_by("ALLOWED_COUNTRIES", "phone numbers from this country are not served"));
        }
        if !self.allow_satellite && SATELLITE_CALLING_CODES.contains(&number.code().value()) {
            return Err(refused_by(
                "PHONE_ALLOW_SATELLITE",
                "satellite and international-network numbers (+870, +881, +882, +883) are not served",
            ));
        }
        // Mobile ranges, and ranges where fixed and mobile numbers cannot be told apart (e.g. the US).
        if self.mobile_only && !matches!(kind, Type::Mobile | Type::FixedLineOrMobile) {
            if !self.sends_nothing {
                return Err(refused_by("PHONE_MOBILE_ONLY", "this number cannot receive text messages; use a mobile number"));
            }
            tracing::warn!(phone = %masked(), "accepted a number that cannot receive SMS because OTP_SENDER=log sends nothing; PHONE_MOBILE_ONLY refuses it with a real sender");
        }
        Ok(ValidPhone { digits: e164.trim_start_matches('+').to_string(), calling_code: number.code().value() })
    }
}

/// The country calling code of E.164 digits, e.g. 44 for `447400123456`.
pub fn calling_code_of(digits: &str) -> Option<u16> {
    phonenumber::parse(None, format!("+{digits}")).ok().map(|number| number.code().value())
}

/// Every calling code the metadata knows, with its text: read once, so that finding a
/// number's calling code costs a few lookups and no allocation.
static CALLING_CODES: LazyLock<HashMap<u16, String>> = LazyLock::new(|| {
    (1..=999u16).filter(|code| phonenumber::metadata::DATABASE.by_code(code).is_some()).map(|code| (code, code.to_string())).collect()
});

/// The calling code that starts E.164 digits, and its text, found without parsing the
/// number (cheap enough for every message): calling codes are prefix-free.
fn calling_code_entry(digits: &str) -> Option<(&'static u16, &'static String)> {
    (1..=3).filter_map(|n| digits.get(..n)?.parse::<u16>().ok()).find_map(|code| CALLING_CODES.get_key_value(&code))
}

/// The `country` label of metrics for a stored address: its calling code (`44`), `other`
/// for digits no calling code starts, `""` for an address that is no phone number.
pub fn country_label(address: &str) -> &'static str {
    match address.bytes().all(|b| b.is_ascii_digit()) && !address.is_empty() {
        true => calling_code_entry(address).map_or("other", |(_, text)| text.as_str()),
        false => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calling_code_prefix_is_read_from_the_metadata() {
        let prefix = |digits: &str| calling_code_entry(digits).map(|(code, _)| *code);
        for digits in ["447400123456", "18765550123", "12025550123", "33612345678", "881612345678", "8613812345678"] {
            assert_eq!(prefix(digits), calling_code_of(digits), "{digits}");
        }
        assert_eq!(prefix("999123"), None);
        assert_eq!(prefix(""), None);
        assert_eq!((country_label("447400123456"), country_label("999123"), country_label("a@example.com")), ("44", "other", ""));
    }

    fn policy(vars: &[(&str, &str)]) -> PhonePolicy {
        PhonePolicy::from_config(&Config::from_vars(vars.iter().copied()).unwrap())
    }

    #[test]
    fn international_and_national_input_give_e164_digits() {
        let p = policy(&[("DEFAULT_REGION", "GB")]);
        for raw in ["+44 7400 123456", "0044 7400 123456", "447400123456", "07400 123456"] {
            let phone = p.check(raw).unwrap_or_else(|e| panic!("{raw}: {}", e.message));
            assert_eq!((phone.digits.as_str(), phone.calling_code), ("447400123456", 44), "{raw}");
        }
        assert!(policy(&[]).check("07400 123456").is_err(), "national input needs DEFAULT_REGION");
    }

    #[test]
    fn zeros_typed_after_the_country_code_give_the_same_phone() {
        let p = policy(&[("DEFAULT_REGION", "GB")]);
        for raw in ["+91 98765 43210", "+91 098765 43210", "+91 00098765 43210"] {
            assert_eq!(p.check(raw).unwrap().digits, "919876543210", "{raw}");
        }
        for raw in ["+44 20 7946 0958", "+44 0 20 7946 0958", "+44 000 20 7946 0958"] {
            assert_eq!(p.check(raw).map(|phone| phone.digits).ok().as_deref(), Some("442079460958"), "{raw}");
        }
        assert_eq!(p.check("+39 347 123 4567").unwrap().digits, "393471234567");
    }

    /// The E.164 form as found by parsing to a fixed point every time (what `check` did
    /// before it parsed international input once).
    fn fixed_point(p: &PhonePolicy, raw: &str) -> Option<String> {
        let typed = |number: PhoneNumber| (number.number_type(&phonenumber::metadata::DATABASE) != Type::Unknown).then_some(number);
        let number = address::normalize_phone(raw)
            .and_then(|digits| phonenumber::parse(None, format!("+{digits}")).ok())
            .and_then(typed)
            .or_else(|| p.default_region.and_then(|region| phonenumber::parse(Some(region), raw).ok()).and_then(typed))?;
        let mut e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        for _ in 0..MAX_CANONICAL_ROUNDS {
            let again = phonenumber::parse(None, &e164).ok().and_then(typed)?.format().mode(phonenumber::Mode::E164).to_string();
            if again == e164 {
                break;
            }
            e164 = again;
        }
        let reparsed = phonenumber::parse(None, &e164).ok()?.format().mode(phonenumber::Mode::E164).to_string();
        (reparsed == e164).then(|| e164.trim_start_matches('+').to_string())
    }

    #[test]
    fn parsing_once_finds_the_form_parsing_to_a_fixed_point_finds() {
        let p = policy(&[("DEFAULT_REGION", "GB"), ("PHONE_MOBILE_ONLY", "false")]);
        let inputs = [
            "+44 7400 123456",
            "0044 7400 123456",
            "447400123456",
            "07400 123456",
            "+91 0 98765 43210",
            "+91 00098765 43210",
            "+44 0 20 7946 0958",
            "+39 06 1234 5678",
            "+39 347 123 4567",
            "+1 650 200 0000",
            "+1 212 555 0123",
            "+49 151 23456789",
            "+44 99 1234 5678",
            "12",
        ];
        for raw in inputs {
            assert_eq!(p.check_afresh(raw).ok().map(|phone| phone.digits), fixed_point(&p, raw), "{raw}");
        }
    }

    #[test]
    fn the_log_sender_lets_numbers_that_cannot_get_sms_through() {
        assert_eq!(policy(&[("OTP_SENDER", "log")]).check("+1 800 555 1234").unwrap().digits, "18005551234");
        assert_eq!(policy(&[("OTP_SENDER", "log")]).check("+44 99 1234 5678").err().unwrap().code, "BADPHONE", "still a valid number");
        let real_sender = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")];
        assert_eq!(policy(&real_sender).check("+1 800 555 1234").err().unwrap().code, "BADPHONE");
        assert_eq!(calling_code_of("447400123456"), Some(44));
        assert_eq!(calling_code_of("18005551234"), Some(1));
    }

    #[test]
    fn invalid_and_non_mobile_numbers_are_refused() {
        let p = policy(&[("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")]);
        assert_eq!(p.check("+44 20 7946 0958").err().unwrap().code, "BADPHONE", "London fixed line");
        assert_eq!(p.check("+1 800 555 1234").err().unwrap().code, "BADPHONE", "US toll-free");
        assert_eq!(p.check("+44 99 1234 5678").err().unwrap().code, "BADPHONE", "no such range");
        assert!(p.check("+1 212 555 0123").is_ok(), "US numbers may be mobile");
        let lenient = policy(&[("PHONE_MOBILE_ONLY", "false"), ("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")]);
        assert_eq!(lenient.check("+1 800 555 1234").unwrap().digits, "18005551234");
    }

    #[test]
    fn country_lists_take_iso_and_calling_codes() {
        let p = policy(&[("BLOCKED_COUNTRIES", "GB, 33")]);
        assert!(p.check("+44 7400 123456").is_err());
        assert!(p.check("+33 6 12 34 56 78").is_err());
        assert!(p.check("+49 151 23456789").is_ok());
        let p = policy(&[("ALLOWED_COUNTRIES", "DE")]);
        assert!(p.check("+49 151 23456789").is_ok());
        assert!(p.check("+44 7400 123456").err().unwrap().message.contains("not served"));
    }

    #[test]
    fn satellite_and_international_network_numbers_are_refused_unless_allowed() {
        let sender = [("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")];
        let p = policy(&sender);
        for raw in ["+881 6 12345678", "+870 301 234 567", "+882 34 21234"] {
            let refused = p.check(raw).err().unwrap_or_else(|| panic!("{raw} is refused"));
            assert_eq!(refused.code, "BADPHONE", "{raw}");
            assert!(refused.message.contains("satellite"), "{raw}: {}", refused.message);
        }
        assert!(p.check("+49 151 23456789").is_ok(), "the rest of the world is served");
        let allowed = policy(&[&sender[..], &[("PHONE_ALLOW_SATELLITE", "true")]].concat());
        assert_eq!(allowed.check("+881 6 12345678").unwrap().calling_code, 881);
        assert_eq!(allowed.check("+870 301 234 567").unwrap().digits, "870301234567");
    }

    #[test]
    fn numbers_that_passed_are_remembered_within_a_bound_and_refusals_are_not() {
        let p = policy(&[("OTP_SENDER", "http"), ("SMS_HTTP_URL", "https://sms.example.com/send")]);
        let first = p.check("+1 212 555 0123").unwrap();
        assert_eq!(p.recent().get("+1 212 555 0123"), Some(first.clone()));
        assert_eq!(p.check("+1 212 555 0123").unwrap(), first);
        assert!(p.check("+44 20 7946 0958").is_err());
        assert!(p.recent().get("+44 20 7946 0958").is_none(), "a refusal is not kept");
        assert!(p.check("+44 20 7946 0958").is_err());
        let padded = format!("+1 212 555 0124{}", " ".repeat(1000));
        assert_eq!(p.check(&padded).unwrap().digits, "12125550124");
        assert!(p.recent().get(&padded).is_none(), "long input is not kept");
        for n in 0..3 * RECENT_GENERATION {
            p.check(&format!("+1 646 {} {:04}", 200 + n / 10_000, n % 10_000)).unwrap();
        }
        assert!(p.recent().len() <= 2 * RECENT_GENERATION);
        assert!(p.recent().get("+1 212 555 0123").is_none(), "the oldest numbers are forgotten");
    }
}

//! The address a user logs in with: a phone number or an e-mail address, normalised, or
//! an account at a sign-in provider (`provider:subject`).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Phone(String),
    Email(String),
    /// `provider:subject`, for a provider whose ID tokens sign in by their subject.
    Account(String),
}

impl Address {
    /// An address as stored, already normalised: phones are all digits, provider accounts
    /// hold a `:` (which a normalised e-mail address cannot), e-mail addresses an `@`.
    pub fn from_stored(address: &str) -> Address {
        if is_phone(address) {
            Address::Phone(address.to_string())
        } else if address.contains(':') {
            Address::Account(address.to_string())
        } else {
            Address::Email(address.to_string())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Address::Phone(p) | Address::Email(p) | Address::Account(p) => p,
        }
    }

    /// Name of the reply field that carries this address back to the app.
    pub fn field(&self) -> &'static str {
        match self {
            Address::Phone(_) => "phone",
            Address::Email(_) => "email",
            Address::Account(_) => "account",
        }
    }

    /// `text` (e.g. a gateway's or upstream's reply) with this address masked wherever it appears.
    pub fn masked_in(&self, text: &str) -> String {
        text.replace(self.as_str(), &self.masked())
    }

    /// A form safe for logs: enough to correlate, not enough to identify.
    pub fn masked(&self) -> String {
        match self {
            Address::Phone(p) => format!("{}****", &p[..p.len() - 4]),
            Address::Email(e) => match e.split_once('@') {
                Some((local, domain)) => format!("{}***@{domain}", &local[..1]),
                None => "***".into(),
            },
            Address::Account(a) => match a.split_once(':') {
                Some((provider, _)) => format!("{provider}:***"),
                None => "***".into(),
            },
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a stored address is a phone number (normalised phones are all digits).
pub fn is_phone(stored: &str) -> bool {
    !stored.is_empty() && stored.bytes().all(|b| b.is_ascii_digit())
}

/// The digits a phone is kept as; in config because `TEST_OTPS` is read in them at load.
pub use crate::config::normalize_phone;

/// Lower-cases and checks the shape `local@domain.tld` (no spaces, sane lengths).
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '@' | '(' | ')' | ',' | ';' | ':' | '<' | '>' | '[' | ']' | '\\' | '"'));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    (local_ok && domain_ok && email.len() <= 254).then_some(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised() {
        assert_eq!(normalize_phone("+1 800-555-1234"), Some("18005551234".into()));
        assert_eq!(normalize_phone("0044 (20) 7946.0958"), Some("442079460958".into()));
        assert_eq!(normalize_phone("18005551234"), Some("18005551234".into()));
    }

    #[test]
    fn bad_phones_are_rejected() {
        for bad in ["", "12345678", "1234567890123456", "1800555123x", "++18005551234", "0000000"] {
            assert_eq!(normalize_phone(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn emails_are_validated() {
        assert_eq!(normalize_email(" Ann@Example.COM "), Some("ann@example.com".into()));
        assert_eq!(normalize_email("a.b+tag@mail.example.org"), Some("a.b+tag@mail.example.org".into()));
        for bad in ["", "ann", "ann@", "@example.com", "ann@example", "ann@@example.com", "an n@example.com", "ann@-x.com"] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn masking_hides_the_tail() {
        assert_eq!(Address::Phone("18005551234".into()).masked(), "1800555****");
        assert_eq!(Address::Email("ann@example.com".into()).masked(), "a***@example.com");
        let phone = Address::Phone("18005551234".into());
        assert_eq!(phone.masked_in(r#"{"to":"18005551234"}"#), r#"{"to":"1800555****"}"#);
        assert_eq!(Address::Account("corp:ann@example.com".into()).masked(), "corp:***");
    }

    #[test]
    fn stored_addresses_read_back_as_their_kind() {
        for address in [
            Address::Phone("18005551234".into()),
            Address::Email("ann@example.com".into()),
            Address::Account("apple:001234.abc".into()),
            Address::Account("corp:ann@example.com".into()),
        ] {
            assert_eq!(Address::from_stored(address.as_str()), address);
        }
    }
}

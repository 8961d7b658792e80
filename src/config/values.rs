//! The kinds of value settings take beyond numbers and words: a credential ([`Secret`]),
//! a comma-separated list ([`List`]), JSON ([`Json`]), one of a few words ([`choice!`])
//! and a setting that may be left unset ([`unless_empty`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(deserializer)?;
                $name::ALL
                    .iter()
                    .copied()
                    .find(|choice| choice.as_str() == text.trim())
                    .ok_or_else(|| serde::de::Error::custom(concat!($setting, " must be ", $expected)))
            }
        }

        impl serde::Serialize for $name {
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
pub(crate) use choice;

/// Reads a setting that may be left unset: `None` when it is, or is set to the empty text
/// (an empty line in an env file means "not set"). Any other text, blanks included, is
/// the value. For a field `#[serde(default, deserialize_with = "unless_empty")]`.
pub(super) fn unless_empty<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<String>::deserialize(deserializer)? {
        Some(text) if !text.is_empty() => T::deserialize(serde::de::value::StringDeserializer::<D::Error>::new(text)).map(Some),
        _ => Ok(None),
    }
}

/// A setting whose value is a credential (or, for `TEST_OTPS` and `SMS_HTTP_BODY`, may
/// hold one): its Debug form and the printed configuration show `<redacted>` (or `""`
/// when it holds nothing, so an operator sees what is missing), whatever the setting is
/// called. A credential that may be left unset is an `Option<Secret>`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret<T = String>(T);

impl Secret {
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<T> Secret<List<T>> {
    /// The entries, for the one place that uses them.
    pub fn expose(&self) -> &List<T> {
        &self.0
    }
}

impl<T> Secret<T> {
    /// A value read at load, hidden from then on.
    pub(super) fn new(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T: Unset> Secret<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_unset()
    }

    fn shown(&self) -> &'static str {
        if self.is_empty() {
            ""
        } else {
            "<redacted>"
        }
    }
}

/// What a [`Secret`] may hold: a value that can be unset.
pub trait Unset {
    fn is_unset(&self) -> bool;
}

impl Unset for String {
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

impl<T> Unset for List<T> {
    fn is_unset(&self) -> bool {
        self.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl<T: Unset> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl<T: Unset> Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

/// A comma-separated setting, split once at load into its entries (trimmed, the empty
/// ones dropped) and each entry parsed into a `T`. It reads as a slice of its entries;
/// the printed configuration shows it as it was set.
#[derive(Clone, PartialEq, Eq)]
pub struct List<T = String> {
    text: String,
    entries: Vec<T>,
}

impl<T> List<T> {
    /// Splits `text` and parses each entry with `entry`; the first entry it refuses is the error.
    pub fn parse_with<E>(text: &str, entry: impl Fn(&str) -> Result<T, E>) -> Result<List<T>, E> {
        let entries = text.split(',').map(str::trim).filter(|e| !e.is_empty()).map(entry).collect::<Result<_, _>>()?;
        Ok(List { text: text.to_string(), entries })
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List { text: String::new(), entries: Vec::new() }
    }
}

impl<T> std::ops::Deref for List<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.entries
    }
}

/// Entries that are words (ISO codes, origins...): splitting never fails.
impl From<&str> for List {
    fn from(text: &str) -> Self {
        List::parse_with(text, |entry| Ok::<_, std::convert::Infallible>(entry.to_string())).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(List::from(String::deserialize(deserializer)?.as_str()))
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for List<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.entries.fmt(f)
    }
}

impl<T> Serialize for List<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// A setting written as JSON, parsed once at load into a `T`, whose errors name the
/// setting. It reads as its value; the printed configuration shows it as it was set.
#[derive(Clone, Default)]
pub struct Json<T> {
    text: String,
    value: T,
}

impl<T: Default> Json<T> {
    /// Reads `text` with `parse`; blank text is `T`'s default: nothing set.
    pub(super) fn parse_with(text: String, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Json<T>, String> {
        let value = if text.trim().is_empty() { T::default() } else { parse(&text)? };
        Ok(Json { text, value })
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Serialize for Json<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Texts by appid (`APP_NAMES`, `OTP_MESSAGE_PER_APP`): a JSON object of strings.
pub(super) fn texts_by_app(setting: &str, text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|_| format!("{setting} must be a JSON object of strings, e.g. {{\"com.example.app\":\"...\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_once_and_shown_as_set() {
        let list = List::from(" US, ,44 ,");
        assert_eq!(&list[..], ["US", "44"]);
        assert_eq!(serde_json::to_value(&list).unwrap(), " US, ,44 ,");
        assert!(List::from(" , ").is_empty());
        let numbers = List::parse_with("1, 2,x", |e| e.parse::<u8>().map_err(|_| e.to_string()));
        assert_eq!(numbers.err().as_deref(), Some("x"));
    }

    #[test]
    fn a_secret_list_is_redacted() {
        let secret: Secret<List> = serde_json::from_value("18005550000:123456".into()).unwrap();
        assert_eq!(&secret.expose()[..], ["18005550000:123456"]);
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(serde_json::to_value(&secret).unwrap(), "<redacted>");
        assert_eq!(serde_json::to_value(Secret::<List>::default()).unwrap(), "");
    }
}

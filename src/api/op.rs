//! The ops of the API, named in one place: the dispatcher, the body-size limits, the
//! metrics labels and the OpenAPI document all take them from [`Op`].

use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Where the API answers: the apps post to their configured base URL itself (current
/// apps), to `api.php` under it, or to `/messenger/api.php` (the 2021 apps).
pub const API_PATHS: &[&str] = &["/", "/api", "/api.php", "/messenger/api.php"];

/// A request's fields as sent, by name.
pub type Params = HashMap<String, Field>;

/// A request field as sent: text, or an array of a JSON body, kept as its items so that
/// a list of phones is read from them rather than written out as JSON text to be parsed
/// again. An array is boxed: a field of text, as nearly every field is, stays the size
/// of its `String`.
#[derive(Debug)]
pub enum Field {
    Text(String),
    Array(Box<JsonArray>),
}

/// The items of an array field, and its JSON text once something read it as text.
#[derive(Debug)]
pub struct JsonArray {
    pub items: Vec<Value>,
    text: OnceLock<String>,
}

impl Field {
    pub fn array(items: Vec<Value>) -> Field {
        Field::Array(Box::new(JsonArray { items, text: OnceLock::new() }))
    }

    /// The field as text; an array as its compact JSON text, written the first time it
    /// is asked for.
    pub fn text(&self) -> &str {
        match self {
            Field::Text(text) => text,
            Field::Array(array) => array.text.get_or_init(|| serde_json::to_string(&array.items).expect("a JSON value always serializes")),
        }
    }
}

impl From<String> for Field {
    fn from(text: String) -> Field {
        Field::Text(text)
    }
}

/// An op a request can name in its `op` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Login,
    Logout,
    Devices,
    GetContacts,
    DelContacts,
    Profile,
    Me,
    Upload,
    SetNotify,
    SetGroup,
    GetGroup,
    EditMembers,
    SetAdmin,
    DelGroup,
    DeleteAccount,
    Link,
    Unlink,
}

impl Op {
    /// Every op, in the order the OpenAPI document lists them.
    pub const ALL: [Op; 17] = [
        Op::Login,
        Op::Logout,
        Op::Devices,
        Op::GetContacts,
        Op::DelContacts,
        Op::Profile,
        Op::Me,
        Op::Upload,
        Op::SetNotify,
        Op::SetGroup,
        Op::GetGroup,
        Op::EditMembers,
        Op::SetAdmin,
        Op::DelGroup,
        Op::DeleteAccount,
        Op::Link,
        Op::Unlink,
    ];

    /// The op's name in requests and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Logout => "logout",
            Op::Devices => "devices",
            Op::GetContacts => "getcontacts",
            Op::DelContacts => "delcontacts",
            Op::Profile => "profile",
            Op::Me => "me",
            Op::Upload => "upload",
            Op::SetNotify => "setnotify",
            Op::SetGroup => "setgroup",
            Op::GetGroup => "getgroup",
            Op::EditMembers => "editmembers",
            Op::SetAdmin => "setadmin",
            Op::DelGroup => "delgroup",
            Op::DeleteAccount => "deleteaccount",
            Op::Link => "link",
            Op::Unlink => "unlink",
        }
    }

    /// The op a request names; `name` is already trimmed and lower-cased.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// The op a request names in any case, as [`Op::parse`] finds it once lower-cased;
    /// `name` is already trimmed.
    pub fn parse_any_case(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(name))
    }

    /// Every op but `login` acts for the holder of an access token.
    pub fn needs_session(self) -> bool {
        self != Op::Login
    }

    /// Contact ops carry whole address books, so their bodies may be larger.
    pub fn carries_address_book(self) -> bool {
        matches!(self, Op::GetContacts | Op::DelContacts)
    }

    /// Ops that may carry a file part (a photo or an attachment) up to `MAX_UPLOAD_BYTES`.
    pub fn carries_file(self) -> bool {
        matches!(self, Op::Upload | Op::Profile | Op::SetGroup)
    }

    /// The label of a request's op in metrics and logs: a known op's name, never the
    /// request's own text.
    pub fn label(name: &str) -> &'static str {
        match Op::parse(name) {
            Some(op) => op.as_str(),
            None if name.is_empty() => "none",
            None => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_parses_from_its_name_and_nothing_else_does() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(op));
        }
        assert_eq!(Op::parse("LOGIN"), None, "the dispatcher lower-cases first");
        assert_eq!((Op::parse_any_case("LogIn"), Op::parse_any_case("logins")), (Some(Op::Login), None));
        assert_eq!((Op::label(""), Op::label("drop table"), Op::label("me")), ("none", "unknown", "me"));
    }

    #[test]
    fn an_array_field_reads_as_its_json_text() {
        let array = Field::array(vec!["18005550001".into(), 18005550002_i64.into(), Value::Null]);
        assert_eq!(array.text(), r#"["18005550001",18005550002,null]"#);
        assert_eq!(Field::from(" x ".to_string()).text(), " x ");
        assert_eq!(std::mem::size_of::<Field>(), std::mem::size_of::<String>(), "a text field costs no more than its text");
    }
}

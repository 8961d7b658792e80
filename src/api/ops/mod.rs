//! Every op of the API, a file each (`ops/<op>.rs`): the op's typed request read from
//! the fields as sent, the service it calls, the fields of its reply and its OpenAPI
//! description, all through `ApiOp`. The table at the foot of this file names every op
//! once; from it come [`Op`] (the names, the order the OpenAPI document lists them in,
//! and what the HTTP layer must know of an op before it reads a body) and [`handle`],
//! which checks whom a request acts for and answers it from its op's file.
//!
//! A new op over data the store has: a file here whose unit struct, named like the op's
//! variant, implements `ApiOp`, and its line in the table.

mod common;

use serde_json::{Map, Value};

use crate::api::request::{Sent, Token};
use crate::api::AppState;
use crate::domain::account::{token_hash, Caller};
use crate::domain::error::{ApiError, ErrorCode};

/// The fields of a reply.
pub type Fields = Map<String, Value>;

/// An op: how its request is read, whom it acts for, how it is answered and described.
trait ApiOp {
    /// Whom it acts for, found before it is answered: [`Caller`] (a live session) for
    /// every op but `login` ([`Anyone`]) and `logout` ([`SentToken`]).
    type ActsFor: Actor;
    /// Its request, read from the fields as sent (and borrowing them).
    type Request<'a>;
    /// Whether its body may hold a whole address book, up to `MAX_CONTACTS_BODY_BYTES`.
    const CARRIES_ADDRESS_BOOK: bool = false;
    /// Whether it may carry a file part (a photo or an attachment), up to `MAX_UPLOAD_BYTES`.
    const CARRIES_FILE: bool = false;
    /// Its fields and reply, for the OpenAPI document.
    const DOC: OpDoc;

    /// Reads its request, as leniently as the reference did. Never fails: what a field
    /// says is checked when the request is answered.
    fn read(sent: Sent<'_>) -> Self::Request<'_>;

    /// Answers the request with the fields of its reply.
    async fn answer(state: &AppState, actor: Self::ActsFor, request: Self::Request<'_>, client_ip: &str) -> Result<Fields, ApiError>;
}

/// The request and reply fields of one op, as the OpenAPI document describes them.
#[derive(Debug, Clone, Copy)]
pub struct OpDoc {
    pub summary: &'static str,
    pub request: &'static [FieldDoc],
    pub required: &'static [&'static str],
    pub reply: &'static [FieldDoc],
}

/// A request or reply field: name, JSON type, description.
pub type FieldDoc = (&'static str, &'static str, &'static str);

/// Whom an op acts for, found by [`handle`] before the op is answered.
trait Actor: Sized {
    /// Whether the op reads an access token at all.
    const READS_TOKEN: bool;

    /// `token`: the request's, when the op reads one; `checked`: its session, when
    /// reading a multipart form checked the token already.
    async fn find(state: &AppState, token: Token<'_>, checked: Option<Caller>) -> Result<Self, ApiError>;
}

/// The holder of a live session: `AUTHFAIL` without one.
impl Actor for Caller {
    const READS_TOKEN: bool = true;

    async fn find(state: &AppState, token: Token<'_>, checked: Option<Caller>) -> Result<Caller, ApiError> {
        match checked {
            Some(caller) => Ok(caller),
            None => caller_of(state, token).await,
        }
    }
}

/// Anyone: `login`, which reads no token.
struct Anyone;

impl Actor for Anyone {
    const READS_TOKEN: bool = false;

    async fn find(_: &AppState, _: Token<'_>, _: Option<Caller>) -> Result<Anyone, ApiError> {
        Ok(Anyone)
    }
}

/// `logout`'s: the hash of the token sent, if any, whether its session is live or not.
/// Logout is always OK, as the reference answers it: an app logs out locally only on
/// OK, and a missing or unknown token has no session left to end.
struct SentToken(Option<String>);

impl Actor for SentToken {
    const READS_TOKEN: bool = true;

    async fn find(_: &AppState, token: Token<'_>, _: Option<Caller>) -> Result<SentToken, ApiError> {
        Ok(SentToken(token.map(token_hash)))
    }
}

/// Answers a request for `O`: finds whom it acts for, then has `O` answer it.
async fn answer<O: ApiOp>(state: &AppState, sent: Sent<'_>, checked: Option<Caller>, client_ip: &str) -> Result<Fields, ApiError> {
    // Only the ops that act for a token holder look for a token.
    let token = if O::ActsFor::READS_TOKEN { sent.access_token() } else { None };
    let request = O::read(sent);
    let actor = O::ActsFor::find(state, token, checked).await?;
    O::answer(state, actor, request, client_ip).await
}

/// The session of an access token; `AUTHFAIL` without one.
pub async fn caller_of(state: &AppState, token: Token<'_>) -> Result<Caller, ApiError> {
    let token_sha256 = token_hash(token.ok_or_else(|| authfail("token is required"))?);
    state.db.authenticate(token_sha256, state.db.clock().now_ms()).await?.ok_or_else(|| authfail("unknown or expired token; log in again"))
}

pub fn authfail(message: &str) -> ApiError {
    ApiError::new(ErrorCode::AuthFail, message)
}

/// Writes, from the table of ops: a module per op, [`Op`] with its names and properties,
/// and [`handle`]. A line is `Variant: module`: the module is the op's name in requests,
/// and holds the op's unit struct, named as the variant.
macro_rules! ops {
    ($($op:ident: $module:ident,)*) => {
        $(mod $module;)*

        /// An op a request can name in its `op` field.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($op,)*
        }

        impl Op {
            /// Every op, in the order the OpenAPI document lists them.
            pub const ALL: [Op; [$(Op::$op),*].len()] = [$(Op::$op),*];

            /// The op's name in requests and replies.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Op::$op => stringify!($module),)*
                }
            }

            /// Every op but `login` acts for the holder of an access token.
            pub fn needs_session(self) -> bool {
                match self {
                    $(Op::$op => <<$module::$op as ApiOp>::ActsFor as Actor>::READS_TOKEN,)*
                }
            }

            /// Contact ops carry whole address books, so their bodies may be larger.
            pub fn carries_address_book(self) -> bool {
                match self {
                    $(Op::$op => <$module::$op as ApiOp>::CARRIES_ADDRESS_BOOK,)*
                }
            }

            /// Ops that may carry a file part (a photo or an attachment) up to `MAX_UPLOAD_BYTES`.
            pub fn carries_file(self) -> bool {
                match self {
                    $(Op::$op => <$module::$op as ApiOp>::CARRIES_FILE,)*
                }
            }

            /// The op's fields and reply, as the OpenAPI document describes them.
            pub fn doc(self) -> OpDoc {
                match self {
                    $(Op::$op => <$module::$op as ApiOp>::DOC,)*
                }
            }
        }

        /// Answers a request for `op` from what it `sent`; `checked` is its session when
        /// reading the request checked its token already.
        pub async fn handle(state: &AppState, op: Op, sent: Sent<'_>, checked: Option<Caller>, client_ip: &str) -> Result<Fields, ApiError> {
            match op {
                $(Op::$op => answer::<$module::$op>(state, sent, checked, client_ip).await,)*
            }
        }
    };
}

impl Op {
    /// The op a request names; `name` is already trimmed and lower-cased.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// The op a request names in any case, as [`Op::parse`] finds it once lower-cased;
    /// `name` is already trimmed.
    pub fn parse_any_case(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(name))
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

// Every op, once, in the order the OpenAPI document lists them.
ops! {
    Login: login,
    Logout: logout,
    Devices: devices,
    GetContacts: getcontacts,
    DelContacts: delcontacts,
    Profile: profile,
    Me: me,
    Upload: upload,
    SetNotify: setnotify,
    SetGroup: setgroup,
    GetGroup: getgroup,
    EditMembers: editmembers,
    SetAdmin: setadmin,
    DelGroup: delgroup,
    DeleteAccount: deleteaccount,
    Link: link,
    Unlink: unlink,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::tests::params;
    use crate::service::contacts::Phones;
    use actix_web::http::header::HeaderMap;

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
    fn every_op_describes_itself_and_its_token() {
        for op in Op::ALL {
            let doc = op.doc();
            assert!(!doc.summary.is_empty(), "{op:?} has no summary");
            let fields = doc.request.iter().chain(doc.reply);
            assert!(fields.clone().all(|(name, kind, about)| !name.is_empty() && !kind.is_empty() && !about.is_empty()), "{op:?}");
            let token_described = doc.request.iter().any(|(name, ..)| *name == "token");
            assert_eq!(token_described, op.needs_session(), "{op:?}: an op that reads a token describes it, and only then");
        }
    }

    #[test]
    fn numbers_and_flags_read_leniently() {
        let sent = params(&[("gid", " 7 "), ("admin", "x"), ("delete", " YES "), ("m", "18005550001")]);
        let headers = HeaderMap::new();
        let setadmin::SetAdminRequest { gid, admin, members } = setadmin::SetAdmin::read(Sent::new(&sent, &headers, None));
        assert_eq!((gid, admin), (7, false));
        assert!(matches!(members, Some(Phones::Text("18005550001"))));
        let editmembers::EditMembersRequest { delete, .. } = editmembers::EditMembers::read(Sent::new(&sent, &headers, None));
        assert!(delete);
        let gid = getgroup::GetGroup::read(Sent::new(&params(&[]), &headers, None));
        assert_eq!(gid, 0, "a missing number reads 0");
    }
}

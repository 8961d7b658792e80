//! A request's fields read once, by [`Request::parse`], into the typed request of its
//! op. Readings are as lenient as the reference's: a missing or non-numeric integer is 0,
//! a flag is `1`, `true` or `yes`, the code may come as `otp` or `code`, the access token
//! as `token`, `auth` or `Authorization: Bearer`.

use actix_web::http::header::{self, HeaderMap};

use crate::api::op::{Field, Op, Params};
use crate::service::accounts::DeleteRequest;
use crate::service::authenticators::ProofFields;
use crate::service::contacts::{Phones, SyncRequest};
use crate::service::groups::SetGroup;
use crate::service::login::LoginRequest;
use crate::service::sessions::SetNotify;
use crate::service::uploads::{UploadRequest, UploadedFile};
use crate::service::users::ProfileFields;

/// The access token a request carries, if any (see [`access_token`]).
pub type Token<'a> = Option<&'a str>;

/// A request, one variant per op (two for `profile` and `upload`, which also serve
/// groups), with the fields that op reads. Every op but `login` carries the token of
/// the session it acts for.
#[derive(Debug)]
pub enum Request<'a> {
    Login(LoginRequest<'a>),
    Logout {
        token: Token<'a>,
        all: bool,
    },
    Devices {
        token: Token<'a>,
    },
    GetContacts {
        token: Token<'a>,
        sync: SyncRequest<'a>,
    },
    DelContacts {
        token: Token<'a>,
        phones: Option<Phones<'a>>,
    },
    Profile {
        token: Token<'a>,
        fields: ProfileFields<'a>,
        photo: Option<UploadedFile>,
    },
    /// `profile` with a `gid`: a group's new name.
    GroupName {
        token: Token<'a>,
        gid: i64,
        name: Option<&'a str>,
    },
    Me {
        token: Token<'a>,
    },
    Upload {
        token: Token<'a>,
        upload: UploadRequest,
    },
    /// `upload` with `profile` and a `gid`: a group's photo.
    GroupPhoto {
        token: Token<'a>,
        gid: i64,
        delete: bool,
        file: Option<UploadedFile>,
    },
    SetNotify {
        token: Token<'a>,
        fields: SetNotify<'a>,
    },
    SetGroup {
        token: Token<'a>,
        group: SetGroup<'a>,
    },
    GetGroup {
        token: Token<'a>,
        gid: i64,
    },
    EditMembers {
        token: Token<'a>,
        gid: i64,
        members: Option<Phones<'a>>,
        delete: bool,
    },
    SetAdmin {
        token: Token<'a>,
        gid: i64,
        members: Option<Phones<'a>>,
        admin: bool,
    },
    DelGroup {
        token: Token<'a>,
        gid: i64,
    },
    DeleteAccount {
        token: Token<'a>,
        delete: DeleteRequest<'a>,
    },
    Link {
        token: Token<'a>,
        appid: Option<&'a str>,
        proof: ProofFields<'a>,
    },
    Unlink {
        token: Token<'a>,
        proof: ProofFields<'a>,
        account: Option<&'a str>,
    },
}

impl<'a> Request<'a> {
    /// Reads `op`'s fields from `params` (and the token, from `headers` when no field
    /// carries it). `file` is the request's file part, kept by the ops that take one.
    /// Never fails: what a field says is checked by the op.
    pub fn parse(op: Op, params: &'a Params, headers: &'a HeaderMap, file: Option<UploadedFile>) -> Request<'a> {
        let field = |name: &str| params.get(name).map(Field::text);
        let phones = |name: &str| phones(params, name);
        let number = |name: &str| number(params, name);
        let flag = |name: &str| flag(params, name);
        // Only the ops that act for a session look for a token.
        let token = || access_token(params, headers);
        match op {
            Op::Login => Request::Login(LoginRequest {
                appid: field("appid"),
                name: field("name"),
                device: field("device"),
                captcha_token: field("captcha_token"),
                proof: proof_fields(params),
            }),
            Op::Logout => Request::Logout { token: token(), all: flag("all") },
            Op::Devices => Request::Devices { token: token() },
            Op::GetContacts => Request::GetContacts {
                token: token(),
                sync: SyncRequest { phones: phones("phones"), ts: field("ts"), cursor: field("cursor"), reset: flag("reset") },
            },
            Op::DelContacts => Request::DelContacts { token: token(), phones: phones("phones") },
            Op::Profile if number("gid") > 0 => Request::GroupName { token: token(), gid: number("gid"), name: field("name") },
            Op::Profile => Request::Profile {
                token: token(),
                fields: ProfileFields { name: field("name"), status: field("status"), photo: field("photo") },
                photo: file,
            },
            Op::Me => Request::Me { token: token() },
            Op::Upload if number("profile") > 0 && number("gid") > 0 => {
                Request::GroupPhoto { token: token(), gid: number("gid"), delete: flag("delete"), file }
            }
            Op::Upload => Request::Upload {
                token: token(),
                upload: UploadRequest { profile: number("profile") > 0, gid: number("gid"), delete: flag("delete"), file },
            },
            Op::SetNotify => Request::SetNotify {
                token: token(),
                fields: SetNotify { notify_token: field("notifytoken"), fcm_id: field("fcmid"), device_type: field("dt") },
            },
            Op::SetGroup => Request::SetGroup {
                token: token(),
                group: SetGroup { gid: number("gid"), name: field("name"), members: field("m"), photo: file },
            },
            Op::GetGroup => Request::GetGroup { token: token(), gid: number("gid") },
            Op::EditMembers => Request::EditMembers { token: token(), gid: number("gid"), members: phones("m"), delete: flag("delete") },
            Op::SetAdmin => Request::SetAdmin { token: token(), gid: number("gid"), members: phones("m"), admin: number("admin") > 0 },
            Op::DelGroup => Request::DelGroup { token: token(), gid: number("gid") },
            Op::DeleteAccount => {
                Request::DeleteAccount { token: token(), delete: DeleteRequest { appid: field("appid"), proof: proof_fields(params) } }
            }
            Op::Link => Request::Link { token: token(), appid: field("appid"), proof: proof_fields(params) },
            Op::Unlink => Request::Unlink { token: token(), proof: proof_fields(params), account: field("account") },
        }
    }
}

/// The fields that may prove an address: a code (`code` is the name older apps send),
/// or an ID token.
fn proof_fields(params: &Params) -> ProofFields<'_> {
    let field = |name: &str| params.get(name).map(Field::text);
    ProofFields {
        phone: field("phone"),
        email: field("email"),
        code: field("otp").or_else(|| field("code")),
        challenge: field("challenge"),
        provider: field("provider"),
        id_token: field("id_token"),
        nonce: field("nonce"),
    }
}

/// The token from the `token` field (`auth`, as the iOS app names it with attachments),
/// or else from `Authorization: Bearer`; trimmed, and never blank.
pub fn access_token<'a>(params: &'a Params, headers: &'a HeaderMap) -> Token<'a> {
    let field = |name: &str| params.get(name).map(|t| t.text().trim()).filter(|t| !t.is_empty());
    let from_header = || {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    };
    field("token").or_else(|| field("auth")).or_else(from_header)
}

/// A list of phones: a JSON body's array as its items, anything else as its text.
pub fn phones<'a>(params: &'a Params, name: &str) -> Option<Phones<'a>> {
    params.get(name).map(|field| match field {
        Field::Array(array) => Phones::Items(&array.items),
        Field::Text(text) => Phones::Text(text),
    })
}

/// An integer request field; missing or not a number reads as 0, as the reference read it.
fn number(params: &Params, name: &str) -> i64 {
    params.get(name).and_then(|v| v.text().trim().parse().ok()).unwrap_or(0)
}

/// A boolean request field: `1`, `true` or `yes`.
fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| matches!(v.text().trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn params(fields: &[(&str, &str)]) -> Params {
        fields.iter().map(|(name, value)| (name.to_string(), Field::Text(value.to_string()))).collect()
    }

    #[test]
    fn numbers_and_flags_read_leniently() {
        let sent = params(&[("gid", " 7 "), ("admin", "x"), ("delete", " YES "), ("m", "18005550001")]);
        let headers = HeaderMap::new();
        let Request::SetAdmin { gid, admin, members, .. } = Request::parse(Op::SetAdmin, &sent, &headers, None) else { panic!() };
        assert_eq!((gid, admin), (7, false));
        assert!(matches!(members, Some(Phones::Text("18005550001"))));
        let Request::EditMembers { delete, .. } = Request::parse(Op::EditMembers, &sent, &headers, None) else { panic!() };
        assert!(delete);
        let Request::GetGroup { gid, .. } = Request::parse(Op::GetGroup, &params(&[]), &headers, None) else { panic!() };
        assert_eq!(gid, 0, "a missing number reads 0");
    }

    #[test]
    fn the_code_is_otp_or_code_and_login_carries_no_token() {
        let headers = HeaderMap::new();
        let sent = params(&[("code", "123456"), ("token", "t")]);
        let Request::Login(login) = Request::parse(Op::Login, &sent, &headers, None) else { panic!() };
        assert_eq!(login.proof.code, Some("123456"));
        let sent = params(&[("code", "123456"), ("otp", "654321")]);
        let Request::Login(login) = Request::parse(Op::Login, &sent, &headers, None) else { panic!() };
        assert_eq!(login.proof.code, Some("654321"), "otp comes first");
    }

    #[test]
    fn the_token_is_a_field_or_a_bearer_header() {
        let token = |fields: &[(&str, &str)], authorization: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(authorization));
            access_token(&params(fields), &headers).map(String::from)
        };
        let bearer = "bearer  from-header ";
        assert_eq!(token(&[("token", " t1 "), ("auth", "t2")], bearer).as_deref(), Some("t1"));
        assert_eq!(token(&[("token", " "), ("auth", "t2")], bearer).as_deref(), Some("t2"));
        assert_eq!(token(&[], bearer).as_deref(), Some("from-header"));
        assert_eq!(token(&[], "Basic abc"), None);
        assert_eq!(token(&[], "Bearer "), None);
    }

    #[test]
    fn profile_and_upload_with_a_gid_are_the_group_ops() {
        let headers = HeaderMap::new();
        let sent = params(&[("gid", "3"), ("profile", "1"), ("name", "Team")]);
        assert!(matches!(Request::parse(Op::Profile, &sent, &headers, None), Request::GroupName { gid: 3, name: Some("Team"), .. }));
        assert!(matches!(Request::parse(Op::Upload, &sent, &headers, None), Request::GroupPhoto { gid: 3, delete: false, .. }));
        let sent = params(&[("gid", "3")]);
        let Request::Upload { upload, .. } = Request::parse(Op::Upload, &sent, &headers, None) else { panic!() };
        assert_eq!((upload.profile, upload.gid), (false, 3));
    }
}

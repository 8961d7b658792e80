//! `op=upload`: a chat attachment, or the caller's own photo; with `profile` and a
//! `gid`, the photo of a group the caller runs.

use super::common::TOKEN_FIELD;
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::uploads::{UploadRequest, Uploaded, UploadedFile};

pub struct Upload;

/// What `op=upload` stores.
pub enum UploadOrGroupPhoto {
    /// An attachment, or the caller's own photo.
    Upload(UploadRequest),
    /// With `profile` and a `gid`: a group's photo.
    GroupPhoto { gid: i64, delete: bool, file: Option<UploadedFile> },
}

impl ApiOp for Upload {
    type ActsFor = Caller;
    type Request<'a> = UploadOrGroupPhoto;
    const CARRIES_FILE: bool = true;

    const DOC: OpDoc = OpDoc {
        summary: "Multipart: store a chat attachment (profile=0), or set or delete (delete=1) the caller's photo (profile=1). The first file part is taken whatever its name (the apps name it photo).",
        request: &[
            TOKEN_FIELD,
            ("auth", "string", "Another name of token, as the iOS app sends it with attachments."),
            ("profile", "integer", "1: the caller's photo; 0 (default): a chat attachment."),
            ("gid", "integer", "With profile=1: a group's photo (admins and owner only); 0 for the caller's own."),
            ("delete", "integer", "1: remove the photo."),
            ("mid", "string", "The app's message id; not used."),
        ],
        required: &[],
        reply: &[
            ("file", "string", "The stored file's full URL (attachment, or the new photo)."),
            ("url", "string", "Attachments: the same URL."),
            ("photo", "string", "profile=1: the photo's file name under urls.download; empty when deleted."),
            ("tn", "string", "profile=1: base64 of the 100x100 JPEG thumbnail."),
            ("profile", "integer", "profile as asked."),
            ("gid", "integer", "gid as asked."),
            ("phone", "string", "profile=1: the caller's phone; else empty."),
            ("name", "string", "profile=1: the caller's name."),
            ("status", "string", "profile=1: the caller's status."),
        ],
    };

    fn read(sent: Sent<'_>) -> UploadOrGroupPhoto {
        let (profile, gid) = (sent.number("profile") > 0, sent.number("gid"));
        match profile && gid > 0 {
            true => UploadOrGroupPhoto::GroupPhoto { gid, delete: sent.flag("delete"), file: sent.file },
            false => UploadOrGroupPhoto::Upload(UploadRequest { profile, gid, delete: sent.flag("delete"), file: sent.file }),
        }
    }

    async fn answer(state: &AppState, caller: Caller, request: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        match request {
            UploadOrGroupPhoto::GroupPhoto { gid, delete, file } => {
                // What the 2021 apps rebuild a group's profile from; no `file`, as the reference.
                let mut fields = state.groups.set_photo(&caller, gid, delete, file).await?.fields();
                fields.insert("profile".into(), 1.into());
                fields.insert("phone".into(), "".into());
                Ok(fields)
            }
            UploadOrGroupPhoto::Upload(upload) => {
                let gid = upload.gid;
                Ok(uploaded(state.files.upload(&caller, upload).await?, gid))
            }
        }
    }
}

/// An attachment or the caller's own photo: every reply carries `profile`, `gid` and
/// `phone`, as the reference's did; an own photo's adds the profile as the 2021 apps
/// rebuild it (`name`, `status`, `photo`, `ts`, `tn` and the caller's address).
fn uploaded(uploaded: Uploaded, gid: i64) -> Fields {
    let mut fields = Fields::new();
    fields.insert("gid".into(), gid.max(0).into());
    fields.insert("phone".into(), "".into());
    match uploaded {
        Uploaded::Attachment { url } => {
            fields.insert("profile".into(), 0.into());
            fields.insert("file".into(), url.as_str().into());
            fields.insert("url".into(), url.into());
        }
        Uploaded::OwnPhoto { profile, url } => {
            fields.insert("profile".into(), 1.into());
            if let Some(url) = url {
                fields.insert("file".into(), url.into());
            }
            fields.extend(profile.public_fields());
            fields.insert("gid".into(), 0.into());
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::tests::params;
    use actix_web::http::header::HeaderMap;

    #[test]
    fn with_profile_and_a_gid_it_is_the_group_photo() {
        let headers = HeaderMap::new();
        let sent = params(&[("gid", "3"), ("profile", "1"), ("name", "Team")]);
        assert!(matches!(Upload::read(Sent::new(&sent, &headers, None)), UploadOrGroupPhoto::GroupPhoto { gid: 3, delete: false, .. }));
        let sent = params(&[("gid", "3")]);
        let UploadOrGroupPhoto::Upload(upload) = Upload::read(Sent::new(&sent, &headers, None)) else { panic!() };
        assert_eq!((upload.profile, upload.gid), (false, 3));
    }
}

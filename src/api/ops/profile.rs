//! `op=profile`: changes the caller's name, status and/or photo; with a `gid`, renames a
//! group the caller runs.

use serde_json::Value;

use super::common::{self, TOKEN_FIELD};
use super::{ApiOp, Fields, OpDoc};
use crate::api::request::Sent;
use crate::api::AppState;
use crate::config::Dialect;
use crate::domain::account::Caller;
use crate::domain::error::ApiError;
use crate::service::uploads::UploadedFile;
use crate::service::users::ProfileFields;

pub struct Profile;

/// What `op=profile` changes.
pub enum ProfileRequest<'a> {
    /// The caller's own profile; the 2021 apps may send the new photo as a file part of
    /// the same request.
    Own { fields: ProfileFields<'a>, photo: Option<UploadedFile> },
    /// With a `gid`: a group's new name.
    GroupName { gid: i64, name: Option<&'a str> },
}

impl ApiOp for Profile {
    type ActsFor = Caller;
    type Request<'a> = ProfileRequest<'a>;
    const CARRIES_FILE: bool = true;

    const DOC: OpDoc = OpDoc {
        summary: "Change the caller's name, status and/or photo; contacts see the change at their next sync.",
        request: &[
            TOKEN_FIELD,
            ("name", "string", "At most 64 characters."),
            ("status", "string", "At most 140 characters."),
            ("photo", "string", "An http(s) URL, at most 512 characters; or send the photo as a multipart file part."),
        ],
        required: &[],
        reply: &[(
            "profile",
            "object",
            "json dialect only (the 2021 Android app reads profile as a number): phone or email, name, status, photo, ts, tn and uid.",
        )],
    };

    fn read(sent: Sent<'_>) -> ProfileRequest<'_> {
        match sent.number("gid") {
            gid if gid > 0 => ProfileRequest::GroupName { gid, name: sent.text("name") },
            _ => ProfileRequest::Own {
                fields: ProfileFields { name: sent.text("name"), status: sent.text("status"), photo: sent.text("photo") },
                photo: sent.file,
            },
        }
    }

    async fn answer(state: &AppState, caller: Caller, request: Self::Request<'_>, _: &str) -> Result<Fields, ApiError> {
        // The 2021 Android app (the `mesibo` dialect) reads `profile` as a number, and an
        // object fails its whole reply: it gets none, nor the group.
        let json_dialect = state.http.dialect == Dialect::Json;
        let mut fields = Fields::new();
        match request {
            ProfileRequest::GroupName { gid, name } => {
                let group = state.groups.rename(&caller, gid, name).await?;
                if json_dialect {
                    fields.insert("group".into(), Value::Object(group.fields()));
                }
            }
            ProfileRequest::Own { fields: change, photo } => {
                let profile = state.users.change_profile(&caller, change, photo).await?;
                if json_dialect {
                    fields.insert("profile".into(), common::own_profile(&profile));
                }
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::tests::params;
    use actix_web::http::header::HeaderMap;

    #[test]
    fn with_a_gid_it_is_the_group_name() {
        let headers = HeaderMap::new();
        let sent = params(&[("gid", "3"), ("profile", "1"), ("name", "Team")]);
        assert!(matches!(Profile::read(Sent::new(&sent, &headers, None)), ProfileRequest::GroupName { gid: 3, name: Some("Team") }));
        let sent = params(&[("gid", "0"), ("name", "Ann")]);
        assert!(matches!(Profile::read(Sent::new(&sent, &headers, None)), ProfileRequest::Own { fields: ProfileFields { name: Some("Ann"), .. }, .. }));
    }
}

//! Notices to users' apps (a contact joined, a profile or a group changed), in the shape
//! the 2021 apps read: a platform message of type 1 whose text is a JSON object with
//! `subject` (shown as a local notification, `%NAME%` replaced by the app), `msg`, and
//! the profile to refresh (`name`, `phone`, `gid`, `status`, `photo`, `ts`, `tn`,
//! `members` for groups). Transient: no app stores it, and it expires unread.

use serde_json::{json, Value};

use crate::domain::account::{thumbnail_field, Profile};

/// Seconds a notice waits for an offline app before the platform drops it.
pub const NOTICE_EXPIRY_SECS: u64 = 3600;
/// The platform's message flag for a transient message.
const TRANSIENT: u64 = 4;
/// The message type the 2021 apps take for a notice.
const NOTICE_TYPE: u64 = 1;

/// What a notice tells: the profile (of a user or a group) the app refreshes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeBody {
    /// Shown as a local notification when not empty; `%NAME%` is the app's name for `phone`.
    pub subject: String,
    pub msg: String,
    pub name: String,
    /// The user's phone; empty for a group.
    pub phone: String,
    /// The group's id; 0 for a user.
    pub gid: i64,
    pub status: String,
    pub photo: String,
    pub ts: i64,
    pub thumbnail: Option<Vec<u8>>,
    /// A group's members in the `n:phone,phone` form; `None` for a user.
    pub members: Option<String>,
}

impl NoticeBody {
    /// A user's profile, with `subject`.
    pub fn of_user(profile: &Profile, subject: &str) -> NoticeBody {
        NoticeBody {
            subject: subject.to_string(),
            name: profile.name.clone(),
            phone: profile.address.clone(),
            status: profile.status.clone(),
            photo: profile.photo.clone(),
            ts: profile.ts,
            thumbnail: profile.thumbnail.clone(),
            ..NoticeBody::default()
        }
    }

    /// The outbox row's payload: the fields of the platform's `message` request other
    /// than sender, recipient and credentials.
    pub fn payload(&self) -> String {
        let mut body = json!({
            "subject": self.subject,
            "msg": self.msg,
            "type": 0,
            "action": 0,
            "name": self.name,
            "phone": self.phone,
            "gid": self.gid,
            "status": self.status,
            "photo": self.photo,
            "ts": self.ts,
        });
        if let Some(thumbnail) = &self.thumbnail {
            body["tn"] = thumbnail_field(thumbnail);
        }
        if let Some(members) = &self.members {
            body["members"] = members.as_str().into();
        }
        json!({
            "type": NOTICE_TYPE,
            "flag": TRANSIENT,
            "expiry": NOTICE_EXPIRY_SECS,
            "forced": 1,
            "channel": 0,
            "gid": 0,
            "msg": body.to_string(),
        })
        .to_string()
    }
}

/// The subject of the notice a user's contacts get when the user joins.
pub const JOINED_SUBJECT: &str = "%NAME% has joined";

/// The phone a notice payload is about, to mask it in logs; `None` for a group's.
pub fn phone_in(payload: &Value) -> Option<String> {
    let body: Value = serde_json::from_str(payload["msg"].as_str()?).ok()?;
    body["phone"].as_str().filter(|phone| !phone.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_a_transient_type_1_message_whose_text_is_the_profile() {
        let profile = Profile {
            address: "18005550001".into(),
            uid: "7".into(),
            name: "Ann".into(),
            status: "hi".into(),
            photo: "a.jpg".into(),
            ts: 1700,
            thumbnail: Some(vec![0xFF, 0xD8]),
        };
        let payload: Value = serde_json::from_str(&NoticeBody::of_user(&profile, JOINED_SUBJECT).payload()).unwrap();
        assert_eq!((&payload["type"], &payload["flag"], &payload["expiry"]), (&json!(1), &json!(4), &json!(3600)));
        let body: Value = serde_json::from_str(payload["msg"].as_str().unwrap()).unwrap();
        assert_eq!(body["subject"], "%NAME% has joined");
        assert_eq!(
            (&body["phone"], &body["gid"], &body["ts"], &body["tn"]),
            (&json!("18005550001"), &json!(0), &json!(1700), &json!("/9g="))
        );
        assert!(body.get("members").is_none(), "a user has no members");
        assert_eq!(phone_in(&payload).as_deref(), Some("18005550001"));
    }
}

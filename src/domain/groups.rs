//! Groups as the 2021 apps see them: a platform group id, a name and photo, and members
//! by phone with a role (owner, admin, member).

use serde_json::{Map, Value};
use std::collections::HashSet;

use crate::domain::account::thumbnail_field;
use crate::domain::notices::NoticeBody;

pub const MEMBER: i64 = 0;
pub const ADMIN: i64 = 1;
pub const OWNER: i64 = 2;
/// Groups a getcontacts reply lists at most.
pub const MAX_GROUPS_PER_SYNC: usize = 500;

/// A group and its members, ordered by role (owner, admins, members) then phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub gid: i64,
    pub name: String,
    pub photo: String,
    pub thumbnail: Option<Vec<u8>>,
    /// Unix seconds of the last change.
    pub ts: i64,
    pub members: Vec<(String, i64)>,
}

impl Group {
    /// The role of `phone`, if it is a member.
    pub fn role_of(&self, phone: &str) -> Option<i64> {
        self.members.iter().find(|(member, _)| member == phone).map(|(_, role)| *role)
    }

    /// May `phone` change the group (its name, photo, members and admins)?
    pub fn is_run_by(&self, phone: &str) -> bool {
        self.role_of(phone).is_some_and(|role| role >= ADMIN)
    }

    /// The apps' `members` text: `n:p1,p2,...`, where the first `n` (owner and admins)
    /// run the group; `:` alone for a group without members.
    pub fn members_field(&self) -> String {
        let admins = self.members.iter().filter(|(_, role)| *role >= ADMIN).count();
        let phones: Vec<&str> = self.members.iter().map(|(phone, _)| phone.as_str()).collect();
        let count = if self.members.is_empty() { String::new() } else { admins.to_string() };
        format!("{count}:{}", phones.join(","))
    }

    /// The reply fields the apps build the group's profile from: `gid` (a number, as the
    /// iOS app reads it), `name`, `status`, `photo`, `ts`, `tn` and `members`.
    pub fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("gid".into(), self.gid.into());
        fields.insert("name".into(), self.name.clone().into());
        fields.insert("status".into(), "".into());
        fields.insert("photo".into(), self.photo.clone().into());
        fields.insert("ts".into(), self.ts.into());
        if let Some(thumbnail) = &self.thumbnail {
            fields.insert("tn".into(), thumbnail_field(thumbnail));
        }
        fields.insert("members".into(), self.members_field().into());
        fields
    }

    /// An entry of a getcontacts reply: the fields above, with an empty `phone`.
    pub fn contact_entry(&self) -> Map<String, Value> {
        let mut entry = self.fields();
        entry.insert("phone".into(), "".into());
        entry
    }

    /// The notice `recipient` gets of a change by `actor`, with `subject` (empty: refresh
    /// silently). Its `members` lists only the phones the recipient already knows: their
    /// own, the actor's, and those in their address book (`knows`). Anyone may add anyone,
    /// so listing every phone would hand the members' numbers to whoever a stranger adds.
    /// The others are left out rather than masked: the apps take each entry for a phone,
    /// and a list of fewer phones is one they already read (the reference sent an empty
    /// list when it grew long). The recipient's own phone stays, or the apps drop the group.
    pub fn notice_for(&self, subject: &str, recipient: &str, actor: &str, knows: impl Fn(&str) -> bool) -> NoticeBody {
        let shown = |phone: &str| phone == recipient || phone == actor || knows(phone);
        let visible = Group { members: self.members.iter().filter(|(phone, _)| shown(phone)).cloned().collect(), ..self.clone() };
        let mut members = visible.members_field();
        // The reference left long lists out of the message.
        if members.len() > 256 {
            members.clear();
        }
        NoticeBody {
            subject: subject.to_string(),
            name: self.name.clone(),
            gid: self.gid,
            photo: self.photo.clone(),
            ts: self.ts,
            thumbnail: self.thumbnail.clone(),
            members: Some(members),
            ..NoticeBody::default()
        }
    }
}

/// How a write changes a group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Keep,
    /// A new group: its owner and its first members.
    Create {
        owner: String,
        members: Vec<String>,
    },
    /// The member list becomes `members` plus the owner and `keep` (the caller).
    Replace {
        keep: String,
        members: Vec<String>,
    },
    Add(Vec<String>),
    /// Removes members; the owner stays (the owner deletes the group instead).
    Remove(Vec<String>),
    /// Makes members admins, or members again; the owner's role never changes.
    SetRole {
        phones: Vec<String>,
        role: i64,
    },
}

/// A group as a change left it, and the photo it showed just before ('' for a new
/// group): read in the change's own transaction, so that of two changes at once each
/// learns the photo it replaced, and every replaced photo is freed exactly once.
#[derive(Debug, Clone)]
pub struct ChangedGroup {
    pub group: Group,
    pub replaced_photo: String,
}

/// A change to a group, written with its notices in one transaction.
#[derive(Debug, Clone)]
pub struct GroupWrite {
    pub gid: i64,
    /// Create the group (it must not exist) rather than change it.
    pub create: bool,
    pub name: Option<String>,
    /// A new photo: its file name and thumbnail (`("", None)` removes it).
    pub photo: Option<(String, Option<Vec<u8>>)>,
    pub members: MemberChange,
    pub now: i64,
    /// Who made the change: not notified of it.
    pub actor: String,
    /// The notice's subject; `None` sends no notice.
    pub subject: Option<String>,
    /// When set, only these are shown `subject` (the members just added); the others
    /// told are refreshed silently, so adding someone does not notify everyone again.
    pub subject_only_for: Option<Vec<String>>,
    /// Former members to tell as well (removed, or leaving), so their apps drop the group.
    pub also_tell: Vec<String>,
}

impl GroupWrite {
    /// Who may be told of this change to `group`: its members and `also_tell`, but the
    /// actor (the store keeps those who are users).
    pub fn told(&self, group: &Group) -> Vec<String> {
        let everyone = group.members.iter().map(|(phone, _)| phone).chain(&self.also_tell);
        everyone.filter(|phone| **phone != self.actor).cloned().collect()
    }

    /// The notices of this change to `group` with `subject`, as (recipient, outbox
    /// payload), for each of `recipients` (those [`GroupWrite::told`] who are users).
    /// `known` holds the (recipient, member phone) pairs where the recipient has the
    /// member in their address book.
    pub fn notices(&self, group: &Group, subject: &str, recipients: &[String], known: &HashSet<(String, String)>) -> Vec<(String, String)> {
        recipients
            .iter()
            .map(|recipient| {
                let subject = match &self.subject_only_for {
                    Some(only) if !only.contains(recipient) => "",
                    _ => subject,
                };
                let knows = |phone: &str| known.contains(&(recipient.clone(), phone.to_string()));
                (recipient.clone(), group.notice_for(subject, recipient, &self.actor, knows).payload())
            })
            .collect()
    }

    /// A change to an existing group by `actor` that tells its members silently; the
    /// fields left are set with struct update syntax.
    pub fn change(gid: i64, members: MemberChange, actor: &str, now: i64) -> GroupWrite {
        GroupWrite {
            gid,
            create: false,
            name: None,
            photo: None,
            members,
            now,
            actor: actor.to_string(),
            subject: Some(String::new()),
            subject_only_for: None,
            also_tell: Vec::new(),
        }
    }
}

impl Group {
    /// What the members are told when the group is deleted: the group without members
    /// (so their apps drop it), sent to every former member but `actor`.
    pub fn deletion(&self, actor: &str, now: i64) -> (Group, GroupWrite) {
        let gone = Group { members: Vec::new(), ts: now, ..self.clone() };
        let write = GroupWrite {
            subject: None,
            also_tell: self.members.iter().map(|(phone, _)| phone.clone()).collect(),
            ..GroupWrite::change(self.gid, MemberChange::Keep, actor, now)
        };
        (gone, write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_list_the_owner_and_admins_first_with_their_count() {
        let group = Group {
            gid: 7,
            name: "Hikers".into(),
            photo: String::new(),
            thumbnail: None,
            ts: 1,
            members: vec![("18005550001".into(), OWNER), ("18005550003".into(), ADMIN), ("18005550002".into(), MEMBER)],
        };
        assert_eq!(group.members_field(), "2:18005550001,18005550003,18005550002");
        assert!(group.is_run_by("18005550003") && !group.is_run_by("18005550002") && !group.is_run_by("18005550009"));
        assert_eq!(Group { members: vec![], ..group.clone() }.members_field(), ":");
        assert_eq!(group.fields()["gid"], 7, "a number");
        let everyone = group.notice_for("x", "18005550002", "18005550001", |_| true);
        assert_eq!(everyone.members.as_deref(), Some("2:18005550001,18005550003,18005550002"));
    }

    #[test]
    fn a_notice_lists_only_the_phones_its_recipient_knows() {
        let group = Group {
            gid: 7,
            name: "Spam".into(),
            photo: String::new(),
            thumbnail: None,
            ts: 1,
            members: vec![
                ("18005550001".into(), OWNER),
                ("18005550003".into(), ADMIN),
                ("18005550002".into(), MEMBER),
                ("18005550004".into(), MEMBER),
                ("18005550005".into(), MEMBER),
            ],
        };
        // The admin ...03 adds; ...02 has ...05 in their address book.
        let notice = group.notice_for("", "18005550002", "18005550003", |phone| phone == "18005550005");
        assert_eq!(notice.members.as_deref(), Some("1:18005550003,18005550002,18005550005"), "the owner and ...04 are unknown");
        let stranger = group.notice_for("", "18005550004", "18005550003", |_| false);
        assert_eq!(stranger.members.as_deref(), Some("1:18005550003,18005550004"), "the adder and oneself only");

        let write = GroupWrite {
            subject_only_for: Some(vec!["18005550004".into()]),
            ..GroupWrite::change(7, MemberChange::Keep, "18005550003", 1)
        };
        let known = HashSet::from([("18005550002".to_string(), "18005550005".to_string())]);
        let notices = write.notices(&group, "added", &["18005550002".into(), "18005550004".into()], &known);
        let bodies: Vec<(String, Value)> = notices
            .iter()
            .map(|(to, payload)| {
                let payload: Value = serde_json::from_str(payload).unwrap();
                (to.clone(), serde_json::from_str(payload["msg"].as_str().unwrap()).unwrap())
            })
            .collect();
        assert_eq!((&bodies[0].0, &bodies[0].1["subject"]), (&"18005550002".to_string(), &Value::from("")), "already a member: silent");
        assert_eq!(bodies[0].1["members"], "1:18005550003,18005550002,18005550005");
        assert_eq!((&bodies[1].0, &bodies[1].1["subject"]), (&"18005550004".to_string(), &Value::from("added")));
        assert_eq!(bodies[1].1["members"], "1:18005550003,18005550004");
    }
}

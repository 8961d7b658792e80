//! Groups: `setgroup`, `getgroup`, `editmembers`, `setadmin` and `delgroup`, and a
//! group's name and photo through `profile` and `upload`. Every change the platform must
//! know of is made there first: the local change is written only once the platform
//! accepted it, together with the members' notices.

use serde_json::Value;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::upstream::Upstream;
use crate::domain::account::{refuse_control_characters, Caller, MAX_NAME_CHARS};
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::groups::{ChangedGroup, Group, GroupWrite, MemberChange, ADMIN, MEMBER, OWNER};
use crate::domain::ratelimit::{KeyedLimit, Refusal, SharedLimits};
use crate::service::contacts::{parse_phones, Phones};
use crate::service::uploads::{Files, StoredPhoto, UploadedFile};
use crate::store::Db;

/// Members one request may name.
pub const MAX_MEMBERS_PER_REQUEST: usize = 1000;

/// What the group ops share: the platform the groups are mirrored to, the files that
/// hold their photos, and the limit on members each user adds.
pub struct Groups {
    pub db: Arc<Db>,
    pub platform: Upstream,
    files: Arc<Files>,
    /// Members a user may add per hour, over all their groups: each add notifies someone
    /// who did not ask for it.
    pub adds_per_user: KeyedLimit,
}

/// The fields of `setgroup`.
#[derive(Debug, Default)]
pub struct SetGroup<'a> {
    /// 0 creates a group.
    pub gid: i64,
    pub name: Option<&'a str>,
    /// Member phones, comma-separated, without the caller.
    pub members: Option<&'a str>,
    pub photo: Option<UploadedFile>,
}

impl Groups {
    pub fn new(config: &Config, db: Arc<Db>, files: Arc<Files>, shared: Option<&Arc<SharedLimits>>) -> Result<Groups, String> {
        Ok(Groups {
            db,
            platform: Upstream::from_config(config)?,
            files,
            adds_per_user: KeyedLimit::per_hour(config.limit.group_adds_per_user_per_hour).named("group_adds_per_user").shared(shared),
        })
    }

    /// Spends the caller's budget of added members on `added`, those not members before.
    async fn admit_adds(&self, caller: &Caller, added: usize) -> Result<(), ApiError> {
        let added = u32::try_from(added).unwrap_or(u32::MAX);
        self.adds_per_user.check_n(&caller.user_id.to_string(), added).await.map_err(|refusal| match refusal {
            Refusal::Wait(wait) => {
                ApiError::rate_limited(wait, format!("too many members added to groups this hour; retry in {wait} seconds"))
            }
            Refusal::TooMany => ApiError::new(ErrorCode::TooMany, "more members at once than a user may add to groups in an hour"),
            Refusal::Unavailable => refusal.into(),
        })
    }

    pub fn purge(&self) {
        self.adds_per_user.purge();
    }

    /// `setgroup`: creates a group (`gid` 0) with the caller as owner, or changes one the
    /// caller runs: its name, its photo, and with `m` its member list.
    pub async fn set(&self, caller: &Caller, request: SetGroup<'_>) -> Result<Group, ApiError> {
        let me = self.phone_of(caller).await?;
        let name = request.name.map(decoded).map(|name| checked_name(&name)).transpose()?;
        let members = match request.members.map(decoded) {
            Some(list) if !list.trim().is_empty() => Some(
                parse_phones(Phones::Text(&list), MAX_MEMBERS_PER_REQUEST)?
                    .phones
                    .into_iter()
                    .filter(|phone| *phone != me)
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let existing = match request.gid {
            gid if gid > 0 => Some(self.run_by(gid, &me).await?),
            _ => None,
        };
        let added = match (&existing, &members) {
            (_, None) => 0,
            (None, Some(members)) => members.len(),
            (Some(group), Some(members)) => members.iter().filter(|phone| group.role_of(phone).is_none()).count(),
        };
        // Before the photo is stored: a refused change keeps nothing of it.
        self.admit_adds(caller, added).await?;
        let stored = match request.photo {
            Some(file) => Some(self.files.stored_photo(caller, file).await?),
            None => None,
        };
        let photo = stored.as_ref().map(|stored| (stored.name.clone(), Some(stored.thumbnail.clone())));
        let write = match self.mirror(me, existing, name, members).await {
            Ok(write) => GroupWrite { photo, ..write },
            Err(e) => {
                self.forget(stored.as_ref()).await;
                return Err(e);
            }
        };
        self.write_photo(write, stored.as_ref()).await
    }

    /// Makes a `setgroup` change on the platform (`groupadd` creates the group, `groupset`
    /// changes `existing`); returns the local write that follows it, without the photo.
    async fn mirror(
        &self,
        me: String,
        existing: Option<Group>,
        name: Option<String>,
        members: Option<Vec<String>>,
    ) -> Result<GroupWrite, ApiError> {
        let now = self.db.clock().now();
        Ok(match existing {
            None => {
                let name = name.unwrap_or_default();
                let members = members.unwrap_or_default();
                let everyone: Vec<&str> = std::iter::once(me.as_str()).chain(members.iter().map(String::as_str)).collect();
                let fields = serde_json::json!({ "gid": 0, "name": name, "flag": 0, "m": everyone.join(",") });
                let reply = self.platform.group("groupadd", fields).await.map_err(refused)?;
                let gid = platform_gid(&reply).ok_or_else(|| refused_with("the platform's groupadd reply has no group gid"))?;
                GroupWrite {
                    gid,
                    create: true,
                    subject: Some(format!("You have been added to group {name}")),
                    name: Some(name),
                    photo: None,
                    members: MemberChange::Create { owner: me.clone(), members },
                    now,
                    actor: me,
                    subject_only_for: None,
                    also_tell: Vec::new(),
                }
            }
            Some(group) => {
                // An empty name keeps the old one.
                let name = name.filter(|name| !name.is_empty());
                let owner: Vec<String> = group.members.iter().filter(|(_, role)| *role == OWNER).map(|(phone, _)| phone.clone()).collect();
                let everyone: Vec<String> = match &members {
                    Some(members) => unique(std::iter::once(me.clone()).chain(members.iter().cloned()).chain(owner)),
                    None => group.members.iter().map(|(phone, _)| phone.clone()).collect(),
                };
                let fields = serde_json::json!({
                    "gid": group.gid,
                    "name": name.as_deref().unwrap_or(&group.name),
                    "flag": 0,
                    "m": everyone.join(","),
                });
                self.platform.group("groupset", fields).await.map_err(refused)?;
                let removed: Vec<String> =
                    group.members.iter().map(|(phone, _)| phone.clone()).filter(|phone| !everyone.contains(phone)).collect();
                let members = match members {
                    Some(members) => MemberChange::Replace { keep: me.clone(), members },
                    None => MemberChange::Keep,
                };
                GroupWrite { name, also_tell: removed, ..GroupWrite::change(group.gid, members, &me, now) }
            }
        })
    }

    /// `getgroup`: a group the caller is a member of.
    pub async fn get(&self, caller: &Caller, gid: i64) -> Result<Group, ApiError> {
        if gid <= 0 {
            return Err(missing("gid"));
        }
        let me = self.phone_of(caller).await?;
        match self.db.group(gid).await? {
            Some(group) if group.role_of(&me).is_some() => Ok(group),
            _ => Err(ApiError::new(ErrorCode::NotMember, "not a member of this group")),
        }
    }

    /// `editmembers`: adds (or with `delete` removes) members of a group the caller runs;
    /// answers the group as it is now.
    pub async fn edit_members(&self, caller: &Caller, gid: i64, members: Option<Phones<'_>>, delete: bool) -> Result<Group, ApiError> {
        let list = members.filter(|m| !m.is_blank());
        let (gid, list) = match (gid, list) {
            (gid, Some(list)) if gid > 0 => (gid, list),
            _ => return Err(missing("gid and m")),
        };
        let me = self.phone_of(caller).await?;
        let group = self.run_by(gid, &me).await?;
        let phones = parse_phones(list, MAX_MEMBERS_PER_REQUEST)?.phones;
        let newcomers: Vec<String> = phones.iter().filter(|phone| group.role_of(phone).is_none()).cloned().collect();
        if !delete {
            self.admit_adds(caller, newcomers.len()).await?;
        }
        let fields = serde_json::json!({ "gid": gid, "m": phones.join(","), "delete": i64::from(delete) });
        self.platform.group("groupeditmembers", fields).await.map_err(refused)?;
        if !delete && newcomers.is_empty() {
            // Adding members again changes nothing here: nobody is told of it again.
            return Ok(group);
        }
        let now = self.db.clock().now();
        let write = match delete {
            true => GroupWrite { also_tell: phones.clone(), ..GroupWrite::change(gid, MemberChange::Remove(phones), &me, now) },
            false => GroupWrite {
                subject: Some(format!("You have been added to group {}", group.name)),
                subject_only_for: Some(newcomers.clone()),
                ..GroupWrite::change(gid, MemberChange::Add(newcomers), &me, now)
            },
        };
        Ok(self.written(write).await?.group)
    }

    /// `setadmin`: makes members admins (`admin` 1) or members again (0). The owner's role
    /// never changes. The platform has no roles, so nothing goes there. Answers the group
    /// as it is now.
    pub async fn set_admin(&self, caller: &Caller, gid: i64, members: Option<Phones<'_>>, admin: bool) -> Result<Group, ApiError> {
        if gid <= 0 {
            return Err(missing("gid"));
        }
        let me = self.phone_of(caller).await?;
        self.run_by(gid, &me).await?;
        let list = members.filter(|m| !m.is_blank()).ok_or_else(|| missing("m"))?;
        let phones = parse_phones(list, MAX_MEMBERS_PER_REQUEST)?.phones;
        let role = if admin { ADMIN } else { MEMBER };
        let write = GroupWrite::change(gid, MemberChange::SetRole { phones, role }, &me, self.db.clock().now());
        Ok(self.written(write).await?.group)
    }

    /// `delgroup`: the owner deletes the group, and its photo unless something else shows
    /// it; any other member leaves it.
    pub async fn delete(&self, caller: &Caller, gid: i64) -> Result<(), ApiError> {
        if gid <= 0 {
            return Err(missing("gid"));
        }
        let me = self.phone_of(caller).await?;
        let group = self.db.group(gid).await?;
        let role = group.as_ref().and_then(|group| group.role_of(&me)).ok_or_else(not_run_by_caller)?;
        let group = group.expect("a member's group exists");
        if role == OWNER {
            self.platform.group("groupdel", serde_json::json!({ "gid": gid })).await.map_err(refused)?;
            let subject = format!("The group {} has been deleted", group.name);
            // The photo the deletion read: one replaced meanwhile was freed by its replacer.
            if let Some(deleted) = self.db.delete_group(gid, me, subject, self.db.clock().now()).await? {
                self.files.release(&deleted.photo).await;
            }
        } else {
            let fields = serde_json::json!({ "gid": gid, "m": me, "delete": 1 });
            self.platform.group("groupeditmembers", fields).await.map_err(refused)?;
            let write = GroupWrite::change(gid, MemberChange::Remove(vec![me.clone()]), &me, self.db.clock().now());
            self.written(write).await?;
        }
        Ok(())
    }

    /// `upload` with `profile=1` and `gid`: sets (or with `delete` removes) the photo of
    /// a group the caller runs. Only the members are told: the platform keeps no photos.
    pub async fn set_photo(&self, caller: &Caller, gid: i64, delete: bool, file: Option<UploadedFile>) -> Result<Group, ApiError> {
        let me = self.phone_of(caller).await?;
        self.run_by(gid, &me).await?;
        let stored = match (delete, file) {
            (true, _) => None,
            (false, None) => return Err(ApiError::new(ErrorCode::MissingFile, "a file part is required")),
            (false, Some(file)) => Some(self.files.stored_photo(caller, file).await?),
        };
        let photo = stored.as_ref().map_or((String::new(), None), |stored| (stored.name.clone(), Some(stored.thumbnail.clone())));
        let write = GroupWrite { photo: Some(photo), ..GroupWrite::change(gid, MemberChange::Keep, &me, self.db.clock().now()) };
        self.write_photo(write, stored.as_ref()).await
    }

    /// Writes a change that may set (or remove) the group's photo: the photo `stored` for
    /// it is kept, and the one it replaced deleted unless something else shows it. The store
    /// says which photo the change replaced: of two changes at once, each frees the photo
    /// it replaced itself, so none is left behind and none freed twice.
    async fn write_photo(&self, write: GroupWrite, stored: Option<&StoredPhoto>) -> Result<Group, ApiError> {
        let ChangedGroup { group, replaced_photo } = match self.written(write).await {
            Ok(changed) => changed,
            Err(e) => {
                // The group may be gone since it was read: then no row shows the photo.
                self.forget(stored).await;
                return Err(e);
            }
        };
        if let Some(stored) = stored {
            self.files.keep(stored).await?;
        }
        if replaced_photo != group.photo {
            self.files.release(&replaced_photo).await;
        }
        Ok(group)
    }

    /// Writes a group change; a group deleted since it was read answers `BADGROUP`.
    async fn written(&self, write: GroupWrite) -> Result<ChangedGroup, ApiError> {
        self.db.write_group(write).await?.ok_or_else(not_run_by_caller)
    }

    /// Frees the photo stored for a change that was not written, unless something else
    /// shows the same file.
    async fn forget(&self, stored: Option<&StoredPhoto>) {
        if let Some(stored) = stored {
            self.files.release(&stored.name).await;
        }
    }

    /// `profile` with `gid`: renames a group the caller runs.
    pub async fn rename(&self, caller: &Caller, gid: i64, name: Option<&str>) -> Result<Group, ApiError> {
        let profile = self.db.profile_of(caller.user_id).await?;
        let me = profile.address;
        self.run_by(gid, &me).await?;
        let name = checked_name(name.unwrap_or_default())?;
        if name.is_empty() {
            return Err(ApiError::new(ErrorCode::BadParam, "name is required"));
        }
        self.platform.group("groupset", serde_json::json!({ "gid": gid, "name": name, "flag": 0 })).await.map_err(refused)?;
        let subject = format!("{} has changed group name to {name}", if profile.name.is_empty() { &me } else { &profile.name });
        let write = GroupWrite {
            subject: Some(subject),
            name: Some(name),
            ..GroupWrite::change(gid, MemberChange::Keep, &me, self.db.clock().now())
        };
        Ok(self.written(write).await?.group)
    }

    /// The caller's phone (or e-mail address): how groups name their members.
    async fn phone_of(&self, caller: &Caller) -> Result<String, ApiError> {
        Ok(self.db.profile_of(caller.user_id).await?.address)
    }

    /// The group `gid` if `phone` is its owner or an admin; `BADGROUP` otherwise.
    async fn run_by(&self, gid: i64, phone: &str) -> Result<Group, ApiError> {
        match self.db.group(gid).await? {
            Some(group) if group.is_run_by(phone) => Ok(group),
            _ => Err(not_run_by_caller()),
        }
    }
}

/// The phones in order, each once.
fn unique(phones: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    phones.filter(|phone| seen.insert(phone.clone())).collect()
}

/// The 2021 apps percent-encode `name` and `m` in multipart forms; the reference decoded
/// them. Text that does not decode to UTF-8 is kept as sent.
fn decoded(text: &str) -> String {
    match percent_encoding::percent_decode_str(text).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => text.to_string(),
    }
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::new(ErrorCode::BadParam, format!("name must be at most {MAX_NAME_CHARS} characters")));
    }
    refuse_control_characters("name", name)?;
    Ok(name.to_string())
}

/// The platform's group id in a `groupadd` reply: a number or a numeric string.
fn platform_gid(reply: &Value) -> Option<i64> {
    let gid = &reply["group"]["gid"];
    gid.as_i64().or_else(|| gid.as_str().and_then(|gid| gid.parse().ok())).filter(|gid| *gid > 0)
}

fn refused(error: crate::delivery::upstream::UpstreamError) -> ApiError {
    tracing::warn!("upstream group change failed: {}", error.detail);
    refused_with("the platform did not accept the group change; nothing was changed")
}

fn refused_with(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Upstream, message)
}

fn missing(what: &str) -> ApiError {
    ApiError::new(ErrorCode::MissingPara, format!("{what} is required"))
}

fn not_run_by_caller() -> ApiError {
    ApiError::new(ErrorCode::BadGroup, "not a member of this group, or not its admin or owner")
}

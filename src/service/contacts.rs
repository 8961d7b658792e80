//! Contact sync: an app uploads the phones of its address book and learns which
//! of them use the app, then asks for changes since its last sync.

use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::Config;
use crate::domain::account::{Caller, Profile};
use crate::domain::address;
use crate::domain::error::{ApiError, ErrorCode};
use crate::domain::groups::{Group, MAX_GROUPS_PER_SYNC};
use crate::domain::ratelimit::{Admission, KeyedLimit, Refusal, SharedLimits};
use crate::service::non_empty;
use crate::store::contacts::SyncQuery;
use crate::store::Db;

/// The normalised, de-duplicated phones of a request and how many entries were not phones.
#[derive(Debug, PartialEq, Eq)]
pub struct PhoneList {
    pub phones: Vec<String>,
    pub invalid: usize,
}

/// A list of phones as sent: text (comma-separated, or a JSON array written out, as
/// forms carry it), or the items of a JSON body's array.
#[derive(Debug, Clone, Copy)]
pub enum Phones<'a> {
    Text(&'a str),
    Items(&'a [Value]),
}

impl Phones<'_> {
    /// Whether no phones were sent: blank text (an array, even empty, is a list sent).
    pub fn is_blank(&self) -> bool {
        matches!(self, Phones::Text(text) if text.trim().is_empty())
    }
}

/// Parses a list of phones: a comma-separated string, or a JSON array of strings or
/// numbers (any other item is not a phone).
pub fn parse_phones(phones: Phones<'_>, max: usize) -> Result<PhoneList, ApiError> {
    fn item(item: &Value) -> Cow<'_, str> {
        match item {
            Value::String(s) => Cow::Borrowed(s),
            Value::Number(n) => Cow::Owned(n.to_string()),
            _ => Cow::Borrowed(""),
        }
    }
    let parsed: Vec<Value>;
    let entries: Vec<Cow<'_, str>> = match phones {
        Phones::Items(items) => items.iter().map(item).collect(),
        Phones::Text(raw) if raw.trim().starts_with('[') => {
            parsed =
                serde_json::from_str(raw.trim()).map_err(|_| ApiError::new(ErrorCode::BadParam, "phones is not a valid JSON array"))?;
            parsed.iter().map(item).collect()
        }
        Phones::Text(raw) => raw.split(',').map(str::trim).filter(|p| !p.is_empty()).map(Cow::Borrowed).collect(),
    };
    if entries.len() > max {
        return Err(ApiError::new(ErrorCode::TooMany, format!("at most {max} phones per request")));
    }
    let mut phones = BTreeSet::new();
    let mut invalid = 0;
    for entry in &entries {
        match address::normalize_phone(entry) {
            Some(phone) => {
                phones.insert(phone);
            }
            None => invalid += 1,
        }
    }
    Ok(PhoneList { phones: phones.into_iter().collect(), invalid })
}

/// What bounds contact sync: an upload answers which of its numbers are users, so
/// numbers a user has not uploaded before are budgeted per user and per client IP;
/// numbers already among their contacts cost nothing.
pub struct ContactLimits {
    pub max_per_request: usize,
    max_per_user: usize,
    new_per_user: KeyedLimit,
    new_per_ip: KeyedLimit,
}

impl ContactLimits {
    pub fn from_config(config: &Config, shared: Option<&Arc<SharedLimits>>) -> ContactLimits {
        ContactLimits {
            max_per_request: config.contacts.max_per_request,
            max_per_user: config.contacts.max_per_user,
            new_per_user: KeyedLimit::per_day(config.limit.new_contacts_per_user_per_day).named("new_contacts_per_user").shared(shared),
            new_per_ip: KeyedLimit::per_day(config.limit.new_contacts_per_ip_per_day).named("new_contacts_per_ip").shared(shared),
        }
    }

    /// Admits an upload of `new` numbers that leaves the user with `stored` contacts.
    async fn admit(&self, user_id: i64, client_ip: &str, new: usize, stored: usize) -> Result<(), ApiError> {
        if stored > self.max_per_user {
            let message = format!(
                "a user keeps at most {} contacts and this upload would make {stored}; remove some with delcontacts, or upload the whole address book again with reset",
                self.max_per_user
            );
            return Err(ApiError::new(ErrorCode::TooMany, message));
        }
        let new = u32::try_from(new).unwrap_or(u32::MAX);
        let refused = |refusal: Refusal, whose: &str| match refusal {
            Refusal::Wait(wait) => {
                ApiError::rate_limited(wait, format!("too many new numbers looked up {whose} today; retry in {wait} seconds"))
            }
            Refusal::TooMany => {
                ApiError::new(ErrorCode::TooMany, format!("more new numbers in one upload than {whose} may look up in a day"))
            }
            Refusal::Unavailable => refusal.into(),
        };
        self.new_per_ip.check_n(client_ip, new).await.map_err(|refusal| refused(refusal, "from this address"))?;
        self.new_per_user.check_n(&user_id.to_string(), new).await.map_err(|refusal| refused(refusal, "by this user"))?;
        Ok(())
    }

    pub fn purge(&self) {
        self.new_per_user.purge();
        self.new_per_ip.purge();
    }
}

/// Where a paged sync continues: the time the first page was taken and the last entry sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    started: i64,
    ts: i64,
    address: String,
}

impl Cursor {
    fn parse(raw: &str) -> Option<Cursor> {
        let mut parts = raw.splitn(3, ':');
        let started = parts.next()?.parse().ok()?;
        let ts = parts.next()?.parse().ok()?;
        let address = parts.next()?.to_string();
        Some(Cursor { started, ts, address })
    }

    fn encode(&self) -> String {
        format!("{}:{}:{}", self.started, self.ts, self.address)
    }
}

/// The fields of `op=getcontacts` as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncRequest<'a> {
    /// Phones to add.
    pub phones: Option<Phones<'a>>,
    /// Unix seconds: answer contacts changed since.
    pub ts: Option<&'a str>,
    pub cursor: Option<&'a str>,
    /// Forget the caller's contacts first.
    pub reset: bool,
}

/// A page of a contact sync.
#[derive(Debug)]
pub struct SyncPage {
    /// The caller's contacts who use the app, changed since `ts` (or uploaded now).
    pub contacts: Vec<Profile>,
    /// The caller's groups changed since `ts`, which follow the users as the reference
    /// sent them: with the first page of a sync of changes only, never with an upload.
    pub groups: Vec<Group>,
    /// The caller's own profile: a sync also seeds it.
    pub me: Profile,
    /// Where the next page starts, when there is one (`more`).
    pub cursor: Option<String>,
    pub more: bool,
    /// How many uploaded entries were not phones; `None` without an upload.
    pub invalid: Option<usize>,
    /// When the first page was taken: what the next sync asks for changes since.
    pub ts: i64,
}

/// What `op=delcontacts` did: how many of the phones were among the caller's contacts,
/// and how many entries were not phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub removed: usize,
    pub invalid: usize,
}

/// Contact sync: the address books, and the limits on what they look up.
pub struct Contacts {
    db: Arc<Db>,
    limits: Arc<ContactLimits>,
}

impl Contacts {
    pub fn new(db: Arc<Db>, limits: ContactLimits) -> Contacts {
        Contacts { db, limits: Arc::new(limits) }
    }

    /// `op=getcontacts`.
    pub async fn sync(&self, caller: &Caller, client_ip: &str, request: SyncRequest<'_>) -> Result<SyncPage, ApiError> {
        let first_page_of_changes = request.phones.is_none_or(|p| p.is_blank()) && request.cursor.is_none_or(str::is_empty);
        let (phones, invalid) = match request.phones.filter(|p| !p.is_blank()) {
            Some(sent) => {
                let list = parse_phones(sent, self.limits.max_per_request)?;
                (Some(list.phones), Some(list.invalid))
            }
            None => (None, None),
        };
        let since = match non_empty(request.ts) {
            Some(ts) => ts.parse::<i64>().map_err(|_| ApiError::new(ErrorCode::BadParam, "ts must be unix seconds"))?,
            None => 0,
        };
        let after = match non_empty(request.cursor) {
            Some(raw) => Some(Cursor::parse(raw).ok_or_else(|| ApiError::new(ErrorCode::BadParam, "cursor is not one this server gave"))?),
            None => None,
        };
        let now = self.db.clock().now();
        // The next sync must see every change made after the first page was taken.
        let started = after.as_ref().map_or(now, |c| c.started);
        let query = SyncQuery {
            owner: caller.user_id,
            phones,
            since,
            // A reset applies to the first page only; later pages re-send the same phones.
            reset: after.is_none() && request.reset,
            after: after.map(|cursor| (cursor.ts, cursor.address)),
            now,
        };
        let (limits, user_id, client_ip) = (Arc::clone(&self.limits), caller.user_id, client_ip.to_string());
        let admit =
            move |new, stored| -> Admission<ApiError> { Box::pin(async move { limits.admit(user_id, &client_ip, new, stored).await }) };
        let (contacts, more) = self.db.sync_contacts(query, admit).await??;
        let me = self.db.profile_of(caller.user_id).await?;
        let groups = match first_page_of_changes {
            true => self.db.groups_of(me.address.clone(), since, MAX_GROUPS_PER_SYNC).await?,
            false => Vec::new(),
        };
        let cursor = more.then(|| {
            let last = contacts.last().expect("a page with more has entries");
            Cursor { started, ts: last.ts, address: last.address.clone() }.encode()
        });
        Ok(SyncPage { contacts, groups, me, cursor, more, invalid, ts: started })
    }

    /// `op=delcontacts`.
    pub async fn remove(&self, caller: &Caller, phones: Option<Phones<'_>>) -> Result<Removed, ApiError> {
        let sent = phones.filter(|p| !p.is_blank()).ok_or_else(|| ApiError::new(ErrorCode::BadParam, "phones is required"))?;
        let list = parse_phones(sent, self.limits.max_per_request)?;
        let removed = self.db.remove_contacts(caller.user_id, list.phones).await?;
        Ok(Removed { removed, invalid: list.invalid })
    }

    /// Forgets the users and addresses whose budgets are full again.
    pub fn purge(&self) {
        self.limits.purge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_come_as_a_list_or_a_json_array() {
        let text = |raw| parse_phones(Phones::Text(raw), 10);
        let list = text("+1 800 555 0001, 18005550002,12, 18005550001").unwrap();
        assert_eq!(list, PhoneList { phones: vec!["18005550001".into(), "18005550002".into()], invalid: 1 });
        let array = r#"["18005550003", 18005550004, "x", null]"#;
        let list = text(array).unwrap();
        assert_eq!(list, PhoneList { phones: vec!["18005550003".into(), "18005550004".into()], invalid: 2 });
        let items: Vec<Value> = serde_json::from_str(array).unwrap();
        assert_eq!(parse_phones(Phones::Items(&items), 10).unwrap(), list, "a JSON body's array reads as its text does");
        assert_eq!(text("[1,2").unwrap_err().code, "BADPARAM");
        assert_eq!(parse_phones(Phones::Text("18005550001,18005550002,18005550003"), 2).unwrap_err().code, "TOOMANY");
        assert_eq!(parse_phones(Phones::Items(&items), 3).unwrap_err().code, "TOOMANY");
        assert!(Phones::Text(" ").is_blank() && !Phones::Items(&[]).is_blank());
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor { started: 1_700_000_000, ts: 1_699_999_999, address: "18005550001".into() };
        assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::parse("garbage"), None);
    }
}

//! Contact sync: an app uploads the phones of its address book and learns which
//! of them use the app, then asks for changes since its last sync.

use rusqlite::{params, Connection};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::address;
use crate::config::Config;
use crate::error::ApiError;
use crate::http::Params;
use crate::ops;
use crate::ratelimit::KeyedLimit;
use crate::sessions::Caller;
use crate::storage::{self, Db};
use crate::users::{Profile, PROFILE_COLUMNS};

/// Most entries in one reply; the rest follow with `cursor`.
pub const PAGE_SIZE: usize = 1000;

/// The normalised, de-duplicated phones of a request and how many entries were not phones.
#[derive(Debug, PartialEq, Eq)]
pub struct PhoneList {
    pub phones: Vec<String>,
    pub invalid: usize,
}

/// Parses `phones`: a comma-separated string or a JSON array of strings or numbers.
pub fn parse_phones(raw: &str, max: usize) -> Result<PhoneList, ApiError> {
    let raw = raw.trim();
    let entries: Vec<String> = if raw.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(raw).map_err(|_| ApiError::new("BADPARAM", "phones is not a valid JSON array"))?;
        items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            })
            .collect()
    } else {
        raw.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect()
    };
    if entries.len() > max {
        return Err(ApiError::new("TOOMANY", format!("at most {max} phones per request")));
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
    pub fn from_config(config: &Config) -> ContactLimits {
        ContactLimits {
            max_per_request: config.max_contacts_per_request,
            max_per_user: config.max_contacts_per_user,
            new_per_user: KeyedLimit::per_day(config.limit_new_contacts_per_user_per_day).named("new_contacts_per_user"),
            new_per_ip: KeyedLimit::per_day(config.limit_new_contacts_per_ip_per_day).named("new_contacts_per_ip"),
        }
    }

    /// Admits an upload of `new` numbers that leaves the user with `stored` contacts.
    fn admit(&self, user_id: i64, client_ip: &str, new: usize, stored: usize) -> Result<(), ApiError> {
        if stored > self.max_per_user {
            let message = format!(
                "a user keeps at most {} contacts and this upload would make {stored}; remove some with delcontacts, or upload the whole address book again with reset",
                self.max_per_user
            );
            return Err(ApiError::new("TOOMANY", message));
        }
        let new = u32::try_from(new).unwrap_or(u32::MAX);
        let refused = |wait: Option<u64>, whose: &str| match wait {
            Some(wait) => ApiError::rate_limited(wait, format!("too many new numbers looked up {whose} today; retry in {wait} seconds")),
            None => ApiError::new("TOOMANY", format!("more new numbers in one upload than {whose} may look up in a day")),
        };
        self.new_per_ip.check_n(client_ip, new).map_err(|wait| refused(wait, "from this address"))?;
        self.new_per_user.check_n(&user_id.to_string(), new).map_err(|wait| refused(wait, "by this user"))?;
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

struct SyncQuery {
    owner: i64,
    /// Uploaded phones: answer those that are users, whatever their ts.
    phones: Option<String>,
    since: i64,
    reset: bool,
    after: Option<Cursor>,
    now: i64,
}

/// Records uploaded phones as contacts and returns one page of matching users
/// (never the caller), ordered by (ts, address), plus whether more follow. `admit`
/// sees how many uploaded phones are not yet contacts and how many contacts the
/// upload leaves, before anything is written.
fn sync(
    conn: &mut Connection,
    q: &SyncQuery,
    admit: impl FnOnce(usize, usize) -> Result<(), ApiError>,
) -> rusqlite::Result<Result<(Vec<Profile>, bool), ApiError>> {
    let page = storage::atomically(conn, |tx| {
        if let Some(phones) = &q.phones {
            // Known before a reset stays known: uploading the same book again costs nothing.
            let (stored, uploaded, new): (usize, usize, usize) = tx
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM contacts WHERE owner_id = ?1), count(*),
                        count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.owner_id = ?1 AND c.phone = j.value))
                     FROM json_each(?2) j",
                )?
                .query_row(params![q.owner, phones], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let after = if q.reset { uploaded } else { stored + new };
            if let Err(refused) = admit(new, after) {
                return Ok(Err(refused));
            }
        }
        if q.reset {
            tx.prepare_cached("DELETE FROM contacts WHERE owner_id = ?1")?.execute([q.owner])?;
        }
        if let Some(phones) = &q.phones {
            tx.prepare_cached("INSERT OR IGNORE INTO contacts (owner_id, phone, added_at) SELECT ?1, value, ?2 FROM json_each(?3)")?
                .execute(params![q.owner, q.now, phones])?;
        }
        let (after_ts, after_address) = q.after.as_ref().map_or((i64::MIN, ""), |c| (c.ts, c.address.as_str()));
        let limit = PAGE_SIZE as i64 + 1;
        let page = match &q.phones {
            Some(phones) => {
                let mut query = tx.prepare_cached(&format!(
                    "SELECT {PROFILE_COLUMNS} FROM users u WHERE u.address IN (SELECT value FROM json_each(?1))
                 AND u.id <> ?2 AND (u.ts, u.address) > (?3, ?4) ORDER BY u.ts, u.address LIMIT ?5"
                ))?;
                let rows = query.query_map(params![phones, q.owner, after_ts, after_address, limit], Profile::from_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
            None => {
                let mut query = tx.prepare_cached(&format!(
                    "SELECT {PROFILE_COLUMNS} FROM contacts c JOIN users u ON u.address = c.phone
                 WHERE c.owner_id = ?1 AND u.id <> ?1 AND u.ts >= ?2 AND (u.ts, u.address) > (?3, ?4)
                 ORDER BY u.ts, u.address LIMIT ?5"
                ))?;
                let rows = query.query_map(params![q.owner, q.since, after_ts, after_address, limit], Profile::from_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        Ok(Ok(page))
    })?;
    Ok(page.map(|mut page| {
        let more = page.len() > PAGE_SIZE;
        page.truncate(PAGE_SIZE);
        (page, more)
    }))
}

/// `op=getcontacts`.
pub async fn getcontacts(
    db: &Arc<Db>,
    limits: &Arc<ContactLimits>,
    caller: &Caller,
    client_ip: &str,
    params: &Params,
) -> Result<Map<String, Value>, ApiError> {
    let uploaded = match params.get("phones").filter(|p| !p.trim().is_empty()) {
        Some(raw) => Some(parse_phones(raw, limits.max_per_request)?),
        None => None,
    };
    let since = match params.get("ts").map(|t| t.trim()).filter(|t| !t.is_empty()) {
        Some(ts) => ts.parse::<i64>().map_err(|_| ApiError::new("BADPARAM", "ts must be unix seconds"))?,
        None => 0,
    };
    let after = match params.get("cursor").map(|c| c.trim()).filter(|c| !c.is_empty()) {
        Some(raw) => Some(Cursor::parse(raw).ok_or_else(|| ApiError::new("BADPARAM", "cursor is not one this server gave"))?),
        None => None,
    };
    let now = storage::now();
    // The next sync must see every change made after the first page was taken.
    let started = after.as_ref().map_or(now, |c| c.started);
    let query = SyncQuery {
        owner: caller.user_id,
        phones: uploaded.as_ref().map(|list| Value::from(list.phones.clone()).to_string()),
        since,
        // A reset applies to the first page only; later pages re-send the same phones.
        reset: after.is_none() && ops::flag(params, "reset"),
        after,
        now,
    };
    let (limits, user_id, client_ip) = (Arc::clone(limits), caller.user_id, client_ip.to_string());
    let admit = move |new, stored| limits.admit(user_id, &client_ip, new, stored);
    let (page, more) = db.call(move |conn| sync(conn, &query, admit)).await??;

    let mut fields = Map::new();
    if more {
        let last = page.last().expect("a page with more has entries");
        fields.insert("cursor".into(), Cursor { started, ts: last.ts, address: last.address.clone() }.encode().into());
    }
    fields.insert("more".into(), more.into());
    fields.insert("contacts".into(), page.iter().map(|p| Value::Object(p.public_fields())).collect::<Vec<_>>().into());
    if let Some(list) = uploaded {
        fields.insert("invalid".into(), list.invalid.into());
    }
    fields.insert("ts".into(), started.into());
    Ok(fields)
}

/// `op=delcontacts`.
pub async fn delcontacts(db: &Arc<Db>, caller: &Caller, params: &Params, max_phones: usize) -> Result<Map<String, Value>, ApiError> {
    let raw = params.get("phones").filter(|p| !p.trim().is_empty()).ok_or_else(|| ApiError::new("BADPARAM", "phones is required"))?;
    let list = parse_phones(raw, max_phones)?;
    let (owner, phones) = (caller.user_id, Value::from(list.phones).to_string());
    let removed = db
        .call(move |conn| {
            conn.prepare_cached("DELETE FROM contacts WHERE owner_id = ?1 AND phone IN (SELECT value FROM json_each(?2))")?
                .execute(params![owner, phones])
        })
        .await?;
    let mut fields = Map::new();
    fields.insert("removed".into(), removed.into());
    fields.insert("invalid".into(), list.invalid.into());
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_come_as_a_list_or_a_json_array() {
        let list = parse_phones("+1 800 555 0001, 18005550002,12, 18005550001", 10).unwrap();
        assert_eq!(list, PhoneList { phones: vec!["18005550001".into(), "18005550002".into()], invalid: 1 });
        let list = parse_phones(r#"["18005550003", 18005550004, "x", null]"#, 10).unwrap();
        assert_eq!(list, PhoneList { phones: vec!["18005550003".into(), "18005550004".into()], invalid: 2 });
        assert_eq!(parse_phones("[1,2", 10).unwrap_err().code, "BADPARAM");
        assert_eq!(parse_phones("18005550001,18005550002,18005550003", 2).unwrap_err().code, "TOOMANY");
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor { started: 1_700_000_000, ts: 1_699_999_999, address: "18005550001".into() };
        assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::parse("garbage"), None);
    }
}

//! The records both backends take and answer with, defined once: a query of either
//! backend returns the same types, and what builds them from a row's values (a JSON
//! entry, a payload, a sealed message) is the same on both.

use std::collections::HashMap;

use crate::domain::account::{Evicted, OwnProfile};
use crate::domain::groups::Group;
use crate::domain::keys::{MessageSeal, PhoneHasher};
use crate::domain::notices::{NoticeBody, JOINED_SUBJECT};
use crate::domain::ratelimit::Refusal;

// The login.

pub struct NewChallenge {
    pub address: String,
    pub appid: String,
    pub otp_hash: [u8; 32],
    /// SHA-256 of the challenge id the start reply carries.
    pub challenge_sha256: [u8; 32],
    pub now: i64,
    pub ttl_secs: i64,
    pub resend_secs: i64,
}

/// A guess at the pending code of `address`, owned to travel to the writer thread.
pub struct CodeGuess {
    pub address: String,
    pub appid: String,
    pub otp_hash: [u8; 32],
    pub challenge_sha256: Option<[u8; 32]>,
}

#[derive(Clone)]
pub struct CompletedLogin {
    pub address: String,
    pub uid: String,
    pub name: String,
    pub token_sha256: String,
    pub now: i64,
    pub appid: String,
    /// Installation id; empty when the app sent none.
    pub device: String,
    pub now_ms: i64,
    /// Unix seconds; the token expiry asked of upstream.
    pub expires_at: i64,
    pub max_devices: usize,
}

/// What recording a login did besides storing the session.
#[derive(Debug, Default)]
pub struct LoginRecord {
    pub first_login: bool,
    /// "contact joined" messages queued for users who have this phone as a contact.
    pub notified: usize,
    pub evicted: Vec<Evicted>,
    pub profile: OwnProfile,
}

// Deleting an account.

/// What a deleted account leaves for the caller to clean up outside the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedAccount {
    pub address: String,
    /// The photo the account showed: a stored file's name, a URL, or empty.
    pub photo: String,
}

// The audit trail's events.

/// A login completed; the detail is the app.
pub const LOGIN: &str = "login";
/// A verify with a wrong code, or without a pending one; the detail is the error code.
pub const LOGIN_FAILED: &str = "login_failed";
/// The wrong guess that used up a code's attempts.
pub const LOCKED_OUT: &str = "locked_out";
/// A code that could not be delivered, for good; the detail is the sender.
pub const DELIVERY_FAILED: &str = "delivery_failed";
/// An operator ended sessions; the detail names the operator and says how many.
pub const SESSIONS_REVOKED: &str = "sessions_revoked";
/// The account was deleted; the detail says by whom (`user` or `operator`).
pub const ACCOUNT_DELETED: &str = "account_deleted";
/// An address was linked to an account; the detail is the other address, masked.
pub const ADDRESS_LINKED: &str = "address_linked";
/// A linked address was unlinked; the detail is the other address, masked.
pub const ADDRESS_UNLINKED: &str = "address_unlinked";

/// A request to the operator API without its token, or with another; the detail is the
/// client IP and which (`no token` or `wrong token`), never what was presented.
pub const OPERATOR_AUTH_FAILED: &str = "operator_auth_failed";
/// The trail the operator API's own events are kept under, in place of an address.
pub const OPERATOR_TRAIL: &str = "operator-api";

/// Most events one read answers, newest first.
pub const MAX_EVENTS: i64 = 1000;

/// One security event as operators read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    pub at: i64,
    pub event: String,
    pub detail: String,
}

// Address books.

/// Most entries in one reply; the rest follow with a cursor.
pub const PAGE_SIZE: usize = 1000;

pub struct SyncQuery {
    pub owner: i64,
    /// Uploaded phones, normalised: answer those that are users, whatever their ts.
    pub phones: Option<Vec<String>>,
    pub since: i64,
    pub reset: bool,
    /// The (ts, address) of the last entry already sent.
    pub after: Option<(i64, String)>,
    pub now: i64,
}

// The courier's code messages.

/// Rows claimed per round.
pub const BATCH: usize = 16;

/// A queued message, opened.
pub struct QueuedMessage {
    pub id: i64,
    pub address: String,
    pub appid: String,
    pub otp_hash: Vec<u8>,
    pub otp: String,
    pub body: String,
    pub attempts: u32,
    /// Unix seconds: the code's expiry.
    pub expires_at: i64,
    /// Instances whose delivery of it was reported failed, comma-separated.
    pub failed_via: String,
    /// The channel the client asked for; `None`: its route's first instance.
    pub channel: Option<String>,
}

/// How a delivery attempt ended, as recorded.
#[derive(Clone)]
pub enum AttemptOutcome {
    /// Taken by the named instance, under the provider's message id. `keep_sealed`: the
    /// message stays sealed until its code expires, for a resend through another instance
    /// should a receipt report it failed.
    Sent {
        instance: String,
        message_id: Option<String>,
        keep_sealed: bool,
    },
    Failed(String),
    /// A resend after a failed receipt ended without delivery: the row fails, but the
    /// code stays valid, since the first delivery may still have reached the user.
    ResendFailed(String),
    Retry(String, i64),
}

/// How far a message got, as a delivery receipt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    Sent,
    Delivered,
    Undelivered,
    Failed,
}

impl ReceiptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Sent => "sent",
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Undelivered => "undelivered",
            ReceiptStatus::Failed => "failed",
        }
    }

    /// The message will not reach the user through the instance that reported it.
    pub fn is_failure(self) -> bool {
        matches!(self, ReceiptStatus::Undelivered | ReceiptStatus::Failed)
    }

    /// Receipts move a row forward only: sent, then a failure, then delivered (a carrier
    /// that reports a failure and later succeeds did deliver the code). Receipts arrive
    /// late, out of order and more than once; this order makes any sequence of them
    /// change the row at most once per step.
    fn step(status: Option<&str>) -> u8 {
        match status {
            Some("sent") => 1,
            Some("undelivered" | "failed") => 2,
            Some("delivered") => 3,
            _ => 0,
        }
    }
}

/// A signed delivery receipt, for the courier row of the message it names.
pub struct DeliveryReceipt {
    /// The instances whose key signed it (instances of one provider account share their
    /// key): the message is looked up among the rows they sent.
    pub instances: Vec<String>,
    /// The provider's id of the message.
    pub message_id: String,
    pub status: ReceiptStatus,
    /// The provider's error code, if it gave one.
    pub error_code: Option<String>,
    /// Unix seconds of the status by the provider's clock; `None`: when it arrived.
    pub reported_at: Option<i64>,
}

/// What a delivery receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// No message those instances sent has that id (or it is being sent again).
    Unknown,
    /// A receipt seen before, or one that does not move the row forward.
    Unchanged,
    /// Recorded on the row `instance` sent to `address`, whose code was queued at
    /// `queued_at` (unix seconds); `resent`: queued again for the next instance of its route.
    Recorded { instance: String, address: String, queued_at: i64, resent: bool },
}

/// A sent message as a receipt finds it.
pub(in crate::store) struct ReceiptTarget {
    pub id: i64,
    pub address: String,
    pub otp_hash: Vec<u8>,
    pub instance: String,
    pub failed_via: String,
    pub receipt_status: Option<String>,
    /// Still sealed: kept for a resend.
    pub sealed: bool,
    pub created_at: i64,
}

/// What applying a receipt changes, once the row is found and locked.
pub(in crate::store) struct ReceiptChange {
    pub failed_via: String,
    /// The message may go out again, if its code is still waiting to be used: failed
    /// here, still sealed.
    pub may_resend: bool,
    /// Delivered: the sealed message is not needed any more.
    pub wipe_sealed: bool,
}

/// `None` when the receipt does not move the row forward (see [`ReceiptStatus::step`]).
/// A failure adds the instance to those a resend avoids.
pub(in crate::store) fn receipt_change(row: &ReceiptTarget, status: ReceiptStatus) -> Option<ReceiptChange> {
    if ReceiptStatus::step(Some(status.as_str())) <= ReceiptStatus::step(row.receipt_status.as_deref()) {
        return None;
    }
    let failure = status.is_failure();
    let already = row.failed_via.split(',').any(|name| name == row.instance);
    let failed_via = match (failure && !already, row.failed_via.is_empty()) {
        (false, _) => row.failed_via.clone(),
        (true, true) => row.instance.clone(),
        (true, false) => format!("{},{}", row.failed_via, row.instance),
    };
    Some(ReceiptChange { failed_via, may_resend: failure && row.sealed, wipe_sealed: status == ReceiptStatus::Delivered })
}

/// What queueing a code message did.
pub enum Enqueued {
    /// Stored, with the courier row's id.
    Stored(i64),
    /// The address's pending code queued again, for the channel asked for, in place of the
    /// new one: the courier row's id, and the code's hash, sealed message and expiry.
    Resent {
        id: i64,
        otp_hash: Vec<u8>,
        sealed: Vec<u8>,
        expires_at: i64,
    },
    TooSoon(u64),
    Refused(Refusal),
}

pub struct Claimed {
    pub batch: Vec<QueuedMessage>,
    /// When the next queued message falls due.
    pub next_due: Option<i64>,
    /// Messages still queued, in flight included.
    pub queued: i64,
}

/// What binds a sealed message to its row: it opens only for this address and code.
pub(in crate::store) fn seal_context(address: &str, otp_hash: &[u8]) -> Vec<u8> {
    [address.as_bytes(), &[0], otp_hash].concat()
}

/// The code and the rendered text, encrypted: `code \n text` (a code has no line break).
pub fn seal_message(seal: &MessageSeal, address: &str, otp: &str, text: &str, otp_hash: &[u8]) -> Vec<u8> {
    let plaintext = format!("{otp}\n{text}");
    seal.seal(plaintext.as_bytes(), &seal_context(address, otp_hash))
}

/// The code and the text of a sealed message, or `None` when this key cannot open it.
pub fn open_message(seal: &MessageSeal, sealed: &[u8], address: &str, otp_hash: &[u8]) -> Option<(String, String)> {
    let plaintext = String::from_utf8(seal.open(sealed, &seal_context(address, otp_hash))?).ok()?;
    let (otp, text) = plaintext.split_once('\n')?;
    Some((otp.to_string(), text.to_string()))
}

// Linked addresses.

/// What asking to link an address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked,
    /// It was linked to this user already.
    AlreadyLinked,
    /// It is the address the user's account was made with.
    OwnAddress,
    /// Another account has it, as its own address or a linked one.
    Taken,
}

/// One linked address of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAddress {
    pub address: String,
    /// Unix seconds.
    pub linked_at: i64,
}

/// What linking an address to user `user_id` comes to, given the user whose own address
/// it is and the user it is linked to; `Linked` asks the caller to insert the link.
pub(in crate::store) fn link_outcome(user_id: i64, owner: Option<i64>, linked: Option<i64>) -> LinkOutcome {
    match (owner, linked) {
        (Some(owner), _) if owner == user_id => LinkOutcome::OwnAddress,
        (Some(_), _) => LinkOutcome::Taken,
        (None, Some(holder)) if holder == user_id => LinkOutcome::AlreadyLinked,
        (None, Some(_)) => LinkOutcome::Taken,
        (None, None) => LinkOutcome::Linked,
    }
}

// Groups.

/// The group's members by the hash their phone is kept as in address books.
pub(in crate::store) fn member_hashes(group: &Group, phones: &PhoneHasher) -> HashMap<i64, Vec<String>> {
    let mut by_hash: HashMap<i64, Vec<String>> = HashMap::new();
    for (phone, _) in &group.members {
        by_hash.entry(phones.hash(phone)).or_default().push(phone.clone());
    }
    by_hash
}

// The operator API.

/// How an operator names a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey {
    /// A normalised phone number or e-mail address: the user's own, or one linked to them.
    Address(String),
    /// The platform's user id.
    Uid(String),
    /// The local id.
    Id(i64),
}

/// A user as an operator sees it: no token, no photo bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub address: String,
    pub uid: String,
    pub name: String,
    pub created_at: i64,
    pub last_login: i64,
}

/// Characters of a session's token hash that name it to operators: enough to tell one
/// user's sessions apart, without handing out the whole hash.
pub const SESSION_ID_CHARS: usize = 16;

/// One session as the operator API shows it: named by the start of its token's hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OperatorSession {
    pub session: String,
    pub appid: String,
    pub device: String,
    pub created: i64,
    /// Seconds, as `created` and `expires`.
    pub last_seen: i64,
    pub expires: i64,
    pub push: bool,
}

/// One of the caller's own sessions as `op=devices` lists it (no token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceSession {
    pub device: String,
    pub appid: String,
    pub created: i64,
    /// Seconds, as `created`.
    pub last_seen: i64,
    /// The session of the request that asked.
    pub current: bool,
    pub push: bool,
    /// The device type the push registration named; empty without one.
    pub dt: String,
}

// The notification outbox.

/// A notice taken for sending.
pub struct Pending {
    pub id: i64,
    pub recipient: String,
    pub payload: String,
    pub attempts: u32,
    /// `message`, or `userdel` for a deleted account (its payload holds the uid).
    pub kind: String,
}

/// The outbox kind that asks the platform to delete a user.
pub const USERDEL: &str = "userdel";

/// The `userdel` outbox payload of a user.
pub(in crate::store) fn userdel_payload(uid: &str) -> String {
    serde_json::json!({ "uid": uid }).to_string()
}

/// The notice a new user's contacts get.
pub(in crate::store) fn contact_joined(phone: &str, name: &str, now: i64) -> NoticeBody {
    NoticeBody { subject: JOINED_SUBJECT.into(), name: name.into(), phone: phone.into(), ts: now, ..NoticeBody::default() }
}

// Moving from SQLite to PostgreSQL.

/// A user: (id, address, uid, name, status, photo, created_at, last_login, ts).
pub type UserRow = (i64, String, String, String, String, String, i64, i64, i64);
/// A session: (token_sha256, user_id, appid, device, created_at, last_seen_ms, expires_at, via).
pub type SessionRow = (String, i64, String, String, i64, i64, i64, String);
/// A session's push registration: (token_sha256, notify_token, notify_sender, device_type).
pub type PushRow = (String, String, Option<String>, Option<String>);

/// The rows that move, read from the SQLite file.
#[derive(Default)]
pub struct Snapshot {
    pub users: Vec<UserRow>,
    pub sessions: Vec<SessionRow>,
    /// (owner_id, phone hash): both databases hash phones under the same key.
    pub contacts: Vec<(i64, i64)>,
    /// (user id, thumbnail JPEG) of users with an uploaded photo.
    pub thumbnails: Vec<(i64, Vec<u8>)>,
    /// (token_sha256, notify_token, notify_sender, device_type) of sessions with a push registration.
    pub push: Vec<PushRow>,
    /// Groups and their members.
    pub groups: Vec<Group>,
    /// Linked addresses: (address, user_id, uid, linked_at).
    pub links: Vec<(String, i64, String, i64)>,
    /// Names of the stored files uploaded as attachments.
    pub attachments: Vec<String>,
}

/// What an import moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub users: usize,
    pub sessions: usize,
    pub contacts: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_by(instance: &str, failed_via: &str, receipt_status: Option<&str>, sealed: bool) -> ReceiptTarget {
        ReceiptTarget {
            id: 1,
            address: "447400123456".into(),
            otp_hash: vec![0; 32],
            instance: instance.into(),
            failed_via: failed_via.into(),
            receipt_status: receipt_status.map(String::from),
            sealed,
            created_at: 0,
        }
    }

    #[test]
    fn receipts_move_a_row_forward_only() {
        use ReceiptStatus::*;
        let moves = |current: Option<&str>, new: ReceiptStatus| receipt_change(&sent_by("a", "", current, true), new).is_some();
        for status in [Sent, Delivered, Undelivered, Failed] {
            assert!(moves(None, status), "a first receipt is recorded: {status:?}");
            assert!(!moves(Some(status.as_str()), status), "a replay changes nothing: {status:?}");
            assert!(!moves(Some("delivered"), status), "delivered is the last word: {status:?}");
        }
        assert!(moves(Some("sent"), Undelivered) && moves(Some("sent"), Delivered));
        assert!(!moves(Some("undelivered"), Sent) && !moves(Some("failed"), Sent), "never back to sent");
        assert!(!moves(Some("undelivered"), Failed) && !moves(Some("failed"), Undelivered), "one failure is enough");
        assert!(moves(Some("undelivered"), Delivered), "a late delivery is what the user got");
    }

    #[test]
    fn a_failure_names_the_instance_once_and_only_a_sealed_message_may_go_again() {
        let change = receipt_change(&sent_by("b", "a", Some("sent"), true), ReceiptStatus::Undelivered).unwrap();
        assert_eq!((change.failed_via.as_str(), change.may_resend, change.wipe_sealed), ("a,b", true, false));
        let first = receipt_change(&sent_by("a", "", None, true), ReceiptStatus::Failed).unwrap();
        assert_eq!(first.failed_via, "a");
        let again = receipt_change(&sent_by("a", "a", Some("sent"), false), ReceiptStatus::Failed).unwrap();
        assert_eq!((again.failed_via.as_str(), again.may_resend), ("a", false), "not sealed: nothing to send again");
        let delivered = receipt_change(&sent_by("a", "", Some("sent"), true), ReceiptStatus::Delivered).unwrap();
        assert_eq!((delivered.failed_via.as_str(), delivered.may_resend, delivered.wipe_sealed), ("", false, true));
    }
}

//! Address books: the phones each user uploaded (not necessarily users), kept as keyed
//! hashes (see `PhoneHasher`), and the sync over them.

use crate::domain::account::Profile;
use crate::domain::ratelimit::Admission;
pub use crate::store::records::{SyncQuery, PAGE_SIZE};
use crate::store::{Db, StorageError};

impl Db {
    /// Records uploaded phones and answers one page of matching users (never the caller),
    /// ordered by (ts, address), plus whether more follow. `admit` sees how many uploaded
    /// phones are not yet contacts and how many contacts the upload leaves; a refusal
    /// leaves nothing written and is answered as `admit` refused (the inner `Err`), for the
    /// caller to tell its user. A sync that only reads runs on SQLite's writer too: the
    /// readers' page caches start cold whenever the writer committed, which made it
    /// several times slower.
    pub async fn sync_contacts<Refused: Send + 'static>(
        &self,
        query: SyncQuery,
        admit: impl FnOnce(usize, usize) -> Admission<Refused> + Send + 'static,
    ) -> Result<Result<(Vec<Profile>, bool), Refused>, StorageError> {
        let hashes = self.phone_hashes(query.phones.iter().flatten());
        dispatch!(self, |store| store.sync_contacts(query, hashes, admit))
    }

    /// Removes phones (normalised) from a user's contacts; returns how many were there.
    pub async fn remove_contacts(&self, owner: i64, phones: Vec<String>) -> Result<usize, StorageError> {
        let hashes = self.phone_hashes(&phones);
        dispatch!(self, |store| store.remove_contacts(owner, hashes))
    }

    /// The hashes `phones` are stored as.
    fn phone_hashes<'a>(&self, phones: impl IntoIterator<Item = &'a String>) -> Vec<i64> {
        phones.into_iter().map(|phone| self.phones.hash(phone)).collect()
    }

    /// The hash a phone is stored as in address books, and a user's address is matched by.
    pub fn phone_hash(&self, phone: &str) -> i64 {
        self.phones.hash(phone)
    }
}

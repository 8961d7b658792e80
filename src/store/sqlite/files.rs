//! Which stored files rows refer to, checked on the writer (see `store::files`).

use crate::store::error::StorageError;

use super::SqliteStore;

/// Whether a row refers to stored file `?1`.
const REFERENCED: &str = "SELECT EXISTS (SELECT 1 FROM users WHERE photo = ?1 AND photo <> '')
     OR EXISTS (SELECT 1 FROM chat_groups WHERE photo = ?1 AND photo <> '')
     OR EXISTS (SELECT 1 FROM attachment_files WHERE name = ?1)";

impl SqliteStore {
    /// Records that stored file `name` is a chat attachment.
    pub async fn keep_attachment(&self, name: &str) -> Result<(), StorageError> {
        let name = name.to_owned();
        self.call(move |conn| conn.prepare_cached("INSERT OR IGNORE INTO attachment_files (name) VALUES (?1)")?.execute([name]).map(|_| ()))
            .await
    }

    /// Runs `act` (which deletes or writes the file) with whether a row refers to stored
    /// file `name`. On the writer, so that no commit of a row referring to the file falls
    /// between the check and the act.
    pub async fn act_on_file(
        &self,
        name: &str,
        act: impl FnOnce(bool) -> Result<bool, StorageError> + Clone + Send + 'static,
    ) -> Result<bool, StorageError> {
        let name = name.to_owned();
        let acted = self
            .call(move |conn| {
                let referenced: bool = conn.prepare_cached(REFERENCED)?.query_row([name], |r| r.get(0))?;
                Ok(act(referenced))
            })
            .await?;
        acted
    }
}

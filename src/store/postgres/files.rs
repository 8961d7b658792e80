//! Which stored files rows refer to, under an advisory lock per file (see `store::files`).

use std::sync::Arc;

use crate::store::error::StorageError;

use super::{execute, query_one, PgStore, Retry, Session};

/// Whether a row refers to stored file `$1`.
const REFERENCED: &str = "SELECT EXISTS (SELECT 1 FROM users WHERE photo = $1 AND photo <> '')
     OR EXISTS (SELECT 1 FROM chat_groups WHERE photo = $1 AND photo <> '')
     OR EXISTS (SELECT 1 FROM attachment_files WHERE name = $1)";

/// Serialises, on every instance, a transaction that makes a row refer to stored file
/// `name` with one that deletes the file unless a row refers to it (see
/// `store::files`); no lock for no file.
pub(super) async fn lock_file(tx: &impl Session, name: &str) -> Result<(), StorageError> {
    if !name.is_empty() {
        execute(tx, "SELECT pg_advisory_xact_lock(hashtextextended('file:' || $1, 0))", &[&name]).await?;
    }
    Ok(())
}

impl PgStore {
    /// Records that stored file `name` is a chat attachment (see `store::files`).
    pub async fn keep_attachment(&self, name: &str) -> Result<(), StorageError> {
        self.retrying(Retry::IfNotApplied, |mut client| async move {
            let inserted = execute(&client, "INSERT INTO attachment_files (name) VALUES ($1) ON CONFLICT DO NOTHING", &[&name]).await?;
            if inserted == 0 {
                // Listed before: no removal can have found it unreferenced since. Identical
                // uploads at once thus do not queue on one lock, each holding a connection.
                return Ok(());
            }
            // A removal that checked before the insert may still be deleting the file: waiting
            // for its lock makes the caller's restore of the file come after it.
            let tx = client.transaction().await?;
            lock_file(&tx, name).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Runs `act` (which deletes or writes the file) with whether a row refers to stored
    /// file `name`, under the file's lock (see `store::files`).
    pub async fn act_on_file(
        &self,
        name: &str,
        act: impl FnOnce(bool) -> Result<bool, StorageError> + Clone + Send + 'static,
    ) -> Result<bool, StorageError> {
        self.retrying(Retry::IfNotApplied, |mut client| {
            let act = act.clone();
            async move {
                let tx = client.transaction().await?;
                lock_file(&tx, name).await?;
                let referenced: bool = query_one(&tx, REFERENCED, &[&name]).await?.try_get(0)?;
                let acted = tokio::task::spawn_blocking(move || act(referenced))
                    .await
                    .map_err(|e| StorageError::TaskFailed { task: "acting on an uploaded file", error: Arc::new(e) })??;
                tx.commit().await?;
                Ok(acted)
            }
        })
        .await
    }
}

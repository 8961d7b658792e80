//! Uploaded files in a local directory (`FILES_DIR`), named by their content: the same
//! bytes are kept once, a name can never be guessed from another, and a name always
//! means the same bytes, so they may be cached for good.
//!
//! One file may be shown by several users and groups, or sent as an attachment, so a
//! file is deleted only when nothing refers to it: no user's or group's photo, and no
//! attachment (their names are recorded in `attachment_files`, as no other row holds
//! them). The check and the deletion run under the database's lock (SQLite's writer,
//! a PostgreSQL advisory lock on the name), as does every transaction that makes a row
//! refer to a file; the writer of such a row puts the file again once it is committed,
//! under the same lock and only while a row still refers to it
//! ([`Db::restore_file_if_referenced`]), so a deletion that came between the file's
//! write and the row's commit is undone, a committed reference always finds its file,
//! and a photo replaced again in the meantime is not brought back.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::{Db, StorageError};

pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Creates the directory if it is missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore, String> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| format!("FILES_DIR {}: {e}", dir.display()))?;
        Ok(FileStore { dir })
    }

    /// Keeps `bytes` under `<sha256>.<extension>` and returns that name. The bytes go to
    /// a temporary file of their own (a unique name, so that uploads of the same bytes at
    /// once never write into one file), synced, then renamed over the final name in one
    /// step: a reader never sees part of a file, two identical uploads both succeed, and a
    /// crash leaves at most a temporary file (never served: its name is not a hash).
    pub async fn put(&self, bytes: impl Into<Arc<Vec<u8>>>, extension: &'static str) -> Result<String, StorageError> {
        let bytes = bytes.into();
        let name = format!("{}.{extension}", hex::encode(Sha256::digest(bytes.as_slice())));
        self.write_if_missing(self.dir.join(&name), bytes).await?;
        Ok(name)
    }

    /// Writes `bytes` again under `name`, which [`FileStore::put`] gave for them, if the
    /// file is gone; called once the row that refers to it is committed (see the module's
    /// documentation).
    pub async fn restore(&self, name: &str, bytes: Arc<Vec<u8>>) -> Result<(), StorageError> {
        match self.path_of(name) {
            Some(path) => self.write_if_missing(path, bytes).await,
            None => Ok(()),
        }
    }

    async fn write_if_missing(&self, path: PathBuf, bytes: Arc<Vec<u8>>) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_if_missing(&dir, &path, &bytes))
            .await
            .map_err(|e| StorageError::TaskFailed { task: "writing an uploaded file", error: Arc::new(e) })?
    }

    /// Where a file this store gave out lives; `None` for any other name (anything else
    /// than `<64 hex digits>.<extension>`), which is never looked for.
    fn path_of(&self, name: &str) -> Option<PathBuf> {
        let (hash, extension) = name.split_once('.')?;
        let valid = hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && (1..=5).contains(&extension.len())
            && extension.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        valid.then(|| self.dir.join(name))
    }

    /// The bytes of a stored file and its extension; `None` for a name this store never
    /// gave out (anything else than `<64 hex digits>.<extension>` is refused unread).
    pub async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, String)>, StorageError> {
        let Some(path) = self.path_of(name) else { return Ok(None) };
        let extension = name.split_once('.').map_or("", |(_, extension)| extension);
        let extension = extension.to_string();
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| StorageError::TaskFailed { task: "reading an uploaded file", error: Arc::new(e) })?;
        match read {
            Ok(bytes) => Ok(Some((bytes, extension))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::Files(format!("reading an uploaded file: {e}"))),
        }
    }
}

/// Writes `bytes` to `path` in `dir` unless a file is there (see [`FileStore::put`]).
fn write_if_missing(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let written = (|| -> std::io::Result<()> {
        if path.exists() {
            return Ok(());
        }
        // Removed when dropped, so an error leaves nothing behind.
        let mut temporary = tempfile::Builder::new().prefix(".upload-").tempfile_in(dir)?;
        temporary.write_all(bytes)?;
        temporary.as_file().sync_all()?;
        temporary.persist(path).map_err(|e| e.error)?;
        // The rename itself survives a power loss only once the directory is synced.
        sync_directory(dir)
    })();
    written.map_err(|e| StorageError::Files(format!("writing an uploaded file: {e}")))
}

fn remove_file(path: &Path) -> Result<bool, StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::Files(format!("removing an uploaded file: {e}"))),
    }
}

impl Db {
    /// Records that stored file `name` was uploaded as a chat attachment: it is never
    /// deleted as an unused photo.
    pub async fn keep_attachment(&self, name: &str) -> Result<(), StorageError> {
        dispatch!(self, |store| store.keep_attachment(name))
    }

    /// Deletes stored file `name` from `files` unless a user's or a group's photo or an
    /// attachment is that file (see the module's documentation); true if it was deleted.
    /// Anything but a stored file's name (a photo URL, '') is left alone.
    pub async fn remove_file_unless_referenced(&self, files: &FileStore, name: &str) -> Result<bool, StorageError> {
        let Some(path) = files.path_of(name) else { return Ok(false) };
        self.act_on_file(name, move |referenced| if referenced { Ok(false) } else { remove_file(&path) }).await
    }

    /// Writes stored file `name` again from `bytes` if it is gone and a row still refers
    /// to it: called once the row that made it a photo is committed (see the module's
    /// documentation). A photo replaced again since is not brought back, as its deletion
    /// by the replacing change may already have run.
    pub async fn restore_file_if_referenced(&self, files: &FileStore, name: &str, bytes: Arc<Vec<u8>>) -> Result<(), StorageError> {
        let Some(path) = files.path_of(name) else { return Ok(()) };
        let dir = files.dir.clone();
        self.act_on_file(name, move |referenced| if referenced { write_if_missing(&dir, &path, &bytes).map(|()| true) } else { Ok(false) })
            .await
            .map(|_| ())
    }

    /// Runs `act` with whether a row refers to stored file `name`, under the lock that
    /// every change making a row refer to it takes (see the module's documentation).
    async fn act_on_file(
        &self,
        name: &str,
        act: impl FnOnce(bool) -> Result<bool, StorageError> + Clone + Send + 'static,
    ) -> Result<bool, StorageError> {
        dispatch!(self, |store| store.act_on_file(name, act))
    }
}

#[cfg(unix)]
fn sync_directory(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_kept_under_its_hash_and_read_back_only_by_that_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("files")).unwrap();
        let name = store.put(b"hello".to_vec(), "bin").await.unwrap();
        assert_eq!(name, format!("{}.bin", hex::encode(Sha256::digest(b"hello"))));
        assert_eq!(store.put(b"hello".to_vec(), "bin").await.unwrap(), name, "the same bytes, the same name");
        assert_eq!(store.get(&name).await.unwrap(), Some((b"hello".to_vec(), "bin".to_string())));
        for bad in ["../otpgate.db", &name.to_uppercase(), &format!("{name}/x"), "a.bin", &format!("{}.bin", "0".repeat(64))] {
            assert_eq!(store.get(bad).await.unwrap(), None, "{bad}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path().join("files")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_of_the_same_bytes_at_once_all_succeed_and_a_reader_sees_all_or_nothing() {
        // Rounds of many puts at once: whether two of them overlap is up to the scheduler,
        // and over all the rounds many do.
        for round in 0..10u8 {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(FileStore::open(dir.path()).unwrap());
            let bytes: Arc<Vec<u8>> = Arc::new((0..250_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ round).collect());
            let name = format!("{}.bin", hex::encode(Sha256::digest(bytes.as_slice())));
            let writers = (0..32).map(|_| {
                let (store, bytes) = (store.clone(), bytes.clone());
                tokio::spawn(async move { store.put(bytes, "bin").await })
            });
            let readers = (0..32).map(|_| {
                let (store, name, bytes) = (store.clone(), name.clone(), bytes.clone());
                tokio::spawn(async move { store.get(&name).await.unwrap().map(|(read, _)| read == *bytes) })
            });
            let (written, read) =
                futures_util::future::join(futures_util::future::join_all(writers), futures_util::future::join_all(readers)).await;
            for put in written {
                let put = put.unwrap();
                assert!(put.as_deref().is_ok_and(|put| put == name), "every identical put succeeds: {put:?}");
            }
            for complete in read {
                assert!(complete.unwrap().unwrap_or(true), "a reader sees the whole file or none");
            }
            assert_eq!(store.get(&name).await.unwrap().map(|(read, _)| read).as_ref(), Some(&*bytes));
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
        }
    }
}

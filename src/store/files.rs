//! Uploaded files in a local directory (`FILES_DIR`), named by their content: the same
//! bytes are kept once, a name can never be guessed from another, and a name always
//! means the same bytes, so they may be cached for good.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

use crate::store::StorageError;

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

    /// Keeps `bytes` under `<sha256>.<extension>` and returns that name. The file is
    /// written beside its final name and renamed once complete: a reader never sees part
    /// of a file, and a crash leaves at most a temporary file.
    pub async fn put(&self, bytes: Vec<u8>, extension: &'static str) -> Result<String, StorageError> {
        let name = format!("{}.{extension}", hex::encode(Sha256::digest(&bytes)));
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!(".{name}.{}", std::process::id()));
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if path.exists() {
                return Ok(());
            }
            let mut file = std::fs::File::create(&temporary)?;
            let result = file.write_all(&bytes).and_then(|_| file.sync_all()).and_then(|_| std::fs::rename(&temporary, &path));
            if result.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            result
        })
        .await
        .map_err(|e| StorageError::Files(format!("file write task: {e}")))?;
        written.map_err(|e| StorageError::Files(format!("writing an uploaded file: {e}")))?;
        Ok(name)
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

    /// Deletes a stored file; true if it was there. Other names are left alone.
    pub async fn remove(&self, name: &str) -> Result<bool, StorageError> {
        let Some(path) = self.path_of(name) else { return Ok(false) };
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| StorageError::Files(format!("file removal task: {e}")))?;
        removed.map_err(|e| StorageError::Files(format!("removing an uploaded file: {e}")))
    }

    /// The bytes of a stored file and its extension; `None` for a name this store never
    /// gave out (anything else than `<64 hex digits>.<extension>` is refused unread).
    pub async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, String)>, StorageError> {
        let Some(path) = self.path_of(name) else { return Ok(None) };
        let extension = name.split_once('.').map_or("", |(_, extension)| extension);
        let extension = extension.to_string();
        let read = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| StorageError::Files(format!("file read task: {e}")))?;
        match read {
            Ok(bytes) => Ok(Some((bytes, extension))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::Files(format!("reading an uploaded file: {e}"))),
        }
    }
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
}

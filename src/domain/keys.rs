//! The server's secret key: where it comes from, and the keys derived from it.
//!
//! One secret, from `OTP_SECRET` or a key file, keys both the code hashes and the
//! encryption of queued messages. It is never kept in the database: a copy of the
//! database alone must not reveal a pending code.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::domain::otp::OtpHasher;

/// The setting under which earlier releases kept a generated key in the database.
pub const LEGACY_SETTING: &str = "otp_hash_key";
/// Shortest key a key file may hold, in bytes.
const MIN_FILE_KEY_BYTES: usize = 16;

/// Where the secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The `OTP_SECRET` setting.
    Setting,
    /// A key file: `OTP_SECRET_FILE`, or the one created beside the database.
    File(PathBuf),
}

/// The keys derived from the server secret.
#[derive(Clone)]
pub struct ServerKeys {
    pub hasher: OtpHasher,
    pub seal: MessageSeal,
    /// Keys the shared rate-limit entries, so Redis holds no phone number or IP in clear
    /// and every instance names one phone's entry alike.
    pub limit_key: [u8; 32],
    /// Hashes the phones of address books, which the database keeps in no other form.
    pub phones: PhoneHasher,
}

impl ServerKeys {
    pub fn from_secret(secret: &[u8]) -> ServerKeys {
        // The code hashes keep using the secret itself, so codes pending before an upgrade still verify.
        let mut limit_key = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret).expand(b"otpgate rate-limit key v1", &mut limit_key).expect("32 bytes is a valid HKDF length");
        let mut phone_key = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret).expand(b"otpgate contact phone key v1", &mut phone_key).expect("32 bytes is a valid HKDF length");
        ServerKeys { hasher: OtpHasher::new(secret), seal: MessageSeal::derive(secret), limit_key, phones: PhoneHasher::new(&phone_key) }
    }
}

/// Turns a phone into the 64-bit keyed hash that address books are stored as: the
/// first 8 bytes of HMAC-SHA256 under a key derived from the server secret. Users'
/// phones are matched by the same hash, so the database never needs a contact's number,
/// and without the key a copy of it cannot tell which numbers a book holds.
#[derive(Clone)]
pub struct PhoneHasher {
    mac: Hmac<Sha256>,
}

impl PhoneHasher {
    pub fn new(key: &[u8]) -> PhoneHasher {
        PhoneHasher { mac: <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length") }
    }

    pub fn hash(&self, phone: &str) -> i64 {
        let mut mac = self.mac.clone();
        mac.update(phone.as_bytes());
        let digest = mac.finalize().into_bytes();
        i64::from_be_bytes(digest[..8].try_into().expect("SHA-256 is longer than 8 bytes"))
    }
}

/// The key file used when neither `OTP_SECRET` nor `OTP_SECRET_FILE` is set.
pub fn default_key_file(database_path: &str) -> PathBuf {
    PathBuf::from(format!("{database_path}.key"))
}

/// What finding the secret did, for the caller to log and to finish.
pub struct LoadedSecret {
    pub secret: Vec<u8>,
    pub source: KeySource,
    /// True when the key file was written by this start (new, or moved out of the database).
    pub created_file: bool,
}

/// Finds the server secret. `stored` is a key an earlier release kept in the database:
/// when no key file exists yet it is moved to one (so codes pending across the upgrade
/// still verify); the caller then deletes it from the database.
pub fn load_secret(config: &Config, stored: Option<&[u8]>) -> Result<LoadedSecret, String> {
    if let Some(secret) = &config.otp.secret {
        return Ok(LoadedSecret { secret: secret.expose().as_bytes().to_vec(), source: KeySource::Setting, created_file: false });
    }
    let (path, explicit) = key_file(config);
    match read_key_file(&path)? {
        Some(secret) => Ok(LoadedSecret { secret, source: KeySource::File(path), created_file: false }),
        None => {
            if explicit && stored.is_none() {
                return Err(missing_named_file(&path));
            }
            let secret = match stored {
                Some(key) => key.to_vec(),
                None => {
                    let mut key = vec![0u8; 32];
                    OsRng.fill_bytes(&mut key);
                    key
                }
            };
            write_key_file(&path, &secret).map_err(|e| format!("cannot create the key file {}: {e}", path.display()))?;
            Ok(LoadedSecret { secret, source: KeySource::File(path), created_file: true })
        }
    }
}

/// Whether a start would find the server secret, as [`load_secret`] looks for it, without
/// creating anything: for check-config. `stored` is asked only when a named key file is
/// missing: whether the database holds an earlier release's key, which would be moved there.
pub fn check_secret(config: &Config, stored: impl FnOnce() -> bool) -> Result<(), String> {
    if config.otp.secret.is_some() {
        return Ok(());
    }
    let (path, explicit) = key_file(config);
    // Otherwise a missing file is created at start.
    if read_key_file(&path)?.is_none() && explicit && !stored() {
        return Err(missing_named_file(&path));
    }
    Ok(())
}

/// The key file, and whether OTP_SECRET_FILE names it.
fn key_file(config: &Config) -> (PathBuf, bool) {
    match &config.otp.secret_file {
        None => (default_key_file(&config.database.path), false),
        Some(named) => (PathBuf::from(named), true),
    }
}

/// The key in the file at `path`; `None` when there is no such file.
fn read_key_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = parse_key_file(&text).map_err(|why| format!("key file {}: {why}", path.display()))?;
            warn_if_readable_by_others(path);
            Ok(Some(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the key file {}: {e}", path.display())),
    }
}

/// A named file that is missing is more likely a missing mount than a first start, and a
/// new key there would void every pending code: refused.
fn missing_named_file(path: &Path) -> String {
    format!(
        "OTP_SECRET_FILE {} does not exist; create it with `openssl rand -hex 32 > {0}` (mode 0600) or unset OTP_SECRET_FILE to have one created beside the database",
        path.display()
    )
}

/// A key file holds the key as hexadecimal digits (as `openssl rand -hex 32` writes them).
fn parse_key_file(text: &str) -> Result<Vec<u8>, String> {
    let key = hex::decode(text.trim()).map_err(|_| "must hold the key as hexadecimal digits (openssl rand -hex 32)".to_string())?;
    if key.len() < MIN_FILE_KEY_BYTES {
        return Err(format!("the key must be at least {MIN_FILE_KEY_BYTES} bytes ({} hexadecimal digits)", 2 * MIN_FILE_KEY_BYTES));
    }
    Ok(key)
}

/// Writes the key to a new file only its owner can read; a crash leaves no partial file
/// under the key file's name.
fn write_key_file(path: &Path, key: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("key-partial");
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the key file can be read by other users; chmod 600 it");
            }
        }
    }
}

/// Encrypts queued messages (the code and its rendered text) with XChaCha20-Poly1305,
/// so that neither reaches the database file or its WAL in clear, and retries after a
/// restart can still read them.
#[derive(Clone)]
pub struct MessageSeal {
    cipher: XChaCha20Poly1305,
}

const NONCE_BYTES: usize = 24;

impl MessageSeal {
    fn derive(secret: &[u8]) -> MessageSeal {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret).expand(b"otpgate queued message key v1", &mut key).expect("32 bytes is a valid HKDF length");
        MessageSeal { cipher: XChaCha20Poly1305::new(&key.into()) }
    }

    /// `nonce || ciphertext`, bound to `context` (which must be given again to open it).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self.cipher.encrypt(&nonce, Payload { msg: plaintext, aad: context }).expect("encryption in memory does not fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The plaintext, or `None` when `sealed` was not sealed by this key for this context.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: context }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_only_with_its_key_and_context() {
        let seal = MessageSeal::derive(b"secret one");
        let sealed = seal.seal(b"Your code is 123456", b"18005550001");
        assert!(!sealed.windows(6).any(|w| w == b"123456"));
        assert_eq!(seal.open(&sealed, b"18005550001").as_deref(), Some(&b"Your code is 123456"[..]));
        assert_eq!(seal.open(&sealed, b"18005550002"), None);
        assert_eq!(MessageSeal::derive(b"secret two").open(&sealed, b"18005550001"), None);
        assert_eq!(seal.open(&sealed[..10], b"18005550001"), None);
        assert_ne!(sealed, seal.seal(b"Your code is 123456", b"18005550001"), "each seal has a fresh nonce");
    }

    #[test]
    fn a_phone_hash_depends_on_the_phone_and_the_secret() {
        let keys = ServerKeys::from_secret(b"secret one");
        let hash = keys.phones.hash("14155550001");
        assert_eq!(hash, keys.phones.hash("14155550001"));
        assert_eq!(hash, ServerKeys::from_secret(b"secret one").phones.hash("14155550001"));
        assert_ne!(hash, keys.phones.hash("14155550002"));
        assert_ne!(hash, ServerKeys::from_secret(b"secret two").phones.hash("14155550001"));
        // Not the code hasher or the limit key under another name.
        assert_ne!(hash.to_be_bytes()[..], keys.hasher.hash("14155550001", "")[..8]);
    }

    #[test]
    fn key_files_hold_hex_of_at_least_sixteen_bytes() {
        assert_eq!(parse_key_file(&format!("{}\n", "ab".repeat(32))).unwrap(), vec![0xab; 32]);
        assert!(parse_key_file("not hex").is_err());
        assert!(parse_key_file(&"ab".repeat(15)).is_err());
    }

    #[test]
    fn a_created_key_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.db.key");
        write_key_file(&path, &[7u8; 32]).unwrap();
        assert_eq!(parse_key_file(&std::fs::read_to_string(&path).unwrap()).unwrap(), vec![7u8; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!path.with_extension("key-partial").exists());
    }
}

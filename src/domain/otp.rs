//! One-time codes: generation from the OS CSPRNG and keyed hashing for storage.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::Rng;
use sha2::Sha256;
use std::collections::HashMap;
use subtle::ConstantTimeEq;

use crate::config::TestCode;

/// A fresh code of `len` (at most 19) uniformly random decimal digits, drawn as one
/// number so that a code costs one read of the OS generator rather than one per digit.
pub fn generate(len: usize) -> String {
    let n = OsRng.gen_range(0..10u64.pow(len as u32));
    format!("{n:0len$}")
}

/// A fresh challenge id: 128 random bits, URL-safe base64. A start reply carries it and
/// a verify may send it back, to be counted apart from guesses of whoever never saw it.
pub fn challenge_id() -> String {
    use base64::Engine;
    let mut id = [0u8; 16];
    OsRng.fill(&mut id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// What is stored of a challenge id: being random, a plain digest hides it.
pub fn challenge_sha256(id: &str) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(id.as_bytes()).into()
}

/// Hashes codes with HMAC-SHA256 under a server secret, bound to the address,
/// so a leaked database reveals no code and a hash cannot be reused for another user.
#[derive(Clone)]
pub struct OtpHasher {
    /// Keyed once: each hash then starts from the key's two hashed pads.
    mac: Hmac<Sha256>,
}

impl OtpHasher {
    pub fn new(key: &[u8]) -> Self {
        OtpHasher { mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length") }
    }

    pub fn hash(&self, address: &str, code: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(address.as_bytes());
        mac.update(&[0]);
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// `TEST_OTPS`' entries (read at load) as phone → fixed code; a phone listed twice keeps its last.
pub fn test_codes(setting: &[TestCode]) -> HashMap<String, String> {
    setting.iter().map(|test| (test.phone.clone(), test.code.clone())).collect()
}

/// Constant-time equality, so response timing does not leak how much of a code matched.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_requested_length_and_vary() {
        let codes: Vec<String> = (0..50).map(|_| generate(6)).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert!(distinct.len() > 40, "50 random 6-digit codes should rarely collide");
        assert_eq!(generate(10).len(), 10);
        assert_eq!(generate(4).len(), 4);
        let leading_zero = (0..2000).map(|_| generate(4)).any(|c| c.starts_with('0'));
        assert!(leading_zero, "codes with a leading zero are padded, not shortened");
    }

    #[test]
    fn test_codes_are_looked_up_by_phone() {
        let config =
            crate::config::Config::from_vars([("TEST_OTPS", "+1 800 555 0000:123456, 18005550001:0000,18005550001:1111")]).unwrap();
        let map = test_codes(config.otp.test_otps.expose());
        assert_eq!(map.get("18005550000").map(String::as_str), Some("123456"));
        assert_eq!(map.get("18005550001").map(String::as_str), Some("1111"), "the last entry of a phone");
    }

    #[test]
    fn hash_depends_on_key_address_and_code() {
        let h = OtpHasher::new(b"k1");
        let base = h.hash("18005551234", "123456");
        assert!(same(&base, &h.hash("18005551234", "123456")));
        assert!(!same(&base, &h.hash("18005551234", "123457")));
        assert!(!same(&base, &h.hash("18005551235", "123456")));
        assert!(!same(&base, &OtpHasher::new(b"k2").hash("18005551234", "123456")));
    }
}

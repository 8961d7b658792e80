//! A stand-in for the messaging platform, for trying the whole login with no platform
//! account (`UPSTREAM_URL=builtin`, refused unless BIND is a loopback address). It answers
//! the requests [`super::Upstream`] sends with replies of the platform's shape: `useradd`
//! mints a clearly fake token, `message` is accepted and dropped. The `fake_upstream`
//! example serves the same answers over HTTP.

use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Every token minted here starts with this, so nobody mistakes one for a real token.
pub const FAKE_TOKEN_PREFIX: &str = "FAKE-LOCAL-TESTING-TOKEN-";

pub use crate::config::BUILTIN_UPSTREAM_WARNING as WARNING;

/// The platform's reply to one request (`op` `useradd` or `message`).
pub fn answer(request: &Value) -> Value {
    match request["op"].as_str() {
        Some("useradd") => {
            let address = request["user"]["address"].as_str().unwrap_or_default();
            let mut secret = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            json!({
                "result": true,
                "user": { "uid": uid_of(address), "address": address, "token": format!("{FAKE_TOKEN_PREFIX}{}", hex::encode(secret)) }
            })
        }
        Some("message") | Some("groupset") | Some("groupeditmembers") | Some("groupdel") | Some("userdel") => json!({ "result": true }),
        Some("groupadd") => json!({ "result": true, "group": { "gid": u64::from(rand::random::<u32>() >> 1) + 1 } }),
        _ => json!({ "result": false, "error": "BADOP" }),
    }
}

/// The same user id for the same address on every run, as the platform keeps it.
fn uid_of(address: &str) -> u64 {
    let digest = Sha256::digest(address.as_bytes());
    // 31 bits: any app stores it, whatever integer type it reads it as.
    u64::from(u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn useradd_mints_a_fresh_fake_token_and_a_stable_uid() {
        let request = json!({ "op": "useradd", "user": { "address": "18005551234", "name": "", "token": { "appid": "a" } } });
        let (first, second) = (answer(&request), answer(&request));
        assert_eq!(first["result"], true);
        let token = first["user"]["token"].as_str().unwrap();
        assert!(token.starts_with(FAKE_TOKEN_PREFIX) && token.len() > FAKE_TOKEN_PREFIX.len() + 16, "{token}");
        assert_ne!(first["user"]["token"], second["user"]["token"]);
        assert_eq!(first["user"]["uid"], second["user"]["uid"]);
        assert_eq!(answer(&json!({ "op": "message" }))["result"], true);
        assert!(answer(&json!({ "op": "groupadd" }))["group"]["gid"].as_u64().is_some_and(|gid| gid > 0));
        assert_eq!(answer(&json!({ "op": "userdel" }))["result"], true);
        assert_eq!(answer(&json!({ "op": "nosuchop" }))["result"], false);
    }
}

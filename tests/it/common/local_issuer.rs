//! A local OpenID Connect issuer: its discovery document and published keys on a
//! loopback port, and ID tokens signed the way a sign-in SDK receives them.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The client id the tests' app is registered under at the issuer.
pub const CLIENT_ID: &str = "com.example.app.signin";

/// A signing key and its public half as a JWK.
pub struct SigningKey {
    pub kid: &'static str,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    fn generate(kid: &'static str) -> SigningKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("the key reads back");
        // An uncompressed point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        SigningKey { kid, algorithm: Algorithm::ES256, encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    /// An RS256 key, as Google and Apple sign with: jsonwebtoken's own RSA test key
    /// (its tests/rsa/private_rsa_key.der, MIT licence), a key of no secret, since
    /// generating one takes a crate this project has no other use for.
    fn rs256(kid: &'static str) -> SigningKey {
        let der = include_bytes!("../fixtures/rs256-test-key.der");
        let pair = RsaKeyPair::from_der(der).expect("an RSA key");
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64(&public.n), "e": b64(&public.e) });
        SigningKey { kid, algorithm: Algorithm::RS256, encoding: EncodingKey::from_rsa_der(der), jwk }
    }

    /// `claims` signed with this key, its header naming `kid`.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("the token signs")
    }

    /// `claims` signed with this key, under its own key id.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, claims)
    }
}

/// The tests' keys, made once per test process: two ES256 keys the issuer publishes in
/// turn, one it never publishes, and an RS256 key.
pub fn keys() -> &'static [SigningKey; 4] {
    static KEYS: OnceLock<[SigningKey; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            SigningKey::generate("key-2026-a"),
            SigningKey::generate("key-2026-b"),
            SigningKey::generate("attacker"),
            SigningKey::rs256("rsa-2026"),
        ]
    })
}

struct Published {
    keys: Mutex<Vec<Value>>,
    issuer: Mutex<String>,
    key_fetches: AtomicU64,
    /// When set, the keys are answered with HTTP 500, as by an issuer that is down.
    failing: AtomicBool,
}

pub struct LocalIssuer {
    pub url: String,
    published: web::Data<Published>,
    handle: ServerHandle,
}

impl LocalIssuer {
    /// Serves on a loopback port, publishing `keys`.
    pub fn start(keys: &[&SigningKey]) -> LocalIssuer {
        let published = web::Data::new(Published {
            keys: Mutex::default(),
            issuer: Mutex::default(),
            key_fetches: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        });
        let data = published.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/.well-known/openid-configuration", web::get().to(discovery))
                .route("/keys", web::get().to(jwks))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind the local issuer");
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        *published.issuer.lock().unwrap() = url.clone();
        let issuer = LocalIssuer { url, published, handle };
        issuer.publish(keys);
        issuer
    }

    /// From now on the issuer publishes `keys` (and only them).
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.published.keys.lock().unwrap() = keys.iter().map(|key| key.jwk.clone()).collect();
    }

    /// Makes the keys' address answer HTTP 500, or the keys again.
    pub fn fail_keys(&self, failing: bool) {
        self.published.failing.store(failing, Ordering::SeqCst);
    }

    /// How many times the keys were asked for (failed answers included).
    pub fn key_fetches(&self) -> u64 {
        self.published.key_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a fresh ID token for `email` at `now` (unix seconds), for the tests' app.
    pub fn claims(&self, email: &str, now: i64) -> Value {
        json!({
            "iss": self.url, "aud": CLIENT_ID, "sub": "248289761001",
            "email": email, "email_verified": true,
            "iat": now, "exp": now + 3600,
        })
    }

    /// `OIDC_PROVIDERS` naming this issuer as `local`, its address from `claim`.
    pub fn provider_setting(&self, claim: &str) -> String {
        self.provider_setting_with(claim, json!({}))
    }

    /// As [`LocalIssuer::provider_setting`], with the further settings in `extra` (an object).
    pub fn provider_setting_with(&self, claim: &str, extra: Value) -> String {
        let mut settings = json!({ "issuer": self.url, "client_ids": ["another.client", CLIENT_ID], "address_claim": claim });
        settings.as_object_mut().unwrap().extend(extra.as_object().expect("extra settings are an object").clone());
        json!({ "local": settings }).to_string()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

async fn discovery(published: web::Data<Published>) -> HttpResponse {
    let issuer = published.issuer.lock().unwrap().clone();
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(published: web::Data<Published>) -> HttpResponse {
    published.key_fetches.fetch_add(1, Ordering::SeqCst);
    if published.failing.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError().finish();
    }
    let keys = published.keys.lock().unwrap().clone();
    HttpResponse::Ok().json(json!({ "keys": keys }))
}

//! The connection pool's connector: one host at a time, each within its connect timeout, and TLS as the URL's `sslmode` asks.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio_postgres::config::{Host, LoadBalanceHosts};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::error::StorageError;

use crate::store::error::{describe, with_causes};

/// Checks a `DATABASE_URL` the way the pool will read it, without connecting: the driver's
/// own parser, which knows libpq's URL forms (several `host:port` before the path, or
/// `?host=h1,h2&port=p1,p2`) and options such as `target_session_attrs`.
pub fn check_url(url: &str) -> Result<(), String> {
    let (url, _) = driver_url(url);
    let config = tokio_postgres::Config::from_str(&url).map_err(|e| with_causes(&e))?;
    let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
    if hosts == 0 {
        return Err("names no host".into());
    }
    let ports = config.get_ports().len();
    if ports > 1 && ports != hosts {
        return Err(format!("names {hosts} hosts but {ports} ports: give one port for all, or one per host"));
    }
    Ok(())
}

/// Opens a connection by trying the URL's hosts one at a time, each within `timeout`.
/// tokio-postgres tries them in turn too, but bounds only the TCP connect: a frozen
/// server accepts the connection and never answers the startup, so the next host would
/// never be tried. The host that last took a connection is tried first. A host that takes
/// writes is used only if [`Fencing`] finds no sign of a split brain.
pub(super) struct HostByHost {
    pub(super) tls: MakeRustlsConnect,
    pub(super) timeout: Duration,
    pub(super) last_good: AtomicUsize,
    pub(super) fencing: Arc<Fencing>,
}

impl deadpool_postgres::Connect for HostByHost {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let hosts = single_hosts(config);
        Box::pin(async move {
            let mut order: Vec<usize> = (0..hosts.len()).collect();
            if config_balances(&hosts) {
                use rand::seq::SliceRandom;
                order.shuffle(&mut rand::thread_rng());
            } else {
                order.rotate_left(self.last_good.load(Ordering::Relaxed).min(hosts.len().saturating_sub(1)));
            }
            // The driver's own "timeout waiting for server": its error has no other public
            // constructor, and the pool's `Connect` must answer one.
            let mut failure = tokio_postgres::Error::__private_api_timeout();
            for index in order {
                let host = &hosts[index];
                let attempt = tokio::time::timeout(self.timeout, host.connect(self.tls.clone())).await;
                match attempt {
                    Ok(Ok((client, connection))) => {
                        let task = tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::debug!("PostgreSQL connection ended: {}", describe(&e));
                            }
                        });
                        match self.fence(&hosts, index, &client).await {
                            Verdict::Use => {
                                self.last_good.store(index, Ordering::Relaxed);
                                self.fencing.accepted();
                                return Ok((client, task));
                            }
                            // Dropping the client ends its connection.
                            Verdict::NextHost => failure = tokio_postgres::Error::__private_api_timeout(),
                            Verdict::Neither => return Err(tokio_postgres::Error::__private_api_timeout()),
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(host = %host_name(host), "PostgreSQL host not used: {}", describe(&e));
                        failure = e;
                    }
                    Err(_) => {
                        let waited = self.timeout.as_millis();
                        tracing::warn!(host = %host_name(host), "PostgreSQL host not used: no answer within {waited} ms (DB_CONNECT_TIMEOUT_MS)");
                        failure = tokio_postgres::Error::__private_api_timeout();
                    }
                }
            }
            Err(failure)
        })
    }
}

/// What to do with a host that took a connection.
enum Verdict {
    Use,
    /// Try the next host (this one is behind, or failed to say what it is).
    NextHost,
    /// Use no host: more than one takes writes.
    Neither,
}

impl HostByHost {
    /// Whether the host at `index`, connected as `client`, may take this instance's writes:
    /// not when it is on an older timeline than a primary this instance wrote to (it was
    /// replaced by its standby), nor when another host of the URL takes writes too. A host
    /// that does not take writes is used as before: its refusals say what it is.
    async fn fence(&self, hosts: &[tokio_postgres::Config], index: usize, client: &tokio_postgres::Client) -> Verdict {
        let name = host_name(&hosts[index]);
        let server = match tokio::time::timeout(self.timeout, identify(client)).await {
            Ok(Ok(server)) => server,
            // A server that does not have these functions (some proxies and managed services):
            // it is used, and what cannot be checked is said.
            Ok(Err(e)) if e.code().is_some() => {
                if !self.fencing.blind.swap(true, Ordering::Relaxed) {
                    tracing::warn!(host = %name, "cannot tell whether this PostgreSQL host is the newest primary, split brain is not detected: {}", describe(&e));
                }
                return Verdict::Use;
            }
            Ok(Err(e)) => {
                tracing::warn!(host = %name, "PostgreSQL host not used: {}", describe(&e));
                return Verdict::NextHost;
            }
            Err(_) => {
                let waited = self.timeout.as_millis();
                tracing::warn!(host = %name, "PostgreSQL host not used: no answer within {waited} ms (DB_CONNECT_TIMEOUT_MS)");
                return Verdict::NextHost;
            }
        };
        let Some(timeline) = server.timeline.filter(|_| server.takes_writes) else { return Verdict::Use };
        if let Some(highest) = self.fencing.highest(&server.system).filter(|highest| timeline < *highest) {
            self.fencing.refuse(format!(
                "PostgreSQL host {name} not used: it takes writes on timeline {timeline}, behind timeline {highest} of a primary \
                 this instance wrote to; it is a primary that was replaced and still runs (split brain): fence it off"
            ));
            return Verdict::NextHost;
        }
        let peers = hosts.iter().enumerate().filter(|(other, _)| *other != index).map(|(_, peer)| self.rival(peer, &server));
        let rivals: Vec<String> = futures_util::future::join_all(peers).await.into_iter().flatten().collect();
        if !rivals.is_empty() {
            self.fencing.refuse(format!(
                "PostgreSQL split brain: {name} (timeline {timeline}) and {} take writes; writing to none of them until all \
                 but one are fenced off (stopped, or made standbys of the new primary)",
                rivals.join(" and ")
            ));
            return Verdict::Neither;
        }
        self.fencing.wrote_to(&server.system, timeline);
        Verdict::Use
    }

    /// `peer` as "host (timeline n)" when it is another server than `this` and takes writes
    /// too; None when it does not, or does not answer within the connect timeout.
    async fn rival(&self, peer: &tokio_postgres::Config, this: &Server) -> Option<String> {
        let ask = async {
            // With `target_session_attrs=read-write` a standby refuses here already.
            let (client, connection) = peer.connect(self.tls.clone()).await.ok()?;
            tokio::spawn(connection);
            identify(&client).await.ok()
        };
        let server = tokio::time::timeout(self.timeout, ask).await.ok().flatten()?;
        let same = server.system == this.system && server.started == this.started;
        let timeline = server.timeline.map_or_else(|| "unknown".to_string(), |timeline| timeline.to_string());
        (server.takes_writes && !same).then(|| format!("{} (timeline {timeline})", host_name(peer)))
    }
}

/// What a server says of itself.
#[derive(Debug)]
struct Server {
    /// Neither in recovery (a standby) nor read-only.
    takes_writes: bool,
    /// The cluster's system identifier, which a standby shares with its primary.
    system: String,
    /// The timeline it writes WAL on, for a server not in recovery. A promoted standby is on
    /// a new one at once; `pg_control_checkpoint()` would say so only after its next checkpoint.
    timeline: Option<u32>,
    /// When its postmaster started: with `system`, tells one server under two names from two.
    started: String,
}

const IDENTIFY: &str = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off', \
     (SELECT system_identifier FROM pg_control_system())::text, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END, \
     pg_postmaster_start_time()::text";

/// Asks the server behind `client` what it is (a simple query: it needs no prepared
/// statement, so it works through a transaction-pooling proxy too).
async fn identify(client: &tokio_postgres::Client) -> Result<Server, tokio_postgres::Error> {
    let messages = client.simple_query(IDENTIFY).await?;
    let row = messages.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let column = |i: usize| row.and_then(|row| row.get(i)).map(str::to_string);
    Ok(Server {
        takes_writes: column(0).as_deref() == Some("t"),
        system: column(1).unwrap_or_default(),
        // A WAL file's name starts with its timeline, 8 hex digits.
        timeline: column(2).and_then(|wal| u32::from_str_radix(wal.get(..8)?, 16).ok()),
        started: column(3).unwrap_or_default(),
    })
}

/// What this instance knows of the servers' histories, to refuse writing to a primary that
/// was replaced by its standby and still runs (a split brain).
#[derive(Default)]
pub(super) struct Fencing {
    /// Per cluster (system identifier), the highest timeline of a primary this instance used.
    highest: Mutex<HashMap<String, u32>>,
    /// Why the last new connection was refused, until one is accepted: the pool's error says it.
    refusal: Mutex<Option<String>>,
    /// Whether a server could not say what it is (said once).
    blind: AtomicBool,
}

impl Fencing {
    fn highest(&self, system: &str) -> Option<u32> {
        self.highest.lock().unwrap_or_else(PoisonError::into_inner).get(system).copied()
    }

    fn wrote_to(&self, system: &str, timeline: u32) {
        let mut highest = self.highest.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = highest.entry(system.to_string()).or_insert(timeline);
        *seen = (*seen).max(timeline);
    }

    /// Records why a host was refused; says it as an ERROR once, not at every connection
    /// attempt while it lasts.
    fn refuse(&self, why: String) {
        let mut refusal = self.refusal.lock().unwrap_or_else(PoisonError::into_inner);
        if refusal.as_deref() == Some(why.as_str()) {
            tracing::debug!("{why}");
        } else {
            tracing::error!("{why}");
            *refusal = Some(why);
        }
    }

    fn accepted(&self) {
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Why new connections are refused, while they are.
    pub(super) fn refusal(&self) -> Option<String> {
        self.refusal.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// When a failover last interrupted an operation. The connections opened before then lead
/// to the server that went away, froze or stopped taking writes: those in use then are not
/// handed out again when they come back to the pool (the idle ones are dropped at once).
#[derive(Default)]
pub(super) struct StaleConnections(Mutex<Option<Instant>>);

impl StaleConnections {
    /// Every connection open now is stale.
    pub(super) fn mark(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// The pool's check before it hands out a connection again: a stale one is closed and
    /// another taken or opened.
    pub(super) fn check(stale: Arc<StaleConnections>) -> deadpool_postgres::Hook {
        deadpool_postgres::Hook::sync_fn(move |_, metrics| match *stale.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(since) if metrics.created <= since => {
                Err(deadpool_postgres::HookError::message("opened before a failover interrupted an operation"))
            }
            _ => Ok(()),
        })
    }
}

/// Whether the URL asks for hosts in random order (`load_balance_hosts=random`).
fn config_balances(hosts: &[tokio_postgres::Config]) -> bool {
    hosts.first().is_some_and(|host| host.get_load_balance_hosts() == LoadBalanceHosts::Random)
}

/// `host:port` of a one-host configuration, for logs (never its credentials).
pub(super) fn host_name(config: &tokio_postgres::Config) -> String {
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (_, Some(address)) => address.to_string(),
        (Some(Host::Tcp(name)), None) => name.clone(),
        (Some(Host::Unix(path)), None) => path.display().to_string(),
        (None, None) => String::new(),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

/// One configuration per host of `config`, each with every other setting of it, in the
/// URL's order (a port per host, or one port for all, as libpq reads them).
pub(super) fn single_hosts(config: &tokio_postgres::Config) -> Vec<tokio_postgres::Config> {
    let (hosts, addresses, ports) = (config.get_hosts(), config.get_hostaddrs(), config.get_ports());
    let count = hosts.len().max(addresses.len());
    if count <= 1 {
        return vec![config.clone()];
    }
    (0..count)
        .map(|i| {
            let mut one = tokio_postgres::Config::new();
            if let Some(user) = config.get_user() {
                one.user(user);
            }
            if let Some(password) = config.get_password() {
                one.password(password);
            }
            if let Some(dbname) = config.get_dbname() {
                one.dbname(dbname);
            }
            if let Some(options) = config.get_options() {
                one.options(options);
            }
            if let Some(name) = config.get_application_name() {
                one.application_name(name);
            }
            if let Some(timeout) = config.get_connect_timeout() {
                one.connect_timeout(*timeout);
            }
            if let Some(timeout) = config.get_tcp_user_timeout() {
                one.tcp_user_timeout(*timeout);
            }
            if let Some(interval) = config.get_keepalives_interval() {
                one.keepalives_interval(interval);
            }
            if let Some(retries) = config.get_keepalives_retries() {
                one.keepalives_retries(retries);
            }
            one.ssl_mode(config.get_ssl_mode())
                .ssl_negotiation(config.get_ssl_negotiation())
                .keepalives(config.get_keepalives())
                .keepalives_idle(config.get_keepalives_idle())
                .target_session_attrs(config.get_target_session_attrs())
                .channel_binding(config.get_channel_binding())
                .load_balance_hosts(config.get_load_balance_hosts());
            match hosts.get(i) {
                Some(Host::Tcp(name)) => {
                    one.host(name);
                }
                Some(Host::Unix(path)) => {
                    one.host_path(path);
                }
                None => {}
            }
            if let Some(address) = addresses.get(i) {
                one.hostaddr(*address);
            }
            one.port(ports.get(i).or(ports.first()).copied().unwrap_or(5432));
            one
        })
        .collect()
}

/// How the server's certificate is checked, from the URL's `sslmode` (libpq's words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CertificateCheck {
    /// `prefer` (the default) and `require`: encrypted, certificate not checked, as libpq
    /// does; it keeps out eavesdroppers, not a server that pretends to be the database.
    None,
    /// `verify-ca` and `verify-full`: the certificate must chain to `sslrootcert` (a PEM
    /// file) or, without one, to the web's public roots, and name the host.
    Verify { root_file: Option<String> },
}

/// Rewrites the URL's options that tokio-postgres reads otherwise than libpq: splits off
/// the TLS options it does not know (`sslmode=verify-*`, `sslrootcert`), and spells
/// `host=h1,h2` (one host named "h1,h2" to it) as `host=h1&host=h2`. Answers the URL it
/// parses and the check to make.
pub(super) fn driver_url(url: &str) -> (String, CertificateCheck) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), CertificateCheck::None) };
    let (mut verify, mut root_file, mut kept) = (false, None, Vec::new());
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                verify = true;
                kept.push("sslmode=require".to_string());
            }
            Some(("sslrootcert", path)) => {
                root_file = Some(percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned());
            }
            Some(("host", hosts)) => kept.extend(hosts.split(',').map(|host| format!("host={host}"))),
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    let check = if verify || root_file.is_some() { CertificateCheck::Verify { root_file } } else { CertificateCheck::None };
    (url, check)
}

/// The TLS connector, used when `sslmode` allows TLS.
pub(super) fn tls(check: &CertificateCheck) -> Result<MakeRustlsConnect, StorageError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError::Pool(format!("TLS setup failed: {e}")))?;
    let config = match check {
        CertificateCheck::None => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))).with_no_client_auth()
        }
        CertificateCheck::Verify { root_file } => {
            let mut roots = rustls::RootCertStore::empty();
            match root_file {
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                Some(path) => {
                    use rustls::pki_types::pem::PemObject;
                    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
                        .map_err(|e| StorageError::Pool(format!("sslrootcert {path}: {e}")))?;
                    for certificate in certificates {
                        let certificate = certificate.map_err(|e| StorageError::Pool(format!("sslrootcert {path}: {e}")))?;
                        roots.add(certificate).map_err(|e| StorageError::Pool(format!("sslrootcert {path}: {e}")))?;
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts the server's certificate without checking who issued it (libpq's `require`),
/// while still checking that the server holds its key.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! Probes: `/healthz` says the process is alive (no I/O: it is also the benchmark
//! baseline), `/readyz` says it can serve logins (database writable and, for SQLite,
//! still the file at DATABASE_PATH; the shared rate limits answering when `REDIS_URL` is
//! set; and, when `READYZ_UPSTREAM_CACHE_SECS` is set, upstream reachable).

use actix_web::{web, HttpResponse};
use serde_json::json;
use std::time::{Duration, Instant};

use crate::api::AppState;
use crate::config::Config;

/// A database write that takes longer than this means logins would stall too.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, state.db.probe_write()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ crate::store::StorageError::Unlinked(_))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("not writable: {e}")),
        Err(_) => Err(format!("no write within {} ms (locked or overloaded)", DATABASE_PROBE_TIMEOUT.as_millis())),
    };
    let upstream = match &state.readiness.upstream {
        Some(probe) => Some(probe.check().await),
        None => None,
    };
    let redis = match &state.shared_limits {
        Some(shared) => Some(shared.ping().await.map_err(|e| format!("unreachable: {e}"))),
        None => None,
    };
    // With RATE_LIMIT_ON_ERROR=allow requests are still served (unlimited); the check says so.
    let redis_blocks = state.shared_limits.as_ref().is_some_and(|shared| !shared.allows_on_error());
    let ready =
        database.is_ok() && upstream.as_ref().is_none_or(Result::is_ok) && (!redis_blocks || redis.as_ref().is_none_or(Result::is_ok));
    let describe = |check: &Result<(), String>| match check {
        Ok(()) => "ok".to_string(),
        Err(why) => why.clone(),
    };
    let mut checks = json!({ "database": describe(&database) });
    if let Some(redis) = &redis {
        checks["redis"] = match redis {
            Err(why) if !redis_blocks => format!("{why}; limits are not enforced (RATE_LIMIT_ON_ERROR=allow)"),
            _ => describe(redis),
        }
        .into();
    }
    if let Some(upstream) = &upstream {
        checks["upstream"] = describe(upstream).into();
    }
    // A degraded provider instance is reported, never a reason to be unready: every instance
    // of the service shares the providers, and one taken out of service sends no trial that
    // could close its breaker again.
    let senders = &state.login.codes.courier.senders();
    let degraded: Vec<String> =
        senders.health().into_iter().filter(|(_, s)| s.is_degraded()).map(|(n, s)| format!("{n} {}", s.as_str())).collect();
    if !degraded.is_empty() {
        let stuck = senders.routes_without_a_working_instance();
        let routes = match stuck.is_empty() {
            true => "every route has a working instance".to_string(),
            false => format!("no working instance on route {}: tried anyway", stuck.join(", ")),
        };
        checks["senders"] = format!("degraded: {}; {routes}", degraded.join(", ")).into();
    }
    if ready {
        HttpResponse::Ok().json(json!({ "status": "ok", "checks": checks }))
    } else {
        tracing::warn!(%checks, "not ready");
        HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable", "checks": checks }))
    }
}

/// What `/readyz` checks besides the database.
pub struct Readiness {
    pub upstream: Option<UpstreamProbe>,
}

impl Readiness {
    pub fn from_config(config: &Config) -> Result<Readiness, String> {
        let upstream = match config.upstream.readyz_upstream_cache_secs {
            0 => None,
            secs => Some(UpstreamProbe::new(config, Duration::from_secs(secs))?),
        };
        Ok(Readiness { upstream })
    }
}

/// Whether `UPSTREAM_URL` answers HTTP at all (any status: the server is up), remembered
/// for a while so frequent probes from a load balancer do not load the platform.
pub struct UpstreamProbe {
    client: reqwest::Client,
    url: String,
    keep_for: Duration,
    // An async mutex: concurrent probes wait for one request instead of each sending one.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl UpstreamProbe {
    fn new(config: &Config, keep_for: Duration) -> Result<UpstreamProbe, String> {
        let timeout = Duration::from_secs(config.upstream.connect_timeout_secs.max(1));
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the readiness HTTP client: {e}"))?;
        Ok(UpstreamProbe { client, url: config.upstream.url.clone(), keep_for, last: tokio::sync::Mutex::new(None) })
    }

    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < self.keep_for {
                return result.clone();
            }
        }
        // A bare GET without the app token: it proves reachability and reveals nothing.
        let result = match self.client.get(&self.url).send().await {
            _ if self.url == crate::config::BUILTIN_UPSTREAM => Ok(()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("unreachable: {}", e.without_url())),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

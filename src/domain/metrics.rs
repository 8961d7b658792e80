//! Prometheus metrics, served at `GET /metrics`.
//!
//! Metrics live in one process-wide registry. Another module adds one with a
//! single line, e.g.
//! `pub static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| metrics::gauge("otpgate_courier_queue_depth", "Messages waiting"));`
//! and updates it with `metrics::QUEUE_DEPTH.set(n)` (it appears in `/metrics` from its first use).

use actix_web::HttpResponse;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Reads how many log lines the log writer dropped so far (see `runtime::logging`).
static DROPPED_LOG_LINES: std::sync::OnceLock<Box<dyn Fn() -> usize + Send + Sync>> = std::sync::OnceLock::new();

/// Makes `/metrics` report the log lines `dropped` says were lost.
pub fn count_dropped_log_lines(dropped: impl Fn() -> usize + Send + Sync + 'static) {
    let _ = DROPPED_LOG_LINES.set(Box::new(dropped));
}

pub static LOG_LINES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("otpgate_log_lines_dropped_total", "Log lines dropped because the log writer fell behind (requests never wait for it)")
});

/// Latency buckets in seconds, from a cached SQLite read to a slow upstream.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    // A duplicate name is a programming error, found by the first test that renders metrics.
    REGISTRY.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

pub fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("valid metric"))
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid metric"))
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

pub fn histogram(name: &str, help: &str) -> Histogram {
    register(Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())).expect("valid metric"))
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    histogram_vec_in(name, help, labels, LATENCY_BUCKETS)
}

/// A histogram of its own buckets (seconds).
pub fn histogram_vec_in(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    register(HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid metric"))
}

/// From a code's request to a provider's report on its message, in seconds: a carrier
/// takes from seconds to hours, and the times compared are whole seconds.
const RECEIPT_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("otpgate_http_requests_total", "HTTP requests by route pattern and status", &["route", "status"]));
pub static HTTP_DURATION: LazyLock<HistogramVec> =
    LazyLock::new(|| histogram_vec("otpgate_http_request_duration_seconds", "HTTP request latency by route pattern", &["route"]));
pub static API_REQUESTS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("otpgate_api_requests_total", "/api calls by op and result (ok or the error code)", &["op", "result"]));
pub static OTP_ISSUED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("otpgate_otp_issued_total", "Codes generated and handed to the courier (sent, or being retried)"));
pub static OTP_VERIFIED: LazyLock<IntCounter> = LazyLock::new(|| counter("otpgate_otp_verified_total", "Correct codes presented"));
pub static OTP_FAILED: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("otpgate_otp_failed_total", "Rejected codes by reason (wrong, no_code, too_many_attempts)", &["reason"]));
pub static OTP_EXPIRED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("otpgate_otp_expired_total", "Codes that expired unused (counted when purged)"));
pub static SENDER_ATTEMPTS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("otpgate_sender_attempts_total", "Delivery attempts by provider", &["provider"]));
pub static SENDER_FAILURES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("otpgate_sender_failures_total", "Failed deliveries by provider", &["provider"]));
pub static CODES_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "otpgate_codes_sent_total",
        "Code messages a provider instance accepted, by instance and calling code",
        &["instance", "country"],
    )
});
pub static CODES_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "otpgate_codes_failed_total",
        "Code messages a provider instance did not accept (each instance tried counts), by instance and calling code",
        &["instance", "country"],
    )
});
pub static SENDER_BREAKER_OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "otpgate_sender_breaker_open",
        "1 while a provider instance's circuit breaker skips it (open, or waiting on its trial send), 0 while closed",
        &["instance"],
    )
});
pub static SENDER_BREAKER_OPENED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "otpgate_sender_breaker_opened_total",
        "Times this process opened a provider instance's circuit breaker (a failed trial send opens it again)",
        &["instance"],
    )
});
pub static DELIVERY_RECEIPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "otpgate_delivery_receipts_total",
        "Signed delivery receipts that changed a message's record, by the instance that sent it, calling code and the status reported (replays are not counted)",
        &["instance", "country", "status"],
    )
});
pub static DELIVERY_RECEIPT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec_in(
        "otpgate_delivery_receipt_seconds",
        "Time from a code's request to each recorded final status of its message (delivered, undelivered or failed), by instance and calling code",
        &["instance", "country"],
        RECEIPT_BUCKETS,
    )
});
pub static DELIVERY_RESENDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "otpgate_delivery_resends_total",
        "Codes queued again for the next instance of their route after a receipt reported them undelivered or failed, by the reporting instance",
        &["instance"],
    )
});
pub static RECEIPTS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "otpgate_receipts_refused_total",
        "Delivery receipts refused, by provider and reason (signature, malformed, too_large)",
        &["provider", "reason"],
    )
});
pub static UPSTREAM_DURATION: LazyLock<Histogram> =
    LazyLock::new(|| histogram("otpgate_upstream_request_duration_seconds", "Latency of upstream useradd calls, failed ones included"));
pub static UPSTREAM_FAILURES: LazyLock<IntCounter> =
    LazyLock::new(|| counter("otpgate_upstream_failures_total", "Upstream useradd calls that issued no token"));
pub static RATELIMIT_REJECTIONS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("otpgate_ratelimit_rejections_total", "Requests refused by a rate limit, by limiter", &["limiter"]));
pub static COURIER_QUEUE_DEPTH: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("otpgate_courier_queue_depth", "Code messages not yet delivered or given up (queued or in flight)"));
pub static PHOTO_DECODES_RUNNING: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("otpgate_photo_decodes_running", "Photos being decoded and encoded again now (at most PHOTO_DECODES)"));
pub static PHOTO_DECODES_WAITING: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("otpgate_photo_decodes_waiting", "Photos waiting for a decode's turn (at most PHOTO_DECODE_QUEUE)"));
pub static DB_POOL_WAIT: LazyLock<Histogram> =
    LazyLock::new(|| histogram("otpgate_db_pool_wait_seconds", "Time spent waiting for a free database connection"));
pub static REDIS_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram("otpgate_redis_request_duration_seconds", "Latency of shared rate-limit checks in Redis, failed ones included")
});
pub static RATELIMIT_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "otpgate_ratelimit_errors_total",
        "Rate-limit checks the shared limiter (Redis) could not answer; RATE_LIMIT_ON_ERROR decided them",
    )
});

/// Registers this module's metrics, so they are exported (at zero) before their first event.
fn register_all() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    LazyLock::force(&API_REQUESTS);
    LazyLock::force(&OTP_ISSUED);
    LazyLock::force(&OTP_VERIFIED);
    LazyLock::force(&OTP_FAILED);
    LazyLock::force(&OTP_EXPIRED);
    LazyLock::force(&SENDER_ATTEMPTS);
    LazyLock::force(&SENDER_FAILURES);
    LazyLock::force(&SENDER_BREAKER_OPEN);
    LazyLock::force(&SENDER_BREAKER_OPENED);
    LazyLock::force(&DELIVERY_RECEIPTS);
    LazyLock::force(&DELIVERY_RECEIPT_SECONDS);
    LazyLock::force(&DELIVERY_RESENDS);
    LazyLock::force(&RECEIPTS_REFUSED);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&UPSTREAM_FAILURES);
    LazyLock::force(&RATELIMIT_REJECTIONS);
    LazyLock::force(&DB_POOL_WAIT);
    LazyLock::force(&COURIER_QUEUE_DEPTH);
    LazyLock::force(&PHOTO_DECODES_RUNNING);
    LazyLock::force(&PHOTO_DECODES_WAITING);
    LazyLock::force(&REDIS_DURATION);
    LazyLock::force(&RATELIMIT_ERRORS);
    LazyLock::force(&LOG_LINES_DROPPED);
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    register_all();
    if let Some(dropped) = DROPPED_LOG_LINES.get() {
        // The writer counts its losses itself; the counter catches up at each scrape, one
        // scrape at a time so that two cannot add the same losses.
        static CATCHING_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = CATCHING_UP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lost = dropped() as u64;
        LOG_LINES_DROPPED.inc_by(lost.saturating_sub(LOG_LINES_DROPPED.get()));
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&REGISTRY.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().content_type(prometheus::TEXT_FORMAT).body(render())
}

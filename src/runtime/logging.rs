//! Log output: human-readable text by default, JSON lines with `LOG_FORMAT=json`.
//! Both go to stderr, filtered by `RUST_LOG` (default `info`).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Libraries whose debug lines carry what the service never logs: the PostgreSQL client
/// logs every statement's parameters (phone numbers, token hashes, sealed messages).
/// They log warnings and errors only, whatever `RUST_LOG` asks for.
pub const QUIETED: &[&str] = &["tokio_postgres=warn", "deadpool_postgres=warn", "redis=warn"];

pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in QUIETED {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == LogFormat::Json {
        // Span fields (the request id) are flattened into each line's `span` object.
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

//! Log output: human-readable text by default, JSON lines with `LOG_FORMAT=json`.
//! Both go to stderr, filtered by `RUST_LOG` (default `info`: one line per request, and
//! the lines that report a problem). Lines are written by a thread of their own: a
//! request never waits for stderr. When that thread falls behind, new lines are dropped
//! and counted (`otpgate_log_lines_dropped_total`) rather than slowing requests down.

use std::io::Write;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::domain::metrics;

/// Libraries whose debug lines carry what the service never logs: the PostgreSQL client
/// logs every statement's parameters (phone numbers, token hashes, sealed messages).
/// They log warnings and errors only, whatever `RUST_LOG` asks for.
pub const QUIETED: &[&str] = &["tokio_postgres=warn", "deadpool_postgres=warn", "redis=warn"];

/// Lines waiting for the writer thread before new ones are dropped.
const BUFFERED_LINES: usize = 64 * 1024;

/// Keeps the log writer thread; dropping it writes out the lines still queued. Hold it
/// until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// A writer that hands lines to a thread of their own writing to `sink`, dropping (and
/// counting) lines when `buffered_lines` are already waiting.
fn off_the_request_path(sink: impl Write + Send + 'static, buffered_lines: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default().lossy(true).buffered_lines_limit(buffered_lines).thread_name("otpgate-log").finish(sink)
}

pub fn init(format: LogFormat) -> LogGuard {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in QUIETED {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    let (writer, guard) = off_the_request_path(std::io::stderr(), BUFFERED_LINES);
    let dropped = writer.error_counter();
    metrics::count_dropped_log_lines(move || dropped.dropped_lines());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if format == LogFormat::Json {
        // Span fields (the request id) are flattened into each line's `span` object.
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    LogGuard(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A sink that blocks on its first write until released: stderr piped to a stuck reader.
    struct Stuck(mpsc::Receiver<()>, mpsc::Sender<Vec<u8>>);

    impl Write for Stuck {
        fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            let _ = self.1.send(line.to_vec());
            Ok(line.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_log_never_blocks_the_writer_and_its_losses_are_counted() {
        let (release, released) = mpsc::channel();
        let (written_tx, written) = mpsc::channel();
        let (writer, guard) = off_the_request_path(Stuck(released, written_tx), 4);
        let counter = writer.error_counter();
        // Writes from another thread, so that a blocking writer shows as a missing signal
        // instead of a test that never ends.
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut writer = writer;
            for n in 0..100 {
                writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
            }
            done_tx.send(writer).unwrap();
        });
        let writer = done.recv_timeout(Duration::from_secs(60)).expect("100 writes returned while the sink was stuck");
        assert!(counter.dropped_lines() >= 100 - 4 - 1, "lines beyond the buffer are dropped: {}", counter.dropped_lines());
        for _ in 0..100 {
            let _ = release.send(());
        }
        let first = written.recv_timeout(Duration::from_secs(60)).expect("the sink moves again");
        assert_eq!(first, b"line 0\n");
        drop(writer);
        drop(guard);
        let kept = 1 + written.try_iter().count();
        assert!(kept <= 5, "no more than the buffer and the line in hand were kept: {kept}");
    }
}

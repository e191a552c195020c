//! Logging set-up for the binary and embedders.

use crate::config::LogFormat;

/// Installs a `tracing` fmt subscriber with this filter (`info`, `uringmq=debug`...) and line
/// format (`log_format`). Only the first call in a process has an effect.
pub fn init_logging(filter: &str, format: LogFormat) {
    install_logging(filter, format, std::io::stdout);
}

/// Like [`init_logging`], but a background thread writes the lines, batched: a core only
/// formats a line into a queue, instead of one `write` system call per connect and per
/// disconnect (a connect storm spent its time there). Nothing is dropped: a core waits when
/// 128k lines are queued. Keep the guard until exit; dropping it writes what is queued.
pub fn init_logging_background(
    filter: &str,
    format: LogFormat,
) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("uringmq-log")
        .finish(std::io::BufWriter::new(std::io::stdout()));
    install_logging(filter, format, writer);
    guard
}

fn install_logging<W>(filter: &str, format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The metrics endpoint stops by shutting its socket down; tiny_http's accept thread then
        // logs an ERROR that is no error. It logs nothing else of use (`ops/http.rs` logs).
        .add_directive("tiny_http=off".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        // One object per line; the event's fields at the top level, where log shippers look.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

//! One tracing subscriber for the process: JSON lines (event fields flattened at the top level)
//! or pretty text, always on stderr, since stdout carries results.
//!
//! `RUST_LOG` wins over the configured level. `log.format = "auto"` (the default) writes pretty
//! text to a terminal and JSON anywhere else. When stderr is the journal (`JOURNAL_STREAM`
//! names it), each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug), which systemd reads, so `journalctl -p warning` shows exactly the
//! problems. Must not print results.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Noisy dependencies are quietened unless the level names them.
const QUIET: &str = "tokio_cron_scheduler=warn,sqlx=warn,hyper=warn,reqwest=warn,rustls=warn";

/// The syslog priority of a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is `DEVICE:INODE` of it.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Puts `<N>` (the syslog priority) before each line another formatter writes.
struct Prioritized<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},{QUIET}")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => journal || !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match (json, journal) {
        (true, false) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        (true, true) => {
            let inner = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            builder
                .json()
                .flatten_event(true)
                .event_format(Prioritized(inner))
                .try_init()
        }
        (false, true) => builder
            .with_ansi(false)
            .event_format(Prioritized(tracing_subscriber::fmt::format()))
            .try_init(),
        (false, false) => builder.try_init(),
    };
}

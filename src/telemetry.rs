//! One tracing subscriber for the process: JSON lines (event fields flattened at the top level)
//! or pretty text, always on stderr, since stdout carries results.
//!
//! `RUST_LOG` wins over the configured level. Must not print results.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Noisy dependencies are quietened unless the level names them.
const QUIET: &str = "tokio_cron_scheduler=warn,sqlx=warn,hyper=warn,reqwest=warn,rustls=warn";

/// Installs the subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},{QUIET}")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

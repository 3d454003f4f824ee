//! Logging set-up, done once per process: text or JSON lines, filtered by `--log`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryArgs};

/// Installs the global subscriber. A bad filter falls back to `info` with a warning rather than failing.
pub fn init(args: &TelemetryArgs) {
    let (filter, filter_error) = match EnvFilter::try_new(&args.log) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    if installed.is_ok()
        && let Some(error) = filter_error
    {
        tracing::warn!(filter = %args.log, %error, "bad --log filter; logging at info");
    }
}

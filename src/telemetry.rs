//! Logging set-up, done once per process: text or JSON lines, filtered by `--log`; panics counted; and the
//! allocator's own figures, when the binary's allocator gives them.

use std::io::IsTerminal;
use std::sync::{LazyLock, OnceLock};

use prometheus_client::metrics::counter::Counter;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Which log lines are kept, and how they are written.
#[derive(Clone, Debug)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    /// Tracing's filter syntax (e.g. `info` or `shadowdiff=debug,hyper=warn`).
    pub filter: String,
}

impl TelemetrySettings {
    pub const DEFAULT_FORMAT: LogFormat = LogFormat::Text;
    pub const DEFAULT_FILTER: &str = "info";
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: Self::DEFAULT_FORMAT,
            filter: Self::DEFAULT_FILTER.to_string(),
        }
    }
}

/// Installs the global subscriber. A bad filter falls back to `info` with a warning rather than failing.
pub fn init(settings: &TelemetrySettings) {
    let (filter, filter_error) = match EnvFilter::try_new(&settings.filter) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match settings.format {
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
        tracing::warn!(filter = %settings.filter, %error, "bad --log filter; logging at info");
    }
    install_panic_hook();
}

/// Panics anywhere in the process since it started (each one a bug), shown as `shadowdiff_panics_total`.
pub static PANICS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Panics are counted and logged as one event through the subscriber (so a JSON log stays JSON), with a
/// backtrace when `RUST_BACKTRACE` asks for one. A panic in a connection or analysis task does not stop the
/// process: tokio and the analysis stage contain it, and this hook makes sure it is seen.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.inc();
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::capture();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            panic = %info,
            %backtrace,
            "panic"
        );
    }));
}

/// What the process's heap holds, as its allocator counts it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the program has allocated and not freed.
    pub allocated: usize,
    /// Bytes in pages the allocator has handed out (allocated, plus what fragmentation costs).
    pub active: usize,
    /// Bytes of the allocator's memory that are resident.
    pub resident: usize,
}

static HEAP_STATS: OnceLock<fn() -> Option<HeapStats>> = OnceLock::new();

/// Says how to read the heap's figures (the binary knows its allocator; the library does not).
pub fn set_heap_stats(reader: fn() -> Option<HeapStats>) {
    let _ = HEAP_STATS.set(reader);
}

/// The heap's figures now, when the allocator gives them.
pub fn heap_stats() -> Option<HeapStats> {
    HEAP_STATS.get().and_then(|read| read())
}

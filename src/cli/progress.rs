//! Progress of a job that sends requests: an indicatif bar when stderr is a terminal, a plain line every few
//! seconds otherwise (CI logs keep them readable); through the input file's bytes when it reads one.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::driver::Tally;

const BAR_REFRESH: Duration = Duration::from_millis(100);
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How far through its input file a job is.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Bytes read so far.
    pub read: Arc<AtomicU64>,
    /// The file's size.
    pub total: u64,
}

/// What the display counts through.
#[derive(Clone, Debug)]
pub enum Through {
    /// Requests, out of this many if known.
    Requests(Option<u64>),
    /// The bytes of an input file.
    File(Reading),
}

/// A running progress display; `finish` draws the last state.
pub struct Progress {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Progress {
    /// Shows `what` progressing through requests or a file as `tally` counts answers.
    pub fn start(what: &'static str, through: Through, tally: Arc<Tally>) -> Self {
        let stop = CancellationToken::new();
        let done = stop.clone();
        let task = if std::io::stderr().is_terminal() {
            tokio::spawn(bar(what, through, tally, done))
        } else {
            tokio::spawn(lines(what, through, tally, done))
        };
        Progress { stop, task }
    }

    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn finished(tally: &Tally) -> u64 {
    tally.answered() + tally.failed()
}

fn style(template: &str, fallback: ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|style| style.progress_chars("=> "))
        .unwrap_or(fallback)
}

async fn bar(what: &'static str, through: Through, tally: Arc<Tally>, stop: CancellationToken) {
    let bar = match &through {
        Through::Requests(Some(total)) => {
            ProgressBar::with_draw_target(Some(*total), ProgressDrawTarget::stderr()).with_style(
                style(
                    "{prefix} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
                    ProgressStyle::default_bar(),
                ),
            )
        }
        Through::Requests(None) => {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style(
                "{prefix} {spinner} {pos} requests ({per_sec}) {msg}",
                ProgressStyle::default_spinner(),
            ))
        }
        Through::File(reading) => ProgressBar::with_draw_target(
            Some(reading.total),
            ProgressDrawTarget::stderr(),
        )
        .with_style(style(
            "{prefix} [{bar:40}] {binary_bytes}/{binary_total_bytes} read (eta {eta}) {msg}",
            ProgressStyle::default_bar(),
        )),
    };
    bar.set_prefix(what);
    let mut ticker = tokio::time::interval(BAR_REFRESH);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            () = stop.cancelled() => true,
        };
        let failed = tally.failed();
        match &through {
            Through::File(reading) => {
                bar.set_position(reading.read.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{} requests answered, {failed} failed",
                    tally.answered()
                ));
            }
            Through::Requests(_) => {
                bar.set_position(finished(&tally));
                if failed > 0 {
                    bar.set_message(format!("{failed} failed"));
                }
            }
        }
        if stopping {
            bar.finish();
            return;
        }
    }
}

async fn lines(what: &'static str, through: Through, tally: Arc<Tally>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(LINE_EVERY);
    ticker.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            () = stop.cancelled() => true,
        };
        let done = finished(&tally);
        let failed = tally.failed();
        match &through {
            Through::Requests(total) => {
                let of = total.map(|total| format!("/{total}")).unwrap_or_default();
                eprintln!("{what}: {done}{of} requests answered or failed ({failed} failed)");
            }
            Through::File(reading) => {
                let read = reading.read.load(Ordering::Relaxed);
                eprintln!(
                    "{what}: {} of {} read ({:.0}%), {done} requests answered or failed ({failed} failed)",
                    HumanBytes(read),
                    HumanBytes(reading.total),
                    100.0 * read as f64 / reading.total.max(1) as f64,
                );
            }
        }
        if stopping {
            return;
        }
    }
}

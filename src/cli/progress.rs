//! Progress of a job that sends requests: an indicatif bar when stderr is a terminal, a plain line every few
//! seconds otherwise (CI logs keep them readable).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::driver::Tally;

const BAR_REFRESH: Duration = Duration::from_millis(100);
const LINE_EVERY: Duration = Duration::from_secs(5);

/// A running progress display; `finish` draws the last state.
pub struct Progress {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Progress {
    /// Shows `what` progressing through `total` requests (if known) as `tally` counts answers.
    pub fn start(what: &'static str, total: Option<u64>, tally: Arc<Tally>) -> Self {
        let stop = CancellationToken::new();
        let done = stop.clone();
        let task = if std::io::stderr().is_terminal() {
            tokio::spawn(bar(what, total, tally, done))
        } else {
            tokio::spawn(lines(what, total, tally, done))
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

async fn bar(what: &'static str, total: Option<u64>, tally: Arc<Tally>, stop: CancellationToken) {
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{prefix} {spinner} {pos} requests ({per_sec}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_prefix(what);
    let mut ticker = tokio::time::interval(BAR_REFRESH);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            () = stop.cancelled() => true,
        };
        bar.set_position(finished(&tally));
        let failed = tally.failed();
        if failed > 0 {
            bar.set_message(format!("{failed} failed"));
        }
        if stopping {
            bar.finish();
            return;
        }
    }
}

async fn lines(what: &'static str, total: Option<u64>, tally: Arc<Tally>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(LINE_EVERY);
    ticker.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            () = stop.cancelled() => true,
        };
        let done = finished(&tally);
        let of = total.map(|total| format!("/{total}")).unwrap_or_default();
        eprintln!(
            "{what}: {done}{of} requests answered or failed ({} failed)",
            tally.failed()
        );
        if stopping {
            return;
        }
    }
}

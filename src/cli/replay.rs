//! `shadowdiff replay`: recorded traffic sent through a private instance of the proxy (same engine, same store
//! as `serve`), with progress on the terminal and a summary table at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::{AppSettings, Application};
use crate::cli::driver::{self, Pace, Tally};
use crate::cli::progress::Progress;
use crate::cli::{CommandError, Outcome, summary};
use crate::encoding::holds_redacted;
use crate::pipeline::metrics::{DropReason, Queue};
use crate::proxy::metrics::UnshadowedReason;
use crate::store::queries::TimeRange;
use crate::traffic::{self, TrafficFormat};
use crate::values::UpstreamUrl;

/// Skipped records named one by one; past this many, only counted.
const NAMED_SKIPS: usize = 20;

/// What to replay, and how fast.
#[derive(Clone, Debug)]
pub struct ReplaySettings {
    /// Recorded traffic: JSON lines, HAR or GoReplay.
    pub input: PathBuf,
    /// Format of the input; `None` guesses from the file name.
    pub format: Option<TrafficFormat>,
    /// Requests sent at once.
    pub concurrency: usize,
    /// Requests per second at most; `None` as fast as the concurrency allows.
    pub rate: Option<u32>,
    /// Headers set on every request, replacing the recorded ones (credentials a recording keeps redacted).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Which recorded requests are sent.
    pub filter: ReplayFilter,
    /// Keep the recorded pace, this many times faster; `None` as fast as the concurrency (and rate) allow.
    pub speed: Option<f64>,
}

/// Which recorded requests a replay sends: paths matching `include` (all when none) and not `exclude`, with
/// one of `methods` (all when empty).
#[derive(Clone, Debug, Default)]
pub struct ReplayFilter {
    pub include_path: Option<regex::Regex>,
    pub exclude_path: Option<regex::Regex>,
    pub methods: Vec<http::Method>,
}

impl ReplayFilter {
    /// Whether the request is sent.
    pub fn keeps(&self, request: &traffic::TrafficRequest) -> bool {
        let path = request.uri.path();
        self.include_path
            .as_ref()
            .is_none_or(|include| include.is_match(path))
            && !self
                .exclude_path
                .as_ref()
                .is_some_and(|exclude| exclude.is_match(path))
            && (self.methods.is_empty() || self.methods.contains(&request.method))
    }
}

impl ReplaySettings {
    pub const DEFAULT_CONCURRENCY: usize = 16;

    /// Replays `input` with the default pace.
    pub fn new(input: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            format: None,
            concurrency: Self::DEFAULT_CONCURRENCY,
            rate: None,
            headers: Vec::new(),
            filter: ReplayFilter::default(),
            speed: None,
        }
    }
}

/// Replays through a private instance built from `settings` (its listeners are moved to loopback ports).
pub async fn run(replay: ReplaySettings, mut settings: AppSettings) -> Outcome {
    let format = replay
        .format
        .unwrap_or_else(|| TrafficFormat::from_path(&replay.input));
    let input = replay.input.display().to_string();
    let traffic = traffic::read(&replay.input, format)?;
    for skipped in traffic.skipped.iter().take(NAMED_SKIPS) {
        eprintln!("warning: {input}: {skipped}: record skipped");
    }
    if traffic.skipped.len() > NAMED_SKIPS {
        eprintln!(
            "warning: {input}: {} more malformed records skipped",
            traffic.skipped.len() - NAMED_SKIPS
        );
    }
    if traffic.requests.is_empty() {
        return Err(CommandError::new(format!(
            "{input}: no requests to replay ({} records skipped; is it {} as --format says?)",
            traffic.skipped.len(),
            format.as_str()
        )));
    }

    let recorded = traffic.requests.len();
    let mut requests: Vec<_> = traffic
        .requests
        .into_iter()
        .filter(|request| replay.filter.keeps(request))
        .collect();
    let filtered = recorded - requests.len();
    if filtered > 0 {
        eprintln!(
            "{input}: {filtered} of {recorded} requests left out by --include-path, --exclude-path or --methods"
        );
    }
    if requests.is_empty() {
        return Err(CommandError::new(format!(
            "{input}: the filters leave none of its {recorded} requests to replay"
        )));
    }
    let still_redacted = with_headers(&mut requests, &replay.headers);
    let concurrency = replay.concurrency;
    let queue_room = settings.proxy.exchange_queue.min(settings.analysis.queue);
    let rate = replay.rate;
    let database_url = settings.store.database_url.clone();
    private_instance(&mut settings, &input);
    let app = Application::build(settings).await?;
    let run_id = app.run_id();
    let label = app.run_label().to_string();
    let metrics = app.metrics();
    let backlog = app.backlog();
    let reports = app.reports();
    let Ok(proxy) = format!("http://{}", app.proxy_addr()).parse::<UpstreamUrl>() else {
        return Err(CommandError::new("the replay proxy has no usable address"));
    };
    let stop_app = CancellationToken::new();
    let serving = tokio::spawn(app.run_until(stop_app.clone().cancelled_owned()));

    let total = requests.len() as u64;
    let tally = Arc::new(Tally::default());
    let progress = Progress::start("replay", Some(total), tally.clone());
    let started = Instant::now();
    // Exchanges must not be dropped for want of room: wait while the stages behind the proxy catch up.
    let high_water = queue_room / 2;
    let hold = || {
        let backlog = backlog.clone();
        async move {
            while backlog() > high_water {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    driver::drive(
        &proxy,
        requests.into_iter(),
        Pace {
            concurrency,
            rate,
            speed: replay.speed,
        },
        tally.clone(),
        CancellationToken::new(),
        hold,
    )
    .await;
    let elapsed = started.elapsed();
    progress.finish().await;
    stop_app.cancel();
    let _ = serving.await;

    println!(
        "Replayed {} requests from {input} in {:.1} s ({:.0}/s): {} answered ({}), {} failed; {} records skipped.",
        tally.sent(),
        elapsed.as_secs_f64(),
        tally.sent() as f64 / elapsed.as_secs_f64().max(1e-9),
        tally.answered(),
        tally.classes(),
        tally.failed(),
        traffic.skipped.len(),
    );
    let unshadowed: Vec<String> = UnshadowedReason::ALL
        .iter()
        .filter(|reason| metrics.proxy.unshadowed_count(**reason) > 0)
        .map(|reason| {
            format!(
                "{} {}",
                metrics.proxy.unshadowed_count(*reason),
                reason.as_str()
            )
        })
        .collect();
    if !unshadowed.is_empty() {
        println!(
            "Not shadowed (primary only): {} (see --allow-side-effects, --shadow-methods)",
            unshadowed.join(", ")
        );
    }
    if still_redacted > 0 {
        println!(
            "{still_redacted} requests still carried redacted values (credentials kept only as hashes): \
             upstreams likely refused them; set real ones with --header 'Authorization: ...'"
        );
    }
    let dropped = metrics
        .queues
        .dropped_count(Queue::Exchanges, DropReason::QueueFull)
        + metrics
            .queues
            .dropped_count(Queue::Analyses, DropReason::QueueFull);
    if dropped > 0 {
        println!(
            "{dropped} exchanges dropped for want of queue room: lower --concurrency or --rate"
        );
    }
    let report = async {
        let info = reports
            .store()
            .runs()
            .await?
            .into_iter()
            .find(|run| run.id == run_id)
            .ok_or_else(|| crate::store::StoreError::Data(format!("run {label} vanished")))?;
        reports.judge(info, TimeRange::all()).await
    };
    let report = report
        .await
        .map_err(|error| CommandError::new(format!("cannot read the run back: {error}")))?;
    println!();
    print!("{}", summary::table(&report));
    println!();
    println!("Judge it: shadowdiff gate --run '{label}' --database-url '{database_url}'");
    Ok(ExitCode::SUCCESS)
}

/// The private proxy: loopback on free ports, primary answering, no admin token; the run named after the
/// input unless one is given.
fn private_instance(settings: &mut AppSettings, input: &str) {
    if settings.writer.run.is_none() {
        let name = std::path::Path::new(input)
            .file_name()
            .map_or_else(|| input.to_string(), |n| n.to_string_lossy().into_owned());
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        settings.writer.run = Some(format!("replay {name}@{started}"));
    }
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.proxy.listen = loopback;
    settings.web.listen = loopback;
}

/// Sets `headers` on every request (replacing recorded ones of the same name), and counts the requests that
/// still carry a redacted value somewhere (a header, the query, the body).
fn with_headers(
    requests: &mut [traffic::TrafficRequest],
    headers: &[(http::HeaderName, http::HeaderValue)],
) -> usize {
    let mut still = 0;
    for request in requests.iter_mut() {
        if !headers.is_empty() {
            request
                .headers
                .retain(|(name, _)| !headers.iter().any(|(set, _)| set == name));
            request.headers.extend(headers.iter().cloned());
        }
        let in_headers = request
            .headers
            .iter()
            .any(|(_, value)| holds_redacted(value.as_bytes()));
        let in_uri = holds_redacted(request.uri.as_str().as_bytes());
        if in_headers || in_uri || holds_redacted(&request.body) {
            still += 1;
        }
    }
    still
}

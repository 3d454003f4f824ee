//! `shadowdiff replay`: recorded traffic sent through a private instance of the proxy (same engine, same store
//! as `serve`), with progress on the terminal and a summary table at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio_util::sync::CancellationToken;

use crate::app::{AppSettings, Application};
use crate::cli::driver::{self, Pace, Tally};
use crate::cli::progress::{Progress, Reading, Through};
use crate::cli::{CommandError, Outcome, summary};
use crate::encoding::holds_redacted;
use crate::pipeline::metrics::{DropReason, Queue};
use crate::proxy::metrics::UnshadowedReason;
use crate::store::queries::TimeRange;
use crate::traffic::reader::{Next, TrafficReader};
use crate::traffic::{self, Record, TrafficFormat, hosts};
use crate::values::UpstreamUrl;

/// Skipped records named one by one; past this many, only counted.
const NAMED_SKIPS: u64 = 20;

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
    /// Only requests sent to this host; `None`: for HAR files the host with the most entries, else all.
    pub host: Option<Authority>,
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
            host: None,
        }
    }
}

/// Replays through a private instance built from `settings` (its listeners are moved to loopback ports). The
/// file is read as the requests are sent, never collected.
pub async fn run(replay: ReplaySettings, mut settings: AppSettings) -> Outcome {
    let format = replay
        .format
        .unwrap_or_else(|| TrafficFormat::from_path(&replay.input));
    let input = replay.input.display().to_string();
    let host = match replay.host.clone() {
        Some(host) => Some(host),
        None if format == TrafficFormat::Har => main_host(&replay, format, &input).await?,
        None => None,
    };
    // The identity opens a sealed recording as it is read; the instance checks the keys again as it starts.
    let keys = settings
        .sealing
        .load()
        .map_err(|error| CommandError::new(error.to_string()))?;
    let reader = TrafficReader::open(&replay.input, format, keys.opener)?;
    let reading = Reading {
        read: reader.bytes_read(),
        total: reader.total_bytes(),
    };
    let counts = Arc::new(Counts::default());
    let host_label = host.as_ref().map(ToString::to_string);
    let mut selection = Selection {
        reader,
        host,
        filter: replay.filter.clone(),
        headers: replay.headers.clone(),
        counts: counts.clone(),
        input: input.clone(),
    };
    // The first request is found before the proxy starts, so that a file with none is a usage error.
    let Some(first) = selection.next().await else {
        return Err(nothing_to_replay(&selection, format));
    };

    let concurrency = replay.concurrency;
    let queue_room = settings.proxy.exchange_queue.min(settings.analysis.queue);
    let rate = replay.rate;
    let database_url = settings.store.database_url.clone();
    private_instance(&mut settings, &input);
    let app = Application::build(settings).await?;
    let run_id = app.run_id();
    let label = app.run_label().to_string();
    let (proxy_metrics, queue_metrics) = (app.proxy_metrics(), app.queue_metrics());
    let backlog = app.backlog();
    let reports = app.reports();
    let Ok(proxy) = format!("http://{}", app.proxy_addr()).parse::<UpstreamUrl>() else {
        return Err(CommandError::new("the replay proxy has no usable address"));
    };
    let stop_app = CancellationToken::new();
    let serving = tokio::spawn(app.run_until(stop_app.clone().cancelled_owned()));

    let tally = Arc::new(Tally::default());
    let progress = Progress::start("replay", Through::File(reading), tally.clone());
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
    let requests = futures_util::stream::unfold(
        (Some(first), selection),
        |(first, mut selection)| async move {
            let next = match first {
                Some(first) => Some(first),
                None => selection.next().await,
            };
            next.map(|request| (request, (None, selection)))
        },
    );
    driver::drive(
        &proxy,
        requests,
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

    let skipped = counts.skipped.load(Ordering::Relaxed);
    if skipped > NAMED_SKIPS {
        eprintln!(
            "warning: {input}: {} more malformed records skipped",
            skipped - NAMED_SKIPS
        );
    }
    let other_hosts = counts.other_host.load(Ordering::Relaxed);
    let to_host = counts.requests.load(Ordering::Relaxed) - other_hosts;
    if let (Some(host), true) = (&host_label, other_hosts > 0) {
        eprintln!("{input}: {other_hosts} requests to hosts other than {host} skipped");
    }
    let filtered = counts.filtered.load(Ordering::Relaxed);
    if filtered > 0 {
        eprintln!(
            "{input}: {filtered} of {to_host} requests left out by --include-path, --exclude-path or --methods"
        );
    }
    println!(
        "Replayed {} requests from {input} in {:.1} s ({:.0}/s): {} answered ({}), {} failed; {} records skipped.",
        tally.sent(),
        elapsed.as_secs_f64(),
        tally.sent() as f64 / elapsed.as_secs_f64().max(1e-9),
        tally.answered(),
        tally.classes(),
        tally.failed(),
        skipped,
    );
    let unshadowed: Vec<String> = UnshadowedReason::ALL
        .iter()
        .filter(|reason| proxy_metrics.unshadowed_count(**reason) > 0)
        .map(|reason| {
            format!(
                "{} {}",
                proxy_metrics.unshadowed_count(*reason),
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
    let still_redacted = counts.still_redacted.load(Ordering::Relaxed);
    if still_redacted > 0 {
        println!(
            "{still_redacted} requests still carried redacted values (credentials kept only as hashes): \
             upstreams likely refused them; set real ones with --header 'Authorization: ...'"
        );
    }
    let dropped = queue_metrics.dropped_count(Queue::Exchanges, DropReason::QueueFull)
        + queue_metrics.dropped_count(Queue::Analyses, DropReason::QueueFull);
    if dropped > 0 {
        println!(
            "{dropped} exchanges dropped for want of queue room: lower --concurrency or --rate"
        );
    }
    let report = async {
        let info = reports
            .store()
            .run(&label)
            .await?
            .filter(|run| run.id == run_id)
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

/// For a HAR file without `--host`: the host with the most entries, found by a first streaming pass and said.
async fn main_host(
    replay: &ReplaySettings,
    format: TrafficFormat,
    input: &str,
) -> Result<Option<Authority>, CommandError> {
    let path = replay.input.clone();
    let main = tokio::task::spawn_blocking(move || hosts::main_host(&path, format))
        .await
        .map_err(|error| CommandError::new(format!("{input}: reading stopped: {error}")))??;
    let Some(main) = main else {
        return Ok(None);
    };
    let Ok(host) = main.host.parse::<Authority>() else {
        return Ok(None);
    };
    if main.hosts > 1 {
        eprintln!(
            "{input}: replaying the {} requests to {} (the host with the most of its {} requests; {} other \
             hosts skipped; --host chooses another)",
            main.requests,
            main.host,
            main.of,
            main.hosts - 1
        );
    }
    Ok(Some(host))
}

/// What reading the file has met so far.
#[derive(Debug, Default)]
struct Counts {
    /// Usable requests read, to any host.
    requests: AtomicU64,
    skipped: AtomicU64,
    other_host: AtomicU64,
    filtered: AtomicU64,
    still_redacted: AtomicU64,
    /// Where the file stopped being its format, if it did.
    broken: std::sync::Mutex<Option<String>>,
}

/// The file's requests that are sent: read one by one, counted, chosen by host and filters, with the set headers.
struct Selection {
    reader: TrafficReader,
    host: Option<Authority>,
    filter: ReplayFilter,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    counts: Arc<Counts>,
    input: String,
}

impl Selection {
    /// The next request to send; `None` when the file has no more (or stopped being readable, said once).
    async fn next(&mut self) -> Option<traffic::TrafficRequest> {
        let counts = &self.counts;
        loop {
            match self.reader.next().await? {
                Next::Record(Record::Request(mut request)) => {
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    if let Some(host) = &self.host
                        && !hosts::host_matches(host, request.authority.as_ref())
                    {
                        counts.other_host.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if !self.filter.keeps(&request) {
                        counts.filtered.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if with_headers(&mut request, &self.headers) {
                        counts.still_redacted.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(request);
                }
                Next::Record(Record::Skipped(skipped)) => {
                    if counts.skipped.fetch_add(1, Ordering::Relaxed) < NAMED_SKIPS {
                        eprintln!("warning: {}: {skipped}: record skipped", self.input);
                    }
                }
                // GoReplay's responses: not requests, and not errors.
                Next::Record(Record::Ignored) => {}
                Next::Broken(reason) => {
                    if counts.requests.load(Ordering::Relaxed) > 0 {
                        eprintln!("warning: {}: {reason}", self.input);
                    }
                    if let Ok(mut broken) = counts.broken.lock() {
                        *broken = Some(reason);
                    }
                    return None;
                }
            }
        }
    }
}

/// Why a file gave nothing to send.
fn nothing_to_replay(selection: &Selection, format: TrafficFormat) -> CommandError {
    let counts = &selection.counts;
    let input = &selection.input;
    let requests = counts.requests.load(Ordering::Relaxed);
    let broken = counts.broken.lock().ok().and_then(|broken| broken.clone());
    if requests == 0 {
        if let Some(reason) = broken {
            return CommandError::new(format!("{input}: {reason}"));
        }
        return CommandError::new(format!(
            "{input}: no requests to replay ({} records skipped; is it {} as --format says?)",
            counts.skipped.load(Ordering::Relaxed),
            format.as_str()
        ));
    }
    let other_hosts = counts.other_host.load(Ordering::Relaxed);
    match &selection.host {
        Some(host) if other_hosts == requests => CommandError::new(format!(
            "{input}: none of its {requests} requests went to {host} (--host)"
        )),
        _ => CommandError::new(format!(
            "{input}: the filters leave none of its {} requests to replay",
            requests - other_hosts
        )),
    }
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

/// Sets `headers` on the request (replacing recorded ones of the same name); says whether it still carries a
/// redacted value somewhere (a header, the query, the body).
fn with_headers(
    request: &mut traffic::TrafficRequest,
    headers: &[(http::HeaderName, http::HeaderValue)],
) -> bool {
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
    in_headers || in_uri || holds_redacted(&request.body)
}

//! One running instance: binds both listeners, wires the proxy, the analysis stage and the admin routes, and
//! runs until told to stop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufWriter;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::analysis::aggregate::VerdictSettings;
use crate::analysis::keys::KeyPositions;
use crate::analysis::rules::RulesError;
use crate::analysis::{Analysis, AnalysisSettings, Analyzer};
use crate::budget::{MemoryBudget, Stage};
use crate::endpoint::{EndpointNamer, NamingSettings};
use crate::exchange::{Exchange, Target};
use crate::grpc::schema::SchemaError;
use crate::lane::{Lane, LaneSettings};
use crate::metrics::Metrics;
use crate::monitor::MonitorSettings;
use crate::notify::NotifySettings;
use crate::pipeline::metrics::{Queue, QueueMetrics};
use crate::pipeline::recorder::{self, Recording};
use crate::pipeline::{self, AnalysisSink, LearnSchemas};
use crate::proxy::callers::CallerListeners;
use crate::proxy::fanout::UpstreamPools;
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::reflection::SchemaReflection;
use crate::proxy::server::ListenerLimits;
use crate::proxy::upstream::{ClientError, UpstreamClient, UpstreamSettings, tls_config};
use crate::proxy::{Proxy, ProxySettings};
use crate::redact::values::ValuePatterns;
use crate::redact::{RedactionSettings, Redactor};
use crate::report::Reports;
use crate::runs::RunControl;
use crate::store::health::StoreHealth;
use crate::store::sample::SampleLimits;
use crate::store::writer::{WriterConfig, WriterSettings};
use crate::store::{Store, StoreError, StoreSettings};
use crate::web::WebSettings;
use crate::{seal::KeyFileError, seal::SealingSettings, store::sealed::SampleReading};

mod run;

/// Why the instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr} for the {listener} listener: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("upstream client: {0}")]
    Client(#[from] ClientError),
    #[error("rules file {0}")]
    Rules(#[from] RulesError),
    #[error("gRPC schema {0}")]
    Schema(#[from] SchemaError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("cannot start the shadow threads: {0}")]
    Lane(io::Error),
    #[error("{0}")]
    Keys(#[from] KeyFileError),
}

/// Everything one running instance is told, one plain struct per component. The command line converts into
/// this once; replay, the demo and tests change fields of [`AppSettings::new`].
#[derive(Clone, Debug)]
pub struct AppSettings {
    pub upstreams: UpstreamSettings,
    pub proxy: ProxySettings,
    pub lane: LaneSettings,
    pub naming: NamingSettings,
    /// What all shadow work may hold, in bytes.
    pub memory_budget: usize,
    pub analysis: AnalysisSettings,
    pub verdicts: VerdictSettings,
    pub store: StoreSettings,
    pub writer: WriterSettings,
    pub redaction: RedactionSettings,
    pub sealing: SealingSettings,
    pub web: WebSettings,
    pub monitor: MonitorSettings,
    pub notify: NotifySettings,
}

impl AppSettings {
    /// The three upstreams, with every other setting at its default.
    pub fn new(upstreams: UpstreamSettings) -> Self {
        Self {
            upstreams,
            proxy: ProxySettings::default(),
            lane: LaneSettings::default(),
            naming: NamingSettings::default(),
            memory_budget: MemoryBudget::DEFAULT_LIMIT,
            analysis: AnalysisSettings::default(),
            verdicts: VerdictSettings::default(),
            store: StoreSettings::default(),
            writer: WriterSettings::default(),
            redaction: RedactionSettings::default(),
            sealing: SealingSettings::default(),
            web: WebSettings::default(),
            monitor: MonitorSettings::default(),
            notify: NotifySettings::default(),
        }
    }
}

/// Reads the number of exchanges in shadow work or waiting between stages.
pub type Backlog = Arc<dyn Fn() -> usize + Send + Sync>;

/// A built instance, listening but not yet serving.
pub struct Application {
    /// The proxy's listening socket, a handle of it per caller thread.
    proxy_listeners: CallerListeners,
    admin_listener: TcpListener,
    /// The caller's path, shared by every connection.
    proxy: Arc<Proxy>,
    /// Counters of this instance (each instance has its own, so tests in one process do not mix).
    metrics: Arc<Metrics>,
    analyzer: Arc<Analyzer>,
    analysis_workers: usize,
    /// With `--grpc-reflection`: what asks primary for the schemas of the services calls name.
    reflection: Option<Box<dyn LearnSchemas>>,
    /// The receiving end of the exchange queue, until someone takes it or `run_until` analyses it.
    exchanges: Option<mpsc::Receiver<Exchange>>,
    /// Items waiting in the exchange and analysis queues.
    backlog: Backlog,
    run_label: String,
    /// The run being written, switched without a restart from the API or a deployment hook.
    runs: Arc<RunControl>,
    /// The record file and its queue, with `--record`.
    recordings: Option<(BufWriter<tokio::fs::File>, mpsc::Receiver<Recording>)>,
    analyses_sink: AnalysisSink,
    /// The receiving end of the analysis queue, until someone takes it or `run_until` stores it.
    analyses: Option<mpsc::Receiver<Analysis>>,
    store: Store,
    /// Where the writer opens connections of its own, from a lane thread.
    store_settings: StoreSettings,
    writer_config: WriterConfig,
    /// Names exchanges; shared by the proxy (which names) and the writer (which stores what it learns).
    namer: Arc<EndpointNamer>,
    /// The object positions learned as maps: taught by the analysis, stored and adopted by the writer.
    keys: Arc<KeyPositions>,
    /// `--max-places-per-endpoint`, for the writer.
    max_places_per_endpoint: usize,
    /// What all shadow work may hold.
    budget: Arc<MemoryBudget>,
    /// The threads shadow work runs on.
    lane: Arc<Lane>,
    /// The writer's view of the store, for readiness and the dashboard.
    store_health: Arc<StoreHealth>,
    redactor: Redactor,
    /// The proxy listener's connection cap, head timeout and shutdown grace.
    listener_limits: ListenerLimits,
    shadow_timeout: Duration,
    verdicts: VerdictSettings,
    /// The admin listener's settings: its token, public URL, names and session length.
    web: WebSettings,
    monitor: MonitorSettings,
    /// `--notify-url` receivers, with the TLS their https URLs need.
    notify: Option<(NotifySettings, rustls::ClientConfig)>,
}

impl Application {
    /// Binds the listeners (port 0 picks a free port) and builds every part.
    pub async fn build(mut settings: AppSettings) -> Result<Self, StartupError> {
        if settings.upstreams.http2
            && (settings.proxy.shadow.preserve_host || settings.proxy.shadow.host_suffix)
        {
            // Over HTTP/2 the host is the :authority, which must name the host connected to.
            return Err(StartupError::Config(
                "--preserve-host and --shadow-host-suffix need HTTP/1.1 upstreams; drop --upstream-http2".into(),
            ));
        }
        let keys = settings.sealing.load()?;
        let mut analysis = settings.analysis.config()?;
        analysis.grpc = settings.analysis.grpc.load()?;
        // The rules file's `[[sample]]` rates decide, per endpoint, what the proxy shadows.
        settings.proxy.shadow.endpoint_rates = analysis.rules.sampling().to_vec();
        // And its `[[rewrite]]`s what secondary and candidate are sent.
        settings.proxy.shadow.rewrites = analysis.rules.rewrites().clone();
        let analyzer = Analyzer::new(analysis);
        let tls = tls_config(settings.upstreams.ca_file.as_deref())?;
        // One set of clients (so of pools) per thread that sends: a connection is driven by its own thread.
        let client_sets = |threads: usize| -> Vec<[UpstreamClient; 3]> {
            (0..threads)
                .map(|_| {
                    Target::ALL.map(|target| {
                        UpstreamClient::new(
                            &settings.upstreams,
                            settings.upstreams.url(target),
                            tls.clone(),
                        )
                    })
                })
                .collect()
        };
        let reflection = settings.analysis.grpc.reflection.then(|| {
            let primary = settings.upstreams.url(Target::Primary);
            Box::new(SchemaReflection::new(
                UpstreamClient::new(&settings.upstreams, primary, tls.clone()),
                primary.clone(),
                analyzer.config().grpc.clone(),
                settings.upstreams.shadow_timeout,
            )) as Box<dyn LearnSchemas>
        });
        let caller_threads = settings.proxy.caller_thread_count();
        let clients = client_sets(caller_threads);
        let lane = Lane::start(&settings.lane, crate::values::one_per_core(None))
            .map_err(StartupError::Lane)?;
        let shadow_clients = client_sets(lane.threads());
        let addr = settings.proxy.listen;
        let proxy_listeners =
            CallerListeners::bind(addr, caller_threads).map_err(|source| StartupError::Bind {
                listener: "proxy",
                addr,
                source,
            })?;
        let admin_listener = bind("admin", settings.web.listen).await?;
        let store = Store::open(&settings.store).await?;
        let redaction_key = store
            .redaction_key(settings.redaction.key.as_deref())
            .await?;
        let value_patterns = ValuePatterns::new(
            &settings.redaction.values,
            analyzer.config().rules.value_patterns(),
        )
        .map_err(StartupError::Config)?;
        let redactor =
            Redactor::with(redaction_key, &settings.redaction).with_values(value_patterns);
        let store = store.with_reading(SampleReading::of(&keys, &redactor, &settings.redaction));
        let fallback = default_run_label(&settings.upstreams);
        let urls = settings.upstreams.run_urls();
        let first = crate::runs::first_run(
            &store,
            settings.writer.run.as_deref(),
            &fallback,
            urls.each_ref().map(String::as_str),
        )
        .await?;
        let (run_id, label) = (first.id, first.label.clone());
        let follows = settings.writer.run.is_none();
        let runs = Arc::new(RunControl::new(store.clone(), urls.clone(), first, follows));
        tracing::info!(run = %label, store = store.backend().as_str(), "storing comparisons");
        let writer_config = WriterConfig {
            run_id,
            run_label: label.clone(),
            run_urls: urls.clone(),
            writer_id: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            flush_interval: settings.writer.flush_interval,
            batch_rows: settings.writer.batch_rows,
            max_pending_rows: settings.writer.buffer_rows,
            samples_per_path: settings.writer.samples_per_path,
            sample_limits: SampleLimits::new(
                analyzer.config().max_decoded_body,
                settings.writer.sample_body_limit,
            ),
            retention: (!settings.writer.retention.is_zero()).then_some(settings.writer.retention),
            sealer: keys.sealer,
            sample_retention: settings.writer.sample_retention,
        };
        let metrics = Arc::new(Metrics::new());
        let budget = MemoryBudget::counted(settings.memory_budget, metrics.budget.clone());
        let held = budget.clone();
        metrics.register_scrape_gauge_per(
            "memory_bytes",
            "Bytes held by shadow work against --memory-budget, per stage",
            "stage",
            Stage::ALL,
            Stage::as_str,
            move |stage| held.held(stage) as i64,
        );
        let limit = budget.limit() as i64;
        metrics.register_scrape_gauge(
            "memory_budget_bytes",
            "--memory-budget: what shadow work may hold",
            "",
            move || vec![("", limit)],
        );
        if crate::telemetry::heap_stats().is_some() {
            metrics.register_scrape_gauge(
                "heap_bytes",
                "The process's heap as its allocator counts it: allocated (in use), active (in pages handed \
                 out), resident",
                "kind",
                || {
                    let heap = crate::telemetry::heap_stats().unwrap_or_default();
                    vec![
                        ("allocated", heap.allocated as i64),
                        ("active", heap.active as i64),
                        ("resident", heap.resident as i64),
                    ]
                },
            );
        }
        let namer = Arc::new(EndpointNamer::new(
            settings.naming.clone(),
            metrics.endpoints_overflowed.clone(),
        ));
        let keys = Arc::new(KeyPositions::new(
            &settings.analysis.keys,
            metrics.key_positions_unfollowed.clone(),
        ));
        let analyzer = Arc::new(analyzer.with_keys(keys.clone()));

        let max_inflight = settings.proxy.shadow.max_inflight;
        let inflight = Target::ALL.map(|_| Arc::new(Semaphore::new(max_inflight)));
        let permits = inflight.clone();
        metrics.register_scrape_gauge_per(
            "shadow_inflight",
            "Background (shadow) requests in flight per upstream",
            "target",
            Target::ALL,
            Target::as_str,
            move |target| (max_inflight - permits[target.index()].available_permits()) as i64,
        );

        let (exchange_sink, exchanges) = pipeline::channel(
            Queue::Exchanges,
            settings.proxy.exchange_queue,
            metrics.queues.clone(),
        );
        let (analyses_sink, analyses) = pipeline::channel(
            Queue::Analyses,
            settings.analysis.queue,
            metrics.queues.clone(),
        );
        let exchange_depth = exchange_sink.depth_reader();
        let analysis_depth = analyses_sink.depth_reader();
        let backlog: Backlog = {
            let (exchanges, analyses) =
                (exchange_sink.depth_reader(), analyses_sink.depth_reader());
            let shadowing = lane.tasks().clone();
            Arc::new(move || shadowing.len() + exchanges() + analyses())
        };
        metrics.register_scrape_gauge(
            "queue_depth",
            "Items waiting in each queue between stages",
            "queue",
            move || {
                vec![
                    (Queue::Exchanges.as_str(), exchange_depth() as i64),
                    (Queue::Analyses.as_str(), analysis_depth() as i64),
                ]
            },
        );

        let mut proxy = Proxy::new(
            &settings.proxy,
            &settings.upstreams,
            UpstreamPools {
                clients,
                shadow_clients,
                inflight,
                lane: lane.clone(),
            },
            exchange_sink,
            namer.clone(),
            budget.clone(),
            metrics.proxy.clone(),
        );
        let recordings = match &settings.proxy.record {
            Some(path) => {
                let file = recorder::open(path).await.map_err(|error| {
                    StartupError::Config(format!(
                        "cannot open the record file {}: {error}",
                        path.display()
                    ))
                })?;
                let (sink, rx) = pipeline::channel(
                    Queue::Recordings,
                    settings.proxy.exchange_queue,
                    metrics.queues.clone(),
                );
                proxy = proxy.with_recorder(sink);
                tracing::info!(file = %path.display(), "recording shadowed requests");
                Some((file, rx))
            }
            None => None,
        };
        let proxy = Arc::new(proxy);
        let notify = if settings.notify.urls.is_empty() {
            None
        } else {
            let mut notify = settings.notify.clone();
            notify.dashboard = notify.dashboard.or_else(|| settings.web.public_url.clone());
            Some((notify, tls_config(None)?))
        };
        Ok(Self {
            proxy_listeners,
            admin_listener,
            proxy,
            metrics,
            analyzer,
            analysis_workers: settings.analysis.worker_count(),
            reflection,
            exchanges: Some(exchanges),
            backlog,
            run_label: label,
            runs,
            recordings,
            analyses_sink,
            analyses: Some(analyses),
            store,
            store_settings: settings.store.clone(),
            writer_config,
            namer,
            keys,
            max_places_per_endpoint: settings.writer.max_places_per_endpoint,
            budget,
            lane,
            store_health: Arc::new(StoreHealth::default()),
            redactor,
            listener_limits: ListenerLimits {
                max_connections: settings.proxy.max_connections,
                header_timeout: settings.proxy.header_timeout,
                grace: settings.proxy.shutdown_grace,
            },
            shadow_timeout: settings.upstreams.shadow_timeout,
            verdicts: settings.verdicts,
            monitor: settings.monitor,
            notify,
            web: settings.web,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_listeners.local_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// Every metric of this instance (tests read them).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// What the caller's path counts: requests, and those not shadowed and why.
    pub fn proxy_metrics(&self) -> ProxyMetrics {
        self.metrics.proxy.clone()
    }

    /// Items handed on and dropped between the stages.
    pub fn queue_metrics(&self) -> QueueMetrics {
        self.metrics.queues.clone()
    }

    /// Takes the exchange queue, to consume raw exchanges elsewhere; `run_until` then analyses nothing.
    pub fn take_exchanges(&mut self) -> Option<mpsc::Receiver<Exchange>> {
        self.exchanges.take()
    }

    /// Whether the admin listener needs a token.
    pub fn admin_protected(&self) -> bool {
        self.web.token.is_some()
    }

    /// The store this instance writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads how many exchanges are being shadowed or wait for analysis or storage: a sender that must not lose
    /// any (replay) waits while it is high, since shadow work yields to callers and is shed when it falls behind.
    pub fn backlog(&self) -> Backlog {
        self.backlog.clone()
    }

    /// This instance's runs judged as its dashboard judges them: under the rules file and the stored rules.
    pub fn reports(&self) -> Reports {
        Reports::new(
            self.store.clone(),
            Arc::new(self.analyzer.config().rules.clone()),
            self.verdicts.clone(),
        )
    }

    /// The run being written now, and the means to start another.
    pub fn runs(&self) -> Arc<RunControl> {
        self.runs.clone()
    }

    /// The label of the run this instance started storing into.
    pub fn run_label(&self) -> &str {
        &self.run_label
    }

    /// The id of the run this instance started storing into.
    pub fn run_id(&self) -> i64 {
        self.writer_config.run_id
    }

    /// Takes the analysis queue, to consume analysed exchanges elsewhere; `run_until` then stores nothing.
    pub fn take_analyses(&mut self) -> Option<mpsc::Receiver<Analysis>> {
        self.analyses.take()
    }
}

/// How long the last notifications (the summary among them) may take to send at shutdown.
const NOTIFY_GRACE: Duration = Duration::from_secs(10);

/// Connections the writer opens for itself: it writes one batch at a time, beside a heartbeat.
const WRITER_CONNECTIONS: u32 = 2;

/// `candidate-host:port@2026-11-23T10:15:00Z`: which candidate, since when.
fn default_run_label(upstreams: &UpstreamSettings) -> String {
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    format!("{}@{started}", upstreams.candidate.authority())
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind {
            listener,
            addr,
            source,
        })
}

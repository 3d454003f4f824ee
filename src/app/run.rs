//! Serving until shutdown: every stage after the proxy spawned on the lane, then drained stage by stage.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Application, NOTIFY_GRACE, WRITER_CONNECTIONS};
use crate::monitor::Monitor;
use crate::notify::Notifier;
use crate::pipeline::metrics::{DropReason, Queue};
use crate::pipeline::recorder;
use crate::pipeline::{self, AnalysisStage};
use crate::store::Store;
use crate::store::writer::Writer;
use crate::web;
use crate::web::guard::AdminGuard;

impl Application {
    /// Serves until `shutdown` resolves; then lets in-flight caller requests finish (up to `--shutdown-grace`),
    /// waits for background requests (up to `--shadow-timeout`), and drains each stage in turn.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let proxy_addr = self.proxy_addr();
        let reports = self.reports();
        let stop_analysis = CancellationToken::new();
        let stop_consumer = CancellationToken::new();
        // Every stage after the proxy runs on the lane, below the callers' priority.
        let analysis = self.exchanges.map(|rx| {
            self.lane.spawn_stage(
                0,
                pipeline::analyse(
                    rx,
                    stop_analysis.clone(),
                    AnalysisStage {
                        analyzer: self.analyzer.clone(),
                        workers: self.analysis_workers,
                        budget: self.budget.clone(),
                        metrics: self.metrics.analysis.clone(),
                        out: self.analyses_sink.clone(),
                        reflection: self.reflection,
                    },
                ),
            )
        });
        drop(self.analyses_sink);
        let recorder = self.recordings.map(|(file, rx)| {
            self.lane.spawn_stage(
                1,
                recorder::run(
                    file,
                    rx,
                    (self.redactor.clone(), self.writer_config.sealer.clone()),
                    recorder::BodyFormats {
                        max_decoded_body: self.analyzer.config().max_decoded_body,
                        grpc: self.analyzer.config().grpc.clone(),
                        warned_no_schema: false,
                    },
                    self.metrics.queues.clone(),
                    stop_analysis.clone(),
                ),
            )
        });
        let consumer = self.analyses.map(|rx| {
            let shared = self.store.clone();
            let url = self.store_settings.database_url.clone();
            let (config, redactor, metrics) = (
                self.writer_config.clone(),
                self.redactor.clone(),
                self.metrics.store.clone(),
            );
            let (keys, max_places) = (self.keys.clone(), self.max_places_per_endpoint);
            let (namer, budget, health, switches) = (
                self.namer.clone(),
                self.budget.clone(),
                self.store_health.clone(),
                self.runs.subscribe(),
            );
            let rewrites = self.analyzer.config().rules.rewrites().clone();
            // The store's active-run pointer is read beside the writer, at its flush interval, rather than by it:
            // the writer is only told of switches.
            let follower = self.lane.spawn_stage(
                0,
                self.runs
                    .clone()
                    .follow_every(config.flush_interval, stop_consumer.clone()),
            );
            let stop = stop_consumer.clone();
            let writer = self.lane.spawn_stage(self.lane.threads() - 1, async move {
                // Connections of its own, opened from a lane thread: SQLite's connection threads inherit its
                // priority, and PostgreSQL's are driven by it.
                let store = match Store::connect(&url, WRITER_CONNECTIONS).await {
                    Ok(store) => store,
                    Err(error) => {
                        tracing::warn!(%error, "the writer could not open connections of its own; sharing the dashboard's");
                        shared
                    }
                };
                Writer::new(store, config, redactor, metrics)
                    .with_namer(namer)
                    .with_keys(keys, max_places)
                    .with_budget(&budget)
                    .with_health(health)
                    .with_runs(switches)
                    .with_rewrites(rewrites)
                    .run(rx, stop)
                    .await
            });
            (writer, follower)
        });

        let notifier = self.notify.map(|(settings, tls)| {
            let (notifier, sender) = Notifier::start(settings, tls, self.metrics.notify.clone());
            (notifier, self.lane.spawn_stage(0, sender))
        });
        let stop_monitor = CancellationToken::new();
        let monitor = self.lane.spawn_stage(
            0,
            Monitor::new(
                reports.clone(),
                self.runs.clone(),
                self.metrics.verdict.clone(),
                notifier.as_ref().map(|(notifier, _)| notifier.clone()),
                self.monitor.clone(),
            )
            .run(stop_monitor.clone()),
        );

        // With --graphql-introspect; otherwise it returns at once.
        let stop_introspection = CancellationToken::new();
        let introspection = self.lane.spawn_stage(
            0,
            self.proxy
                .clone()
                .introspect_graphql(stop_introspection.clone()),
        );

        let draining = CancellationToken::new();
        let admin_router = web::router(web::AdminState {
            metrics: self.metrics.exposition(),
            draining: draining.clone(),
            reports,
            edits: web::edits::Edits::new(self.store.clone()),
            token: self.web.token.as_deref().map(Arc::from),
            proxy_addr: Some(proxy_addr),
            store_health: Some(self.store_health.clone()),
            samples_per_path: self.writer_config.samples_per_path,
            runs: Some(self.runs.clone()),
            guard: Arc::new(AdminGuard::new(
                self.admin_listener
                    .local_addr()
                    .expect("a bound listener has a local address"),
                &self.web.allowed_hosts,
                self.web.public_url.as_ref(),
                self.web.token.is_some(),
            )),
            session_ttl: self.web.session_ttl,
            secure_cookie: self
                .web
                .public_url
                .as_ref()
                .is_some_and(|url| url.scheme_str() == Some("https")),
            grpc: self.analyzer.config().grpc.clone(),
        });
        let admin_stop = stop_consumer.clone();
        let admin_listener = self.admin_listener;
        let admin = tokio::spawn(async move {
            let served = axum::serve(
                admin_listener,
                admin_router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(admin_stop.cancelled_owned())
            .await;
            if let Err(error) = served {
                tracing::error!(%error, "admin listener failed");
            }
        });

        let shutdown = async move {
            shutdown.await;
            draining.cancel();
        };
        let served = crate::proxy::callers::serve(
            self.proxy_listeners,
            self.proxy.clone(),
            shutdown,
            self.listener_limits,
        )
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "could not start the caller threads; stopping");
        }

        // Its round under way ends within --shadow-timeout, and hands its exchange on like the proxy's.
        stop_introspection.cancel();
        let _ = introspection.await;
        let tasks = self.proxy.tasks();
        tasks.close();
        if tokio::time::timeout(self.shadow_timeout, tasks.wait())
            .await
            .is_err()
        {
            let lost = tasks.len();
            tracing::warn!(
                still_running = lost,
                "background requests still running at shutdown; their exchanges are lost"
            );
            for _ in 0..lost {
                self.metrics
                    .queues
                    .dropped(Queue::Exchanges, DropReason::Shutdown);
            }
        }
        stop_analysis.cancel();
        if let Some(analysis) = analysis {
            let _ = analysis.await;
        }
        if let Some(recorder) = recorder {
            let _ = recorder.await;
        }
        stop_consumer.cancel();
        if let Some((writer, follower)) = consumer {
            let _ = writer.await;
            let _ = follower.await;
        }
        // After the writer's last batch, so that the summary counts everything.
        stop_monitor.cancel();
        let _ = monitor.await;
        if let Some((notifier, sender)) = notifier {
            drop(notifier);
            if tokio::time::timeout(NOTIFY_GRACE, sender).await.is_err() {
                tracing::warn!("notifications still unsent at shutdown were dropped");
            }
        }
        let _ = admin.await;
        tracing::info!("shadowdiff stopped");
    }
}

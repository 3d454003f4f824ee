//! Test support: the app started in process on port 0, stub upstreams, and a guard against hangs.

pub mod browser;
pub mod db;
pub mod heap;
pub mod process;
pub mod stub;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shadowdiff::analysis::Analysis;
use shadowdiff::app::{AppSettings, Application, Backlog};
use shadowdiff::exchange::Exchange;
use shadowdiff::metrics::Metrics;
use shadowdiff::proxy::upstream::UpstreamSettings;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Defines, for each named `async fn(TestDb)`, a test on a SQLite file and one on PostgreSQL.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(crate::support::db::TestDb::sqlite()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = crate::support::db::TestDb::postgres().await {
                    super::$test(db).await
                }
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// Polls `condition` until it holds, failing the test with `what` if it never does. The pause between polls
/// only paces the polling; nothing is asserted about time.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    patience(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Polls an async `condition` until it holds (see [`wait_until`]).
pub async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    patience(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// How long a test waits for something that should happen before calling it a hang. Not a speed assertion:
/// it only turns a deadlock into a failure with a message.
const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test with `what` if it never completes.
pub async fn patience<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("gave up waiting for {what}"),
    }
}

/// Settings of an instance in front of these three upstreams, on free loopback ports, with every other
/// setting at its default and then changed by `change`.
pub fn settings(
    primary: &str,
    secondary: &str,
    candidate: &str,
    change: impl FnOnce(&mut AppSettings),
) -> AppSettings {
    let url = |text: &str| text.parse().expect("a test upstream URL");
    let mut settings = AppSettings::new(UpstreamSettings::new(
        url(primary),
        url(secondary),
        url(candidate),
    ));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.proxy.listen = loopback;
    settings.web.listen = loopback;
    change(&mut settings);
    settings
}

/// Three upstreams: primary, secondary and candidate.
pub struct Upstreams {
    pub primary: stub::Stub,
    pub secondary: stub::Stub,
    pub candidate: stub::Stub,
}

impl Upstreams {
    /// Three upstreams that all answer `body` as JSON.
    pub async fn json(body: &'static str) -> Upstreams {
        Upstreams {
            primary: stub::Stub::json(body).await,
            secondary: stub::Stub::json(body).await,
            candidate: stub::Stub::json(body).await,
        }
    }
}

/// Where a test taps the pipeline.
enum Tap {
    /// Raw exchanges, before analysis.
    Exchanges(mpsc::Receiver<Exchange>),
    /// Analysed exchanges, after analysis.
    Analyses(mpsc::Receiver<Analysis>),
    /// Nothing: everything goes to the store.
    Stored,
}

/// A fresh SQLite store in a directory of its own, removed with the guard.
pub fn temp_database() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shadowdiff.db").display());
    (dir, url)
}

/// A running instance whose exchanges (or analyses) the test reads.
pub struct TestApp {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The admin token it was given, if any.
    pub admin_token: Option<String>,
    pub metrics: Arc<Metrics>,
    /// Exchanges in shadow work or waiting between stages (as replay reads it).
    pub backlog: Backlog,
    tap: Tap,
    _database: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestApp {
    /// An instance whose raw exchanges the test reads (nothing is analysed).
    pub async fn start(
        primary: &str,
        secondary: &str,
        candidate: &str,
        change: impl FnOnce(&mut AppSettings),
    ) -> TestApp {
        Self::start_tapped(primary, secondary, candidate, change, Some(false), None).await
    }

    /// An instance in front of `upstreams` whose raw exchanges the test reads.
    pub async fn start_for(
        upstreams: &Upstreams,
        change: impl FnOnce(&mut AppSettings),
    ) -> TestApp {
        Self::start(
            &upstreams.primary.url(),
            &upstreams.secondary.url(),
            &upstreams.candidate.url(),
            change,
        )
        .await
    }

    /// Three upstreams answering `body` as JSON and an instance in front of them (raw exchanges tapped), in
    /// one call.
    pub async fn with_json_upstreams(
        body: &'static str,
        change: impl FnOnce(&mut AppSettings),
    ) -> (TestApp, Upstreams) {
        let upstreams = Upstreams::json(body).await;
        let app = Self::start_for(&upstreams, change).await;
        (app, upstreams)
    }

    /// The instance's `/metrics` text, as a scraper reads it.
    pub async fn scrape(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .expect("read /metrics")
    }

    /// An instance whose analysed exchanges the test reads.
    pub async fn start_analysed(
        primary: &str,
        secondary: &str,
        candidate: &str,
        change: impl FnOnce(&mut AppSettings),
    ) -> TestApp {
        Self::start_tapped(primary, secondary, candidate, change, Some(true), None).await
    }

    /// An instance that stores everything in `database_url`, as in production.
    pub async fn start_stored(
        primary: &str,
        secondary: &str,
        candidate: &str,
        change: impl FnOnce(&mut AppSettings),
        database_url: &str,
    ) -> TestApp {
        Self::start_tapped(
            primary,
            secondary,
            candidate,
            change,
            None,
            Some(database_url),
        )
        .await
    }

    async fn start_tapped(
        primary: &str,
        secondary: &str,
        candidate: &str,
        change: impl FnOnce(&mut AppSettings),
        analysed: Option<bool>,
        database_url: Option<&str>,
    ) -> TestApp {
        let (database, temp_url) = temp_database();
        let url = database_url.map_or(temp_url, str::to_string);
        let settings = settings(primary, secondary, candidate, |settings| {
            settings.store.database_url = url;
            change(settings);
        });
        let admin_token = settings.web.token.clone();
        let mut app = Application::build(settings).await.expect("app starts");
        let tap = match analysed {
            Some(true) => Tap::Analyses(app.take_analyses().expect("analyses not taken yet")),
            Some(false) => Tap::Exchanges(app.take_exchanges().expect("exchanges not taken yet")),
            None => Tap::Stored,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let proxy = app.proxy_addr();
        let admin = app.admin_addr();
        let metrics = app.metrics();
        let backlog = app.backlog();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        TestApp {
            proxy,
            admin,
            admin_token,
            metrics,
            backlog,
            tap,
            _database: database,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts down gracefully (everything in flight is analysed and stored) and waits until it has.
    pub async fn stop(mut self) {
        let stopped = self.begin_shutdown();
        patience("the instance to stop", stopped)
            .await
            .expect("instance task");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The next completed exchange.
    pub async fn next_exchange(&mut self) -> Exchange {
        let Tap::Exchanges(exchanges) = &mut self.tap else {
            panic!("this instance taps analyses; use next_analysis")
        };
        patience("an exchange", exchanges.recv())
            .await
            .expect("exchange queue open")
    }

    /// An exchange already queued, if any, without waiting.
    pub fn try_exchange(&mut self) -> Option<Exchange> {
        match &mut self.tap {
            Tap::Exchanges(exchanges) => exchanges.try_recv().ok(),
            Tap::Analyses(_) | Tap::Stored => panic!("this instance does not tap raw exchanges"),
        }
    }

    /// The next analysed exchange.
    pub async fn next_analysis(&mut self) -> Analysis {
        let Tap::Analyses(analyses) = &mut self.tap else {
            panic!("this instance taps raw exchanges; use next_exchange")
        };
        patience("an analysis", analyses.recv())
            .await
            .expect("analysis queue open")
    }

    /// Starts a graceful shutdown and returns the task that completes when the instance has stopped.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("not shut down yet")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// An HTTP client that never goes through a system proxy, and gives up (failing the test) rather than hang.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// The text a GET of `url` answers (the test fails if it cannot be fetched).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The JSON a GET of `url` answers.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

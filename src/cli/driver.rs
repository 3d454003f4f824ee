//! Sends requests to a proxy, as `replay` and the demo's traffic do: at most N at once, at most R per second,
//! until the requests run out or it is told to stop; tallies what came back.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::headers::strip_hop_by_hop;
use crate::traffic::TrafficRequest;
use crate::values::UpstreamUrl;

/// What came back so far, readable while requests are still being sent.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: AtomicU64,
    /// Answers by status class: index 1 for 1xx up to 5 for 5xx (0: anything else).
    pub answered: [AtomicU64; 6],
    /// Requests that got no answer (the proxy unreachable, the connection cut).
    pub failed: AtomicU64,
}

impl Tally {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn answered(&self) -> u64 {
        self.answered
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    pub fn answered_class(&self, class: usize) -> u64 {
        self.answered[class].load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// `2xx 480, 4xx 18`.
    pub fn classes(&self) -> String {
        (1..=5)
            .filter(|class| self.answered_class(*class) > 0)
            .map(|class| format!("{class}xx {}", self.answered_class(class)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How requests are paced.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests started per second at most.
    pub rate: Option<u32>,
    /// Keep the recorded pace, this many times faster (`1.0`: as recorded): each request waits until its
    /// recorded offset from the first, divided by this. Requests without a time are not held.
    pub speed: Option<f64>,
}

/// Sends every request to `target` (the recorded path and query appended to its URL), paced, until the
/// requests run out or `stop` is cancelled; then waits for the answers in flight. `hold` is awaited before
/// each request: the caller's way to apply backpressure. Each answer's body is read to its end. The requests
/// are taken one at a time, as they are sent, so a stream read from a file is never collected.
pub async fn drive<H, F>(
    target: &UpstreamUrl,
    requests: impl Stream<Item = TrafficRequest>,
    pace: Pace,
    tally: Arc<Tally>,
    stop: CancellationToken,
    mut hold: H,
) where
    H: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pace.concurrency)
        .build(connector);
    let slots = Arc::new(Semaphore::new(pace.concurrency.max(1)));
    let mut ticker = pace.rate.map(|rate| {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    let tasks = TaskTracker::new();
    let started = tokio::time::Instant::now();
    let mut first_time = None;
    let mut requests = std::pin::pin!(requests);
    loop {
        let recorded = tokio::select! {
            recorded = requests.next() => recorded,
            () = stop.cancelled() => None,
        };
        let Some(recorded) = recorded else { break };
        if let (Some(speed), Some(time)) = (pace.speed, recorded.time) {
            let first = *first_time.get_or_insert(time);
            // A request recorded before the first (clocks, merged files) is not held.
            let offset = time.duration_since(first).unwrap_or_default();
            let due = started + offset.div_f64(speed);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = stop.cancelled() => break,
            }
        }
        if let Some(ticker) = ticker.as_mut() {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        hold().await;
        if stop.is_cancelled() {
            break;
        }
        let Some(request) = build(target, recorded) else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let (client, tally) = (client.clone(), tally.clone());
        tasks.spawn(async move {
            let answered = async {
                let response = client.request(request).await.ok()?;
                let status = response.status().as_u16() as usize / 100;
                response.into_body().collect().await.ok()?;
                Some(status)
            };
            match answered.await {
                Some(class) => tally.answered[if class <= 5 { class } else { 0 }]
                    .fetch_add(1, Ordering::Relaxed),
                None => tally.failed.fetch_add(1, Ordering::Relaxed),
            };
            drop(slot);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// The recorded request addressed to the proxy. Framing headers are dropped (the body is sent whole, its
/// length set anew), the recorded Host is kept (the proxy rewrites it unless told to preserve it).
fn build(target: &UpstreamUrl, recorded: TrafficRequest) -> Option<Request<Full<Bytes>>> {
    let uri = target.join(recorded.uri.as_str())?;
    let mut headers = HeaderMap::with_capacity(recorded.headers.len());
    for (name, value) in recorded.headers {
        headers.append(name, value);
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
    if headers.get_all(HOST).iter().count() > 1 {
        headers.remove(HOST);
    }
    let mut request = Request::builder()
        .method(recorded.method)
        .uri(uri)
        .body(Full::new(recorded.body))
        .ok()?;
    *request.headers_mut() = headers;
    Some(request)
}

//! The fault suite: a shadow (secondary or candidate) that is down, slow, silent, resetting, speaking garbage,
//! answering too much or with a wrong length, or closing kept-alive connections. Each case runs the real
//! binary, sends concurrent callers through it and asserts that every caller got primary's answer, that every
//! exchange was accounted for, that nothing panicked, and that the fault was counted where it belongs.

use std::time::Duration;

use futures_util::StreamExt;
use http::{Response, StatusCode};

use crate::support::process::{Metrics, Serving, spawn_serving};
use crate::support::stub::{Gate, Misbehaviour, RawPeer, Refusing, Stub, full};
use crate::support::{client, wait_for};

/// The answer every caller must get, whatever the shadows do.
const PRIMARY_BODY: &str = r#"{"order":{"id":7,"total":1250,"lines":[{"sku":"A-1","qty":2}]}}"#;
/// Callers per case, and how many are in flight at once.
const CALLERS: usize = 40;
const CONCURRENCY: usize = 8;

/// Which shadow misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Secondary,
    Candidate,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Secondary => "secondary",
            Side::Candidate => "candidate",
        }
    }
}

/// A proxy whose `side` is the faulty upstream at `faulty_url`, the other shadow healthy.
struct FaultRun {
    serving: Serving,
    side: Side,
    _primary: Stub,
    _healthy: Stub,
    _dir: tempfile::TempDir,
}

impl FaultRun {
    async fn start(side: Side, faulty_url: &str, extra: &[&str]) -> FaultRun {
        let primary = Stub::json(PRIMARY_BODY).await;
        let healthy = Stub::json(PRIMARY_BODY).await;
        let (secondary, candidate) = match side {
            Side::Secondary => (faulty_url.to_string(), healthy.url()),
            Side::Candidate => (healthy.url(), faulty_url.to_string()),
        };
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", dir.path().join("faults.db").display());
        let primary_url = primary.url();
        let mut args = vec![
            "--primary",
            &primary_url,
            "--secondary",
            &secondary,
            "--candidate",
            &candidate,
            "--database-url",
            &database,
        ];
        args.extend_from_slice(extra);
        let serving = spawn_serving(&args, &[]).await;
        FaultRun {
            serving,
            side,
            _primary: primary,
            _healthy: healthy,
            _dir: dir,
        }
    }

    /// Sends every caller (several at once, each on its own path) and asserts each got primary's answer.
    async fn callers(&self) {
        let client = client();
        let failures: Vec<String> = futures_util::stream::iter(0..CALLERS)
            .map(|i| {
                let request = client.get(self.serving.url(&format!("/orders/{i}")));
                async move {
                    let response = request
                        .send()
                        .await
                        .map_err(|error| format!("{i}: {error}"))?;
                    let status = response.status();
                    let body = response
                        .text()
                        .await
                        .map_err(|error| format!("{i}: {error}"))?;
                    if status != StatusCode::OK || body != PRIMARY_BODY {
                        return Err(format!("{i}: {status} {body}"));
                    }
                    Ok(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(|result| async move { result.err() })
            .collect()
            .await;
        assert!(failures.is_empty(), "callers saw the fault: {failures:?}");
    }

    /// Waits until every exchange is analysed, checks what holds for every case, and returns the metrics.
    async fn finish(&self) -> Metrics {
        let total = CALLERS as f64;
        wait_for("every exchange to be analysed", || async {
            self.serving
                .metrics()
                .await
                .sum("shadowdiff_exchanges_analysed_total")
                >= total
        })
        .await;
        let metrics = self.serving.metrics().await;
        assert_eq!(metrics.sum("shadowdiff_exchanges_analysed_total"), total);
        assert_eq!(metrics.value("shadowdiff_requests_total"), total);
        assert_eq!(metrics.value("shadowdiff_panics_total"), 0.0);
        assert_eq!(metrics.value("shadowdiff_analysis_failures_total"), 0.0);
        assert_eq!(metrics.sum("shadowdiff_dropped_total"), 0.0);
        let panics: Vec<String> = self
            .serving
            .log()
            .into_iter()
            .filter(|line| line.contains("panic"))
            .collect();
        assert!(panics.is_empty(), "{panics:?}");
        // Only the faulty side has errors; primary and the healthy shadow have none.
        for errors in metrics.nonzero("shadowdiff_upstream_errors_total") {
            assert!(
                errors.contains(&format!("target=\"{}\"", self.side.name())),
                "{errors}"
            );
        }
        metrics
    }

    fn errors(&self, metrics: &Metrics, kind: &str) -> f64 {
        metrics.value(&format!(
            "shadowdiff_upstream_errors_total{{target=\"{}\",kind=\"{kind}\"}}",
            self.side.name()
        ))
    }
}

/// A case where every shadow request to the faulty side fails the same way.
async fn each_request_fails(side: Side, faulty_url: &str, extra: &[&str], kind: &str) {
    let run = FaultRun::start(side, faulty_url, extra).await;
    run.callers().await;
    let metrics = run.finish().await;
    assert_eq!(run.errors(&metrics, kind), CALLERS as f64, "{}", metrics.0);
}

async fn down(side: Side) {
    let refusing = Refusing::new();
    each_request_fails(side, &refusing.url(), &[], "connect").await;
}

async fn silent(side: Side) {
    let peer = RawPeer::start(Misbehaviour::BlackHole).await;
    each_request_fails(side, &peer.url(), &["--shadow-timeout", "300ms"], "timeout").await;
    assert_eq!(peer.accepted(), CALLERS);
}

/// Slow: the shadow holds every answer until all callers have theirs, then answers properly.
async fn slow(side: Side) {
    let gate = Gate::new();
    let held = Stub::gated_json(&gate, PRIMARY_BODY).await;
    let run = FaultRun::start(side, &held.url(), &["--shadow-timeout", "1h"]).await;
    run.callers().await;
    assert_eq!(
        run.serving
            .metrics()
            .await
            .sum("shadowdiff_exchanges_analysed_total"),
        0.0,
        "nothing can be analysed while the slow shadow holds its answers"
    );
    gate.open();
    let metrics = run.finish().await;
    assert_eq!(metrics.sum("shadowdiff_upstream_errors_total"), 0.0);
    assert_eq!(
        metrics.value("shadowdiff_exchanges_analysed_total{result=\"compared\"}"),
        CALLERS as f64
    );
    assert_eq!(
        metrics.sum("shadowdiff_differences_total"),
        0.0,
        "{}",
        metrics.0
    );
}

async fn resetting(side: Side) {
    let peer = RawPeer::start(Misbehaviour::ResetMidBody).await;
    each_request_fails(side, &peer.url(), &[], "reset").await;
}

async fn garbage(side: Side) {
    let peer = RawPeer::start(Misbehaviour::Garbage).await;
    each_request_fails(side, &peer.url(), &[], "protocol").await;
}

/// A body past `--max-body`: read to its end and dropped, counted as too large and not compared.
async fn oversize(side: Side) {
    let big = Stub::start(|_| async {
        let mut body = b"{\"blob\":\"".to_vec();
        body.resize(2 << 20, b'x');
        body.extend_from_slice(b"\"}");
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    })
    .await;
    let run = FaultRun::start(side, &big.url(), &["--max-body", "1MiB"]).await;
    run.callers().await;
    let metrics = run.finish().await;
    let side = side.name();
    assert_eq!(metrics.sum("shadowdiff_upstream_errors_total"), 0.0);
    assert_eq!(
        metrics.value(&format!(
            "shadowdiff_bodies_too_large_total{{side=\"{side}\"}}"
        )),
        CALLERS as f64
    );
    assert_eq!(
        metrics.value(&format!(
            "shadowdiff_bodies_not_compared_total{{target=\"{side}\",reason=\"too_large\"}}"
        )),
        CALLERS as f64,
        "{}",
        metrics.0
    );
}

/// Content-Length promises more than is sent, then the connection closes: a reset.
async fn short_then_closed(side: Side) {
    let peer = RawPeer::start(Misbehaviour::ShortBodyThenClose).await;
    each_request_fails(side, &peer.url(), &[], "reset").await;
}

/// Content-Length promises more than is sent, and the connection stays open: a timeout.
async fn short_then_held(side: Side) {
    let peer = RawPeer::start(Misbehaviour::ShortBodyThenHold).await;
    each_request_fails(side, &peer.url(), &["--shadow-timeout", "300ms"], "timeout").await;
}

/// Bytes past Content-Length on a kept-alive connection: the answer is read as framed, and the connection
/// is not trusted again; whatever a reused connection reads next is a protocol error or a reset of that
/// one shadow request, never the caller's problem.
async fn past_the_length(side: Side) {
    let peer = RawPeer::start(Misbehaviour::ExtraBytes).await;
    let run = FaultRun::start(side, &peer.url(), &[]).await;
    run.callers().await;
    let metrics = run.finish().await;
    for errors in metrics.nonzero("shadowdiff_upstream_errors_total") {
        assert!(
            errors.contains("kind=\"protocol\"") || errors.contains("kind=\"reset\""),
            "{errors}"
        );
    }
    assert!(peer.accepted() >= 1);
}

/// Kept-alive connections closed at random: a request that meets a connection the upstream has just closed,
/// before any answer, is sent once more (shadowed requests are idempotent); only a second failure counts, as
/// a reset. Nothing else is counted.
async fn random_closes(side: Side) {
    let peer = RawPeer::start(Misbehaviour::RandomCloses).await;
    let run = FaultRun::start(side, &peer.url(), &[]).await;
    run.callers().await;
    let metrics = run.finish().await;
    let resets = run.errors(&metrics, "reset");
    assert_eq!(
        metrics.sum("shadowdiff_upstream_errors_total"),
        resets,
        "{}",
        metrics.0
    );
    assert!(resets < CALLERS as f64, "{}", metrics.0);
}

/// One test per side and fault, so that each case is named in the test output and RELIABILITY.md.
macro_rules! fault_cases {
    ($($name:ident: $fault:ident($side:ident);)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                tokio::time::timeout(Duration::from_secs(120), $fault(Side::$side))
                    .await
                    .expect("the case finished");
            }
        )*
    };
}

fault_cases! {
    secondary_down: down(Secondary);
    candidate_down: down(Candidate);
    secondary_silent: silent(Secondary);
    candidate_silent: silent(Candidate);
    secondary_slow: slow(Secondary);
    candidate_slow: slow(Candidate);
    secondary_resetting_mid_response: resetting(Secondary);
    candidate_resetting_mid_response: resetting(Candidate);
    secondary_answering_garbage: garbage(Secondary);
    candidate_answering_garbage: garbage(Candidate);
    secondary_answering_an_oversize_body: oversize(Secondary);
    candidate_answering_an_oversize_body: oversize(Candidate);
    secondary_short_of_its_content_length_then_closing: short_then_closed(Secondary);
    candidate_short_of_its_content_length_then_closing: short_then_closed(Candidate);
    secondary_short_of_its_content_length_then_silent: short_then_held(Secondary);
    candidate_short_of_its_content_length_then_silent: short_then_held(Candidate);
    secondary_sending_past_its_content_length: past_the_length(Secondary);
    candidate_sending_past_its_content_length: past_the_length(Candidate);
    secondary_closing_kept_alive_connections_at_random: random_closes(Secondary);
    candidate_closing_kept_alive_connections_at_random: random_closes(Candidate);
}

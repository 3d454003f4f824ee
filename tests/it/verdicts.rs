//! Verdicts over many generated exchanges: the five cases the design pins, the diff rate against a brute-force
//! count, and outcomes that are differences too. Pure: no sockets.

use shadowdiff::analysis::BodySkip;
use shadowdiff::exchange::ErrorKind;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use serde_json::{Value, json};
use shadowdiff::analysis::aggregate::{EndpointCounts, EndpointReport, VerdictSettings, report};
use shadowdiff::analysis::compat::Compat;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::analysis::rules::RuleSet;
use shadowdiff::analysis::{Analysis, AnalysisConfig, Analyzer, SkipReason};
use shadowdiff::exchange::{
    CapturedBody, Exchange, Outcome, RecordedRequest, Target, UpstreamError, UpstreamResponse,
};
use uuid::Uuid;

const ENDPOINT: &str = "GET /case/{id}";

pub fn json_response(value: &Value) -> Outcome {
    response(
        StatusCode::OK,
        "application/json",
        Bytes::from(serde_json::to_vec(value).unwrap()),
    )
}

pub fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    Outcome {
        elapsed: Duration::from_millis(10),
        result: Ok(UpstreamResponse {
            status,
            headers,
            body: CapturedBody::Complete(body),
        }),
    }
}

pub fn exchange_of(
    endpoint: &str,
    primary: Outcome,
    secondary: Outcome,
    candidate: Outcome,
) -> Exchange {
    Exchange {
        id: Uuid::now_v7(),
        started_at: SystemTime::now(),
        endpoint: endpoint.to_string(),
        request: RecordedRequest {
            method: Method::GET,
            uri: Uri::from_static("/case/1"),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        },
        primary,
        secondary,
        candidate,
        charge: Default::default(),
    }
}

fn json_exchange(primary: Value, secondary: Value, candidate: Value) -> Exchange {
    exchange_of(
        ENDPOINT,
        json_response(&primary),
        json_response(&secondary),
        json_response(&candidate),
    )
}

/// Analyses every exchange and judges the endpoint.
fn judge(exchanges: Vec<Exchange>) -> (EndpointReport, Vec<Analysis>) {
    // A text diff that runs out of time falls back to coarser regions; these verdicts are about the regions
    // themselves, so a loaded machine must not make the diff give up.
    let settings = shadowdiff::analysis::AnalysisSettings {
        text_diff_timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    };
    let analyzer = Analyzer::new(settings.config().unwrap());
    let mut counts = EndpointCounts::default();
    let analyses: Vec<Analysis> = exchanges.into_iter().map(|e| analyzer.analyse(e)).collect();
    for analysis in &analyses {
        counts.record(analysis);
    }
    (
        report(
            ENDPOINT,
            &counts,
            &VerdictSettings::default(),
            &RuleSet::default(),
        ),
        analyses,
    )
}

fn regression_paths(report: &EndpointReport) -> Vec<&str> {
    report.regressions.iter().map(|r| r.path.as_str()).collect()
}

fn noise_paths(report: &EndpointReport) -> BTreeSet<&str> {
    report.noise.iter().map(|n| n.path.as_str()).collect()
}

fn uuid_like(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}{:016x}", rng.u64(..), rng.u64(..))
}

#[test]
fn a_deterministic_change_is_a_regression() {
    let exchanges = (0..300)
        .map(|i| {
            let current = json!({"id": i, "user": {"name": "ada", "plan": "pro"}});
            let changed = json!({"id": i, "user": {"name": "ada", "plan": "PRO"}});
            json_exchange(current.clone(), current, changed)
        })
        .collect();
    let (report, _) = judge(exchanges);
    assert_eq!(regression_paths(&report), vec!["body/user/plan"]);
    let regression = &report.regressions[0];
    assert_eq!((regression.raw, regression.noise), (300, 0));
    assert_eq!(regression.kind, DiffKind::ValueChanged);
    assert_eq!(regression.compat, Compat::Changed);
    assert_eq!(report.diff_rate, 1.0);
    assert_eq!(report.noise_rate, 0.0);
}

#[test]
fn timestamps_and_request_ids_are_noise() {
    let mut rng = fastrand::Rng::with_seed(7);
    let exchanges = (0..300)
        .map(|i| {
            let side = |rng: &mut fastrand::Rng| {
                json!({"id": i, "generated_at": 1_700_000_000 + rng.u64(..100_000), "request_id": uuid_like(rng)})
            };
            json_exchange(side(&mut rng), side(&mut rng), side(&mut rng))
        })
        .collect();
    let (report, _) = judge(exchanges);
    assert!(report.regressions.is_empty(), "{:?}", report.regressions);
    assert_eq!(
        noise_paths(&report),
        BTreeSet::from(["body/generated_at", "body/request_id"])
    );
    assert_eq!(report.diff_rate, 0.0);
    assert_eq!(report.noise_rate, 1.0);
}

#[test]
fn a_random_boolean_is_noise_though_cancellation_misses_half_of_it() {
    let mut rng = fastrand::Rng::with_seed(11);
    let exchanges = (0..400)
        .map(|i| {
            let side = |rng: &mut fastrand::Rng| json!({"id": i, "featured": rng.bool()});
            json_exchange(side(&mut rng), side(&mut rng), side(&mut rng))
        })
        .collect();
    let (report, analyses) = judge(exchanges);
    assert!(report.regressions.is_empty(), "{:?}", report.regressions);
    assert!(noise_paths(&report).contains("body/featured"));
    assert_eq!(report.diff_rate, 0.0);
    // Per request, the candidate's flip is cancelled only when secondary happened to flip too: about half of the
    // candidate's differences survive cancellation; the aggregated test is what calls them noise.
    let differing = analyses
        .iter()
        .filter(|a| !a.compared().unwrap().candidate.is_empty())
        .count();
    let uncancelled = analyses
        .iter()
        .filter(|a| !a.compared().unwrap().signature().is_empty())
        .count();
    assert!((150..250).contains(&differing), "{differing} of 400 differ");
    assert!(
        (uncancelled as f64) > 0.35 * differing as f64
            && (uncancelled as f64) < 0.65 * differing as f64,
        "{uncancelled} of {differing} uncancelled"
    );
}

#[test]
fn a_field_noisy_in_ten_percent_but_changed_in_all_is_a_regression() {
    let exchanges = (0..300)
        .map(|i| {
            let primary = json!({"id": i, "price": 100});
            let secondary = json!({"id": i, "price": if i % 10 == 0 { 101 } else { 100 }});
            let candidate = json!({"id": i, "price": 10_000});
            json_exchange(primary, secondary, candidate)
        })
        .collect();
    let (report, _) = judge(exchanges);
    assert_eq!(regression_paths(&report), vec!["body/price"]);
    let price = &report.regressions[0];
    assert_eq!((price.raw, price.noise), (300, 30));
    // The tenth of requests where secondary also differed is cancelled per request.
    assert!(
        (report.diff_rate - 0.9).abs() < 1e-9,
        "{}",
        report.diff_rate
    );
}

#[test]
fn a_change_in_one_percent_of_requests_without_noise_is_a_regression_at_one_percent() {
    let exchanges = (0..400)
        .map(|i| {
            let current = json!({"id": i, "currency": "EUR"});
            let candidate = if i % 100 == 42 {
                json!({"id": i, "currency": "eur"})
            } else {
                current.clone()
            };
            json_exchange(current.clone(), current, candidate)
        })
        .collect();
    let (report, _) = judge(exchanges);
    assert_eq!(regression_paths(&report), vec!["body/currency"]);
    assert!(
        (report.diff_rate - 0.01).abs() < 1e-9,
        "{}",
        report.diff_rate
    );
    assert!((report.regressions[0].rate - 0.01).abs() < 1e-9);
}

#[test]
fn all_cases_together_name_only_the_regressions() {
    let mut rng = fastrand::Rng::with_seed(3);
    let exchanges = (0..500)
        .map(|i| {
            let side = |rng: &mut fastrand::Rng, candidate: bool| {
                let mut tags = vec!["a", "b", "c"];
                rng.shuffle(&mut tags);
                let mut side = json!({
                    "id": i,
                    "at": rng.u64(..),
                    "trace": uuid_like(rng),
                    "featured": rng.bool(),
                    "tags": tags,
                    "total": if candidate { json!("12.50") } else { json!(12.5) },
                });
                side[if candidate { "full_name" } else { "name" }] = json!("ada");
                side
            };
            json_exchange(
                side(&mut rng, false),
                side(&mut rng, false),
                side(&mut rng, true),
            )
        })
        .collect();
    let (report, _) = judge(exchanges);
    let mut regressions = regression_paths(&report);
    regressions.sort_unstable();
    assert_eq!(
        regressions,
        vec!["body/full_name", "body/name", "body/total"]
    );
    let by_path = |path: &str| report.regressions.iter().find(|r| r.path == path).unwrap();
    assert_eq!(
        (by_path("body/name").kind, by_path("body/name").compat),
        (DiffKind::Missing, Compat::Breaking)
    );
    assert_eq!(
        (
            by_path("body/full_name").kind,
            by_path("body/full_name").compat
        ),
        (DiffKind::Extra, Compat::Additive)
    );
    assert_eq!(
        (by_path("body/total").kind, by_path("body/total").compat),
        (DiffKind::TypeChanged, Compat::Breaking)
    );
    assert!(noise_paths(&report).is_superset(&BTreeSet::from([
        "body/at",
        "body/trace",
        "body/featured",
        "body/tags"
    ])));
    assert_eq!(report.diff_rate, 1.0);
}

#[test]
fn the_diff_rate_matches_a_brute_force_count() {
    let mut rng = fastrand::Rng::with_seed(2024);
    // Fields with (chance the candidate changes it, chance secondary changes it).
    let fields: [(&str, f64, f64); 6] = [
        ("stable_change", 0.30, 0.0),
        ("rare_change", 0.02, 0.0),
        ("noisy", 0.5, 0.5),
        ("mostly_noise", 0.2, 0.25),
        ("changed_and_noisy", 0.9, 0.3),
        ("quiet", 0.0, 0.0),
    ];
    let exchanges: Vec<Exchange> = (0..1000)
        .map(|i| {
            let mut primary = serde_json::Map::new();
            let mut secondary = serde_json::Map::new();
            let mut candidate = serde_json::Map::new();
            primary.insert("id".into(), json!(i));
            secondary.insert("id".into(), json!(i));
            candidate.insert("id".into(), json!(i));
            for (name, candidate_chance, noise_chance) in fields {
                primary.insert(name.into(), json!(0));
                secondary.insert(
                    name.into(),
                    json!(if rng.f64() < noise_chance { 1 } else { 0 }),
                );
                candidate.insert(
                    name.into(),
                    json!(if rng.f64() < candidate_chance { 2 } else { 0 }),
                );
            }
            json_exchange(
                Value::Object(primary),
                Value::Object(secondary),
                Value::Object(candidate),
            )
        })
        .collect();
    let (report, analyses) = judge(exchanges);
    let regressions: BTreeSet<&str> = report.regressions.iter().map(|r| r.path.as_str()).collect();
    assert!(
        regressions.contains("body/stable_change")
            && regressions.contains("body/changed_and_noisy")
    );
    assert!(!regressions.contains("body/noisy"));

    // Brute force: a request fails when one of its candidate differences, at a regression path, has no noise
    // difference at the same path in the same request.
    let mut failing = 0;
    for analysis in &analyses {
        let compared = analysis.compared().unwrap();
        let fails = compared.candidate.iter().any(|difference| {
            regressions.contains(difference.generalised.as_str())
                && !compared
                    .noise
                    .iter()
                    .any(|noise| noise.generalised == difference.generalised)
        });
        failing += usize::from(fails);
    }
    let brute_force = failing as f64 / analyses.len() as f64;
    assert_eq!(report.diff_rate, brute_force);
    assert!(report.diff_rate > 0.3);
}

#[test]
fn upstream_failures_are_differences_at_error_and_status() {
    let ok = json!({"ok": true});
    let timeout = Outcome::failed(
        UpstreamError::Timeout(Duration::from_secs(5)),
        Duration::from_secs(5),
    );
    let analyzer = Analyzer::default();

    let timed_out = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        json_response(&ok),
        timeout.clone(),
    ));
    let compared = timed_out.compared().unwrap();
    assert_eq!(compared.candidate.len(), 1);
    assert_eq!(compared.candidate[0].path, "error");
    assert_eq!(compared.candidate[0].other.as_deref(), Some("timeout"));
    assert_eq!(compared.candidate[0].compat, Compat::Breaking);
    assert!(compared.noise.is_empty());

    let noisy_secondary = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        timeout.clone(),
        json_response(&ok),
    ));
    assert_eq!(noisy_secondary.compared().unwrap().noise[0].path, "error");

    let server_error = response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "application/json",
        Bytes::from_static(b"{\"error\":\"boom\"}"),
    );
    let failed = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        json_response(&ok),
        server_error,
    ));
    let status = failed
        .compared()
        .unwrap()
        .candidate
        .iter()
        .find(|d| d.path == "status")
        .unwrap();
    assert_eq!(
        (
            status.primary.as_deref(),
            status.other.as_deref(),
            status.compat
        ),
        (Some("200"), Some("500"), Compat::Breaking)
    );

    let primary_failed = analyzer.analyse(exchange_of(
        ENDPOINT,
        timeout.clone(),
        json_response(&ok),
        json_response(&ok),
    ));
    assert_eq!(
        primary_failed.result.unwrap_err(),
        SkipReason::PrimaryFailed
    );
    let shed = Outcome::failed(UpstreamError::Shed, Duration::ZERO);
    let candidate_shed = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        json_response(&ok),
        shed.clone(),
    ));
    assert_eq!(
        candidate_shed.result.unwrap_err(),
        SkipReason::CandidateShed
    );
    let secondary_shed = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        shed,
        json_response(&ok),
    ));
    assert_eq!(
        secondary_shed.result.unwrap_err(),
        SkipReason::SecondaryShed
    );

    // Candidate timing out as often as secondary does is noise; more often, a regression.
    let mut counts = EndpointCounts::default();
    for i in 0..200 {
        let candidate = if i % 2 == 0 {
            timeout.clone()
        } else {
            json_response(&ok)
        };
        let secondary = if i % 20 == 0 {
            timeout.clone()
        } else {
            json_response(&ok)
        };
        counts.record(&analyzer.analyse(exchange_of(
            ENDPOINT,
            json_response(&ok),
            secondary,
            candidate,
        )));
    }
    let judged = report(
        ENDPOINT,
        &counts,
        &VerdictSettings::default(),
        &RuleSet::default(),
    );
    assert_eq!(regression_paths(&judged), vec!["error"]);
    assert_eq!(
        counts
            .tally
            .errors
            .get(&(Target::Candidate, ErrorKind::Timeout)),
        Some(&100)
    );
}

#[test]
fn bodies_are_decoded_and_bad_ones_are_counted_skips() {
    use std::io::Write;
    let ok = json!({"user": {"name": "ada"}});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&serde_json::to_vec(&ok).unwrap()).unwrap();
    let mut gzipped = response(
        StatusCode::OK,
        "application/json",
        Bytes::from(gz.finish().unwrap()),
    );
    if let Ok(response) = &mut gzipped.result {
        response
            .headers
            .insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    let analyzer = Analyzer::default();
    let analysis = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        json_response(&ok),
        gzipped,
    ));
    let paths: Vec<&str> = analysis
        .compared()
        .unwrap()
        .candidate
        .iter()
        .map(|d| d.path.as_str())
        .collect();
    assert_eq!(
        paths,
        vec!["header/content-encoding"],
        "same JSON once decoded"
    );

    let deep = Bytes::from(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)));
    let too_deep = response(StatusCode::OK, "application/json", deep);
    let analysis = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        json_response(&ok),
        too_deep,
    ));
    assert_eq!(
        analysis.compared().unwrap().body_skipped,
        vec![(Target::Candidate, BodySkip::JsonTooDeep)]
    );

    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 40 << 20]).unwrap();
    let mut bombed = response(
        StatusCode::OK,
        "application/json",
        Bytes::from(bomb.finish().unwrap()),
    );
    if let Ok(response) = &mut bombed.result {
        response
            .headers
            .insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    let config = AnalysisConfig {
        max_decoded_body: 1 << 20,
        ..AnalysisConfig::default()
    };
    let analysis = Analyzer::new(config).analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        json_response(&ok),
        bombed,
    ));
    assert_eq!(
        analysis.compared().unwrap().body_skipped,
        vec![(Target::Candidate, BodySkip::DecodedTooLarge)]
    );

    let html = |text: &'static str| {
        response(
            StatusCode::OK,
            "text/html",
            Bytes::from_static(text.as_bytes()),
        )
    };
    let analysis = analyzer.analyse(exchange_of(
        ENDPOINT,
        html("<html>\n  <body><p>Hello   world</p></body></html>"),
        html("<html><body><p>Hello world</p></body></html>"),
        html("<html><body><p>Hello there</p></body></html>"),
    ));
    let compared = analysis.compared().unwrap();
    assert!(compared.noise.is_empty());
    assert_eq!(compared.candidate.len(), 1);
    assert!(compared.candidate[0].path.starts_with("body/line/"));

    let as_text = response(
        StatusCode::OK,
        "text/html",
        Bytes::from_static(b"<html>oops</html>"),
    );
    let analysis = analyzer.analyse(exchange_of(
        ENDPOINT,
        json_response(&ok),
        json_response(&ok),
        as_text,
    ));
    let body = analysis
        .compared()
        .unwrap()
        .candidate
        .iter()
        .find(|d| d.path == "body")
        .unwrap();
    assert_eq!(
        (body.kind, body.primary.as_deref(), body.other.as_deref()),
        (DiffKind::TypeChanged, Some("json"), Some("html"))
    );
}

#[test]
fn rules_decide_verdicts_at_query_time() {
    let exchanges = (0..200)
        .map(|i| {
            let current = json!({"id": i, "etag": "a", "name": "ada"});
            let changed = json!({"id": i, "etag": "b", "name": "Ada"});
            json_exchange(current.clone(), current, changed)
        })
        .collect::<Vec<_>>();
    let analyzer = Analyzer::default();
    let mut counts = EndpointCounts::default();
    for exchange in exchanges {
        counts.record(&analyzer.analyse(exchange));
    }
    let rules = RuleSet::parse(
        "[[rule]]\npath = \"body/etag\"\naction = \"ignore\"\n[[rule]]\nendpoint = \"GET /case/*\"\npath = \"body/name\"\naction = \"noise\"\n",
        "rules.toml",
    )
    .unwrap();
    let judged = report(ENDPOINT, &counts, &VerdictSettings::default(), &rules);
    assert!(judged.regressions.is_empty());
    assert_eq!(noise_paths(&judged), BTreeSet::from(["body/name"]));
    assert_eq!(judged.diff_rate, 0.0);
}

/// A timestamp that differs on every call, on every upstream.
fn stamp(rng: &mut fastrand::Rng) -> u64 {
    1_700_000_000 + rng.u64(..1_000_000)
}

#[test]
fn a_noisy_field_that_disappears_or_changes_type_is_still_a_regression() {
    let mut rng = fastrand::Rng::with_seed(5);
    let exchanges = (0..300)
        .map(|i| {
            let primary =
                json!({"id": i, "updated_at": stamp(&mut rng), "version": stamp(&mut rng)});
            let secondary =
                json!({"id": i, "updated_at": stamp(&mut rng), "version": stamp(&mut rng)});
            // The rewrite drops one noisy field and turns the other into a string.
            let candidate = json!({"id": i, "version": stamp(&mut rng).to_string()});
            json_exchange(primary, secondary, candidate)
        })
        .collect();
    let (report, _) = judge(exchanges);
    let mut regressions: Vec<(&str, DiffKind)> = report
        .regressions
        .iter()
        .map(|r| (r.path.as_str(), r.kind))
        .collect();
    regressions.sort();
    assert_eq!(
        regressions,
        vec![
            ("body/updated_at", DiffKind::Missing),
            ("body/version", DiffKind::TypeChanged)
        ]
    );
    assert_eq!(report.diff_rate, 1.0);
    // The values varying is still noise.
    assert!(
        report
            .noise
            .iter()
            .any(|n| n.path == "body/updated_at" && n.kind == DiffKind::ValueChanged)
    );
}

#[test]
fn a_failing_secondary_does_not_turn_noise_into_regressions() {
    let mut rng = fastrand::Rng::with_seed(9);
    let timeout = Outcome::failed(
        UpstreamError::Timeout(Duration::from_secs(5)),
        Duration::from_secs(5),
    );
    let mut counts = EndpointCounts::default();
    let analyzer = Analyzer::default();
    for i in 0..300 {
        let side = |rng: &mut fastrand::Rng| json!({"id": i, "ts": stamp(rng)});
        let primary = json_response(&side(&mut rng));
        let secondary = if i % 5 < 2 {
            timeout.clone()
        } else {
            json_response(&side(&mut rng))
        };
        let candidate = json_response(&side(&mut rng));
        counts.record(&analyzer.analyse(exchange_of(ENDPOINT, primary, secondary, candidate)));
    }
    let judged = report(
        ENDPOINT,
        &counts,
        &VerdictSettings::default(),
        &RuleSet::default(),
    );
    assert!(judged.regressions.is_empty(), "{:?}", judged.regressions);
    assert_eq!(judged.diff_rate, 0.0);
}

#[test]
fn a_candidate_timing_out_as_often_as_secondary_is_noise() {
    let ok = json!({"ok": true});
    let timeout = Outcome::failed(
        UpstreamError::Timeout(Duration::from_secs(5)),
        Duration::from_secs(5),
    );
    let mut rng = fastrand::Rng::with_seed(21);
    let analyzer = Analyzer::default();
    let mut counts = EndpointCounts::default();
    for _ in 0..400 {
        let mut side = || {
            if rng.f64() < 0.1 {
                timeout.clone()
            } else {
                json_response(&ok)
            }
        };
        let (secondary, candidate) = (side(), side());
        counts.record(&analyzer.analyse(exchange_of(
            ENDPOINT,
            json_response(&ok),
            secondary,
            candidate,
        )));
    }
    let judged = report(
        ENDPOINT,
        &counts,
        &VerdictSettings::default(),
        &RuleSet::default(),
    );
    assert!(judged.regressions.is_empty(), "{:?}", judged.regressions);
    assert!(judged.noise.iter().any(|n| n.path == "error"));
}

#[test]
fn a_body_only_one_side_can_read_is_a_difference_not_a_skip() {
    let ok = json!({"page": 1});
    let analyzer = Analyzer::default();
    let too_large = Outcome {
        elapsed: Duration::from_millis(10),
        result: Ok(UpstreamResponse {
            status: StatusCode::OK,
            headers: json_response(&ok).response().unwrap().headers.clone(),
            body: CapturedBody::TooLarge { limit: 8 << 20 },
        }),
    };
    let mut corrupt = response(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(b"not gzip at all"),
    );
    if let Ok(response) = &mut corrupt.result {
        response
            .headers
            .insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    for (other, reason) in [(too_large, "too_large"), (corrupt, "corrupt_encoding")] {
        let analysis = analyzer.analyse(exchange_of(
            ENDPOINT,
            json_response(&ok),
            json_response(&ok),
            other,
        ));
        let compared = analysis.compared().unwrap();
        let body = compared
            .candidate
            .iter()
            .find(|d| d.path == "body")
            .expect("a body difference");
        assert_eq!(
            (body.kind, body.other.as_deref()),
            (DiffKind::TypeChanged, Some(reason))
        );
        assert_eq!(
            compared.body_skipped,
            vec![(Target::Candidate, BodySkip::parse(reason).unwrap())]
        );
    }
    // Primary's own body unreadable: nothing to compare, and it is primary's.
    let deep = response(
        StatusCode::OK,
        "application/json",
        Bytes::from("[".repeat(500) + &"]".repeat(500)),
    );
    let analysis = analyzer.analyse(exchange_of(
        ENDPOINT,
        deep,
        json_response(&ok),
        json_response(&ok),
    ));
    let compared = analysis.compared().unwrap();
    assert_eq!(
        compared.body_skipped,
        vec![(Target::Primary, BodySkip::JsonTooDeep)]
    );
    assert!(
        compared
            .candidate
            .iter()
            .all(|d| !d.path.starts_with("body"))
    );
}

#[test]
fn a_change_far_down_a_noisy_text_is_a_regression() {
    let page = |seed: u64, changed: bool| {
        let text: String = (0..5_000)
            .map(|line| match line {
                l if l % 40 == 0 => format!("<p>rendered at {}</p>\n", seed + l),
                4_021 if changed => "<p>Total: 12.00 EUR</p>\n".to_string(),
                l => format!("<p>line {l}</p>\n"),
            })
            .collect();
        response(StatusCode::OK, "text/html", Bytes::from(text))
    };
    let exchanges = (0..100)
        .map(|i| {
            exchange_of(
                ENDPOINT,
                page(i * 3, false),
                page(i * 3 + 1, false),
                page(i * 3 + 2, true),
            )
        })
        .collect();
    let (report, _) = judge(exchanges);
    let regressions = regression_paths(&report);
    assert_eq!(
        regressions,
        vec!["body/lines/unshared"],
        "{:?}",
        report.regressions
    );
    assert_eq!(report.diff_rate, 1.0);
}

#[test]
fn unordered_arrays_respect_the_rules_of_their_elements() {
    let rules = RuleSet::parse(
        "[[rule]]\npath = \"body/items\"\naction = \"unordered\"\n\
         [[rule]]\npath = \"body/items/*/ts\"\naction = \"ignore\"\n",
        "rules.toml",
    )
    .unwrap();
    let analyzer = Analyzer::new(AnalysisConfig {
        rules: rules.clone(),
        ..AnalysisConfig::default()
    });
    let mut rng = fastrand::Rng::with_seed(1);
    let mut counts = EndpointCounts::default();
    for i in 0..300 {
        let mut side = |price: u64| {
            let mut items = vec![
                json!({"sku": "a", "price": 5, "ts": rng.u64(..)}),
                json!({"sku": "b", "price": price, "ts": rng.u64(..)}),
            ];
            rng.shuffle(&mut items);
            json!({"id": i, "items": items})
        };
        let (primary, secondary, candidate) = (side(7), side(7), side(999));
        counts.record(&analyzer.analyse(json_exchange(primary, secondary, candidate)));
    }
    let judged = report(ENDPOINT, &counts, &VerdictSettings::default(), &rules);
    let regressions: Vec<(&str, DiffKind)> = judged
        .regressions
        .iter()
        .map(|r| (r.path.as_str(), r.kind))
        .collect();
    assert_eq!(
        regressions,
        vec![("body/items/*/price", DiffKind::ValueChanged)]
    );
    assert_eq!(judged.diff_rate, 1.0);
    assert!(judged.noise.is_empty(), "{:?}", judged.noise);
}

#[test]
fn large_integers_compare_exactly() {
    let analyzer = Analyzer::default();
    let analysis = analyzer.analyse(json_exchange(
        json!({"ids": [1234567890123456789u64]}),
        json!({"ids": [1234567890123456789u64]}),
        json!({"ids": [1234567890123456790u64]}),
    ));
    let found: Vec<(&str, DiffKind)> = analysis
        .compared()
        .unwrap()
        .candidate
        .iter()
        .map(|d| (d.path.as_str(), d.kind))
        .collect();
    assert_eq!(found, vec![("body/ids/0", DiffKind::ValueChanged)]);
}

#[test]
fn merged_counts_report_like_one_pass() {
    let mut rng = fastrand::Rng::with_seed(77);
    let analyzer = Analyzer::default();
    let analyses: Vec<Analysis> = (0..400)
        .map(|i| {
            let side = |rng: &mut fastrand::Rng, changed: bool| {
                json!({"id": i, "ts": stamp(rng), "flag": rng.bool(), "name": if changed && i % 3 == 0 { "x" } else { "y" }})
            };
            let (p, s, c) = (side(&mut rng, false), side(&mut rng, false), side(&mut rng, true));
            analyzer.analyse(json_exchange(p, s, c))
        })
        .collect();
    let mut whole = EndpointCounts::default();
    let (mut first, mut second) = (EndpointCounts::default(), EndpointCounts::default());
    for (i, analysis) in analyses.iter().enumerate() {
        whole.record(analysis);
        if i % 7 < 3 {
            first.record(analysis)
        } else {
            second.record(analysis)
        }
    }
    first.merge(&second);
    let settings = VerdictSettings::default();
    let one_pass = report(ENDPOINT, &whole, &settings, &RuleSet::default());
    let merged = report(ENDPOINT, &first, &settings, &RuleSet::default());
    // Samples may differ (either half may hold the first one); everything counted must not.
    let strip = |mut r: EndpointReport| {
        for regression in &mut r.regressions {
            regression.sample = None;
        }
        r
    };
    assert_eq!(strip(merged), strip(one_pass));
    assert_eq!(first.tally.paths, whole.tally.paths);
    assert_eq!(first.tally.signatures, whole.tally.signatures);
}

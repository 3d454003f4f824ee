//! The running proxy with its store: the report it writes, two processes sharing one PostgreSQL, and
//! PostgreSQL going away under load and coming back.

use futures_util::StreamExt;
use shadowdiff::analysis::aggregate::VerdictSettings;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::analysis::rules::RuleSet;
use shadowdiff::exchange::Target;
use shadowdiff::pipeline::metrics::Analysed;
use shadowdiff::report::Reports;
use shadowdiff::store::Store;
use shadowdiff::store::metrics::Unstored;
use shadowdiff::store::queries::TimeRange;
use std::sync::Arc;
use std::time::Duration;

use crate::support::db::{PgCluster, TestDb, create_database};
use crate::support::process::spawn_serving;
use crate::support::stub::Stub;
use crate::support::{TestApp, client, wait_until};

crate::support::on_both_backends!(the_running_proxy_stores_its_report);

async fn the_running_proxy_stores_its_report(db: TestDb) {
    let (primary, secondary, candidate) = (
        Stub::users(0, false).await,
        Stub::users(500, false).await,
        Stub::users(9_000, true).await,
    );
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| {
            s.writer.run = Some("stored-run".into());
            s.writer.flush_interval = Duration::from_millis(100);
        },
        db.url(),
    )
    .await;
    for id in 0..30 {
        let response = client()
            .get(app.url(&format!("/users/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // Read to the end: a caller that leaves mid-body makes an exchange that is not compared.
        response.text().await.unwrap();
    }
    app.stop().await;

    let store = Store::connect(db.url(), 2).await.unwrap();
    let run = store.run("stored-run").await.unwrap().expect("the run");
    assert!(run.candidate_url.starts_with("http://127.0.0.1:"));
    let reports = Reports::new(
        store.clone(),
        Arc::new(RuleSet::default()),
        VerdictSettings::default(),
    );
    let report = reports.judge(run, TimeRange::all()).await.unwrap();
    assert_eq!(report.requests, 30);
    assert_eq!(report.diff_rate, 1.0);
    let users = &report.endpoints[0];
    assert_eq!(users.endpoint, "GET /users/{id}");
    let mut regressions: Vec<(&str, DiffKind)> = users
        .regressions
        .iter()
        .map(|r| (r.path.as_str(), r.kind))
        .collect();
    regressions.sort();
    assert_eq!(
        regressions,
        vec![
            ("body/full_name", DiffKind::Extra),
            ("body/name", DiffKind::Missing)
        ]
    );
    assert!(users.noise.iter().any(|n| n.path == "body/served_at"));
    assert_eq!(users.latency.primary.samples, 30);
    let sample = users.regressions[0].sample.as_deref().expect("a sample");
    let document = store
        .exchange(sample)
        .await
        .unwrap()
        .expect("the sample exchange");
    assert!(
        document
            .candidate
            .body
            .as_ref()
            .unwrap()
            .text()
            .unwrap()
            .contains("full_name")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_processes_share_one_report() {
    let Some(TestDb::Postgres { url }) = TestDb::postgres().await else {
        return;
    };
    let (primary, secondary, candidate) = (
        Stub::users(0, false).await,
        Stub::users(500, false).await,
        Stub::users(9_000, true).await,
    );
    let envs = [
        ("SHADOWDIFF_DATABASE_URL", url.clone()),
        ("SHADOWDIFF_PRIMARY", primary.url()),
        ("SHADOWDIFF_SECONDARY", secondary.url()),
        ("SHADOWDIFF_CANDIDATE", candidate.url()),
    ];
    let flags = ["--run", "replicated", "--store-flush-interval", "100ms"];
    let first = spawn_serving(&flags, &envs).await;
    let second = spawn_serving(&flags, &envs).await;
    for (serving, count) in [(&first, 20), (&second, 35)] {
        for id in 0..count {
            let response = client()
                .get(serving.url(&format!("/users/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap();
        }
    }
    for serving in [&first, &second] {
        let ready = client()
            .get(format!("http://{}/readyz", serving.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "both replicas reach the shared store");
    }
    assert_eq!(first.terminate().await.code(), Some(0));
    assert_eq!(second.terminate().await.code(), Some(0));

    let store = Store::connect(&url, 2).await.unwrap();
    assert_eq!(store.runs().await.unwrap().len(), 1, "one run, shared");
    let run = store.run("replicated").await.unwrap().unwrap();
    let counts = store
        .endpoint_counts(run.id, TimeRange::all())
        .await
        .unwrap();
    let users = &counts["GET /users/{id}"];
    assert_eq!(users.tally.requests, 55);
    assert_eq!(users.tally.compared, 55);
    assert_eq!(
        users.tally.paths[&("body/name".to_string(), DiffKind::Missing)].raw_total(),
        55
    );
    // Each process keeps its own histograms; the report merges them.
    assert_eq!(users.latency.summary(Target::Candidate).samples, 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_under_load_drops_counted_and_comes_back() {
    if TestDb::postgres().await.is_none() {
        return;
    }
    // A cluster of this test's own, so that stopping it disturbs no other test.
    let cluster = PgCluster::start();
    let url = create_database(&cluster.url).await;
    let (primary, secondary, candidate) = (
        Stub::json("{}").await,
        Stub::json("{}").await,
        Stub::json("{}").await,
    );
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| {
            s.writer.run = Some("outage".into());
            s.writer.flush_interval = Duration::from_millis(50);
            s.writer.buffer_rows = 80;
        },
        &url,
    )
    .await;
    let metrics = app.metrics.clone();
    let get = |path: String| async move {
        let response = client().get(path).send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "callers are answered whatever the store does"
        );
        assert_eq!(response.text().await.unwrap(), "{}");
    };
    for i in 0..5 {
        get(app.url(&format!("/before/{i}"))).await;
    }
    wait_until("the first write", || {
        metrics.store.writes_count(true) >= 1 && metrics.store.pending_rows() == 0
    })
    .await;

    cluster.pause();
    // Each path is an endpoint of its own, so the buffer fills with new rows; eight callers at a time.
    futures_util::stream::iter(0..60)
        .map(|i| get(app.url(&format!("/during{i}"))))
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    wait_until("writes to fail and the buffer to overflow", || {
        metrics.store.writes_count(false) >= 2
            && metrics.store.dropped_count(Unstored::Exchange) >= 1
    })
    .await;
    // A store outage costs comparisons, never callers: the proxy stays in rotation, the store's own readiness
    // and gauge say it is down.
    let readiness = client().get(app.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(readiness.status(), 200);
    let store_readiness = client()
        .get(app.admin_url("/readyz/store"))
        .send()
        .await
        .unwrap();
    assert_eq!(store_readiness.status(), 503);
    assert_eq!(store_readiness.text().await.unwrap(), "store unreachable\n");
    assert!(metrics.render().contains("shadowdiff_store_up 0"));

    cluster.resume();
    let writes_before = metrics.store.writes_count(true);
    wait_until("writing to resume", || {
        metrics.store.writes_count(true) > writes_before && metrics.store.pending_rows() == 0
    })
    .await;
    for i in 0..5 {
        get(app.url(&format!("/after/{i}"))).await;
    }
    app.stop().await;
    let dropped = metrics.store.dropped_count(Unstored::Exchange);
    let analysed = metrics.analysis.analysed_count(Analysed::Compared);

    assert_eq!(analysed, 70);
    let store = Store::connect(&url, 2).await.unwrap();
    let run = store.run("outage").await.unwrap().unwrap();
    let counts = store
        .endpoint_counts(run.id, TimeRange::all())
        .await
        .unwrap();
    let stored: u64 = counts.values().map(|c| c.tally.requests).sum();
    assert_eq!(
        stored + dropped,
        70,
        "every exchange is stored or counted as dropped"
    );
    assert!((1..60).contains(&dropped));
    assert!(counts.contains_key("GET /after/{id}"));
}

crate::support::on_both_backends!(secrets_sent_through_the_proxy_never_reach_the_database);

async fn secrets_sent_through_the_proxy_never_reach_the_database(db: TestDb) {
    const TOKEN: &str = "tok-91c2e7a4d8";
    const PASSWORD: &str = "pw-5e0b3f9c1a";
    // Every upstream answers with the password and a session cookie; the candidate's password differs.
    let upstream = |candidate: bool| {
        Stub::start(move |_| async move {
            let password = if candidate {
                format!("{PASSWORD}-new")
            } else {
                PASSWORD.to_string()
            };
            http::Response::builder()
                .header("content-type", "application/json")
                .header("set-cookie", format!("session={TOKEN}"))
                .body(crate::support::stub::full(format!(
                    r#"{{"user":{{"name":"ada","password":"{password}"}}}}"#
                )))
                .unwrap()
        })
    };
    let (primary, secondary, candidate) = (
        upstream(false).await,
        upstream(false).await,
        upstream(true).await,
    );
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| {
            s.writer.run = Some("secrets".into());
            s.redaction.json_fields = vec!["password".to_string()];
            s.proxy.shadow.allow_side_effects = true;
        },
        db.url(),
    )
    .await;
    for _ in 0..10 {
        let response = client()
            .post(app.url("/login"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("x-api-key", TOKEN)
            .body(format!(r#"{{"user":"ada","password":"{PASSWORD}"}}"#))
            .send()
            .await
            .unwrap();
        // The caller gets the real thing: redaction is for storage only.
        assert!(response.text().await.unwrap().contains(PASSWORD));
    }
    app.stop().await;

    let store = Store::connect(db.url(), 2).await.unwrap();
    let run = store.run("secrets").await.unwrap().unwrap();
    let samples = store
        .samples(run.id, "POST /login", None, 10)
        .await
        .unwrap();
    assert!(!samples.is_empty(), "samples were stored");
    let document = store.exchange(&samples[0].id).await.unwrap().unwrap();
    let authorization = document
        .request
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .unwrap();
    assert!(authorization.1.starts_with("redacted:"));
    assert!(
        document
            .candidate_differences
            .iter()
            .any(|d| d.difference.path == "body/user/password")
    );
    drop(store);

    let stored = db.everything_as_text();
    for secret in [TOKEN, PASSWORD] {
        assert!(!stored.contains(secret), "{secret} reached the database");
    }
}

crate::support::on_both_backends!(a_secret_planted_in_each_place_reaches_no_store_recording_or_log);

/// A different secret in every place a secret hides in traffic: the query string, credential headers, a form
/// body, a JSON body, a Location header's query, a URL inside JSON, a difference's values, and a body whose
/// encoding cannot be undone. None of them may reach the database, the record file or the log.
async fn a_secret_planted_in_each_place_reaches_no_store_recording_or_log(db: TestDb) {
    const SECRETS: [&str; 9] = [
        "q-token-4c1d8e",
        "hdr-auth-9a7f3b",
        "form-pw-2e6b0c",
        "json-secret-7d3a91",
        "loc-code-5f8e2a",
        "url-token-0b4c7d",
        "diff-secret-3e9f15",
        "gzip-secret-8a2d6c",
        "csrf-1f7b4e9d",
    ];
    let upstream = |candidate: bool| {
        Stub::start(move |seen: crate::support::stub::Seen| async move {
            let path = seen.uri.path().to_string();
            let builder = http::Response::builder().header(
                "location",
                format!("https://app.example/cb?code={}&state=1", SECRETS[4]),
            );
            if path == "/gzip" {
                // Not gzip at all: it cannot be decoded, so it cannot be searched for secrets.
                return builder
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(crate::support::stub::full(format!(
                        r#"{{"secret":"{}"}}"#,
                        SECRETS[7]
                    )))
                    .unwrap();
            }
            let secret = if candidate {
                format!("{}-new", SECRETS[6])
            } else {
                SECRETS[6].to_string()
            };
            builder
                .header("content-type", "application/json")
                .body(crate::support::stub::full(format!(
                    r#"{{"next":"https://app.example/page?access_token={}","client_secret":"{secret}"}}"#,
                    SECRETS[5]
                )))
                .unwrap()
        })
    };
    let (primary, secondary, candidate) = (
        upstream(false).await,
        upstream(false).await,
        upstream(true).await,
    );
    let record = tempfile::tempdir().unwrap();
    let record_file = record.path().join("recorded.jsonl");
    let record_flag = record_file.display().to_string();
    let serving = crate::support::process::spawn_serving(
        &[
            "--run",
            "planted",
            "--store-flush-interval",
            "50ms",
            "--allow-side-effects",
            "--record",
            &record_flag,
            "--log",
            "debug",
        ],
        &[
            ("SHADOWDIFF_DATABASE_URL", db.url().to_string()),
            ("SHADOWDIFF_PRIMARY", primary.url()),
            ("SHADOWDIFF_SECONDARY", secondary.url()),
            ("SHADOWDIFF_CANDIDATE", candidate.url()),
        ],
    )
    .await;
    for _ in 0..3 {
        let response = client()
            .get(serving.url(&format!("/api/items?token={}&page=2", SECRETS[0])))
            .header("x-auth-token", SECRETS[1])
            .header("x-csrf-token", SECRETS[8])
            .send()
            .await
            .unwrap();
        assert!(
            response.text().await.unwrap().contains(SECRETS[5]),
            "callers get the real thing"
        );
        client()
            .post(serving.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("user=ada&password={}", SECRETS[2]))
            .send()
            .await
            .unwrap();
        client()
            .post(serving.url("/settings"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"user":"ada","clientSecret":"{}"}}"#,
                SECRETS[3]
            ))
            .send()
            .await
            .unwrap();
        client().get(serving.url("/gzip")).send().await.unwrap();
    }
    // Wait until the store holds every exchange, then stop (which flushes the recording).
    let store = db.store().await;
    crate::support::wait_for("the exchanges to be stored", || {
        let store = store.clone();
        async move {
            let Ok(Some(run)) = store.run("planted").await else {
                return false;
            };
            store
                .endpoint_counts(run.id, TimeRange::all())
                .await
                .is_ok_and(|counts| counts.values().map(|c| c.tally.requests).sum::<u64>() == 12)
        }
    })
    .await;
    drop(store);
    let log = serving.log().join("\n");
    let exit = serving.terminate().await;
    assert_eq!(exit.code(), Some(0));

    let stored = db.everything_as_text();
    let recording = std::fs::read_to_string(&record_file).unwrap();
    assert!(recording.lines().count() >= 12, "{recording}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&record_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the record file is its owner's alone");
    }
    assert!(
        stored.contains("redacted:"),
        "redacted values are stored in their place"
    );
    for secret in SECRETS {
        assert!(!stored.contains(secret), "{secret} reached the database");
        assert!(
            !recording.contains(secret),
            "{secret} reached the recording"
        );
        assert!(!log.contains(secret), "{secret} reached the log");
    }
}

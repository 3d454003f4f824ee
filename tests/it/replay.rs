//! Recorded traffic replayed by the binary: JSON lines, HAR and GoReplay files give the verdicts their requests
//! deserve, malformed records are skipped and named, and what `serve --record` writes replays, without secrets.

use std::path::Path;

use serde_json::Value;

use crate::support::process::{Ran, run_command};
use crate::support::stub::Stub;
use crate::support::{TestApp, client, temp_database};

/// Primary and secondary agree but for a counter (noise); the candidate renames `name` to `full_name`.
async fn users() -> [Stub; 3] {
    [
        Stub::users(0, false).await,
        Stub::users(5_000, false).await,
        Stub::users(90_000, true).await,
    ]
}

pub async fn replay(input: &Path, stubs: &[Stub; 3], database: &str, extra: &[&str]) -> Ran {
    let (primary, secondary, candidate) = (stubs[0].url(), stubs[1].url(), stubs[2].url());
    let input = input.display().to_string();
    let mut args = vec![
        "replay",
        "--input",
        &input,
        "--primary",
        &primary,
        "--secondary",
        &secondary,
        "--candidate",
        &candidate,
        "--database-url",
        database,
        "--concurrency",
        "4",
    ];
    args.extend_from_slice(extra);
    run_command(&args).await
}

/// The gate's JSON for a run, and its exit code.
pub async fn gate_json(database: &str, run: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec![
        "gate",
        "--database-url",
        database,
        "--run",
        run,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let ran = run_command(&args).await;
    let json = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|error| panic!("gate JSON: {error}\n{}\n{}", ran.stdout, ran.stderr));
    (ran.code, json)
}

pub fn endpoint<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report:#}"))
}

/// `(path, kind)` of an endpoint's regressions, sorted.
pub fn regressions(endpoint: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = endpoint["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

fn renamed() -> Vec<(String, String)> {
    vec![
        ("body/full_name".into(), "extra".into()),
        ("body/name".into(), "missing".into()),
    ]
}

fn noise_paths(endpoint: &Value) -> Vec<&str> {
    endpoint["noise"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_file_replays_into_the_verdicts_its_requests_deserve() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let input = dir.path().join("traffic.jsonl");
    let mut lines = Vec::new();
    for id in 1..=30 {
        lines.push(format!(
            r#"{{"time":"2026-11-23T10:00:{:02}.000Z","method":"GET","uri":"/users/{id}?v=1","headers":[["accept","application/json"]]}}"#,
            id % 60
        ));
        if id == 4 {
            lines.push("{not json".to_string());
        }
        if id == 10 {
            lines.push(r#"{"method":"GET","uri":"no-slash"}"#.to_string());
        }
    }
    std::fs::write(&input, lines.join("\n")).unwrap();

    let ran = replay(&input, &stubs, &database, &["--run", "from-jsonl"]).await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let file = input.display().to_string();
    assert!(
        ran.stderr.contains(&format!("{file}: line 5:"))
            && ran.stderr.contains(&format!("{file}: line 12:")),
        "each malformed record is named by file and line: {}",
        ran.stderr
    );
    assert!(
        ran.stdout.contains("Replayed 30 requests"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("2 records skipped"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("GET /users/{id}"),
        "the summary table: {}",
        ran.stdout
    );
    for stub in &stubs {
        assert_eq!(stub.hits(), 30);
    }

    let (code, report) = gate_json(&database, "from-jsonl", &[]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        report["requests"], 30,
        "every replayed request is in the report"
    );
    let users = endpoint(&report, "GET /users/{id}");
    assert_eq!(regressions(users), renamed());
    assert_eq!(users["diff_rate"], 1.0);
    assert!(noise_paths(users).contains(&"body/served_at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_export_replays_with_its_bodies_when_side_effects_are_allowed() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let input = dir.path().join("session.har");
    let mut entries = Vec::new();
    for id in 1..=25 {
        entries.push(serde_json::json!({
            "startedDateTime": "2026-11-23T10:15:00.123+01:00",
            "request": {
                "method": "GET", "url": format!("https://shop.example.com/users/{id}"), "httpVersion": "http/2.0",
                "headers": [{"name": ":authority", "value": "shop.example.com"}, {"name": "accept", "value": "*/*"}],
                "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0
            },
            "response": {"status": 200}
        }));
    }
    for id in 1..=3 {
        entries.push(serde_json::json!({
            "startedDateTime": "2026-11-23T10:16:00.000Z",
            "request": {
                "method": "POST", "url": format!("https://shop.example.com/orders/{id}"),
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "postData": {"mimeType": "application/json", "text": format!("{{\"sku\":{id}}}")}
            }
        }));
    }
    entries.push(serde_json::json!({"request": {"method": "GET"}}));
    let har = serde_json::json!({"log": {"version": "1.2", "creator": {"name": "test", "version": "1"}, "entries": entries}});
    std::fs::write(&input, serde_json::to_string_pretty(&har).unwrap()).unwrap();

    let ran = replay(
        &input,
        &stubs,
        &database,
        &["--run", "from-har", "--allow-side-effects"],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("entry 29"), "{}", ran.stderr);
    let mut posted = Vec::new();
    for _ in 0..28 {
        let seen = stubs[2].next_request().await;
        if seen.method == http::Method::POST {
            posted.push(String::from_utf8(seen.body.to_vec()).unwrap());
        }
    }
    posted.sort();
    assert_eq!(
        posted,
        ["{\"sku\":1}", "{\"sku\":2}", "{\"sku\":3}"],
        "the candidate got the recorded bodies"
    );

    let (code, report) = gate_json(&database, "from-har", &[]).await;
    assert_eq!(code, Some(1));
    assert_eq!(endpoint(&report, "GET /users/{id}")["requests"], 25);
    let orders = endpoint(&report, "POST /orders/{id}");
    assert_eq!(orders["requests"], 3);
    assert_eq!(regressions(orders), renamed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goreplay_file_replays_its_requests_and_ignores_its_responses() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let input = dir.path().join("capture.gor");
    let mut file = String::new();
    for id in 1..=20u64 {
        let request = format!(
            "1 {id:024x} {} 0\nGET /users/{id} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl\r\n\r\n",
            1_700_000_000_000_000_000u64 + id
        );
        let response = format!(
            "2 {id:024x} {} 1000\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{{}}",
            1_700_000_000_000_000_100u64 + id
        );
        file.push_str(&request);
        file.push_str("\n🐵🙈🙉\n");
        file.push_str(&response);
        file.push_str("\n🐵🙈🙉\n");
        if id == 7 {
            file.push_str("1 bad 1 0\nthis is not http\r\n\r\n\n🐵🙈🙉\n");
        }
    }
    std::fs::write(&input, file).unwrap();

    let ran = replay(&input, &stubs, &database, &["--run", "from-gor"]).await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("Replayed 20 requests"),
        "{}",
        ran.stdout
    );
    assert!(ran.stderr.contains("not an HTTP request"), "{}", ran.stderr);
    let (code, report) = gate_json(&database, "from-gor", &[]).await;
    assert_eq!(code, Some(1));
    let users = endpoint(&report, "GET /users/{id}");
    assert_eq!(users["requests"], 20);
    assert_eq!(regressions(users), renamed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_empty_input_is_a_usage_error() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let missing = replay(&dir.path().join("nope.jsonl"), &stubs, &database, &[]).await;
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.stderr.contains("cannot read") && missing.stderr.contains("nope.jsonl"),
        "{}",
        missing.stderr
    );
    let not_har = dir.path().join("x.har");
    std::fs::write(&not_har, "[1, 2]").unwrap();
    let ran = replay(&not_har, &stubs, &database, &[]).await;
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("not a HAR file"), "{}", ran.stderr);
    assert_eq!(stubs[0].hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_serve_records_replays_and_keeps_no_secret() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let record = dir.path().join("recorded.jsonl");
    let record_flag = record.display().to_string();
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| {
            s.proxy.record = Some(record_flag.into());
            s.redaction.json_fields = vec!["password".to_string()];
            s.proxy.shadow.methods = "GET,PUT".parse().unwrap();
        },
        &database,
    )
    .await;
    for id in 1..=10 {
        let response = client()
            .get(app.url(&format!("/users/{id}")))
            .header("authorization", "Bearer s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for id in [41, 42] {
        client()
            .put(app.url(&format!("/users/{id}")))
            .header("content-type", "application/json")
            .body(r#"{"name":"ada","password":"hunter2"}"#)
            .send()
            .await
            .unwrap();
    }
    // Not shadowed, so not recorded.
    client().delete(app.url("/users/1")).send().await.unwrap();
    app.stop().await;

    let text = std::fs::read_to_string(&record).unwrap();
    assert_eq!(text.lines().count(), 12, "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("redacted:"));
    assert!(text.lines().all(|line| {
        let record: Value = serde_json::from_str(line).unwrap();
        record["time"].is_string()
            && record["method"].is_string()
            && record["uri"].as_str().unwrap().starts_with("/users/")
    }));

    let fresh = users().await;
    let (_again, replayed) = temp_database();
    let ran = replay(
        &record,
        &fresh,
        &replayed,
        &["--run", "again", "--shadow-methods", "GET,PUT"],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let (_, report) = gate_json(&replayed, "again", &[]).await;
    assert_eq!(endpoint(&report, "GET /users/{id}")["requests"], 10);
    assert_eq!(endpoint(&report, "PUT /users/{id}")["requests"], 2);
    for _ in 0..12 {
        let seen = fresh[0].next_request().await;
        if seen.method == http::Method::GET {
            let sent = seen.headers["authorization"].to_str().unwrap();
            assert!(sent.starts_with("redacted:"), "{sent}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sets_credentials_on_redacted_recordings_and_counts_what_stays_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("recorded.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"time":"2026-11-23T10:15:00.000Z","method":"GET","uri":"/users/1","headers":[["authorization","redacted:5d41402abc4b"]],"body_base64":""}"#,
            "\n",
            r#"{"time":"2026-11-23T10:15:01.000Z","method":"GET","uri":"/users/2?token=redacted:0123456789ab","headers":[],"body_base64":""}"#,
            "\n",
        ),
    )
    .unwrap();
    let stubs = [
        Stub::json("{}").await,
        Stub::json("{}").await,
        Stub::json("{}").await,
    ];
    let (_database, url) = temp_database();

    let ran = replay(&input, &stubs, &url, &["--run", "without-credentials"]).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("2 requests still carried redacted values"),
        "{}",
        ran.stdout
    );

    // The gate says so too, in every format, so that a run of refusals cannot pass silently.
    let (_, gate) = gate_json(&url, "without-credentials", &["--min-requests", "1"]).await;
    assert_eq!(gate["redacted_requests"], 2, "{gate}");
    for format in ["text", "markdown", "junit"] {
        let ran = run_command(&[
            "gate",
            "--database-url",
            &url,
            "--run",
            "without-credentials",
            "--min-requests",
            "1",
            "--format",
            format,
        ])
        .await;
        assert!(
            ran.stdout
                .contains("2 requests carried redacted values instead of credentials"),
            "{format}: {}",
            ran.stdout
        );
    }

    let ran = replay(
        &input,
        &stubs,
        &url,
        &[
            "--run",
            "with-credentials",
            "--header",
            "Authorization: Bearer real-one",
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("1 requests still carried redacted values"),
        "the query's token is still redacted: {}",
        ran.stdout
    );
    let (_, gate) = gate_json(&url, "with-credentials", &["--min-requests", "1"]).await;
    assert_eq!(gate["redacted_requests"], 1, "{gate}");
    let mut authorizations = Vec::new();
    while stubs[0].hits() > authorizations.len() {
        let seen = stubs[0].next_request().await;
        authorizations.push(
            seen.headers
                .get("authorization")
                .map(|value| value.to_str().unwrap().to_string()),
        );
    }
    assert!(
        authorizations
            .iter()
            .filter(|value| value.as_deref() == Some("Bearer real-one"))
            .count()
            == 2,
        "{authorizations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_filters_keep_the_paths_and_methods_asked_for_and_say_how_many_they_left_out() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let input = dir.path().join("mixed.jsonl");
    let mut lines = Vec::new();
    for id in 1..=10 {
        lines.push(format!(r#"{{"method":"GET","uri":"/users/{id}"}}"#));
        lines.push(format!(r#"{{"method":"HEAD","uri":"/users/{id}"}}"#));
        lines.push(format!(r#"{{"method":"GET","uri":"/static/app{id}.css"}}"#));
        lines.push(format!(
            r#"{{"method":"GET","uri":"/users/{id}/avatar.png"}}"#
        ));
    }
    std::fs::write(&input, lines.join("\n")).unwrap();
    let ran = replay(
        &input,
        &stubs,
        &database,
        &[
            "--run",
            "filtered",
            "--include-path",
            "^/users/",
            "--exclude-path",
            r"\.png$",
            "--methods",
            "GET",
        ],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("30 of 40 requests left out by --include-path, --exclude-path or --methods"),
        "{}",
        ran.stderr
    );
    assert_eq!(stubs[0].hits(), 10, "only the GETs of /users/{{id}}");
    let (_, report) = gate_json(&database, "filtered", &[]).await;
    assert_eq!(report["requests"], 10);
    let ran = replay(&input, &stubs, &database, &["--include-path", "^/nowhere"]).await;
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr
            .contains("the filters leave none of its 40 requests"),
        "{}",
        ran.stderr
    );
    let ran = replay(&input, &stubs, &database, &["--include-path", "("]).await;
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr.contains("is not a regular expression"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_at_the_recorded_pace_sends_every_request() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let input = dir.path().join("paced.jsonl");
    let lines: Vec<String> = (0..10)
        .map(|n| {
            format!(
                r#"{{"time":"2026-11-23T10:00:{n:02}.000Z","method":"GET","uri":"/users/{n}"}}"#
            )
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    // Ten seconds recorded, replayed a thousand times faster (how closely the pace is kept is a benchmark's
    // matter, not a test's).
    let ran = replay(
        &input,
        &stubs,
        &database,
        &["--run", "paced", "--speed", "1000x"],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(stubs[0].next_request().await.uri.path().to_string());
    }
    seen.sort();
    let mut expected: Vec<String> = (0..10).map(|n| format!("/users/{n}")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let ran = replay(&input, &stubs, &database, &["--speed", "0x"]).await;
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("is not a speed"), "{}", ran.stderr);
}

fn har_entry(url: &str, response_text: &str) -> Value {
    serde_json::json!({
        "startedDateTime": "2026-11-23T10:15:00.123Z",
        "request": {"method": "GET", "url": url, "headers": [{"name": "accept", "value": "*/*"}]},
        "response": {"status": 200, "content": {"mimeType": "font/woff2", "text": response_text}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_mostly_for_other_hosts_replays_the_host_asked_for_and_counts_the_rest() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let input = dir.path().join("browser.har");
    // A browser session: the API's calls among many large font and CDN downloads, which are read past.
    let font = "A".repeat(4_096);
    let mut entries = Vec::new();
    for n in 0..2_000 {
        entries.push(har_entry(
            &format!("https://cdn.example.net/assets/{n}.woff2"),
            &font,
        ));
        if n % 100 == 0 {
            entries.push(har_entry(
                &format!("https://shop.example.com/users/{}", n / 100 + 1),
                "{}",
            ));
        }
    }
    let har = serde_json::json!({"log": {"version": "1.2", "entries": entries}});
    std::fs::write(&input, serde_json::to_string_pretty(&har).unwrap()).unwrap();

    let ran = replay(
        &input,
        &stubs,
        &database,
        &["--run", "one-host", "--host", "SHOP.example.com"],
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("Replayed 20 requests"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stderr
            .contains("2000 requests to hosts other than SHOP.example.com skipped"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("read (100%)"),
        "progress is told in bytes of the file: {}",
        ran.stderr
    );
    assert_eq!(stubs[0].hits(), 20);
    let (_, report) = gate_json(&database, "one-host", &[]).await;
    assert_eq!(endpoint(&report, "GET /users/{id}")["requests"], 20);

    let ran = replay(
        &input,
        &stubs,
        &database,
        &["--host", "nowhere.example.org"],
    )
    .await;
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr
            .contains("none of its 2020 requests went to nowhere.example.org"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_without_host_replays_the_host_with_the_most_entries_and_says_so() {
    let stubs = users().await;
    let (dir, database) = temp_database();
    let input = dir.path().join("session.har");
    let mut entries = Vec::new();
    for id in 1..=30 {
        entries.push(har_entry(
            &format!("https://shop.example.com/users/{id}"),
            "{}",
        ));
        if id % 3 == 0 {
            entries.push(har_entry("https://fonts.example.net/a.woff2", "AAAA"));
        }
        if id % 10 == 0 {
            entries.push(har_entry("https://cdn.example.net/app.js", "x"));
        }
    }
    let har = serde_json::json!({"log": {"version": "1.2", "entries": entries}});
    std::fs::write(&input, serde_json::to_string(&har).unwrap()).unwrap();

    let ran = replay(&input, &stubs, &database, &["--run", "main-host"]).await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains(
            "replaying the 30 requests to shop.example.com (the host with the most of its 43 requests; \
             2 other hosts skipped; --host chooses another)"
        ),
        "said at start: {}",
        ran.stderr
    );
    assert_eq!(stubs[0].hits(), 30);
    let (_, report) = gate_json(&database, "main-host", &[]).await;
    assert_eq!(report["requests"], 30);
}

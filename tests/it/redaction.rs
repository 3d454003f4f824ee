//! Personal data by value (`--redact-values pii`, the rules file's `[[redact_value]]`), on both backends: an
//! e-mail address, a Luhn-valid card number, a JWT and a named order id in requests and responses are stored
//! and recorded only as their keyed hash, where they sat, and a changed card number is still a regression whose
//! stored values differ; a bad pattern is a one-line error at start.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use shadowdiff::app::{AppSettings, Application};
use shadowdiff::redact::Redactor;
use shadowdiff::redact::values::ValueKind;

use crate::changes::respond;
use crate::support::db::TestDb;
use crate::support::stub::{Seen, StubBody};
use crate::support::{TestApp, client, get_json, wait_for};

crate::support::on_both_backends!(
    personal_data_is_stored_and_recorded_only_hashed_and_a_changed_card_still_regresses
);

const KEY: &str = "redaction test key";
const EMAIL: &str = "ada@example.com";
const CARD: &str = "4111 1111 1111 1111";
/// Another Luhn-valid card number: the candidate's.
const OTHER_CARD: &str = "5555 5555 5555 4444";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLW9mLWFkYQ";
const ORDER: &str = "ORD-12345678";

/// Everything that must never be stored or recorded as it came.
const PERSONAL: [&str; 6] = [EMAIL, "ada%40example.com", CARD, OTHER_CARD, JWT, ORDER];

fn token(value: &str) -> String {
    Redactor::new(KEY.as_bytes().to_vec(), &[]).token(value.as_bytes())
}

fn answer(_: &Seen, candidate: bool) -> Response<StubBody> {
    let card = if candidate { OTHER_CARD } else { CARD };
    let body = json!({"email": EMAIL, "card": card, "login": JWT, "note": format!("ship to {EMAIL} today"),
                      "order": ORDER, "count": 3});
    respond(StatusCode::OK, &[("x-contact", EMAIL)], body.to_string())
}

fn rules_file(dir: &Path, pattern: &str) -> std::path::PathBuf {
    let path = dir.join("rules.toml");
    std::fs::write(
        &path,
        format!("[[redact_value]]\nname = \"order id\"\npattern = \"{pattern}\"\n"),
    )
    .unwrap();
    path
}

fn pii_settings(settings: &mut AppSettings, rules: &Path) {
    settings.redaction.key = Some(KEY.into());
    settings.redaction.values = ValueKind::ALL.to_vec();
    settings.analysis.rules = Some(rules.to_path_buf());
    settings.proxy.shadow.allow_side_effects = true;
    settings.writer.flush_interval = Duration::from_millis(50);
}

async fn personal_data_is_stored_and_recorded_only_hashed_and_a_changed_card_still_regresses(
    db: TestDb,
) {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(dir.path(), "ORD-[0-9]{8}");
    let record = dir.path().join("recorded.jsonl");
    let stubs = crate::changes::upstreams(answer).await;
    let record_flag = record.clone();
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| {
            pii_settings(s, &rules);
            s.writer.run = Some("pii".into());
            s.proxy.record = Some(record_flag);
        },
        db.url(),
    )
    .await;
    let request =
        json!({"email": EMAIL, "card": CARD.replace(' ', ""), "login": JWT, "order": ORDER});
    for _ in 0..5 {
        let answered = client()
            .post(app.url("/orders?email=ada%40example.com&page=2"))
            .header("x-user", format!("mail {EMAIL}"))
            .header("content-type", "application/json")
            .body(request.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 200);
        let body: Value = answered.json().await.unwrap();
        assert_eq!(
            body["email"], EMAIL,
            "the caller gets primary's answer as it came"
        );
    }
    let endpoints = app.admin_url("/api/v1/runs/pii/endpoints");
    wait_for("the five requests to be counted", || async {
        get_json(&endpoints).await[0]["requests"] == 5
    })
    .await;
    let samples = app.admin_url("/api/v1/runs/pii/samples?endpoint=POST%20%2Forders");
    wait_for("a sample", || async {
        get_json(&samples).await[0]["id"].is_string()
    })
    .await;
    let endpoint = get_json(&endpoints).await[0].clone();
    let id = get_json(&samples).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let document = get_json(&app.admin_url(&format!("/api/v1/exchanges/{id}"))).await;
    app.stop().await;

    // The comparison saw the real values: the card changed, the e-mail address did not.
    let regressions: Vec<&str> = endpoint["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(regressions.contains(&"body/card"), "{endpoint:#}");
    assert!(
        !regressions.iter().any(|path| path.contains("email")),
        "{endpoint:#}"
    );

    let primary: Value =
        serde_json::from_str(document["primary"]["body"]["text"].as_str().unwrap()).unwrap();
    let candidate: Value =
        serde_json::from_str(document["candidate"]["body"]["text"].as_str().unwrap()).unwrap();
    // Equal values hash equal (on every side), different ones differ; the rest of a string stays.
    assert_eq!(primary["email"], token(EMAIL));
    assert_eq!(candidate["email"], token(EMAIL));
    assert_eq!(primary["card"], token(CARD));
    assert_eq!(candidate["card"], token(OTHER_CARD));
    assert_ne!(token(CARD), token(OTHER_CARD));
    assert_eq!(primary["login"], token(JWT));
    assert_eq!(primary["order"], token(ORDER));
    assert_eq!(primary["note"], format!("ship to {} today", token(EMAIL)));
    assert_eq!(primary["count"], 3);
    let card_change = document["candidate_differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "body/card")
        .expect("the card's difference is in the sample");
    assert_eq!(card_change["primary"], format!("\"{}\"", token(CARD)));
    assert_eq!(card_change["other"], format!("\"{}\"", token(OTHER_CARD)));
    let header = |headers: &Value, name: &str| {
        headers
            .as_array()
            .unwrap()
            .iter()
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    assert_eq!(
        header(&document["primary"]["headers"], "x-contact"),
        Some(json!(token(EMAIL)))
    );
    assert_eq!(
        header(&document["request"]["headers"], "x-user"),
        Some(json!(format!("mail {}", token(EMAIL))))
    );
    let uri = document["request"]["uri"].as_str().unwrap();
    assert!(
        uri.ends_with(&format!("email={}&page=2", token(EMAIL))),
        "{uri}"
    );
    let sent: Value =
        serde_json::from_str(document["request"]["body"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(sent["card"], token(&CARD.replace(' ', "")));

    let stored = db.everything_as_text();
    for value in PERSONAL {
        assert!(!stored.contains(value), "{value} is stored as it came");
    }

    // The recording: each request with its personal data hashed in place, still a request to replay.
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(recorded.lines().count(), 5);
    for line in recorded.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let body = base64::engine::general_purpose::STANDARD
            .decode(line["body_base64"].as_str().unwrap())
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["email"], token(EMAIL));
        assert_eq!(body["card"], token(&CARD.replace(' ', "")));
        assert_eq!(body["login"], token(JWT));
        assert_eq!(body["order"], token(ORDER));
        let text = line.to_string();
        for value in PERSONAL {
            assert!(
                !text.contains(value),
                "{value} is recorded as it came: {text}"
            );
        }
        assert!(text.contains(&token(EMAIL)), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_pattern_is_a_one_line_error_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(dir.path(), "ORD-([0-9]");
    let (_db, url) = crate::support::temp_database();
    let settings = crate::support::settings(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        |s| {
            pii_settings(s, &rules);
            s.store.database_url = url;
        },
    );
    let error = Application::build(settings)
        .await
        .err()
        .expect("a bad pattern stops the start");
    let text = error.to_string();
    assert!(text.contains("redact_value \"order id\""), "{text}");
    assert!(text.contains(":1:") || text.contains("line 1"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

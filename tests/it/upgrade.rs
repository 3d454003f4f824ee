//! Databases written by earlier versions upgrade in place and read back through today's code: a fixture made
//! with the first schema (runs, counts, latency histograms, samples, a stored rule) is loaded under that schema,
//! migrated by the store as any start would, and judged, listed and opened as before.

use std::str::FromStr;

use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use shadowdiff::store::runs::Start;

use crate::support::db::TestDb;
use crate::support::process::run_command;

crate::support::on_both_backends!(a_first_schema_database_upgrades_and_reads_back);

/// The version of the first migration: the schema the fixture was written with.
const FIRST_SCHEMA: i64 = 20261123000001;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/schema-v1/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

/// Creates the first schema only, as the first version left a database, and fills it with the fixture.
async fn load_first_schema(db: &TestDb) {
    if db.is_postgres() {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(db.url())
            .await
            .unwrap();
        sqlx::migrate!("./migrations/postgres")
            .run_to(FIRST_SCHEMA, &pool)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(fixture("postgres.sql")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let options = SqliteConnectOptions::from_str(db.url())
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(FIRST_SCHEMA, &pool)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(fixture("sqlite.sql")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// Latency figures may move within the relative error of the histogram they are read into; every other
/// figure must be the same.
fn assert_same_verdict(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            let keys =
                |map: &serde_json::Map<String, Value>| map.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(expected), keys(actual), "keys at {at}");
            for (key, value) in expected {
                assert_same_verdict(value, &actual[key], &format!("{at}/{key}"));
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            assert_eq!(expected.len(), actual.len(), "length at {at}");
            for (index, (expected, actual)) in expected.iter().zip(actual).enumerate() {
                assert_same_verdict(expected, actual, &format!("{at}/{index}"));
            }
        }
        (Value::Number(expected), Value::Number(actual)) if at.contains("/latency/") => {
            let (expected, actual) = (expected.as_f64().unwrap(), actual.as_f64().unwrap());
            assert!(
                (actual - expected).abs() <= expected * 0.02 + 0.001,
                "{at}: {actual} is not within 2% of {expected}"
            );
        }
        _ => assert_eq!(expected, actual, "at {at}"),
    }
}

async fn a_first_schema_database_upgrades_and_reads_back(db: TestDb) {
    load_first_schema(&db).await;
    // Connecting and migrating is what every command does at start.
    let store = db.store().await;

    let runs = store.runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].label, "fixture-v1");
    // Maps' positions came later: the old run has none, and its places read back as they were stored.
    assert!(store.key_positions(runs[0].id).await.unwrap().is_empty());

    // The verdict the first version gave for this run, word for word (latency within the histogram's error).
    let ran = run_command(&[
        "gate",
        "--run",
        "fixture-v1",
        "--format",
        "json",
        "--database-url",
        db.url(),
    ])
    .await;
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let expected: Value = serde_json::from_str(&fixture("gate.json")).unwrap();
    let mut actual: Value = serde_json::from_str(&ran.stdout).unwrap();
    // What came after the first version: the changes, worked out from the stored counts alone.
    let changes = actual
        .as_object_mut()
        .and_then(|report| report.remove("changes"))
        .expect("the upgraded run has changes");
    assert_same_verdict(&expected, &actual, "");
    let changes = changes.as_array().unwrap();
    let mut grouped: Vec<(String, String, String)> = Vec::new();
    for change in changes {
        assert!(
            change["predictors"].as_array().unwrap().is_empty(),
            "no sketch was kept by the first version: {change:#}"
        );
        for place in change["places"]
            .as_array()
            .unwrap()
            .iter()
            .chain(change["consequences"].as_array().unwrap())
        {
            grouped.push((
                place["endpoint"].as_str().unwrap().to_string(),
                place["path"].as_str().unwrap().to_string(),
                place["kind"].as_str().unwrap().to_string(),
            ));
        }
    }
    grouped.sort();
    let mut failing: Vec<(String, String, String)> = Vec::new();
    for endpoint in expected["endpoints"].as_array().unwrap() {
        if endpoint["latency_regression"] == true {
            let name = endpoint["endpoint"].as_str().unwrap().to_string();
            failing.push((name, "latency".into(), "slower".into()));
        }
        for regression in endpoint["regressions"].as_array().unwrap() {
            failing.push((
                endpoint["endpoint"].as_str().unwrap().to_string(),
                regression["path"].as_str().unwrap().to_string(),
                regression["kind"].as_str().unwrap().to_string(),
            ));
        }
    }
    failing.sort();
    assert_eq!(
        grouped, failing,
        "every failing place is in exactly one change"
    );
    assert_eq!(
        changes.len(),
        4,
        "the rename is one change of two places: {changes:#?}"
    );

    // Every sample the verdict points at opens, whole, under its endpoint.
    let mut opened = 0;
    for endpoint in expected["endpoints"].as_array().unwrap() {
        for regression in endpoint["regressions"].as_array().unwrap() {
            let id = regression["sample"].as_str().unwrap();
            let document = store.exchange(id).await.unwrap().expect("sample stored");
            assert_eq!(document.run, "fixture-v1");
            assert_eq!(document.endpoint, endpoint["endpoint"].as_str().unwrap());
            assert!(document.primary.status.is_some());
            assert!(
                document
                    .candidate_differences
                    .iter()
                    .any(|d| d.difference.generalised == regression["path"].as_str().unwrap()),
                "sample {id} shows {}",
                regression["path"]
            );
            opened += 1;
        }
    }
    assert_eq!(opened, 4);
    let listed = store
        .samples(runs[0].id, "GET /users/{id}", None, 50)
        .await
        .unwrap();
    assert!(!listed.is_empty());

    // The stored rule is still in force.
    let rules = store.rules().await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].spec.path, "header/x-request-id");
    assert_eq!(rules[0].spec.endpoint.as_deref(), Some("GET /orders/{id}"));
    assert_eq!(
        (
            rules[0].spec.kind,
            rules[0].spec.compat,
            &rules[0].spec.note
        ),
        (None, None, &None),
        "a rule stored before accept rules has no kind, class or note"
    );
    // And takes accept rules, with what they hold to, beside it.
    let accept = shadowdiff::analysis::rules::RuleSpec::accept(
        Some("GET /users/{id}".into()),
        "body/name",
        Some(shadowdiff::analysis::diff::DiffKind::Missing),
        Some(shadowdiff::analysis::compat::Compat::Breaking),
        Some("renamed".into()),
    );
    store.add_rule(&accept, 1).await.unwrap();
    let rules = store.rules().await.unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].spec, accept);

    // The upgraded database takes runs started without a restart: the old run is open until another is
    // started for its upstreams, then closed and kept.
    assert_eq!(runs[0].closed_at_ms, None);
    let urls = [
        runs[0].primary_url.as_str(),
        runs[0].secondary_url.as_str(),
        runs[0].candidate_url.as_str(),
    ];
    let (first, changed) = store
        .start_run("fixture-v1", urls, 1, Start::Replace, None)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(
        first.id, runs[0].id,
        "the old run itself becomes the active one"
    );
    let (second, changed) = store
        .start_run("after-upgrade", urls, 2, Start::Replace, None)
        .await
        .unwrap();
    assert!(changed && second.id != first.id);
    let runs = store.runs().await.unwrap();
    let old = runs.iter().find(|run| run.label == "fixture-v1").unwrap();
    assert_eq!(old.closed_at_ms, Some(2));
    assert_eq!(store.active_run(urls).await.unwrap(), Some(second));
}

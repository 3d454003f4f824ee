//! Changes where several writers or hostile callers are involved: two replicas writing one run give the changes
//! (ids, places, predictors) one process gives for the same traffic, and a caller sending a hundred thousand
//! distinct query parameters and headers gets them counted as dropped features, the sketches staying their size.

use std::collections::BTreeSet;

use http::{Response, StatusCode};
use serde_json::Value;
use shadowdiff::features::sketch::MAX_NAMES;
use shadowdiff::report::changes::Change;
use shadowdiff::store::metrics::FeaturesDropped;

use crate::changes::{
    Request, changes_of, euro_rounding, instance, middleware_and_shape, priced, respond, send,
    twenty_resources, upstreams,
};
use crate::support::db::TestDb;
use crate::support::stub::{Seen, StubBody};

crate::support::on_both_backends!(
    hostile_feature_names_are_counted_as_dropped_not_kept,
    accepting_a_change_through_the_api_accepts_every_place_of_it_once,
);

/// The middleware and shape changes on twenty resources, and the euro rounding on prices.
fn mixed(seen: &Seen, candidate: bool) -> Response<StubBody> {
    if seen.uri.path().starts_with("/prices/") {
        euro_rounding(seen, candidate)
    } else {
        middleware_and_shape(seen, candidate)
    }
}

/// The changes as every replica must agree on them: everything but which exchange is shown as a sample.
fn comparable(changes: &[Change]) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(object) => {
                object.remove("sample");
                object.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(changes).unwrap();
    strip(&mut value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_give_the_changes_and_ids_of_one_process() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut traffic: Vec<Request> = twenty_resources();
    traffic.extend(priced(200));
    let stubs = upstreams(mixed).await;

    let single = instance(&db, "single", &stubs).await;
    send(&single, &traffic).await;
    single.stop().await;

    let first = instance(&db, "shared", &stubs).await;
    let second = instance(&db, "shared", &stubs).await;
    let even: Vec<Request> = traffic.iter().step_by(2).cloned().collect();
    let odd: Vec<Request> = traffic.iter().skip(1).step_by(2).cloned().collect();
    tokio::join!(send(&first, &odd), send(&second, &even));
    first.stop().await;
    second.stop().await;

    let alone = changes_of(&db, "single").await;
    let together = changes_of(&db, "shared").await;
    assert_eq!(alone.len(), 3, "{alone:#?}");
    let (alone_json, together_json) = (comparable(&alone), comparable(&together));
    for (one, both) in alone_json
        .as_array()
        .unwrap()
        .iter()
        .zip(together_json.as_array().unwrap())
    {
        assert_eq!(
            serde_json::to_string_pretty(one).unwrap(),
            serde_json::to_string_pretty(both).unwrap(),
            "one process, then two replicas"
        );
    }
    assert_eq!(alone_json, together_json);
    let ids: BTreeSet<&str> = together.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    let euro = together
        .iter()
        .find(|c| c.endpoints == ["GET /prices/{id}"])
        .expect("the euro change");
    assert_eq!(
        euro.predictors[0].value.as_deref(),
        Some("EUR"),
        "{euro:#?}"
    );
}

/// Every version answers the same: the requests are compared and pass.
fn same(_: &Seen, _: bool) -> Response<StubBody> {
    respond(StatusCode::OK, &[], r#"{"results":[]}"#.into())
}

/// Requests: at most this many.
const REQUESTS: usize = 100;
/// Distinct query parameters per request: a hundred thousand over the requests.
const PARAMETERS: usize = 1_000;

async fn hostile_feature_names_are_counted_as_dropped_not_kept(db: TestDb) {
    let stubs = upstreams(same).await;
    let app = instance(&db, "hostile", &stubs).await;
    let requests: Vec<Request> = (0..REQUESTS)
        .map(|request| {
            let query: Vec<String> = (0..PARAMETERS)
                .map(|n| format!("p{}=v{n}", request * PARAMETERS + n))
                .collect();
            let headers = (0..8)
                .map(|n| {
                    let name: &'static str =
                        ["x-a", "x-b", "x-c", "x-d", "x-e", "x-f", "x-g", "x-h"][n];
                    (name, format!("{request}-{n}"))
                })
                .collect();
            (format!("/search?{}", query.join("&")), headers)
        })
        .collect();
    send(&app, &requests).await;
    let metrics = app.metrics.clone();
    app.stop().await;
    let dropped = metrics
        .store
        .features_dropped_count(FeaturesDropped::RequestCap);
    let kept_per_request = shadowdiff::features::extract::MAX_QUERY_PARAMS;
    assert!(
        dropped >= (REQUESTS * (PARAMETERS - kept_per_request)) as u64,
        "the parameters past the cap are counted: {dropped}"
    );

    let store = db.store().await;
    let run = store.run("hostile").await.unwrap().expect("the run");
    let report = shadowdiff::report::Reports::new(
        store.clone(),
        std::sync::Arc::new(shadowdiff::analysis::rules::RuleSet::default()),
        shadowdiff::analysis::aggregate::VerdictSettings::default(),
    )
    .judge(run.clone(), shadowdiff::store::queries::TimeRange::all())
    .await
    .unwrap();
    assert_eq!(
        report.requests, REQUESTS as u64,
        "every request compared and stored"
    );
    let endpoints = BTreeSet::from(["GET /search".to_string()]);
    let sketches = store
        .feature_sketches(run.id, &endpoints)
        .await
        .unwrap()
        .expect("under the cap on sketches read");
    assert_eq!(sketches.len(), 1, "one signature (none failed): one sketch");
    for sketch in sketches.values() {
        assert_eq!(sketch.requests, REQUESTS as u64);
        let names: BTreeSet<&str> = sketch.features().map(|f| f.name).collect();
        assert!(names.len() <= MAX_NAMES, "{} names", names.len());
        assert!(
            sketch.encode().len() < 96 << 10,
            "the stored sketch stays its size: {} bytes",
            sketch.encode().len()
        );
        // What every request had is still counted exactly, whatever the junk pushed through.
        let method = sketch.features().find(|f| f.name == "method").unwrap();
        assert_eq!(
            (method.lower, method.upper),
            (REQUESTS as u64, REQUESTS as u64)
        );
    }
}

async fn accepting_a_change_through_the_api_accepts_every_place_of_it_once(db: TestDb) {
    let stubs = upstreams(mixed).await;
    let app = instance(&db, "accepted", &stubs).await;
    send(&app, &twenty_resources()).await;
    crate::support::wait_for("the traffic to be stored", || async {
        let listed = crate::web::admin_json(&app, "/api/v1/runs/accepted/changes").await;
        listed["requests"] == 200
    })
    .await;
    let listed = crate::web::admin_json(&app, "/api/v1/runs/accepted/changes").await;
    let shape = listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|change| change["endpoints"].as_array().unwrap().len() == 5)
        .expect("the shape change")
        .clone();
    let accept = format!(
        "/api/v1/runs/accepted/changes/{}/accept",
        shape["id"].as_str().unwrap()
    );
    let first = post(&app, &accept).await;
    assert_eq!(first.status(), 201);
    let made: Value = first.json().await.unwrap();
    assert_eq!(
        made["rules"].as_array().unwrap().len(),
        75,
        "a rule per place: {made}"
    );
    // Accepted, it is no longer a change: accepting it again finds nothing.
    assert_eq!(post(&app, &accept).await.status(), 404);
    let unknown = post(&app, "/api/v1/runs/accepted/changes/ch-000000000000/accept").await;
    assert_eq!(unknown.status(), 404);

    let after = crate::web::admin_json(&app, "/api/v1/runs/accepted/changes").await;
    let left: Vec<&str> = after["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["title"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["`header/vary` missing on 20 endpoints"]);
    let rules = crate::web::admin_json(&app, "/api/v1/rules").await;
    let stored = rules["stored"].as_array().unwrap();
    assert_eq!(stored.len(), 75);
    assert!(
        stored
            .iter()
            .all(|rule| rule["note"] == "the new envelope" && rule["action"] == "accept")
    );
    app.stop().await;
}

/// Accepts a change through the API, with a note.
async fn post(app: &crate::support::TestApp, path: &str) -> reqwest::Response {
    crate::support::client()
        .post(app.admin_url(path))
        .json(&serde_json::json!({"note": "the new envelope"}))
        .send()
        .await
        .unwrap()
}

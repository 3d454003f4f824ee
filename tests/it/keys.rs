//! Maps keyed by data (user names, not ids) on both backends: 10 000 keys make a few `{key}` places, not one
//! per user, in every view; a position learned by one instance is adopted by another on the same database and
//! after a restart; places past the cap per endpoint count under `{other}`; a rule naming `{key}` applies.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use shadowdiff::analysis::aggregate::VerdictSettings;
use shadowdiff::analysis::keys::KeyPosition;
use shadowdiff::analysis::rules::RuleSet;
use shadowdiff::app::AppSettings;
use shadowdiff::report::Reports;
use shadowdiff::store::Store;
use shadowdiff::store::places::PlaceOverflow;
use shadowdiff::store::queries::TimeRange;

use crate::support::db::TestDb;
use crate::support::stub::{Seen, Stub, json_response};
use crate::support::{TestApp, client, get_json, wait_for};

crate::support::on_both_backends!(
    ten_thousand_user_keys_make_at_most_three_places,
    a_learned_position_is_adopted_by_another_instance_and_after_a_restart,
    places_past_the_cap_per_endpoint_count_under_other,
    a_rule_naming_key_applies_before_and_after_the_position_is_learned,
);

const ENDPOINT: &str = "GET /team/{id}";
const USERS_PER_TEAM: usize = 10;
/// Latency is not what these tests are about.
const NO_LATENCY_VERDICT: f64 = 1e9;

/// The field of user 0 the candidate changes, from the request's query (`?field=role`), `name` by default.
fn changed_field(seen: &Seen) -> String {
    seen.uri
        .query()
        .and_then(|query| query.strip_prefix("field="))
        .unwrap_or("name")
        .to_string()
}

/// `/team/{n}`: a map of 10 users keyed by name (`user-{n}-{i}`: not identifier-like), each with a few fields;
/// the candidate changes one field of the first user.
fn team(seen: &Seen, candidate: bool) -> http::Response<crate::support::stub::StubBody> {
    let team = seen
        .uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("0")
        .to_string();
    let changed = changed_field(seen);
    let mut users = serde_json::Map::new();
    for index in 0..USERS_PER_TEAM {
        let mut user = json!({"name": format!("name {index}"), "role": "dev", "team": "core"});
        if candidate && index == 0 {
            user[&changed] = json!("CHANGED");
        }
        users.insert(format!("user-{team}-{index}"), user);
    }
    json_response(
        StatusCode::OK,
        &json!({"team": team, "users": users, "version": if candidate { 2 } else { 1 }})
            .to_string(),
    )
}

async fn team_stubs() -> [Stub; 3] {
    [
        Stub::start(|seen| async move { team(&seen, false) }).await,
        Stub::start(|seen| async move { team(&seen, false) }).await,
        Stub::start(|seen| async move { team(&seen, true) }).await,
    ]
}

/// An instance writing run `keys` into `db` in front of `stubs`.
async fn instance(
    db: &TestDb,
    stubs: &[Stub; 3],
    change: impl FnOnce(&mut AppSettings),
) -> TestApp {
    TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        move |s| {
            s.writer.run = Some("keys".into());
            s.writer.flush_interval = Duration::from_millis(20);
            s.verdicts.latency_factor = NO_LATENCY_VERDICT;
            change(s);
        },
        db.url(),
    )
    .await
}

/// Sends `GET /team/{n}` for each team, reading each answer whole.
async fn send_teams(app: &TestApp, teams: impl IntoIterator<Item = usize>, query: &str) {
    let client = client();
    for team in teams {
        let response = client
            .get(app.url(&format!("/team/{team}{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
    }
}

fn reports(store: Store) -> Reports {
    let verdicts = VerdictSettings {
        latency_factor: NO_LATENCY_VERDICT,
        ..VerdictSettings::default()
    };
    Reports::new(store, Arc::new(RuleSet::default()), verdicts)
}

async fn run_id(store: &Store) -> i64 {
    store.run("keys").await.unwrap().expect("the run").id
}

/// The places stored for the endpoint, as rows hold them (nothing folded).
async fn stored_paths(store: &Store) -> Vec<String> {
    let mut paths: Vec<String> = store
        .stored_places(run_id(store).await)
        .await
        .unwrap()
        .into_iter()
        .filter(|(endpoint, _, _)| endpoint == ENDPOINT)
        .map(|(_, path, _)| path)
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

async fn ten_thousand_user_keys_make_at_most_three_places(db: TestDb) {
    let stubs = team_stubs().await;
    let app = instance(&db, &stubs, |_| {}).await;
    send_teams(&app, 0..1000, "").await;
    let endpoints_url = app.admin_url("/api/v1/runs/keys/endpoints");
    wait_for("the 1 000 exchanges to be stored", || {
        let url = endpoints_url.clone();
        async move { get_json(&url).await[0]["requests"] == 1000 }
    })
    .await;

    // The web API: one endpoint, whose regressions are the version and one place under `{key}`.
    let endpoints = get_json(&endpoints_url).await;
    let endpoint = &endpoints[0];
    assert_eq!(endpoint["endpoint"], ENDPOINT);
    let mut places: Vec<(String, String)> = endpoint["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().into(),
                r["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    places.sort();
    assert_eq!(
        places,
        [
            (
                "body/users/{key}/name".to_string(),
                "value_changed".to_string()
            ),
            ("body/version".into(), "value_changed".into()),
        ],
        "{endpoint:#}"
    );
    let name = endpoint["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "body/users/{key}/name")
        .unwrap();
    assert_eq!(
        name["raw"], 1000,
        "every request counts under the one place: {name}"
    );
    assert!(name["sample"].is_string(), "the place has a sample: {name}");

    // The samples of the place, by its `{key}` path (those taken before it was learned included).
    let samples = get_json(&app.admin_url(
        "/api/v1/runs/keys/samples?endpoint=GET%20%2Fteam%2F%7Bid%7D&path=body%2Fusers%2F%7Bkey%7D%2Fname&kind=value_changed",
    ))
    .await;
    assert!(!samples.as_array().unwrap().is_empty(), "{samples}");
    app.stop().await;

    // The report, its changes and the gate read the same places.
    let store = db.store().await;
    let report = reports(store.clone())
        .explained("keys", TimeRange::all())
        .await
        .unwrap();
    let endpoint = report
        .endpoints
        .iter()
        .find(|e| e.endpoint == ENDPOINT)
        .unwrap();
    assert!(
        endpoint.regressions.len() <= 3,
        "{:?}",
        endpoint.regressions
    );
    assert!(
        endpoint.noise.is_empty(),
        "secondary agreed: {:?}",
        endpoint.noise
    );
    let changed: Vec<&str> = report
        .changes
        .iter()
        .flat_map(|change| change.places.iter().chain(&change.consequences))
        .map(|place| place.path.as_str())
        .collect();
    assert!(changed.contains(&"body/users/{key}/name"), "{changed:?}");
    assert!(
        changed.iter().all(|path| !path.contains("user-")),
        "no per-user place in the changes: {changed:?}"
    );
    let run = run_id(&store).await;
    let sampled = store
        .samples(
            run,
            ENDPOINT,
            Some(("body/users/{key}/name", "value_changed")),
            100,
        )
        .await
        .unwrap();
    assert!(!sampled.is_empty());
    // Samples taken before the position was learned show the place as it is counted now.
    let first = sampled.last().unwrap();
    let document = store.exchange(&first.id).await.unwrap().unwrap();
    let places: Vec<&str> = document
        .candidate_differences
        .iter()
        .map(|d| d.difference.generalised.as_str())
        .collect();
    assert!(places.contains(&"body/users/{key}/name"), "{places:?}");
    assert!(
        places.iter().all(|place| !place.contains("user-")),
        "{places:?}"
    );

    // What is stored is bounded too: the places from before the position was learned (at most the threshold
    // of keys), then the `{key}` place, not one per user.
    let stored = stored_paths(&store).await;
    assert!(
        stored.len() <= 2 + shadowdiff::analysis::keys::KeySettings::DEFAULT_THRESHOLD,
        "{} places stored: {stored:?}",
        stored.len()
    );
    assert!(stored.contains(&"body/users/{key}/name".to_string()));
    assert_eq!(
        store.key_positions(run).await.unwrap(),
        [KeyPosition {
            endpoint: ENDPOINT.into(),
            position: "body/users".into()
        }]
    );
}

/// Sends a new team at a time (numbered from `first_team`), the candidate changing `field`, until `app` has
/// stored that change at the `{key}` place.
async fn until_key_place_stored(app: &TestApp, store: &Store, first_team: usize, field: &str) {
    let mut team = first_team;
    let place = format!("body/users/{{key}}/{field}");
    let query = format!("?field={field}");
    wait_for(&format!("the instance to store {place}"), || {
        team += 1;
        let (place, query) = (&place, &query);
        async move {
            send_teams(app, [team], query).await;
            stored_paths(store).await.contains(place)
        }
    })
    .await;
}

async fn a_learned_position_is_adopted_by_another_instance_and_after_a_restart(db: TestDb) {
    let stubs = team_stubs().await;
    // `learner` learns from a few teams; `follower` and `restarted` could not learn from what they see.
    let learner = instance(&db, &stubs, |s| s.analysis.keys.threshold = 8).await;
    let follower = instance(&db, &stubs, |s| s.analysis.keys.threshold = 1_000_000).await;
    send_teams(&learner, 0..20, "").await;
    learner.stop().await;
    let store = db.store().await;
    let run = run_id(&store).await;
    let learned = KeyPosition {
        endpoint: ENDPOINT.into(),
        position: "body/users".into(),
    };
    assert_eq!(
        store.key_positions(run).await.unwrap(),
        std::slice::from_ref(&learned)
    );

    // The instance that was already running adopts it at its heartbeat: its own places are `{key}` ones.
    until_key_place_stored(&follower, &store, 1000, "role").await;
    follower.stop().await;

    // An instance started afterwards reads it from the store.
    let restarted = instance(&db, &stubs, |s| s.analysis.keys.threshold = 1_000_000).await;
    until_key_place_stored(&restarted, &store, 2000, "team").await;
    restarted.stop().await;
    assert_eq!(
        store.key_positions(run).await.unwrap(),
        [learned],
        "adopted, not learned again"
    );
    let report = reports(store.clone())
        .report("keys", TimeRange::all())
        .await
        .unwrap();
    let endpoint = report
        .endpoints
        .iter()
        .find(|e| e.endpoint == ENDPOINT)
        .unwrap();
    let paths: Vec<&str> = endpoint
        .regressions
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    assert!(
        paths.iter().all(|path| !path.contains("user-")),
        "the learner's places from before are folded: {paths:?}"
    );
    assert!(paths.contains(&"body/users/{key}/name"), "{paths:?}");
}

/// `/wide`: 20 fields, all of which the candidate changes.
fn wide(candidate: bool) -> http::Response<crate::support::stub::StubBody> {
    let fields: serde_json::Map<String, Value> = (0..20)
        .map(|n| {
            (
                format!("field{n}"),
                json!(if candidate { n + 100 } else { n }),
            )
        })
        .collect();
    json_response(StatusCode::OK, &Value::Object(fields).to_string())
}

async fn places_past_the_cap_per_endpoint_count_under_other(db: TestDb) {
    let stubs = [
        Stub::start(|_| async move { wide(false) }).await,
        Stub::start(|_| async move { wide(false) }).await,
        Stub::start(|_| async move { wide(true) }).await,
    ];
    let app = instance(&db, &stubs, |s| s.writer.max_places_per_endpoint = 5).await;
    let response = client().get(app.url("/wide")).send().await.unwrap();
    response.bytes().await.unwrap();
    let metrics = app.metrics.clone();
    let requests_url = app.admin_url("/api/v1/runs/keys/endpoints");
    wait_for("the exchange to be stored", || {
        let url = requests_url.clone();
        async move { get_json(&url).await[0]["requests"] == 1 }
    })
    .await;
    assert_eq!(
        metrics
            .store
            .places_overflowed_count(PlaceOverflow::EndpointCap),
        15,
        "20 places, 5 kept"
    );
    assert!(
        app.scrape()
            .await
            .contains("shadowdiff_places_overflowed_total{cap=\"endpoint_cap\"} 15")
    );
    app.stop().await;
    let store = db.store().await;
    let stored: Vec<String> = store
        .stored_places(run_id(&store).await)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, path, _)| path)
        .collect();
    assert_eq!(stored.len(), 6, "five places and {{other}}: {stored:?}");
    assert!(stored.contains(&"{other}".to_string()));
    let report = reports(store)
        .report("keys", TimeRange::all())
        .await
        .unwrap();
    let regressions = &report.endpoints[0].regressions;
    assert_eq!(regressions.len(), 6, "{regressions:?}");
    let other = regressions.iter().find(|r| r.path == "{other}").unwrap();
    assert_eq!(other.raw, 1, "counted per request, like any place");
}

async fn a_rule_naming_key_applies_before_and_after_the_position_is_learned(db: TestDb) {
    let stubs = team_stubs().await;
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "[[rule]]\nendpoint = \"GET /team/{id}\"\npath = \"body/users/{key}/name\"\naction = \"ignore\"\n",
    )
    .unwrap();
    let path = rules.path().to_path_buf();
    // Learned after 9 teams: the first ones are compared before it is, the others after.
    let app = instance(&db, &stubs, move |s| {
        s.analysis.rules = Some(path);
        s.analysis.keys.threshold = 8;
    })
    .await;
    send_teams(&app, 0..30, "").await;
    send_teams(&app, 30..40, "?field=role").await;
    send_teams(&app, 40..60, "").await;
    app.stop().await;
    let store = db.store().await;
    assert_eq!(
        store
            .key_positions(run_id(&store).await)
            .await
            .unwrap()
            .len(),
        1,
        "the position was learned (from the roles, as the names were ignored)"
    );
    let report = reports(store)
        .report("keys", TimeRange::all())
        .await
        .unwrap();
    let mut paths: Vec<String> = report.endpoints[0]
        .regressions
        .iter()
        .map(|r| r.path.clone())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["body/users/{key}/role", "body/version"],
        "names ignored under every key; roles regress"
    );
}

//! From places to causes on stub pairs, each on both backends: a header dropped everywhere is one change, a
//! shape change stays apart from it, what trails a 500 is listed under it, and the request feature a change
//! depends on (a query value, a header value) is named, with both shares; a change on every request has none.

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use shadowdiff::analysis::aggregate::VerdictSettings;
use shadowdiff::analysis::rules::RuleSet;
use shadowdiff::app::AppSettings;
use shadowdiff::report::changes::{Change, Predictor};
use shadowdiff::report::{Reports, RunReport};
use shadowdiff::store::Store;
use shadowdiff::store::queries::TimeRange;

use crate::support::db::TestDb;
use crate::support::stub::{Seen, Stub, StubBody, full};
use crate::support::{TestApp, client};

crate::support::on_both_backends!(
    one_header_dropped_on_twenty_endpoints_is_one_change,
    a_shape_change_on_five_endpoints_stays_apart_from_a_header_dropped_everywhere,
    what_trails_a_500_in_two_percent_of_requests_is_listed_under_it,
    a_regression_only_for_one_currency_names_that_query_value,
    a_regression_only_for_one_client_names_that_header_value,
    a_regression_on_every_request_has_no_predictor,
);

/// How one version of a service answers a request (`candidate`: the new version).
pub type Answer = fn(&Seen, bool) -> Response<StubBody>;

/// A JSON answer with these headers.
pub fn respond(status: StatusCode, headers: &[(&str, &str)], body: String) -> Response<StubBody> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(full(body)).unwrap()
}

/// The current version twice and the candidate.
pub async fn upstreams(answer: Answer) -> [Stub; 3] {
    [
        Stub::start(move |seen| async move { answer(&seen, false) }).await,
        Stub::start(move |seen| async move { answer(&seen, false) }).await,
        Stub::start(move |seen| async move { answer(&seen, true) }).await,
    ]
}

/// A request: its path and query, and its headers.
pub type Request = (String, Vec<(&'static str, String)>);

/// Latency verdicts are not what these tests are about: a loaded test machine can make a stub's p99 look
/// slower, which would add a latency change; this factor makes none.
pub const NO_LATENCY_VERDICT: f64 = 1e9;

/// An instance writing run `label` into `db`, in front of `stubs`.
pub async fn instance(db: &TestDb, label: &str, stubs: &[Stub; 3]) -> TestApp {
    instance_with(db, label, stubs, |_| {}).await
}

/// As [`instance`], its settings changed by `change` too.
pub async fn instance_with(
    db: &TestDb,
    label: &str,
    stubs: &[Stub; 3],
    change: impl FnOnce(&mut AppSettings) + Send + 'static,
) -> TestApp {
    let label = label.to_string();
    TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        move |s| {
            s.writer.run = Some(label);
            s.writer.flush_interval = Duration::from_millis(100);
            s.verdicts.latency_factor = NO_LATENCY_VERDICT;
            change(s);
        },
        db.url(),
    )
    .await
}

/// Sends each request through `app`, reading every answer to its end.
pub async fn send(app: &TestApp, requests: &[Request]) {
    for (target, headers) in requests {
        let mut request = client().get(app.url(target));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success() || response.status().is_server_error());
        response.bytes().await.unwrap();
    }
}

/// The changes of run `label`, with their predictors, as every reader gets them.
pub async fn changes_of(db: &TestDb, label: &str) -> Vec<Change> {
    report_of(db, label).await.changes
}

/// Run `label`'s report with its changes and their predictors.
pub async fn report_of(db: &TestDb, label: &str) -> RunReport {
    let store = Store::connect(db.url(), 2).await.unwrap();
    let verdicts = VerdictSettings {
        latency_factor: NO_LATENCY_VERDICT,
        ..VerdictSettings::default()
    };
    let reports = Reports::new(store, Arc::new(RuleSet::default()), verdicts);
    reports.explained(label, TimeRange::all()).await.unwrap()
}

/// `requests` through an instance in front of `answer`'s versions, then the run's changes.
async fn changes_after(db: &TestDb, answer: Answer, requests: &[Request]) -> Vec<Change> {
    let stubs = upstreams(answer).await;
    let app = instance(db, "changes", &stubs).await;
    send(&app, requests).await;
    app.stop().await;
    changes_of(db, "changes").await
}

fn plain(paths: impl IntoIterator<Item = String>) -> Vec<Request> {
    paths.into_iter().map(|path| (path, Vec::new())).collect()
}

/// The last path segment as a number (an id).
fn id_of(seen: &Seen) -> u64 {
    seen.uri
        .path()
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or(0)
}

fn query_value<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

/// Every version answers `{"id", "f0".."f13"}` with `vary`; the candidate drops `vary` everywhere and, on the
/// first five resources, moves the fields under `data` (14 missing and one extra: 15 places).
pub fn middleware_and_shape(seen: &Seen, candidate: bool) -> Response<StubBody> {
    let id = id_of(seen);
    let fields: Vec<String> = (0..14).map(|n| format!("\"f{n}\":{n}")).collect();
    let fields = fields.join(",");
    let reshaped = ["/res0/", "/res1/", "/res2/", "/res3/", "/res4/"]
        .iter()
        .any(|prefix| seen.uri.path().starts_with(prefix));
    let body = if candidate && reshaped {
        format!(r#"{{"id":{id},"data":{{{fields}}}}}"#)
    } else {
        format!(r#"{{"id":{id},{fields}}}"#)
    };
    let headers: &[(&str, &str)] = if candidate {
        &[]
    } else {
        &[("vary", "Accept-Encoding")]
    };
    respond(StatusCode::OK, headers, body)
}

/// Only the header dropped: the same fields on every resource.
fn middleware_only(seen: &Seen, candidate: bool) -> Response<StubBody> {
    let headers: &[(&str, &str)] = if candidate {
        &[]
    } else {
        &[("vary", "Accept-Encoding")]
    };
    respond(
        StatusCode::OK,
        headers,
        format!(r#"{{"id":{}}}"#, id_of(seen)),
    )
}

/// Ten requests to each of twenty resources.
pub fn twenty_resources() -> Vec<Request> {
    plain((0..10).flat_map(|n| (0..20).map(move |r| format!("/res{r}/{n}"))))
}

async fn one_header_dropped_on_twenty_endpoints_is_one_change(db: TestDb) {
    let changes = changes_after(&db, middleware_only, &twenty_resources()).await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let change = &changes[0];
    assert_eq!(change.endpoints.len(), 20, "{change:#?}");
    assert_eq!(change.title, "`header/vary` missing on 20 endpoints");
    assert_eq!(change.requests, 200);
    assert!(change.rates.iter().all(|share| share.rate == 1.0));
    assert!(change.predictors.is_empty(), "it fails on every request");
}

async fn a_shape_change_on_five_endpoints_stays_apart_from_a_header_dropped_everywhere(db: TestDb) {
    let changes = changes_after(&db, middleware_and_shape, &twenty_resources()).await;
    assert_eq!(changes.len(), 2, "{changes:#?}");
    let header = changes
        .iter()
        .find(|c| c.endpoints.len() == 20)
        .expect("the header change");
    assert_eq!(header.title, "`header/vary` missing on 20 endpoints");
    assert_eq!(header.places.len(), 20);
    let shape = changes
        .iter()
        .find(|c| c.endpoints.len() == 5)
        .expect("the shape change");
    assert_eq!(
        shape.places.len(),
        75,
        "15 places on each of 5 endpoints: {shape:#?}"
    );
    assert_eq!(
        shape.title,
        "`body/*` missing ×14, `body/data` extra on 5 endpoints"
    );
    assert_eq!(shape.compat.as_str(), "breaking");
}

/// Orders answered with their items; one in fifty makes the candidate fail with a 500.
fn failing_sometimes(seen: &Seen, candidate: bool) -> Response<StubBody> {
    let id = id_of(seen);
    if candidate && id % 50 == 7 {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            &[],
            r#"{"error":"boom"}"#.into(),
        );
    }
    respond(
        StatusCode::OK,
        &[],
        format!(r#"{{"id":{id},"items":[1,2,3],"total":6}}"#),
    )
}

async fn what_trails_a_500_in_two_percent_of_requests_is_listed_under_it(db: TestDb) {
    let requests = plain((0..500).map(|n| format!("/orders/{n}")));
    let changes = changes_after(&db, failing_sometimes, &requests).await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let change = &changes[0];
    let places: Vec<&str> = change.places.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(places, ["status"]);
    assert_eq!(change.places[0].shape.as_deref(), Some("200 → 500"));
    let mut trailing: Vec<(&str, &str)> = change
        .consequences
        .iter()
        .map(|p| (p.path.as_str(), p.kind.as_str()))
        .collect();
    trailing.sort();
    assert_eq!(
        trailing,
        [
            ("body/error", "extra"),
            ("body/id", "missing"),
            ("body/items", "missing"),
            ("body/total", "missing")
        ]
    );
    assert_eq!(change.requests, 10, "2 % of 500");
    assert!(
        change
            .title
            .starts_with("`status` 200 → 500 on GET /orders/{id}"),
        "{}",
        change.title
    );
}

const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "JPY"];

/// Prices in four currencies; the candidate rounds euros wrongly.
pub fn euro_rounding(seen: &Seen, candidate: bool) -> Response<StubBody> {
    let currency = query_value(seen, "currency").unwrap_or("USD");
    let amount = if candidate && currency == "EUR" {
        1001
    } else {
        1000
    };
    respond(
        StatusCode::OK,
        &[],
        format!(
            r#"{{"id":{},"amount":{amount},"currency":"{currency}"}}"#,
            id_of(seen)
        ),
    )
}

pub fn priced(count: u64) -> Vec<Request> {
    plain((0..count).map(|n| format!("/prices/{n}?currency={}", CURRENCIES[(n % 4) as usize])))
}

fn predictor<'a>(change: &'a Change, feature: &str) -> &'a Predictor {
    change
        .predictors
        .iter()
        .find(|p| p.feature == feature)
        .unwrap_or_else(|| panic!("{feature} predicts {change:#?}"))
}

async fn a_regression_only_for_one_currency_names_that_query_value(db: TestDb) {
    let changes = changes_after(&db, euro_rounding, &priced(200)).await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let change = &changes[0];
    assert_eq!(change.requests, 50);
    let currency = predictor(change, "query currency");
    assert_eq!(currency.value.as_deref(), Some("EUR"));
    assert!(currency.failing_share >= 0.95, "{currency:?}");
    assert!(currency.passing_share <= 0.05, "{currency:?}");
    assert_eq!(
        change.predictors[0], *currency,
        "the most discriminating first"
    );
}

const CLIENTS: [&str; 3] = ["ios/5.2", "android/9.1", "web/1.0"];

/// A profile; the candidate gives iOS 5.2 the wrong theme.
fn ios_theme(seen: &Seen, candidate: bool) -> Response<StubBody> {
    let client = seen
        .headers
        .get("x-client")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let theme = if candidate && client == "ios/5.2" {
        "dark"
    } else {
        "light"
    };
    respond(StatusCode::OK, &[], format!(r#"{{"theme":"{theme}"}}"#))
}

async fn a_regression_only_for_one_client_names_that_header_value(db: TestDb) {
    let requests: Vec<Request> = (0..150)
        .map(|n| {
            (
                "/profile".to_string(),
                vec![("x-client", CLIENTS[n % 3].to_string())],
            )
        })
        .collect();
    let changes = changes_after(&db, ios_theme, &requests).await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let client = predictor(&changes[0], "header x-client");
    assert_eq!(client.value.as_deref(), Some("ios/5.2"));
    assert!(
        client.failing_share >= 0.95 && client.passing_share <= 0.05,
        "{client:?}"
    );
}

/// Prices in four currencies, every one of them wrong on the candidate.
fn every_price_wrong(seen: &Seen, candidate: bool) -> Response<StubBody> {
    let amount = if candidate { 1001 } else { 1000 };
    respond(
        StatusCode::OK,
        &[],
        format!(r#"{{"id":{},"amount":{amount}}}"#, id_of(seen)),
    )
}

async fn a_regression_on_every_request_has_no_predictor(db: TestDb) {
    let changes = changes_after(&db, every_price_wrong, &priced(200)).await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].requests, 200);
    assert!(changes[0].predictors.is_empty(), "{changes:#?}");
}

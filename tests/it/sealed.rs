//! Samples and recordings sealed at rest (`--sample-recipient`): strings planted in a candidate's body and
//! header and in the request reach neither the database (its file or a `pg_dump`) nor the record file; the
//! exchange page shows them with `--sample-identity` and says the samples are encrypted without it or with
//! another key; a key file that cannot be used stops the start with one line; a sealed recording replays with
//! the identity and is a clear error without it.

#![allow(deprecated)] // X25519 keys, which the age crate deprecates for new keys but deployments use.

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret as _;
use http::{Response, StatusCode};
use shadowdiff::app::{AppSettings, Application};
use shadowdiff::seal::SealingSettings;

use crate::support::db::TestDb;
use crate::support::process::run_command;
use crate::support::stub::{Stub, StubBody, full};
use crate::support::{TestApp, client, get_json, get_text, temp_database, wait_for, wait_until};

/// Planted by the candidate in its body, by the candidate in a header, and by the caller in the request.
const IN_BODY: &str = "planted-body-5e1f0c9a";
const IN_HEADER: &str = "planted-header-b73d2e41";
const IN_REQUEST: &str = "planted-query-90ac6f3d";
const PLANTED: [&str; 3] = [IN_BODY, IN_HEADER, IN_REQUEST];

const RUN: &str = "sealed";
const ENDPOINT: &str = "GET /accounts/{id}";

/// A key pair written as `age-keygen` writes it: the identity file and the recipient file beside it.
struct KeyFiles {
    dir: tempfile::TempDir,
    identity: PathBuf,
    recipient: PathBuf,
}

fn key_files() -> KeyFiles {
    let dir = tempfile::tempdir().unwrap();
    let key = age::x25519::Identity::generate();
    let identity = dir.path().join("identity.txt");
    let secret = key.to_string();
    std::fs::write(
        &identity,
        format!(
            "# created: by the test\n# public key: {}\n{}\n",
            key.to_public(),
            secret.expose_secret()
        ),
    )
    .unwrap();
    let recipient = dir.path().join("recipient.txt");
    std::fs::write(&recipient, format!("{}\n", key.to_public())).unwrap();
    KeyFiles {
        dir,
        identity,
        recipient,
    }
}

fn answer(candidate: bool) -> Response<StubBody> {
    let (email, trace) = if candidate {
        (format!("{IN_BODY}@example.com"), IN_HEADER)
    } else {
        ("ada@example.com".to_string(), "trace-1")
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-trace", trace)
        .body(full(format!(
            r#"{{"account":{{"email":"{email}","plan":"gold"}}}}"#
        )))
        .unwrap()
}

async fn stubs() -> [Stub; 3] {
    [
        Stub::start(|_| async { answer(false) }).await,
        Stub::start(|_| async { answer(false) }).await,
        Stub::start(|_| async { answer(true) }).await,
    ]
}

async fn instance(
    stubs: &[Stub; 3],
    database: &str,
    change: impl FnOnce(&mut AppSettings),
) -> TestApp {
    TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        |s| {
            s.writer.run = Some(RUN.to_string());
            s.writer.flush_interval = std::time::Duration::from_millis(100);
            change(s);
        },
        database,
    )
    .await
}

async fn send(app: &TestApp, count: usize) {
    for n in 0..count {
        let response = client()
            .get(app.url(&format!("/accounts/{n}?note={IN_REQUEST}")))
            .header("x-client", IN_REQUEST)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
    }
}

/// The id of a stored sample of the candidate's changed e-mail, once there is one: a sample taken for that
/// place holds all three answers (one of an exchange whose candidate was shed on a loaded machine would not).
async fn a_sample(app: &TestApp) -> String {
    let url = app.admin_url(&format!(
        "/api/v1/runs/{RUN}/samples?endpoint=GET%20%2Faccounts%2F%7Bid%7D&path=body%2Faccount%2Femail"
    ));
    wait_for("a sample to be stored", || {
        let url = url.clone();
        async move {
            get_json(&url)
                .await
                .as_array()
                .is_some_and(|s| !s.is_empty())
        }
    })
    .await;
    let samples = get_json(&url).await;
    samples[0]["id"].as_str().unwrap().to_string()
}

fn none_planted(text: &str, where_: &str) {
    for planted in PLANTED {
        assert!(!text.contains(planted), "{planted} reached {where_}");
    }
}

crate::support::on_both_backends!(strings_planted_in_traffic_are_stored_only_sealed);

/// The acceptance: nothing planted reaches the database or the record file; the dashboard without the identity
/// says the samples are encrypted and still shows paths and kinds, with it shows the planted values.
async fn strings_planted_in_traffic_are_stored_only_sealed(db: TestDb) {
    let keys = key_files();
    let record = keys.dir.path().join("recorded.jsonl");
    let stubs = stubs().await;
    let (recipient, record_file) = (keys.recipient.clone(), record.clone());
    let app = instance(&stubs, db.url(), move |s| {
        s.sealing.recipient_file = Some(recipient);
        s.proxy.record = Some(record_file);
    })
    .await;
    send(&app, 20).await;
    // Every exchange handed to the writer first, so that the sample read next stays in the reservoir.
    wait_until("shadow work to finish", || (app.backlog)() == 0).await;
    let id = a_sample(&app).await;

    // Without the identity: sealed, said so, the places still shown.
    let page = get_text(&app.admin_url(&format!("/exchanges/{id}"))).await;
    assert!(page.contains("the samples are encrypted"), "{page}");
    assert!(page.contains("body/account/email") && page.contains("header/x-trace"));
    none_planted(&page, "the page without the identity");
    let listing = client()
        .get(app.admin_url(&format!(
            "/runs/{RUN}/endpoints/GET%20%2Faccounts%2F%7Bid%7D/samples?value=example.com"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::BAD_REQUEST);
    let said = listing.text().await.unwrap();
    assert!(
        said.contains("cannot filter by value") && said.contains("--sample-identity"),
        "{said}"
    );
    app.stop().await;

    none_planted(&db.everything_as_text(), "the database");
    let recorded = std::fs::read_to_string(&record).unwrap();
    none_planted(&recorded, "the record file");
    assert_eq!(recorded.lines().count(), 20);
    assert!(
        recorded
            .lines()
            .all(|line| line.starts_with(r#"{"sealed":""#))
    );

    // With the identity (and the recipient, checked against it at start), the same run reads in clear.
    let (recipient, identity) = (keys.recipient.clone(), keys.identity.clone());
    let reader = instance(&stubs, db.url(), move |s| {
        s.sealing = SealingSettings {
            recipient_file: Some(recipient),
            identity_file: Some(identity),
        };
    })
    .await;
    // Read from the stopped writer's final samples: one taken earlier may have left the reservoir since.
    let id = a_sample(&reader).await;
    let page = get_text(&reader.admin_url(&format!("/exchanges/{id}"))).await;
    assert!(!page.contains("the samples are encrypted"), "{page}");
    for planted in PLANTED {
        assert!(
            page.contains(planted),
            "{planted} not shown with the identity"
        );
    }
    let found = get_json(&reader.admin_url(&format!(
        "/api/v1/runs/{RUN}/samples?endpoint={}&value={IN_BODY}",
        ENDPOINT.replace(' ', "%20").replace('/', "%2F").replace('{', "%7B").replace('}', "%7D")
    )))
    .await;
    assert!(
        found.as_array().is_some_and(|samples| !samples.is_empty()),
        "the value filter finds opened samples: {found}"
    );
    reader.stop().await;
    none_planted(&db.everything_as_text(), "the database after reading");

    // `shadowdiff report` likewise: its sample sealed without the identity, in clear with it.
    let output = keys.dir.path().join("report.html");
    let report = |identity: Option<&Path>| {
        let mut args = vec![
            "report".to_string(),
            "--database-url".to_string(),
            db.url().to_string(),
            "--run".to_string(),
            RUN.to_string(),
            "--output".to_string(),
            output.display().to_string(),
        ];
        if let Some(identity) = identity {
            args.extend([
                "--sample-identity".to_string(),
                identity.display().to_string(),
            ]);
        }
        args
    };
    for identity in [None, Some(keys.identity.as_path())] {
        let args = report(identity);
        let ran = run_command(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_ne!(ran.code, Some(2), "{}", ran.stderr);
        let html = std::fs::read_to_string(&output).unwrap();
        if identity.is_some() {
            assert!(html.contains(IN_BODY) && !html.contains("the samples are encrypted"));
        } else {
            assert!(html.contains("the samples are encrypted"), "{html}");
            none_planted(&html, "the report without the identity");
        }
    }
}

/// A page read with an identity the samples were not sealed to says so; nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_identity_is_a_clear_message_on_the_page() {
    let (writing, other) = (key_files(), key_files());
    let (_dir, database) = temp_database();
    let stubs = stubs().await;
    let recipient = writing.recipient.clone();
    let app = instance(&stubs, &database, move |s| {
        s.sealing.recipient_file = Some(recipient);
    })
    .await;
    send(&app, 3).await;
    let id = a_sample(&app).await;
    app.stop().await;

    let identity = other.identity.clone();
    let reader = instance(&stubs, &database, move |s| {
        s.sealing.identity_file = Some(identity);
    })
    .await;
    let response = client()
        .get(reader.admin_url(&format!("/exchanges/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("cannot be opened") && page.contains("is not one it was sealed to"),
        "{page}"
    );
    none_planted(&page, "a page read with another identity");
    let exchange = get_json(&reader.admin_url(&format!("/api/v1/exchanges/{id}"))).await;
    assert!(
        exchange["unopened"]
            .as_str()
            .is_some_and(|said| said.contains("cannot be opened")),
        "{exchange}"
    );
    reader.stop().await;
}

/// Settings whose key files are `recipient` and `identity`, in front of upstreams that are never asked.
fn with_keys(database: &str, recipient: Option<&Path>, identity: Option<&Path>) -> AppSettings {
    crate::support::settings(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        |s| {
            s.store.database_url = database.to_string();
            s.sealing = SealingSettings {
                recipient_file: recipient.map(Path::to_path_buf),
                identity_file: identity.map(Path::to_path_buf),
            };
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_that_cannot_be_used_is_a_one_line_error_at_start() {
    let (keys, other) = (key_files(), key_files());
    let (dir, database) = temp_database();
    let missing = dir.path().join("missing.txt");
    let garbage = dir.path().join("garbage.txt");
    std::fs::write(&garbage, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let secret = std::fs::read_to_string(&keys.identity).unwrap();
    let secret = secret.lines().last().unwrap().to_string();
    let cases: [(Option<&Path>, Option<&Path>, &str); 5] = [
        (
            Some(&missing),
            None,
            "cannot read the sample recipient file",
        ),
        (Some(&keys.identity), None, "holds a private key"),
        (None, Some(&keys.recipient), "is a recipient"),
        (None, Some(&garbage), "is not an age identity"),
        (
            Some(&other.recipient),
            Some(&keys.identity),
            "does not open",
        ),
    ];
    for (recipient, identity, expected) in cases {
        let Err(error) = Application::build(with_keys(&database, recipient, identity)).await else {
            panic!("started with {recipient:?} and {identity:?}");
        };
        let said = error.to_string();
        assert!(said.contains(expected), "{said}");
        assert!(!said.contains('\n') && !said.contains(&secret), "{said}");
    }

    // The binary says the same on one line, and exits before listening.
    let missing = missing.display().to_string();
    let ran = run_command(&[
        "serve",
        "--primary",
        "http://127.0.0.1:9",
        "--secondary",
        "http://127.0.0.1:9",
        "--candidate",
        "http://127.0.0.1:9",
        "--database-url",
        &database,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--sample-identity",
        &missing,
    ])
    .await;
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    let lines: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.contains("sample identity"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", ran.stderr);
    assert!(lines[0].contains(&missing), "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_recording_replays_with_the_identity_only() {
    let keys = key_files();
    let record = keys.dir.path().join("recorded.jsonl");
    let (_dir, database) = temp_database();
    let stubs = stubs().await;
    let (recipient, record_file) = (keys.recipient.clone(), record.clone());
    let app = instance(&stubs, &database, move |s| {
        s.sealing.recipient_file = Some(recipient);
        s.proxy.record = Some(record_file);
    })
    .await;
    send(&app, 6).await;
    app.stop().await;
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(recorded.lines().count(), 6);
    none_planted(&recorded, "the record file");

    let identity = keys.identity.display().to_string();
    let (_replayed_dir, replayed) = temp_database();
    let replay =
        |extra: &'static [&'static str]| crate::replay::replay(&record, &stubs, &replayed, extra);

    let ran = replay(&["--run", "replayed"]).await;
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("line 1") && ran.stderr.contains("--sample-identity"),
        "{}",
        ran.stderr
    );

    let hits = stubs[0].hits();
    let ran = crate::replay::replay(
        &record,
        &stubs,
        &replayed,
        &["--run", "replayed", "--sample-identity", &identity],
    )
    .await;
    assert_ne!(ran.code, Some(2), "{}", ran.stderr);
    assert_eq!(
        stubs[0].hits(),
        hits + 6,
        "every sealed line was sent again"
    );
    let store = shadowdiff::store::Store::connect(&replayed, 2)
        .await
        .unwrap();
    let run = store.run("replayed").await.unwrap().unwrap();
    let samples = store.samples(run.id, ENDPOINT, None, 10).await.unwrap();
    assert!(!samples.is_empty(), "the replay stored samples");
}

crate::support::on_both_backends!(
    a_sealed_runs_predictor_names_a_hashed_value_the_identity_finds_samples_by
);

/// Sealed, the request features are counted hashed: a change only for `currency=EUR` is still predicted by the
/// query value, named by its hash, and with the identity the predictor's samples are found by that hash.
async fn a_sealed_runs_predictor_names_a_hashed_value_the_identity_finds_samples_by(db: TestDb) {
    use crate::changes::{NO_LATENCY_VERDICT, changes_of, euro_rounding, priced, send, upstreams};
    let keys = key_files();
    let stubs = upstreams(euro_rounding).await;
    let (recipient, identity) = (keys.recipient.clone(), keys.identity.clone());
    let app = TestApp::start_stored(
        &stubs[0].url(),
        &stubs[1].url(),
        &stubs[2].url(),
        move |s| {
            s.writer.run = Some("priced".to_string());
            s.writer.flush_interval = std::time::Duration::from_millis(100);
            s.verdicts.latency_factor = NO_LATENCY_VERDICT;
            s.sealing = SealingSettings {
                recipient_file: Some(recipient),
                identity_file: Some(identity),
            };
        },
        db.url(),
    )
    .await;
    send(&app, &priced(200)).await;
    let url = app.admin_url("/api/v1/runs/priced/verdict?min_requests=1");
    wait_for("every request to be stored", || {
        let url = url.clone();
        async move { get_json(&url).await["requests"] == 200 }
    })
    .await;

    let changes = changes_of(&db, "priced").await;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let currency = changes[0]
        .predictors
        .iter()
        .find(|p| p.feature == "query currency")
        .unwrap_or_else(|| panic!("the currency predicts {changes:#?}"));
    let token = currency.value.clone().unwrap();
    assert!(token.starts_with("redacted:") && token != "EUR", "{token}");
    assert!(currency.failing_share >= 0.95, "{currency:?}");

    let samples = get_json(&app.admin_url(&format!(
        "/api/v1/runs/priced/samples?endpoint=GET%20%2Fprices%2F%7Bid%7D&feature=query%20currency&feature_value={token}"
    )))
    .await;
    let samples = samples.as_array().unwrap();
    assert!(!samples.is_empty(), "the predictor's samples are found");
    for sample in samples {
        let target = sample["target"].as_str().unwrap();
        assert!(target.ends_with("currency=EUR"), "{target}");
    }
    app.stop().await;
}

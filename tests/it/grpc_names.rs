//! A gRPC field found secret by its proto name when its JSON name says nothing (`string password = 2
//! [json_name = "k"]`): hashed in the stored samples (decoded bodies and differences) and in the recording, while
//! its change between primary and the candidate is still found.

use base64::Engine as _;
use bytes::Bytes;
use http::uri::PathAndQuery;
use prost::Message as _;
use serde_json::Value;
use shadowdiff::analysis::GrpcSchemaSettings;
use shadowdiff::redact::Redactor;
use tonic::Request;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::grpc::{frame, grpc_answer};
use crate::support::db::TestDb;
use crate::support::stub::Stub;
use crate::support::{TestApp, get_json, wait_for};

const AUTH_PROTO: &str = r#"
syntax = "proto3";
package auth.v1;
message Login { string user = 1; string password = 2 [json_name = "k"]; }
message Session { string user = 1; string password = 2 [json_name = "k"]; }
service Auth { rpc SignIn(Login) returns (Session); }
"#;

const KEY: &str = "grpc names key";

/// The caller's secret, and the one primary and secondary answer with; the candidate answers another.
const SENT: &str = "hunter2-sent";
const ANSWERED: &str = "hunter2-answered";
const CANDIDATES: &str = "swordfish-answered";

#[derive(Clone, PartialEq, prost::Message)]
struct Login {
    #[prost(string, tag = "1")]
    user: String,
    #[prost(string, tag = "2")]
    password: String,
}

fn token(value: &str) -> String {
    Redactor::new(KEY.as_bytes().to_vec(), &[]).token(value.as_bytes())
}

/// An HTTP/2 upstream answering every call with a session holding `password`.
async fn auth_upstream(password: &'static str) -> Stub {
    Stub::start_h2(move |_| async move {
        let session = Login {
            user: "ada".into(),
            password: password.into(),
        };
        grpc_answer(Bytes::from(frame(&session.encode_to_vec())), "0", false)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_proto_field_under_another_json_name_is_hashed_in_samples_and_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let proto = dir.path().join("auth.proto");
    std::fs::write(&proto, AUTH_PROTO).unwrap();
    let record = dir.path().join("calls.jsonl");
    let db = TestDb::sqlite();
    let [primary, secondary, candidate] = [
        auth_upstream(ANSWERED).await,
        auth_upstream(ANSWERED).await,
        auth_upstream(CANDIDATES).await,
    ];
    let record_flag = record.clone();
    let app = TestApp::start_stored(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |s| {
            s.proxy.shadow.allow_side_effects = true;
            s.analysis.grpc = GrpcSchemaSettings {
                protos: vec![proto],
                ..GrpcSchemaSettings::default()
            };
            s.redaction.key = Some(KEY.into());
            s.writer.run = Some("names".into());
            s.proxy.record = Some(record_flag);
        },
        db.url(),
    )
    .await;
    let channel = Channel::from_shared(format!("http://{}", app.proxy))
        .unwrap()
        .connect()
        .await
        .expect("the proxy accepts h2c");
    let mut caller = tonic::client::Grpc::new(channel);
    for _ in 0..3 {
        caller.ready().await.unwrap();
        let session: Login = caller
            .unary(
                Request::new(Login {
                    user: "ada".into(),
                    password: SENT.into(),
                }),
                PathAndQuery::from_static("/auth.v1.Auth/SignIn"),
                ProstCodec::default(),
            )
            .await
            .expect("SignIn answers")
            .into_inner();
        assert_eq!(
            session.password, ANSWERED,
            "the caller gets primary's answer"
        );
    }
    let samples = app.admin_url("/api/v1/runs/names/samples?endpoint=gRPC%20auth.v1.Auth%2FSignIn");
    wait_for("a SignIn sample", || async {
        get_json(&samples).await[0]["id"].is_string()
    })
    .await;
    let id = get_json(&samples).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let document = get_json(&app.admin_url(&format!("/api/v1/exchanges/{id}"))).await;
    app.stop().await;

    // The decoded bodies name the field `k`; its value is the keyed hash, on every side.
    let body = |side: &str| -> Value {
        serde_json::from_str(document[side]["body"]["text"].as_str().unwrap()).unwrap()
    };
    assert_eq!(body("request")[0]["k"], token(SENT));
    assert_eq!(body("request")[0]["user"], "ada");
    assert_eq!(body("primary")[0]["k"], token(ANSWERED));
    assert_eq!(body("candidate")[0]["k"], token(CANDIDATES));
    // The candidate's change is found, its values stored hashed.
    let change = document["candidate_differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "body/0/k")
        .unwrap_or_else(|| panic!("the changed secret is a difference: {document:#}"));
    assert_eq!(change["primary"], token(&format!("\"{ANSWERED}\"")));
    assert_ne!(change["primary"], change["other"]);
    // No raw frames of a side whose messages hold the secret are kept to download.
    assert!(
        document["frames"].as_array().is_none_or(Vec::is_empty),
        "{document:#}"
    );
    let stored = db.everything_as_text();
    for secret in [SENT, ANSWERED, CANDIDATES] {
        assert!(!stored.contains(secret), "{secret} is stored as it came");
    }

    // The recording: the call's frames, its secret field hashed in place.
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(recorded.lines().count(), 3);
    for line in recorded.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let body = base64::engine::general_purpose::STANDARD
            .decode(line["body_base64"].as_str().unwrap())
            .unwrap();
        let login = Login::decode(&body[5..]).expect("the recorded call still decodes");
        assert_eq!(login.password, token(SENT));
        assert_eq!(login.user, "ada");
    }
}

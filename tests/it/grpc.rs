//! gRPC through the proxy: tonic servers as primary, secondary and candidate, a tonic client as the caller. Unary,
//! server-, client- and bidirectional streaming calls get their answers and trailers unchanged; the decoded
//! messages are compared, so the gate names the candidate's three regressions (a field no longer set, an enum
//! value the old schema lacks, a stream one message shorter) and none of the timestamp noise, with the schema
//! from `.proto` files or from a descriptor set; malformed answers and unknown methods are counted skips.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use prost::Message as _;
use shadowdiff::analysis::{BodySkip, GrpcSchemaSettings};
use shadowdiff::app::AppSettings;
use shadowdiff::exchange::{CapturedBody, Target};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codegen::BoxFuture;
use tonic::codegen::tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::server::{Grpc, NamedService};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;
use tower::service_fn;

use crate::replay::{endpoint, gate_json, regressions};
use crate::support::db::TestDb;
use crate::support::process::run_command;
use crate::support::stub::{Stub, StubBody};
use crate::support::{TestApp, client, patience, temp_database, wait_for};

const SHOP_PROTO: &str = r#"
syntax = "proto3";
package shop.v1;

enum Tier { TIER_UNSPECIFIED = 0; TIER_GOLD = 1; TIER_SILVER = 2; }

message GetOrderRequest { string id = 1; string password = 2; }
message Customer { string name = 1; }
message Order {
  string id = 1;
  int32 quantity = 2;
  Tier tier = 3;
  Customer customer = 4;
  int64 served_at = 5;
}
message Count { int32 n = 1; }

service Orders {
  rpc GetOrder(GetOrderRequest) returns (Order);
  rpc Watch(GetOrderRequest) returns (stream Order);
  rpc Total(stream Count) returns (Order);
  rpc Chat(stream Count) returns (stream Count);
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct GetOrderRequest {
    #[prost(string, tag = "1")]
    id: String,
    /// A secret the caller sends: redacted wherever a call is kept.
    #[prost(string, tag = "2")]
    password: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Customer {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int32, tag = "2")]
    quantity: i32,
    #[prost(int32, tag = "3")]
    tier: i32,
    #[prost(message, optional, tag = "4")]
    customer: Option<Customer>,
    #[prost(int64, tag = "5")]
    served_at: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Count {
    #[prost(int32, tag = "1")]
    n: i32,
}

const TIER_GOLD: i32 = 1;
const TIER_SILVER: i32 = 2;
/// A tier the schema does not have: the candidate's new enum value.
const TIER_PLATINUM: i32 = 3;

/// One version of the service: the current one (twice, with clocks far apart) or the candidate.
#[derive(Clone, Copy)]
struct Shop {
    /// Where its `served_at` timestamps start: noise between primary and secondary.
    clock: i64,
    candidate: bool,
}

impl Shop {
    fn order(self, id: &str, quantity: i32) -> Order {
        Order {
            id: id.to_string(),
            quantity,
            tier: TIER_GOLD,
            // The candidate no longer sets the customer.
            customer: (!self.candidate).then(|| Customer { name: "ada".into() }),
            served_at: self.clock + i64::from(quantity),
        }
    }

    async fn get_order(self, request: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        let id = request.into_inner().id;
        if id == "missing" {
            return Err(Status::not_found("no order `missing`"));
        }
        Ok(Response::new(self.order(&id, 2)))
    }

    /// Three updates of an order; the candidate's stream ends after two.
    fn watch(self, id: &str) -> Vec<Result<Order, Status>> {
        let updates = if self.candidate { 2 } else { 3 };
        (1..=updates)
            .map(|n| {
                let mut order = self.order(id, n);
                order.customer = Some(Customer { name: "ada".into() });
                Ok(order)
            })
            .collect()
    }

    async fn total(self, request: Request<Streaming<Count>>) -> Result<Response<Order>, Status> {
        let mut counts = request.into_inner();
        let mut sum = 0;
        while let Some(count) = counts.next().await {
            sum += count?.n;
        }
        let mut order = self.order("total", sum);
        order.customer = Some(Customer { name: "ada".into() });
        order.tier = if self.candidate {
            TIER_PLATINUM
        } else {
            TIER_SILVER
        };
        Ok(Response::new(order))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Shop {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shop = *self;
        Box::pin(async move {
            let response = match request.uri().path() {
                "/shop.v1.Orders/GetOrder" => {
                    Grpc::new(ProstCodec::<Order, GetOrderRequest>::default())
                        .unary(service_fn(move |call| shop.get_order(call)), request)
                        .await
                }
                "/shop.v1.Orders/Watch" => {
                    let watch = service_fn(move |call: Request<GetOrderRequest>| async move {
                        let updates = shop.watch(&call.into_inner().id);
                        Ok::<_, Status>(Response::new(futures_util::stream::iter(updates)))
                    });
                    Grpc::new(ProstCodec::<Order, GetOrderRequest>::default())
                        .server_streaming(watch, request)
                        .await
                }
                "/shop.v1.Orders/Total" => {
                    Grpc::new(ProstCodec::<Order, Count>::default())
                        .client_streaming(service_fn(move |call| shop.total(call)), request)
                        .await
                }
                "/shop.v1.Orders/Chat" => {
                    // Each message answered as it comes: the caller sends the next only once it has read this.
                    let chat = service_fn(|call: Request<Streaming<Count>>| async move {
                        let answers = call
                            .into_inner()
                            .map(|count| count.map(|count| Count { n: count.n * 10 }));
                        Ok::<_, Status>(Response::new(answers))
                    });
                    Grpc::new(ProstCodec::<Count, Count>::default())
                        .streaming(chat, request)
                        .await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

impl NamedService for Shop {
    const NAME: &'static str = "shop.v1.Orders";
}

/// A tonic server for this version of the shop on a free loopback port.
async fn serve(shop: Shop) -> SocketAddr {
    serve_with(shop, None).await
}

/// A tonic server for this version of the shop, serving reflection of `schema` (a FileDescriptorSet) if given.
async fn serve_with(shop: Shop, schema: Option<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reflection = schema.map(|set| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(set)
            .build_v1()
            .unwrap()
    });
    tokio::spawn(
        Server::builder()
            .add_service(shop)
            .add_optional_service(reflection)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// Primary, secondary (the same version, its clock elsewhere) and the candidate.
async fn shops() -> [String; 3] {
    shops_serving(None).await
}

/// As [`shops`], each serving reflection of `schema` if given.
async fn shops_serving(schema: Option<&'static [u8]>) -> [String; 3] {
    let primary = serve_with(
        Shop {
            clock: 1_000,
            candidate: false,
        },
        schema,
    )
    .await;
    let secondary = serve_with(
        Shop {
            clock: 5_000_000,
            candidate: false,
        },
        schema,
    )
    .await;
    let candidate = serve_with(
        Shop {
            clock: 9_000_000,
            candidate: true,
        },
        schema,
    )
    .await;
    [primary, secondary, candidate].map(|addr| format!("http://{addr}"))
}

/// A gRPC client of the proxy, over h2c as a mesh's sidecar speaks it.
struct Caller(tonic::client::Grpc<Channel>);

impl Caller {
    async fn connect(app: &TestApp) -> Caller {
        let channel = Channel::from_shared(format!("http://{}", app.proxy))
            .unwrap()
            .connect()
            .await
            .expect("the proxy accepts h2c");
        Caller(tonic::client::Grpc::new(channel))
    }

    async fn get_order(&mut self, id: &str) -> Result<Order, Status> {
        self.0.ready().await.unwrap();
        let request = Request::new(GetOrderRequest {
            id: id.into(),
            password: "hunter2".into(),
        });
        self.0
            .unary(
                request,
                PathAndQuery::from_static("/shop.v1.Orders/GetOrder"),
                ProstCodec::default(),
            )
            .await
            .map(Response::into_inner)
    }

    async fn watch(&mut self, id: &str) -> Vec<Order> {
        self.0.ready().await.unwrap();
        let request = Request::new(GetOrderRequest {
            id: id.into(),
            ..GetOrderRequest::default()
        });
        let mut stream = self
            .0
            .server_streaming(
                request,
                PathAndQuery::from_static("/shop.v1.Orders/Watch"),
                ProstCodec::default(),
            )
            .await
            .expect("Watch answers")
            .into_inner();
        let mut orders = Vec::new();
        while let Some(order) = stream.message().await.expect("a whole stream") {
            orders.push(order);
        }
        orders
    }

    async fn total(&mut self, counts: Vec<i32>) -> Order {
        self.0.ready().await.unwrap();
        let counts = futures_util::stream::iter(counts.into_iter().map(|n| Count { n }));
        self.0
            .client_streaming(
                Request::new(counts),
                PathAndQuery::from_static("/shop.v1.Orders/Total"),
                ProstCodec::default(),
            )
            .await
            .expect("Total answers")
            .into_inner()
    }

    /// A conversation: each message is sent only after the answer to the one before has arrived, which a
    /// proxy that read the request whole before asking primary would never let happen.
    async fn chat(&mut self, rounds: i32) -> Vec<i32> {
        self.0.ready().await.unwrap();
        let (tx, rx) = mpsc::channel(1);
        tx.send(Count { n: 1 }).await.unwrap();
        let mut answers: Streaming<Count> = self
            .0
            .streaming(
                Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static("/shop.v1.Orders/Chat"),
                ProstCodec::default(),
            )
            .await
            .expect("Chat answers")
            .into_inner();
        let mut heard = Vec::new();
        let mut tx = Some(tx);
        while let Some(answer) = answers.message().await.expect("a whole stream") {
            heard.push(answer.n);
            let next = heard.len() as i32 + 1;
            match (&tx, next <= rounds) {
                (Some(sender), true) => sender.send(Count { n: next }).await.unwrap(),
                _ => tx = None,
            }
        }
        heard
    }
}

fn schema_file(dir: &Path) -> PathBuf {
    let path = dir.join("shop.proto");
    std::fs::write(&path, SHOP_PROTO).unwrap();
    path
}

/// The shop's schema as a FileDescriptorSet file, as `protoc --include_imports --descriptor_set_out` writes it.
fn descriptor_set_file(dir: &Path) -> PathBuf {
    let proto = schema_file(dir);
    let set = protox::compile([&proto], [dir]).unwrap();
    let path = dir.join("shop.binpb");
    std::fs::write(&path, set.encode_to_vec()).unwrap();
    path
}

/// gRPC calls are POSTs: shadowed only when side effects are allowed (a read-only service, or test doubles).
fn grpc_settings(settings: &mut AppSettings, schemas: GrpcSchemaSettings) {
    settings.proxy.shadow.allow_side_effects = true;
    settings.analysis.grpc = schemas;
}

/// Thirty of each kind of call through the proxy into a stored run; every caller's answer is primary's.
async fn shadowed_run(
    database: &str,
    run: &str,
    schemas: GrpcSchemaSettings,
    change: impl FnOnce(&mut AppSettings),
) {
    shadowed_run_against(shops().await, database, run, schemas, change).await;
}

async fn shadowed_run_against(
    [primary, secondary, candidate]: [String; 3],
    database: &str,
    run: &str,
    schemas: GrpcSchemaSettings,
    change: impl FnOnce(&mut AppSettings),
) {
    let app = TestApp::start_stored(
        &primary,
        &secondary,
        &candidate,
        |settings| {
            grpc_settings(settings, schemas);
            settings.writer.run = Some(run.into());
            change(settings);
        },
        database,
    )
    .await;
    let mut caller = Caller::connect(&app).await;
    for n in 0..30 {
        let id = format!("o-{n}");
        let order = caller.get_order(&id).await.expect("GetOrder answers");
        assert_eq!(
            order,
            Shop {
                clock: 1_000,
                candidate: false
            }
            .order(&id, 2),
            "primary's answer"
        );
        let updates = caller.watch(&id).await;
        assert_eq!(
            updates.iter().map(|o| o.quantity).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let total = caller.total(vec![1, 2, n]).await;
        assert_eq!((total.quantity, total.tier), (3 + n, TIER_SILVER));
        assert_eq!(caller.chat(3).await, [10, 20, 30]);
    }
    // The trailers reach the caller unchanged: the status and its message.
    let status = caller.get_order("missing").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no order `missing`");
    // The endpoint page says how the method streams, from its schema.
    let page = app.admin_url(&format!(
        "/runs/{run}/endpoints/gRPC%20shop.v1.Orders%2FWatch"
    ));
    wait_for("the Watch endpoint's page", || async {
        let response = client().get(&page).send().await.unwrap();
        response.status() == 200
            && response.text().await.unwrap().contains(
                "gRPC method, server streaming: shop.v1.GetOrderRequest in, shop.v1.Order out",
            )
    })
    .await;
    // A sample keeps the answers' raw frames, which hold nothing redaction would hide, to download; not the
    // request's, whose password it hides.
    let samples = app.admin_url(&format!(
        "/api/v1/runs/{run}/samples?endpoint=gRPC%20shop.v1.Orders%2FGetOrder"
    ));
    wait_for("a GetOrder sample", || async {
        crate::support::get_json(&samples).await[0]["id"].is_string()
    })
    .await;
    // The oldest listed: a call answered with an order (the newest is the NOT_FOUND one, with no messages).
    let listed = crate::support::get_json(&samples).await;
    let id = listed.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = crate::support::get_text(&app.admin_url(&format!("/exchanges/{id}"))).await;
    assert!(page.contains("Raw gRPC frames"), "{page}");
    // The decoded messages side by side, as JSON trees with their fields by name.
    assert!(
        page.contains("servedAt") && page.contains("customer"),
        "{page}"
    );
    assert!(page.contains(&format!("/exchanges/{id}/frames/candidate")));
    assert!(!page.contains(&format!("/exchanges/{id}/frames/request")));
    let download = client()
        .get(app.admin_url(&format!("/exchanges/{id}/frames/primary")))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "application/grpc");
    let frames = download.bytes().await.unwrap();
    let order = Order::decode(&frames[5..]).expect("primary's answer, as it came");
    assert_eq!(order.customer.unwrap().name, "ada");
    let absent = client()
        .get(app.admin_url(&format!("/exchanges/{id}/frames/request")))
        .send()
        .await
        .unwrap();
    assert_eq!(absent.status(), 404);
    app.stop().await;
}

/// The gate's regressions by endpoint, for the shop's four methods.
async fn gated(database: &str, run: &str) -> Vec<(String, Vec<(String, String)>)> {
    let (code, report) = gate_json(database, run, &[]).await;
    assert_eq!(code, Some(1), "the candidate regressed: {report:#}");
    ["GetOrder", "Watch", "Total", "Chat"]
        .iter()
        .map(|method| {
            let name = format!("gRPC shop.v1.Orders/{method}");
            let found = regressions(endpoint(&report, &name));
            (name, found)
        })
        .collect()
}

fn the_three_regressions() -> Vec<(String, Vec<(String, String)>)> {
    let named = |method: &str, found: &[(&str, &str)]| {
        (
            format!("gRPC shop.v1.Orders/{method}"),
            found
                .iter()
                .map(|(path, kind)| (path.to_string(), kind.to_string()))
                .collect(),
        )
    };
    vec![
        named("GetOrder", &[("body/*/customer", "missing")]),
        // As for a JSON array: the count, and the message that is no longer sent.
        named("Watch", &[("body", "array_length"), ("body/*", "missing")]),
        named("Total", &[("body/*/tier", "type_changed")]),
        named("Chat", &[]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_names_the_candidates_three_regressions_and_no_noise_with_proto_files() {
    let schema_dir = tempfile::tempdir().unwrap();
    let (_dir, database) = temp_database();
    let schemas = GrpcSchemaSettings {
        protos: vec![schema_file(schema_dir.path())],
        ..GrpcSchemaSettings::default()
    };
    shadowed_run(&database, "protos", schemas, |_| {}).await;
    assert_eq!(gated(&database, "protos").await, the_three_regressions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_name_decoded_fields_by_their_json_names() {
    let schema_dir = tempfile::tempdir().unwrap();
    let rules = schema_dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[rule]]
endpoint = "gRPC shop.v1.Orders/GetOrder"
path = "body/*/customer"
action = "ignore"
"#,
    )
    .unwrap();
    let (_dir, database) = temp_database();
    let schemas = GrpcSchemaSettings {
        protos: vec![schema_file(schema_dir.path())],
        ..GrpcSchemaSettings::default()
    };
    shadowed_run(&database, "ruled", schemas, |settings| {
        settings.analysis.rules = Some(rules);
    })
    .await;
    let mut expected = the_three_regressions();
    expected[0].1.clear();
    assert_eq!(gated(&database, "ruled").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_names_the_same_regressions_with_a_descriptor_set() {
    let schema_dir = tempfile::tempdir().unwrap();
    let (_dir, database) = temp_database();
    let schemas = GrpcSchemaSettings {
        descriptor_sets: vec![descriptor_set_file(schema_dir.path())],
        ..GrpcSchemaSettings::default()
    };
    shadowed_run(&database, "descriptors", schemas, |_| {}).await;
    assert_eq!(
        gated(&database, "descriptors").await,
        the_three_regressions()
    );
    let (_, report) = gate_json(&database, "descriptors", &[]).await;
    let get_order = endpoint(&report, "gRPC shop.v1.Orders/GetOrder");
    let noise = get_order["noise"].to_string();
    assert!(
        noise.contains("servedAt"),
        "the timestamp is noise, by its JSON name: {get_order:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_grpc_session_replays_into_the_same_verdicts_and_keeps_no_secret() {
    let schema_dir = tempfile::tempdir().unwrap();
    let proto = schema_file(schema_dir.path());
    let schemas = GrpcSchemaSettings {
        protos: vec![proto.clone()],
        ..GrpcSchemaSettings::default()
    };
    let db = TestDb::sqlite();
    let record = schema_dir.path().join("calls.jsonl");
    let record_flag = record.clone();
    shadowed_run(db.url(), "live", schemas, move |settings| {
        settings.proxy.record = Some(record_flag);
    })
    .await;
    let stored = db.everything_as_text();
    assert!(
        stored.contains(r#"\"password\":\"redacted:"#),
        "samples keep the decoded request, its secret field hashed"
    );
    assert!(
        !stored.contains("hunter2"),
        "the store keeps no secret field of a decoded message"
    );

    // Each call is a line whose body is the call's frames, base64, its secret field hashed in place.
    let text = std::fs::read_to_string(&record).unwrap();
    let bodies: Vec<Vec<u8>> = text
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["method"], "POST");
            let body = line["body_base64"].as_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
        })
        .collect();
    assert_eq!(bodies.len(), 4 * 30 + 1, "every call is recorded");
    let contains = |body: &[u8], text: &[u8]| body.windows(text.len()).any(|w| w == text);
    assert!(bodies.iter().all(|body| !contains(body, b"hunter2")));
    assert!(bodies.iter().any(|body| contains(body, b"redacted:")));

    let [primary, secondary, candidate] = shops().await;
    let (_replayed_dir, replayed) = temp_database();
    let ran = run_command(&[
        "replay",
        "--input",
        record.to_str().unwrap(),
        "--primary",
        &primary,
        "--secondary",
        &secondary,
        "--candidate",
        &candidate,
        "--database-url",
        &replayed,
        "--run",
        "replayed",
        "--allow-side-effects",
        "--grpc-proto",
        proto.to_str().unwrap(),
    ])
    .await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(gated(&replayed, "replayed").await, the_three_regressions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_names_the_same_regressions_with_the_schema_from_primarys_reflection() {
    let schema_dir = tempfile::tempdir().unwrap();
    let set = std::fs::read(descriptor_set_file(schema_dir.path())).unwrap();
    let shops = shops_serving(Some(Vec::leak(set))).await;
    let (_dir, database) = temp_database();
    let schemas = GrpcSchemaSettings {
        reflection: true,
        ..GrpcSchemaSettings::default()
    };
    shadowed_run_against(shops, &database, "reflected", schemas, |_| {}).await;
    assert_eq!(gated(&database, "reflected").await, the_three_regressions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_calls_never_wait_for_shadows_that_do_not_answer() {
    let primary = serve(Shop {
        clock: 1_000,
        candidate: false,
    })
    .await;
    let silent = || Stub::start_h2(|_| std::future::pending());
    let (secondary, candidate) = (silent().await, silent().await);
    let app = TestApp::start(
        &format!("http://{primary}"),
        &secondary.url(),
        &candidate.url(),
        |settings| grpc_settings(settings, GrpcSchemaSettings::default()),
    )
    .await;
    let mut caller = Caller::connect(&app).await;
    for n in 0..5 {
        let id = format!("o-{n}");
        assert_eq!(caller.get_order(&id).await.unwrap().id, id);
        assert_eq!(caller.chat(2).await, [10, 20]);
        assert_eq!(caller.watch(&id).await.len(), 3);
    }
    // Both shadows were sent every call, and are still holding them.
    secondary.next_request().await;
    candidate.next_request().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_longer_than_the_response_timeout_is_answered_and_left_unshadowed() {
    let [primary, secondary, candidate] = shops().await;
    let app = TestApp::start(&primary, &secondary, &candidate, |settings| {
        grpc_settings(settings, GrpcSchemaSettings::default());
        settings.upstreams.response_timeout = Duration::from_millis(100);
        settings.upstreams.shadow_timeout = Duration::from_millis(100);
    })
    .await;
    let mut caller = Caller::connect(&app).await;
    caller.0.ready().await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(Count { n: 4 }).await.unwrap();
    let call = tokio::spawn(async move {
        caller
            .0
            .client_streaming::<_, Count, Order, _>(
                Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static("/shop.v1.Orders/Total"),
                ProstCodec::default(),
            )
            .await
    });
    // The stream stays open until the proxy has given up copying it for the shadows, past both timeouts.
    wait_for("the copy of the open stream to be given up", || async {
        app.scrape()
            .await
            .contains(r#"shadowdiff_unshadowed_requests_total{reason="stream_too_long"} 1"#)
    })
    .await;
    // And the copy is let go while the stream is still open and idle.
    wait_for("the given-up copy to be let go", || async {
        app.scrape()
            .await
            .contains(r#"shadowdiff_memory_bytes{stage="request"} 0"#)
    })
    .await;
    tx.send(Count { n: 5 }).await.unwrap();
    drop(tx);
    let total = call
        .await
        .unwrap()
        .expect("answered after the stream ended");
    assert_eq!(total.into_inner().quantity, 9);
}

/// A frame of `message`, as gRPC writes it.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// An HTTP/2 upstream that answers every call with `body` and an OK status in its trailers.
async fn raw_grpc_upstream(body: Vec<u8>) -> Stub {
    raw_grpc_upstream_with(body, false).await
}

/// As [`raw_grpc_upstream`], announcing the body's length first when `length` says so.
async fn raw_grpc_upstream_with(body: Vec<u8>, length: bool) -> Stub {
    Stub::start_h2(move |_| {
        let body = Bytes::from(body.clone());
        async move { grpc_answer(body, "0", length) }
    })
    .await
}

/// A gRPC answer as a server writes it: `body` (its length announced when `length` says so), then `status`
/// in the trailers.
pub fn grpc_answer(body: Bytes, status: &str, length: bool) -> http::Response<StubBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", status.parse().unwrap());
    let mut answer = http::Response::builder().header("content-type", "application/grpc");
    if length {
        answer = answer.header("content-length", body.len());
    }
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(http_body::Frame::data(body)),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    answer
        .body(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_reflection_fails_is_asked_three_times_in_a_row_at_most() {
    // Every call is answered OK with one empty message; the reflection service fails (INTERNAL).
    let failing = || {
        Stub::start_h2(|seen| async move {
            if seen.uri.path().starts_with("/grpc.reflection.") {
                grpc_answer(Bytes::new(), "13", false)
            } else {
                grpc_answer(Bytes::from(frame(&[])), "0", false)
            }
        })
    };
    let (primary, secondary, candidate) = (failing().await, failing().await, failing().await);
    let mut app = TestApp::start_analysed(
        &primary.url(),
        &secondary.url(),
        &candidate.url(),
        |settings| {
            grpc_settings(
                settings,
                GrpcSchemaSettings {
                    reflection: true,
                    ..GrpcSchemaSettings::default()
                },
            )
        },
    )
    .await;
    let mut caller = Caller::connect(&app).await;
    for n in 0..5 {
        caller.0.ready().await.unwrap();
        let path = format!("/svc{n}.Things/Get");
        caller
            .0
            .unary::<_, Count, _>(
                Request::new(Count { n }),
                PathAndQuery::try_from(path).unwrap(),
                ProstCodec::default(),
            )
            .await
            .expect("answered");
        app.next_analysis().await;
    }
    // Five calls, and one ask (failing) about each of the first three services: then no more.
    assert_eq!(primary.hits(), 5 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_length_keeps_the_status_its_trailers_carry() {
    let order = Shop {
        clock: 1_000,
        candidate: false,
    }
    .order("o-1", 2);
    let framed = frame(&order.encode_to_vec());
    let upstreams = [
        raw_grpc_upstream_with(framed.clone(), true).await,
        raw_grpc_upstream_with(framed.clone(), true).await,
        raw_grpc_upstream_with(framed, true).await,
    ];
    let mut app = TestApp::start_analysed(
        &upstreams[0].url(),
        &upstreams[1].url(),
        &upstreams[2].url(),
        |settings| grpc_settings(settings, GrpcSchemaSettings::default()),
    )
    .await;
    let mut caller = Caller::connect(&app).await;
    assert_eq!(caller.get_order("o-1").await.unwrap(), order);
    let analysis = app.next_analysis().await;
    let Ok(primary) = &analysis.exchange.primary.result else {
        panic!("primary answered")
    };
    assert_eq!(primary.headers["grpc-status"], "0", "{:?}", primary.headers);
    let compared = analysis.compared().unwrap();
    assert!(compared.candidate.is_empty(), "{:?}", compared.candidate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_and_unknown_methods_are_counted_skips_not_caller_errors() {
    let schema_dir = tempfile::tempdir().unwrap();
    let schemas = GrpcSchemaSettings {
        protos: vec![schema_file(schema_dir.path())],
        ..GrpcSchemaSettings::default()
    };
    let primary = serve(Shop {
        clock: 1_000,
        candidate: false,
    })
    .await;
    let good = Shop {
        clock: 1_000,
        candidate: false,
    }
    .order("o-1", 2)
    .encode_to_vec();
    // Secondary's stream is cut short inside its only message; the candidate's length prefix is wrong.
    let mut truncated = frame(&good);
    truncated.truncate(truncated.len() - 3);
    let mut wrong_prefix = frame(&good);
    wrong_prefix[4] = wrong_prefix[4].wrapping_add(40);
    let secondary = raw_grpc_upstream(truncated).await;
    let candidate = raw_grpc_upstream(wrong_prefix).await;
    let mut app = TestApp::start_analysed(
        &format!("http://{primary}"),
        &secondary.url(),
        &candidate.url(),
        |settings| grpc_settings(settings, schemas),
    )
    .await;
    let mut caller = Caller::connect(&app).await;
    assert_eq!(
        caller.get_order("o-1").await.expect("primary's answer"),
        Shop {
            clock: 1_000,
            candidate: false
        }
        .order("o-1", 2)
    );
    let analysis = app.next_analysis().await;
    let compared = analysis.compared().expect("compared");
    assert_eq!(
        compared.body_skipped,
        [
            (Target::Secondary, BodySkip::GrpcMalformed),
            (Target::Candidate, BodySkip::GrpcMalformed)
        ]
    );
    // Primary's messages are kept decoded, as JSON.
    let Ok(response) = &analysis.exchange.primary.result else {
        panic!("primary answered")
    };
    let CapturedBody::Complete(body) = &response.body else {
        panic!("primary's body kept")
    };
    let decoded: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(decoded[0]["customer"]["name"], "ada");

    // A method no schema has: the caller hears primary's UNIMPLEMENTED; the bodies are skipped, counted.
    caller.0.ready().await.unwrap();
    let refund = GetOrderRequest {
        id: "r-1".into(),
        ..GetOrderRequest::default()
    };
    let unknown = caller
        .0
        .unary::<_, Order, _>(
            Request::new(refund.clone()),
            PathAndQuery::from_static("/shop.v1.Orders/Refund"),
            ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented);
    let analysis = patience("the unknown call's analysis", app.next_analysis()).await;
    assert_eq!(analysis.exchange.endpoint, "gRPC shop.v1.Orders/Refund");
    assert_eq!(
        analysis.compared().expect("compared").body_skipped,
        [(Target::Primary, BodySkip::GrpcUnknownMethod)]
    );
    // Primary refused the call without reading it; the shadows were still sent the whole request.
    for shadow in [&secondary, &candidate] {
        assert_eq!(
            shadow.next_request().await.uri.path(),
            "/shop.v1.Orders/GetOrder"
        );
        let sent = shadow.next_request().await;
        assert_eq!(sent.uri.path(), "/shop.v1.Orders/Refund");
        assert_eq!(&sent.body[..], &frame(&refund.encode_to_vec())[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schema_is_a_one_line_error_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_set = dir.path().join("broken.binpb");
    std::fs::write(&not_a_set, b"\xff\xff not protobuf").unwrap();
    let bad_proto = dir.path().join("bad.proto");
    std::fs::write(&bad_proto, "syntax = \"proto3\"; message { }").unwrap();
    for (flag, file) in [
        ("--grpc-descriptor-set", &not_a_set),
        ("--grpc-proto", &bad_proto),
        ("--grpc-descriptor-set", &dir.path().join("absent.binpb")),
    ] {
        let file = file.to_str().unwrap();
        let (_database, url) = temp_database();
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
            .env("SHADOWDIFF_DATABASE_URL", url)
            .args(["serve", "--primary", "http://127.0.0.1:1"])
            .args(["--candidate", "http://127.0.0.1:3"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args([flag, file])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {file}: {stderr}");
        let error = stderr.trim();
        assert_eq!(error.lines().count(), 1, "one line: {error}");
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(error.contains(name), "names the file: {error}");
    }
}

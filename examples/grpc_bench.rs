//! Unary gRPC through shadowdiff against going direct (`bench/grpc.sh`): a tonic upstream and a load generator.
//!
//! ```sh
//! cargo run --release --example grpc_bench -- upstream 127.0.0.1:9201 [--clock 1000] [--candidate]
//! cargo run --release --example grpc_bench -- load http://127.0.0.1:9201 --concurrency 32 --seconds 10 [--rate 4000]
//! cargo run --release --example grpc_bench -- proto FILE
//! ```
//!
//! The upstream answers `shop.v1.Orders/GetOrder` with an order of about 300 bytes (its `served_at` from the
//! clock given, so two instances differ a little; `--candidate` drops the customer). `load` keeps
//! `--concurrency` calls in flight over one HTTP/2 connection per 8 calls, as fast as they go or at `--rate`
//! calls a second in all, for `--seconds` after a second of warm-up, and prints one tab-separated line:
//! calls/s, p50, p99 and p99.9 in milliseconds, and the count of failed calls. `proto` writes the service's
//! `.proto` file for shadowdiff's `--grpc-proto`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http::uri::PathAndQuery;
use tokio::sync::Mutex;
use tonic::codegen::BoxFuture;
use tonic::codegen::tokio_stream::wrappers::TcpListenerStream;
use tonic::server::{Grpc, NamedService};
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::service_fn;

const PROTO: &str = r#"syntax = "proto3";
package shop.v1;
message GetOrderRequest { string id = 1; }
message Customer { string name = 1; string email = 2; }
message Item { string sku = 1; int64 price_cents = 2; int32 quantity = 3; }
message Order {
  string id = 1;
  Customer customer = 2;
  repeated Item items = 3;
  int64 served_at = 4;
  string note = 5;
}
service Orders { rpc GetOrder(GetOrderRequest) returns (Order); }
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct GetOrderRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Customer {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    email: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Item {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(int64, tag = "2")]
    price_cents: i64,
    #[prost(int32, tag = "3")]
    quantity: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(message, optional, tag = "2")]
    customer: Option<Customer>,
    #[prost(message, repeated, tag = "3")]
    items: Vec<Item>,
    #[prost(int64, tag = "4")]
    served_at: i64,
    #[prost(string, tag = "5")]
    note: String,
}

#[derive(Clone, Copy)]
struct Shop {
    clock: i64,
    candidate: bool,
    served: &'static AtomicU64,
}

impl Shop {
    fn order(self, id: String) -> Order {
        let served = self.served.fetch_add(1, Ordering::Relaxed) as i64;
        Order {
            id,
            customer: (!self.candidate).then(|| Customer {
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
            }),
            items: (1..=4)
                .map(|n| Item {
                    sku: format!("sku-{n:04}"),
                    price_cents: 1250 * n,
                    quantity: n as i32,
                })
                .collect(),
            served_at: self.clock + served,
            note: "leave at the door".into(),
        }
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
            if request.uri().path() != "/shop.v1.Orders/GetOrder" {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let get = service_fn(move |call: Request<GetOrderRequest>| async move {
                Ok::<_, Status>(Response::new(shop.order(call.into_inner().id)))
            });
            Ok(Grpc::new(ProstCodec::<Order, GetOrderRequest>::default())
                .unary(get, request)
                .await)
        })
    }
}

impl NamedService for Shop {
    const NAME: &'static str = "shop.v1.Orders";
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let at = args.iter().position(|arg| arg == name)?;
    args.get(at + 1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("upstream") => {
            let addr: SocketAddr = args[1].parse().expect("an address to listen on");
            let shop = Shop {
                clock: flag(&args, "--clock").unwrap_or(1_000),
                candidate: args.iter().any(|arg| arg == "--candidate"),
                served: Box::leak(Box::new(AtomicU64::new(0))),
            };
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
            // Answers are written as several HTTP/2 frames (headers, data, trailers): without TCP_NODELAY,
            // Nagle's algorithm holds the later ones back behind the peer's delayed acknowledgement.
            let incoming = TcpListenerStream::new(listener)
                .map(|stream| stream.and_then(|stream| stream.set_nodelay(true).map(|()| stream)));
            Server::builder()
                .add_service(shop)
                .serve_with_incoming(incoming)
                .await
                .expect("serve");
        }
        Some("load") => load(&args).await,
        Some("proto") => std::fs::write(&args[1], PROTO).expect("write the .proto file"),
        _ => {
            eprintln!(
                "usage: grpc_bench upstream ADDR | load URL [--concurrency N] [--seconds S] [--rate R] | proto FILE"
            );
            std::process::exit(2);
        }
    }
}

async fn load(args: &[String]) {
    let url = args[1].clone();
    let concurrency: usize = flag(args, "--concurrency").unwrap_or(32);
    let seconds: u64 = flag(args, "--seconds").unwrap_or(10);
    let rate: Option<f64> = flag(args, "--rate");
    let mut channels = Vec::new();
    for _ in 0..concurrency.div_ceil(8) {
        let channel = Channel::from_shared(url.clone())
            .expect("a URL")
            .connect()
            .await
            .expect("connect");
        channels.push(channel);
    }
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let channel = channels[worker / 8].clone();
        let (histogram, measuring, stop) = (histogram.clone(), measuring.clone(), stop.clone());
        let (done, failed) = (done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut client = tonic::client::Grpc::new(channel);
            let mut own = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut pace = rate.map(|rate| {
                let mut interval =
                    tokio::time::interval(Duration::from_secs_f64(concurrency as f64 / rate));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval
            });
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                n += 1;
                let started = Instant::now();
                let called = async {
                    client.ready().await.map_err(|_| ())?;
                    client
                        .unary::<_, Order, _>(
                            Request::new(GetOrderRequest {
                                id: format!("o-{worker}-{n}"),
                            }),
                            PathAndQuery::from_static("/shop.v1.Orders/GetOrder"),
                            ProstCodec::default(),
                        )
                        .await
                        .map_err(|_| ())
                };
                let ok = called.await.is_ok();
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        own.saturating_record(started.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram.lock().await.add(&own).unwrap();
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let histogram = histogram.lock().await;
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "{:.0}\t{:.2}\t{:.2}\t{:.2}\t{}",
        done.load(Ordering::Relaxed) as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        failed.load(Ordering::Relaxed)
    );
}

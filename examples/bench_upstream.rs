//! A small, fast HTTP/1.1 upstream for `bench/proxy.sh`: a fixed JSON body of about 2 KB, optionally slowed
//! down, or a black hole that accepts connections and never answers.
//!
//! ```sh
//! cargo run --release --example bench_upstream -- 127.0.0.1:9101 [fast | delay=3ms | blackhole]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// How this upstream treats each request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Fast,
    Delay(Duration),
    BlackHole,
}

fn parse_behaviour(text: &str) -> Result<Behaviour, String> {
    match text {
        "fast" => Ok(Behaviour::Fast),
        "blackhole" => Ok(Behaviour::BlackHole),
        _ => {
            let delay = text.strip_prefix("delay=").ok_or_else(|| {
                format!("unknown behaviour {text:?}: fast, delay=DURATION or blackhole")
            })?;
            let micros = if let Some(ms) = delay.strip_suffix("ms") {
                ms.parse::<f64>().map(|ms| ms * 1000.0)
            } else if let Some(us) = delay.strip_suffix("us") {
                us.parse::<f64>()
            } else {
                return Err(format!("delay {delay:?} needs a unit: ms or us"));
            }
            .map_err(|error| format!("delay {delay:?}: {error}"))?;
            Ok(Behaviour::Delay(Duration::from_micros(micros as u64)))
        }
    }
}

/// About 2 KB of JSON shaped like an ordinary API answer: an object with a list of small records.
fn body() -> Bytes {
    let items: Vec<serde_json::Value> = (0..16)
        .map(|i| {
            serde_json::json!({
                "id": 1000 + i,
                "sku": format!("SKU-{:05}", 31 * i + 7),
                "name": format!("Item number {i}"),
                "price": {"amount": 1999 + 100 * i, "currency": "EUR"},
                "in_stock": i % 3 != 0,
            })
        })
        .collect();
    let document = serde_json::json!({"page": 1, "per_page": 16, "total": 16, "items": items});
    Bytes::from(serde_json::to_vec(&document).expect("serialisable"))
}

async fn answer(
    behaviour: Behaviour,
    body: Bytes,
    _request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Behaviour::Delay(delay) = behaviour {
        tokio::time::sleep(delay).await;
    }
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("valid response"))
}

/// Reads whatever the peer sends and never answers, until the peer gives up.
async fn swallow(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buf).await {
        if read == 0 {
            return;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .ok_or("usage: bench_upstream ADDR [fast | delay=3ms | blackhole]")?
        .parse()?;
    let behaviour = parse_behaviour(args.next().as_deref().unwrap_or("fast"))?;
    let listener = TcpListener::bind(addr).await?;
    let body = body();
    eprintln!(
        "bench_upstream listening on {addr}: {behaviour:?}, {} byte body",
        body.len()
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        if let Behaviour::BlackHole = behaviour {
            tokio::spawn(swallow(stream));
            continue;
        }
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(behaviour, body.clone(), request));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

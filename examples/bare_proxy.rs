//! The floor of a reverse proxy on this stack, for the benchmarks: hyper's server and hyper-util's pooled client
//! on a multi-threaded tokio runtime, forwarding every request to one upstream and streaming the answer back,
//! and nothing else (no shadows, no headers touched, no metrics). `bench/proxy.sh` measures it beside
//! shadowdiff's own hop (`--sample-rate 0`) so that the hop's cost can be read against the stack's.
//!
//! ```sh
//! cargo run --release --example bare_proxy -- LISTEN_ADDR UPSTREAM_ADDR
//! ```

use std::net::SocketAddr;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const USAGE: &str = "usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err(USAGE.into());
    };
    let listen: SocketAddr = listen.parse().map_err(|e| format!("LISTEN_ADDR: {e}"))?;
    let upstream: SocketAddr = upstream
        .parse()
        .map_err(|e| format!("UPSTREAM_ADDR: {e}"))?;
    let per_core = std::env::var("BARE_RUNTIME").as_deref() == Ok("percore");
    if per_core {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let socket = tokio::net::TcpSocket::new_v4().unwrap();
                        socket.set_reuseport(true).unwrap();
                        socket.bind(listen).unwrap();
                        let listener = socket.listen(4096).unwrap();
                        serve(listener, upstream).await
                    })
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.unwrap();
        serve(listener, upstream).await
    });
    Ok(())
}

async fn serve(listener: TcpListener, upstream: SocketAddr) {
    let http1_only = std::env::var("BARE_SERVER").as_deref() == Ok("http1");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let (mut parts, body) = request.into_parts();
                    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                    parts.uri = format!("http://{upstream}{path}")
                        .parse()
                        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
                    client
                        .request(Request::from_parts(parts, body))
                        .await
                        .map_err(|e| e.to_string())
                }
            });
            if http1_only {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            } else {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
    }
}

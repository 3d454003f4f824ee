//! The floor of a reverse proxy on this stack, for the benchmarks: hyper's server and hyper-util's pooled client,
//! forwarding every request to one upstream and streaming the answer back, and nothing else (no shadows, no
//! headers touched, no metrics). `bench/hop.sh` measures it beside shadowdiff's own hop (`--sample-rate 0`) so
//! that the hop's cost can be read against the stack's.
//!
//! ```sh
//! [BARE_RUNTIME=per-core|per-core-shared] [BARE_SERVER=http1] cargo run --release --example bare_proxy -- LISTEN_ADDR UPSTREAM_ADDR
//! ```
//!
//! By default one multi-threaded runtime serves every connection; `BARE_RUNTIME=per-core` runs a
//! single-threaded runtime per core, each accepting on its own `SO_REUSEPORT` listener with its own pool;
//! `BARE_RUNTIME=per-core-shared` likewise, but every thread accepts from one listening socket.
//! `BARE_SERVER=http1` serves HTTP/1.1 only instead of sniffing for HTTP/2.

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
    let runtime_mode = std::env::var("BARE_RUNTIME").unwrap_or_default();
    if runtime_mode == "per-core" || runtime_mode == "per-core-shared" {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // `per-core-shared`: one listening socket, which every thread's runtime polls and accepts from.
        let shared = if runtime_mode == "per-core-shared" {
            let listener = std::net::TcpListener::bind(listen)?;
            listener.set_nonblocking(true)?;
            Some(listener)
        } else {
            None
        };
        let threads: Vec<_> = (0..cores)
            .map(|_| {
                let own = shared
                    .as_ref()
                    .map(std::net::TcpListener::try_clone)
                    .transpose();
                std::thread::spawn(move || -> std::io::Result<()> {
                    let own = own?;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener = match own {
                            Some(listener) => TcpListener::from_std(listener)?,
                            None => {
                                let socket = tokio::net::TcpSocket::new_v4()?;
                                socket.set_reuseaddr(true)?;
                                socket.set_reuseport(true)?;
                                socket.bind(listen)?;
                                socket.listen(1024)?
                            }
                        };
                        serve(listener, upstream).await;
                        Ok(())
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().map_err(|_| "a serving thread panicked")??;
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        serve(TcpListener::bind(listen).await?, upstream).await;
        Ok(())
    })
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

//! A small, fast HTTP/1.1 upstream for the benchmarks (`bench/proxy.sh`, `bench/profile.sh`, `bench/soak.sh`).
//!
//! ```sh
//! cargo run --release --example bench_upstream -- 127.0.0.1:9101 [fast | delay=3ms | blackhole | switchable] \
//!     [--soak] [--variant current|candidate]
//! ```
//!
//! Behaviours: `fast` answers at once; `delay=3ms` (or `us`) answers after that long; `blackhole` accepts
//! connections and never answers; `switchable` answers like `fast` until it gets SIGUSR1, then like a black
//! hole until SIGUSR2 (and so on), so that one process can fail for part of a run. Requests already waiting when
//! SIGUSR2 arrives are answered then (their callers have usually given up by then).
//!
//! Answers: without `--soak`, every request gets the same fixed JSON body of about 2 KB, whatever its method
//! and path. With `--soak` (bench/soak.sh), the answer depends on the request:
//!
//! - `GET /export/...`: about 1 MiB of JSON (an export of rows, the same for every path);
//! - any other `GET`: about 1 KB of JSON derived from the path;
//! - a request with a body (`POST`): the body is read whole and ignored; a small JSON receipt with its size;
//!
//! each with noise (`generated_at`, `request_id` and an `x-request-id` header), so that two instances of the
//! same version differ a little. `--variant candidate` answers like a regressed version: `name` becomes
//! `full_name` in one `/users/...` path in four, `views` becomes a string in one `/articles/...` path in ten,
//! `status` becomes `state` in one export row in a hundred, and receipts gain a `queued` field.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const USAGE: &str = "usage: bench_upstream ADDR [fast | delay=3ms | blackhole | switchable] [--soak] \
                     [--variant current|candidate]";

/// How this upstream treats each request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Fast,
    Delay(Duration),
    BlackHole,
    /// Fast, or a black hole between SIGUSR1 and SIGUSR2.
    Switchable,
}

fn parse_behaviour(text: &str) -> Result<Behaviour, String> {
    match text {
        "fast" => Ok(Behaviour::Fast),
        "blackhole" => Ok(Behaviour::BlackHole),
        "switchable" => Ok(Behaviour::Switchable),
        _ => {
            let delay = text.strip_prefix("delay=").ok_or_else(|| {
                format!("unknown behaviour {text:?}: fast, delay=DURATION, blackhole or switchable")
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

/// The rows of an export, serialised as a JSON array of at least `size` bytes. The candidate names `status`
/// `state` in one row in a hundred.
fn export_rows(size: usize, candidate: bool) -> Bytes {
    let mut out = Vec::with_capacity(size + 256);
    out.push(b'[');
    let mut i = 0u64;
    while out.len() < size {
        if i > 0 {
            out.push(b',');
        }
        let status_key = if candidate && i % 100 == 42 {
            "state"
        } else {
            "status"
        };
        let status = if i.is_multiple_of(7) {
            "archived"
        } else {
            "active"
        };
        let parity = if i.is_multiple_of(2) { "even" } else { "odd" };
        let mut row = serde_json::json!({
            "id": 500_000 + i,
            "sku": format!("SKU-{:07}", (i * 7919) % 10_000_000),
            "title": format!("Export row {i} of the nightly report"),
            "price": {"amount": 100 + (i * 37) % 99_900, "currency": "EUR"},
            "tags": ["alpha", "beta", parity],
        });
        row[status_key] = serde_json::Value::from(status);
        serde_json::to_writer(&mut out, &row).expect("serialisable");
        i += 1;
    }
    out.push(b']');
    Bytes::from(out)
}

/// What `--soak` answers with.
struct Soak {
    candidate: bool,
    /// The rows of every export (about 1 MiB).
    export_rows: Bytes,
}

/// Everything the connections share.
struct Upstream {
    behaviour: Behaviour,
    /// The fixed answer without `--soak`.
    fixed: Bytes,
    soak: Option<Soak>,
    /// True while a switchable upstream is a black hole.
    holed: watch::Receiver<bool>,
    /// Answers given (for request ids).
    answered: AtomicU64,
}

/// FNV-1a: a stable hash of a path, so that every instance derives the same answer from it.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn json_response(
    status: StatusCode,
    body: Bytes,
    request_id: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(id) = request_id {
        builder = builder.header("x-request-id", id);
    }
    builder.body(Full::new(body)).expect("valid response")
}

impl Upstream {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.behaviour {
            Behaviour::Delay(delay) => tokio::time::sleep(delay).await,
            Behaviour::Switchable if *self.holed.borrow() => {
                // Never answered while the hole lasts; the caller gives up long before, as a rule.
                let mut holed = self.holed.clone();
                let _ = holed.wait_for(|holed| !*holed).await;
            }
            _ => {}
        }
        match &self.soak {
            None => json_response(StatusCode::OK, self.fixed.clone(), None),
            Some(soak) => self.soak_answer(soak, request).await,
        }
    }

    async fn soak_answer(&self, soak: &Soak, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let n = self.answered.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{:08x}-{n:012x}", std::process::id());
        let generated_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let path = request.uri().path().to_string();
        let quoted_path = serde_json::to_string(&path).expect("serialisable");
        let hash = fnv(&path);

        if request.method() != Method::GET && request.method() != Method::HEAD {
            // A write: the body is read whole and ignored.
            let received = match request.into_body().collect().await {
                Ok(collected) => collected.to_bytes().len(),
                Err(_) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        Bytes::from_static(b"{\"error\":\"unreadable body\"}"),
                        Some(&request_id),
                    );
                }
            };
            let mut receipt = serde_json::json!({
                "status": "accepted",
                "path": path,
                "received_bytes": received,
                "comment_id": hash % 1_000_000,
                "generated_at": generated_at,
                "request_id": request_id,
            });
            if soak.candidate {
                receipt["queued"] = serde_json::Value::Bool(true);
            }
            let body = Bytes::from(serde_json::to_vec(&receipt).expect("serialisable"));
            return json_response(StatusCode::CREATED, body, Some(&request_id));
        }

        if path.starts_with("/export/") {
            let head = format!(
                "{{\"export\":{quoted_path},\"generated_at\":{generated_at},\"request_id\":\"{request_id}\",\"rows\":"
            );
            let mut body = Vec::with_capacity(head.len() + soak.export_rows.len() + 1);
            body.extend_from_slice(head.as_bytes());
            body.extend_from_slice(&soak.export_rows);
            body.push(b'}');
            return json_response(StatusCode::OK, Bytes::from(body), Some(&request_id));
        }

        let last = path
            .trim_end_matches('/')
            .rsplit('/')
            .find(|segment| !segment.is_empty() && *segment != "repos")
            .unwrap_or("index");
        let items: Vec<serde_json::Value> = (0..8u64)
            .map(|i| {
                let h = hash.rotate_left(i as u32 * 8);
                let part = [
                    "one", "two", "three", "four", "five", "six", "seven", "eight",
                ][i as usize];
                let language = ["rust", "go", "python", "java"][(h % 4) as usize];
                serde_json::json!({
                    "id": h % 100_000,
                    "slug": format!("{last}-part-{part}"),
                    "stars": h % 5000,
                    "language": language,
                })
            })
            .collect();
        let mut document = serde_json::json!({
            "path": path,
            "generated_at": generated_at,
            "request_id": request_id,
            "items": items,
        });
        if path.starts_with("/users/") {
            let key = if soak.candidate && hash.is_multiple_of(4) {
                "full_name"
            } else {
                "name"
            };
            document[key] = serde_json::Value::String(last.replace(['-', '_'], " "));
            document["followers"] = serde_json::json!(hash % 10_000);
        } else {
            document["title"] = serde_json::Value::String(last.replace(['-', '_'], " "));
            let views = hash % 100_000;
            document["views"] = if soak.candidate && hash % 10 == 3 {
                serde_json::Value::String(views.to_string())
            } else {
                serde_json::json!(views)
            };
        }
        let body = Bytes::from(serde_json::to_vec(&document).expect("serialisable"));
        json_response(StatusCode::OK, body, Some(&request_id))
    }
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

/// SIGUSR1 opens the hole, SIGUSR2 closes it.
fn watch_signals(holed: watch::Sender<bool>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut open = signal(SignalKind::user_defined1())?;
    let mut close = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let hole = tokio::select! {
                _ = open.recv() => true,
                _ = close.recv() => false,
            };
            holed.send_replace(hole);
            eprintln!(
                "bench_upstream: {}",
                if hole { "black hole" } else { "fast" }
            );
        }
    });
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: Option<SocketAddr> = None;
    let mut behaviour: Option<Behaviour> = None;
    let mut soak = false;
    let mut candidate = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--soak" => soak = true,
            "--variant" => {
                candidate = match args.next().as_deref() {
                    Some("current") => false,
                    Some("candidate") => true,
                    other => {
                        return Err(format!("--variant {other:?}: current or candidate").into());
                    }
                }
            }
            _ if arg.starts_with("--") => return Err(format!("unknown flag {arg}; {USAGE}").into()),
            _ if addr.is_none() => addr = Some(arg.parse()?),
            _ if behaviour.is_none() => behaviour = Some(parse_behaviour(&arg)?),
            _ => return Err(USAGE.into()),
        }
    }
    let addr = addr.ok_or(USAGE)?;
    let behaviour = behaviour.unwrap_or(Behaviour::Fast);

    let (hole_tx, holed) = watch::channel(false);
    if let Behaviour::Switchable = behaviour {
        watch_signals(hole_tx)?;
    }
    let upstream = Arc::new(Upstream {
        behaviour,
        fixed: body(),
        soak: soak.then(|| Soak {
            candidate,
            export_rows: export_rows(1 << 20, candidate),
        }),
        holed,
        answered: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(addr).await?;
    match &upstream.soak {
        None => eprintln!(
            "bench_upstream listening on {addr}: {behaviour:?}, {} byte body",
            upstream.fixed.len()
        ),
        Some(soak) => eprintln!(
            "bench_upstream listening on {addr}: {behaviour:?}, soak answers ({}, {} byte export rows)",
            if soak.candidate {
                "candidate"
            } else {
                "current"
            },
            soak.export_rows.len()
        ),
    }
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: wait for some to be freed rather than exit.
                eprintln!("bench_upstream: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let hole = match behaviour {
            Behaviour::BlackHole => true,
            Behaviour::Switchable => *upstream.holed.borrow(),
            _ => false,
        };
        if hole {
            tokio::spawn(swallow(stream));
            continue;
        }
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let upstream = upstream.clone();
                async move { Ok::<_, Infallible>(upstream.answer(request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

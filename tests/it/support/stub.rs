//! Stub upstreams on port 0: a programmable HTTP server that records what it receives, and raw TCP peers that
//! misbehave (refuse, never answer, reset mid-body, speak garbage).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::patience;

/// A request as a stub received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a stub answers with: a whole body, or chunks pushed by the test.
pub type StubBody = BoxBody<Bytes, Infallible>;
type Handler = Arc<dyn Fn(Seen) -> BoxFuture<Response<StubBody>> + Send + Sync>;

/// An HTTP upstream that answers with a handler and records every request it receives.
pub struct Stub {
    addr: SocketAddr,
    seen: Mutex<mpsc::UnboundedReceiver<Seen>>,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    /// Starts a stub whose answers come from `handler` (which may wait, to hold an answer back).
    pub async fn start<F, Fut>(handler: F) -> Stub
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<StubBody>> + Send + 'static,
    {
        Self::start_with(handler, false).await
    }

    /// Like `start`, but speaking HTTP/2 only (h2c prior knowledge).
    pub async fn start_h2<F, Fut>(handler: F) -> Stub
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<StubBody>> + Send + 'static,
    {
        Self::start_with(handler, true).await
    }

    async fn start_with<F, Fut>(handler: F, h2_only: bool) -> Stub
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<StubBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let hits = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(move |seen| Box::pin(handler(seen)));
        let counter = hits.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let tx = tx.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = handler.clone();
                        let tx = tx.clone();
                        let counter = counter.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            counter.fetch_add(1, Ordering::SeqCst);
                            let _ = tx.send(seen.clone());
                            Ok::<_, Infallible>(handler(seen).await)
                        }
                    });
                    let builder = if h2_only {
                        auto::Builder::new(TokioExecutor::new()).http2_only()
                    } else {
                        auto::Builder::new(TokioExecutor::new())
                    };
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Stub {
            addr,
            seen: Mutex::new(rx),
            hits,
            connections,
            task,
        }
    }

    /// A stub that answers 200 with this JSON body once `gate` is open (it holds every answer until then).
    pub async fn gated_json(gate: &Gate, body: &'static str) -> Stub {
        let gate = gate.clone();
        Self::start(move |_| {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                json_response(StatusCode::OK, body)
            }
        })
        .await
    }

    /// A user document; `renamed` says `full_name` for `name`; each answer carries this stub's own clock
    /// reading (`served_at`), which is noise when each stub's clock starts elsewhere.
    pub async fn users(clock_start: u64, renamed: bool) -> Stub {
        let clock = Arc::new(AtomicUsize::new(clock_start as usize));
        Self::start(move |seen| {
            let tick = clock.fetch_add(1, Ordering::SeqCst);
            async move {
                let id = seen
                    .uri
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or("0")
                    .to_string();
                let name_key = if renamed { "full_name" } else { "name" };
                json_response(
                    StatusCode::OK,
                    &format!(r#"{{"id":{id},"{name_key}":"ada","served_at":{tick}}}"#),
                )
            }
        })
        .await
    }

    /// An item `{"id": <last path segment>, "name": "ada"}`, with `full_name` for `name` while `renamed` is set
    /// (a candidate that turns bad and good again).
    pub async fn item(renamed: Option<Arc<std::sync::atomic::AtomicBool>>) -> Stub {
        Self::start(move |seen| {
            let renamed = renamed
                .as_ref()
                .is_some_and(|renamed| renamed.load(Ordering::SeqCst));
            async move {
                let id = seen
                    .uri
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or("0")
                    .to_string();
                let key = if renamed { "full_name" } else { "name" };
                json_response(StatusCode::OK, &format!(r#"{{"id":{id},"{key}":"ada"}}"#))
            }
        })
        .await
    }

    /// A stub that always answers 200 with this JSON body.
    pub async fn json(body: &'static str) -> Stub {
        Self::start(move |_| async move { json_response(StatusCode::OK, body) }).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The next request this stub received, waiting for it.
    pub async fn next_request(&self) -> Seen {
        let mut seen = self.seen.lock().await;
        patience("a request to reach the stub", seen.recv())
            .await
            .expect("stub channel open")
    }
}

pub fn json_response(status: StatusCode, body: &str) -> Response<StubBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body.as_bytes().to_vec()))
        .unwrap()
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> StubBody {
    Full::new(bytes.into()).boxed()
}

/// A body whose chunks the test sends, ending when the sender is dropped.
pub fn channel_body() -> (mpsc::Sender<Bytes>, StubBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody(rx).boxed())
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A gate a stub handler waits at until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    pub fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    pub async fn wait(&self) {
        let permit = self.0.acquire().await.expect("gate semaphore open");
        // Leave the permit for the next waiter: once open, the gate stays open.
        drop(permit);
    }

    pub fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

/// An address where connections are refused: a socket bound but not listening, held so that no other test
/// can take its port while this one runs.
pub struct Refusing {
    addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl Refusing {
    pub fn new() -> Refusing {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        Refusing {
            addr,
            _socket: socket,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A raw TCP peer: accepts connections and does `behaviour` with each.
pub struct RawPeer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a raw peer treats a connection.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Reads the request and never answers (the connection stays open).
    BlackHole,
    /// Sends a head promising 100 000 bytes, 100 of them, then resets the connection.
    ResetMidBody,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Answers `hello world` framed by both Transfer-Encoding and a wrong Content-Length.
    ChunkedWithLength,
    /// Answers a proper keep-alive response, then closes the connection without saying so.
    CloseAfterResponse,
    /// Promises 1 000 bytes, sends 10 and closes the connection.
    ShortBodyThenClose,
    /// Promises 1 000 bytes, sends 10 and keeps the connection open, silent.
    ShortBodyThenHold,
    /// Keeps connections alive and answers each request with `{}` under `content-length: 2`, followed by
    /// bytes the length does not cover.
    ExtraBytes,
    /// Keeps connections alive and answers properly, but closes each connection after one to three answers
    /// (a different number for each connection) without saying so.
    RandomCloses,
}

impl RawPeer {
    pub async fn start(misbehaviour: Misbehaviour) -> RawPeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut connections = 0usize;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                connections += 1;
                if let Misbehaviour::ExtraBytes | Misbehaviour::RandomCloses = misbehaviour {
                    let answers = match misbehaviour {
                        Misbehaviour::RandomCloses => Some(connections % 3 + 1),
                        _ => None,
                    };
                    tokio::spawn(keep_alive(stream, misbehaviour, answers, counter.clone()));
                    continue;
                }
                read_head(&mut stream).await;
                counter.fetch_add(1, Ordering::SeqCst);
                match misbehaviour {
                    Misbehaviour::BlackHole => held.push(stream),
                    Misbehaviour::ShortBodyThenClose | Misbehaviour::ShortBodyThenHold => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n[1,2,3,4,")
                            .await;
                        let _ = stream.flush().await;
                        if let Misbehaviour::ShortBodyThenHold = misbehaviour {
                            held.push(stream);
                        } else {
                            let _ = stream.shutdown().await;
                        }
                    }
                    Misbehaviour::ExtraBytes | Misbehaviour::RandomCloses => {
                        unreachable!("served above")
                    }
                    Misbehaviour::ResetMidBody => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
                            .await;
                        let _ = stream.write_all(&[b'x'; 100]).await;
                        let _ = stream.flush().await;
                        let _ = stream.set_zero_linger();
                        drop(stream);
                    }
                    Misbehaviour::Garbage => {
                        let _ = stream
                            .write_all(b"\x00\x01 this is not HTTP at all \xff\xfe\r\n\r\n")
                            .await;
                        let _ = stream.shutdown().await;
                    }
                    Misbehaviour::ChunkedWithLength => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\
                                  transfer-encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
                            )
                            .await;
                        let _ = stream.shutdown().await;
                    }
                    Misbehaviour::CloseAfterResponse => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                            )
                            .await;
                        drop(stream);
                    }
                }
            }
        });
        RawPeer {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections that sent a request head so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads until the end of a request head (a blank line); false when the peer stopped sending first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    // A byte at a time, so that nothing of a following request on a kept-alive connection is consumed.
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => head.push(buf[0]),
        }
    }
    true
}

/// Serves bodiless requests on one kept-alive connection, misbehaving as asked; stops after `answers`
/// answers when given, closing without a word.
async fn keep_alive(
    mut stream: TcpStream,
    misbehaviour: Misbehaviour,
    answers: Option<usize>,
    counter: Arc<AtomicUsize>,
) {
    let mut answered = 0;
    while read_head(&mut stream).await {
        counter.fetch_add(1, Ordering::SeqCst);
        let response: &[u8] = match misbehaviour {
            Misbehaviour::ExtraBytes => {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}junk past the length\r\n"
            }
            _ => b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        };
        if stream.write_all(response).await.is_err() {
            return;
        }
        answered += 1;
        if answers == Some(answered) {
            return;
        }
    }
}

//! A connection pool of our own for one HTTP/1.1 upstream: idle connections kept in a stack, taken and given
//! back without hashing a key or spawning a task per request.
//!
//! A connection's own task hands it back: the task that drives a connection also holds its sender while a
//! request is under way, and puts it back in the pool as soon as the connection is ready for the next request
//! (its answer read to the end), so nothing waits on a connection whose answer is still streaming to a slow
//! caller. hyper-util's pool, which this replaces for HTTP/1.1, looks each request up by (scheme, authority)
//! in a hashed map and spawns a task per request to give the connection back: a sixth of the hop's
//! instructions.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use tower_service::Service;

use crate::exchange::UpstreamError;
use crate::proxy::timing::{ArrivalClock, StampingConnector};
use crate::proxy::upstream::{UpstreamBody, classify_hyper, error_chain};

/// The sending half of a connection.
type Sender = http1::SendRequest<UpstreamBody>;

/// How a pool treats its connections.
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Idle connections kept; past it a connection that comes back is closed.
    pub max_idle: usize,
    /// How long a connection may stay idle before it is closed.
    pub idle_timeout: Duration,
    /// The largest read buffer of a connection.
    pub max_buf_size: usize,
}

/// A pool of HTTP/1.1 connections to one upstream, cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct Http1Pool {
    shared: Arc<Shared>,
}

struct Shared {
    connector: HttpsConnector<StampingConnector>,
    /// Where connections go: the upstream's scheme and authority.
    origin: Uri,
    limits: PoolLimits,
    /// Idle connections, the most recently used last (taken first: it is the least likely to have been closed).
    idle: Mutex<Vec<Idle>>,
    /// Whether the task that closes connections idle for too long runs.
    reaping: AtomicBool,
}

struct Idle {
    sender: Sender,
    /// The connection's own slot, through which its task gets the sender back after the next request.
    slot: Arc<Slot>,
    since: Instant,
}

impl Idle {
    /// Still open, and not idle for too long.
    fn usable(&self, idle_timeout: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < idle_timeout
    }
}

/// A connection taken from the pool or just opened.
struct Taken {
    sender: Sender,
    /// Given back through here, to the connection's task.
    slot: Arc<Slot>,
    reused: bool,
}

/// One connection's own state: where its sender waits for the answer to end, watched by the connection's task,
/// and its latency stamps.
struct Slot {
    sender: Mutex<Option<Sender>>,
    task: AtomicWaker,
    /// `None` when the connection is not stamped.
    clock: Option<ArrivalClock>,
}

impl Http1Pool {
    pub fn new(
        connector: HttpsConnector<StampingConnector>,
        origin: Uri,
        limits: PoolLimits,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                origin,
                limits,
                idle: Mutex::new(Vec::new()),
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Idle connections kept now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shared.idle.lock().map_or(0, |idle| idle.len())
    }

    /// Sends a request (its URI absolute or origin-form; it is sent in origin-form) and returns the response head
    /// with its body still to read. A request that a reused connection turned away before writing any of it (the
    /// upstream had just closed it) is sent again on another.
    pub async fn send(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        loop {
            let Taken {
                mut sender,
                slot,
                reused,
            } = match self.take() {
                Some(taken) => taken,
                // Boxed: opening a connection is rare, and inline its state would be carried by every request.
                None => Box::pin(self.connect()).await?,
            };
            let answer = sender.try_send_request(request);
            // The sender goes back to its connection's task at once: the task returns it to the pool when the
            // connection is ready again, which for HTTP/1.1 is when this answer has been read to its end.
            if let Ok(mut waiting) = slot.sender.lock() {
                *waiting = Some(sender);
            }
            slot.task.wake();
            match answer.await {
                Ok(mut response) => {
                    if let Some(clock) = &slot.clock {
                        response.extensions_mut().insert(clock.clone());
                    }
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => {
                        let error = error.into_error();
                        return Err(classify_hyper(&error, error_chain(&error)));
                    }
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and has not idled too long.
    fn take(&self) -> Option<Taken> {
        let mut idle = self.shared.idle.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if entry.usable(self.shared.limits.idle_timeout) {
                return Some(Taken {
                    sender: entry.sender,
                    slot: entry.slot,
                    reused: true,
                });
            }
        }
        None
    }

    async fn connect(&self) -> Result<Taken, UpstreamError> {
        let mut connector = self.shared.connector.clone();
        let io = connector
            .call(self.shared.origin.clone())
            .await
            .map_err(|error| UpstreamError::Connect(error_chain(&*error)))?;
        let clock = match &io {
            MaybeHttpsStream::Http(stream) => stream.clock(),
            MaybeHttpsStream::Https(_) => None,
        };
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(self.shared.limits.max_buf_size)
            .handshake(io)
            .await
            .map_err(|error| UpstreamError::Connect(error_chain(&error)))?;
        let slot = Arc::new(Slot {
            sender: Mutex::new(None),
            task: AtomicWaker::new(),
            clock,
        });
        tokio::spawn(Driven {
            connection: connection.with_upgrades(),
            slot: slot.clone(),
            pool: Arc::downgrade(&self.shared),
        });
        self.start_reaping();
        Ok(Taken {
            sender,
            slot,
            reused: false,
        })
    }

    /// Closes connections idle for longer than the idle timeout even when no request comes to take them, from a
    /// task on the runtime that first connects, which ends with the pool.
    fn start_reaping(&self) {
        if self.shared.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(&self.shared);
        let period = self
            .shared
            .limits
            .idle_timeout
            .max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let timeout = pool.limits.idle_timeout;
                if let Ok(mut idle) = pool.idle.lock() {
                    idle.retain(|entry| entry.usable(timeout));
                }
            }
        });
    }
}

impl Shared {
    /// A connection ready for its next request comes back; past the idle cap it is closed instead.
    fn give_back(&self, sender: Sender, slot: &Arc<Slot>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() < self.limits.max_idle {
            idle.push(Idle {
                sender,
                slot: slot.clone(),
                since: Instant::now(),
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's task: drives the connection, and gives its sender back to the pool once the connection is
    /// ready for another request.
    struct Driven<C> {
        #[pin]
        connection: C,
        slot: Arc<Slot>,
        pool: Weak<Shared>,
    }
}

impl<C: Future<Output = hyper::Result<()>>> Future for Driven<C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        this.slot.task.register(cx.waker());
        if let Poll::Ready(result) = this.connection.poll(cx) {
            if let Err(error) = result {
                tracing::debug!(error = %error_chain(&error), "upstream connection ended with an error");
            }
            return Poll::Ready(());
        }
        let Ok(mut waiting) = this.slot.sender.lock() else {
            return Poll::Pending;
        };
        if let Some(sender) = waiting.as_mut() {
            match sender.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(sender) = waiting.take()
                        && let Some(pool) = this.pool.upgrade()
                    {
                        pool.give_back(sender, this.slot);
                    }
                }
                // Closed: the sender goes with the connection.
                Poll::Ready(Err(_)) => *waiting = None,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::BodyExt;
    use hyper_util::client::legacy::connect::HttpConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::proxy::upstream::buffered;

    /// How the test upstream answers.
    #[derive(Clone)]
    enum Mode {
        /// `ok`, keeping the connection open.
        KeepAlive,
        /// `ok`, then closes the connection.
        Close,
        /// The head and `o` at once, the `k` only once a permit of the semaphore is released.
        Held(Arc<tokio::sync::Semaphore>),
    }

    /// Answers every request as `mode` says; counts the connections it accepted.
    async fn server(mode: Mode) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let mode = mode.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buffer = [0u8; 1024];
                    loop {
                        let read = socket.read(&mut buffer).await.unwrap_or(0);
                        if read == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buffer[..read]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            match &mode {
                                Mode::KeepAlive => socket
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                    .await
                                    .unwrap(),
                                Mode::Close => {
                                    socket
                                        .write_all(
                                            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                                        )
                                        .await
                                        .unwrap();
                                    return;
                                }
                                Mode::Held(release) => {
                                    socket
                                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\no")
                                        .await
                                        .unwrap();
                                    release.acquire().await.unwrap().forget();
                                    socket.write_all(b"k").await.unwrap();
                                }
                            }
                        }
                    }
                });
            }
        });
        (origin, accepted)
    }

    fn pool(origin: Uri, limits: PoolLimits) -> Http1Pool {
        let tls = crate::proxy::upstream::tls_config(None).unwrap();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(StampingConnector::new(HttpConnector::new(), true));
        Http1Pool::new(connector, origin, limits)
    }

    const LIMITS: PoolLimits = PoolLimits {
        max_idle: 8,
        idle_timeout: Duration::from_secs(60),
        max_buf_size: 32 << 10,
    };

    async fn get(pool: &Http1Pool, origin: &Uri) -> Response<Incoming> {
        let mut request = Request::new(buffered(bytes::Bytes::new()));
        *request.uri_mut() = format!("{origin}path?q=1").parse().unwrap();
        request.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("upstream"),
        );
        pool.send(request).await.unwrap()
    }

    async fn read_to_end(response: Response<Incoming>) -> bytes::Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_carries_the_next_request() {
        let (origin, accepted) = server(Mode::KeepAlive).await;
        let pool = pool(origin.clone(), LIMITS);
        for _ in 0..5 {
            let response = get(&pool, &origin).await;
            assert!(response.extensions().get::<ArrivalClock>().is_some());
            assert_eq!(read_to_end(response).await, "ok");
            assert_eq!(pool.idle_count(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_whose_answer_is_still_being_read_is_not_lent_out() {
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (origin, accepted) = server(Mode::Held(release.clone())).await;
        let pool = pool(origin.clone(), LIMITS);
        let first = get(&pool, &origin).await;
        let second = get(&pool, &origin).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 0);
        release.add_permits(2);
        assert_eq!(read_to_end(first).await, "ok");
        assert_eq!(read_to_end(second).await, "ok");
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn connections_past_the_idle_cap_or_the_idle_timeout_are_not_kept() {
        let (origin, accepted) = server(Mode::KeepAlive).await;
        let capped = pool(
            origin.clone(),
            PoolLimits {
                max_idle: 0,
                ..LIMITS
            },
        );
        for _ in 0..3 {
            assert_eq!(read_to_end(get(&capped, &origin).await).await, "ok");
            assert_eq!(capped.idle_count(), 0);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);

        let (origin, accepted) = server(Mode::KeepAlive).await;
        let expiring = pool(
            origin.clone(),
            PoolLimits {
                idle_timeout: Duration::ZERO,
                ..LIMITS
            },
        );
        for _ in 0..3 {
            assert_eq!(read_to_end(get(&expiring, &origin).await).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_never_given_back() {
        let (origin, accepted) = server(Mode::Close).await;
        let pool = pool(origin.clone(), LIMITS);
        for _ in 0..3 {
            assert_eq!(read_to_end(get(&pool, &origin).await).await, "ok");
            assert_eq!(pool.idle_count(), 0);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_upstream_that_does_not_answer_the_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let pool = pool(origin.clone(), LIMITS);
        let mut request = Request::new(buffered(bytes::Bytes::new()));
        *request.uri_mut() = origin;
        assert!(matches!(
            pool.send(request).await,
            Err(UpstreamError::Connect(_))
        ));
    }
}

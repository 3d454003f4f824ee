//! The proxy listener: accepts caller connections (HTTP/1.1, and HTTP/2 with prior knowledge) and shuts down
//! gracefully, letting in-flight requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::proxy::metrics::CallerRejection;

/// The largest read buffer of a caller's connection.
const CALLER_READ_BUFFER: usize = 128 << 10;

/// How the listener treats callers.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// Most caller connections open at once.
    pub max_connections: usize,
    /// Longest a caller may take to send its request head.
    pub header_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub grace: Duration,
}

/// Serves callers until `shutdown` resolves, then waits up to the grace for in-flight requests. Each open
/// connection holds a permit of `connections` (the cap, shared with the other caller threads).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    limits: ListenerLimits,
    connections: Arc<Semaphore>,
) {
    let grace = limits.grace;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Each caller connection's read buffer grows with what the caller sends, by default up to about
        // 400 KiB, and keeps that size for the connection's life; this bounds it, and a request's head (the
        // longest URI an HTTP library takes, 64 KiB, fits), past which the caller gets 431.
        .max_buf_size(CALLER_READ_BUFFER)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Cancelled when the grace runs out: connections still open are then closed.
    let cut = CancellationToken::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, caller) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: pause rather than spin, then keep serving.
                        tracing::warn!(%error, "proxy listener could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Past the cap a connection is closed at once: a flood of idle callers cannot take every file
                // descriptor and every buffer from the ones being served.
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    proxy.metrics().caller_rejected(CallerRejection::TooManyConnections);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = proxy.clone();
                let peer = proxy.peer(caller);
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    let peer = peer.clone();
                    async move { Ok::<_, Infallible>(handler.handle(request, peer).await) }
                });
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                let cut = cut.clone();
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        served = connection => if let Err(error) = served {
                            match rejection(&*error) {
                                Some(reason) => {
                                    proxy.metrics().caller_rejected(reason);
                                    tracing::debug!(%caller, reason = reason.as_str(), error = %error, "caller request rejected");
                                }
                                None => tracing::debug!(%caller, error = %error, "caller connection ended with an error"),
                            }
                        },
                        () = cut.cancelled() => tracing::debug!(%caller, "caller connection cut at the end of the grace"),
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        "proxy listener closed; letting in-flight requests finish"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "shutdown grace elapsed with requests still in flight; cutting them"
        );
        cut.cancel();
    }
}

/// Why HTTP parsing turned a caller away before any request reached the proxy (hyper has then answered 400,
/// 431 or 505 itself, or closed the connection on a header timeout); `None` for the ordinary ends of a
/// connection (the caller closed it, reset it, or went quiet between requests).
fn rejection(error: &(dyn std::error::Error + 'static)) -> Option<CallerRejection> {
    let error = error.downcast_ref::<hyper::Error>()?;
    if error.is_parse_too_large() {
        Some(CallerRejection::HeaderTooLarge)
    } else if error.is_parse() {
        Some(CallerRejection::Malformed)
    } else if error.is_timeout() {
        Some(CallerRejection::HeaderTimeout)
    } else {
        None
    }
}

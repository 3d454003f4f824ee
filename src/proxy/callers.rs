//! The caller threads: one single-threaded runtime per core, all accepting from the proxy's one listening
//! socket, so that a caller's request, primary's answer and the copy back to the caller stay on one thread,
//! with a connection pool to primary of that thread's own.
//!
//! One socket polled by every thread rather than a socket per thread with `SO_REUSEPORT`: the port is bound
//! exactly as by a single listener (a second process on it fails to start instead of silently taking a share
//! of the callers), and a new connection goes to whichever thread accepts first, the least busy, rather than
//! where a hash of its addresses sends it. Measured against `SO_REUSEPORT` in `bench/hop.sh`: within noise.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::proxy::server::{self, ListenerLimits};

/// The name every caller thread carries (with its number).
pub const THREAD_NAME: &str = "caller";

/// Connections the kernel queues before they are accepted (tokio's default for `TcpListener::bind`).
const BACKLOG: u32 = 1024;

thread_local! {
    /// The index of the caller thread running here, if this is one.
    static CALLER_THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Which caller thread this code runs on (`None` elsewhere): each keeps connection pools of its own, so that a
/// connection is driven by the thread whose callers send on it.
pub fn current_thread_index() -> Option<usize> {
    CALLER_THREAD.with(Cell::get)
}

/// The proxy's listening socket, and a handle to it for each caller thread.
pub struct CallerListeners {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl CallerListeners {
    /// Binds `addr` (port 0: a free port) once, and hands it to `count` threads. Called on a runtime, whose
    /// reactor the socket leaves again at once.
    pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted proxy can bind its port while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let first = socket.listen(BACKLOG)?.into_std()?;
        let addr = first.local_addr()?;
        let mut sockets = Vec::with_capacity(count.max(1));
        for _ in 1..count.max(1) {
            sockets.push(first.try_clone()?);
        }
        sockets.push(first);
        Ok(Self { sockets, addr })
    }

    /// The address callers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many caller threads will accept from it.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// Serves callers on a thread per handle of the listener until `shutdown` resolves; returns when every thread
/// has let its in-flight requests finish (up to the grace). The connection cap is shared by all threads. If a
/// thread cannot be started, those already started are stopped (and waited for) and the error returned.
pub async fn serve(
    listeners: CallerListeners,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    limits: ListenerLimits,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut finished = Vec::with_capacity(listeners.len());
    let mut started = Ok(());
    for (index, socket) in listeners.sockets.into_iter().enumerate() {
        let thread = CallerThread {
            index,
            proxy: proxy.clone(),
            stop: stop.clone(),
            limits,
            connections: connections.clone(),
        };
        match thread.start(socket) {
            Ok(done) => finished.push(done),
            Err(error) => {
                started = Err(error);
                break;
            }
        }
    }
    if started.is_ok() {
        shutdown.await;
    }
    stop.cancel();
    for thread in finished {
        let _ = thread.await;
    }
    started
}

/// What one caller thread serves with.
struct CallerThread {
    index: usize,
    proxy: Arc<Proxy>,
    stop: CancellationToken,
    limits: ListenerLimits,
    connections: Arc<Semaphore>,
}

impl CallerThread {
    /// Starts the thread on its handle of the listener; the receiver resolves when it has finished.
    fn start(self, socket: std::net::TcpListener) -> io::Result<oneshot::Receiver<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done, finished) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{THREAD_NAME}-{}", self.index))
            .spawn(move || {
                CALLER_THREAD.with(|thread| thread.set(Some(self.index)));
                runtime.block_on(self.serve(socket));
                // Connections still open past the grace (and upgraded tunnels) end with the runtime.
                drop(runtime);
                let _ = done.send(());
            })?;
        Ok(finished)
    }

    async fn serve(self, socket: std::net::TcpListener) {
        let listener = match TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, thread = self.index, "a caller thread could not register its listener");
                return;
            }
        };
        let stopped = self.stop.cancelled_owned();
        server::serve(listener, self.proxy, stopped, self.limits, self.connections).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_port_is_bound_once_and_no_one_else_can_share_it() {
        let listeners = CallerListeners::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        let addr = listeners.local_addr();
        assert_ne!(addr.port(), 0);
        assert!(CallerListeners::bind(addr, 2).is_err());
        assert!(std::net::TcpListener::bind(addr).is_err());
        // Every handle is the same socket: a connection is accepted from any of them.
        let _caller = std::net::TcpStream::connect(addr).unwrap();
        let last = listeners.sockets.last().unwrap();
        last.set_nonblocking(false).unwrap();
        let (_, from) = last.accept().unwrap();
        assert_eq!(from.ip(), addr.ip());
    }
}

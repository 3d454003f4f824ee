//! The caller threads: one single-threaded runtime per core, each accepting on a listener of its own bound to
//! the same address (`SO_REUSEPORT`), so that a caller's request, primary's answer and the copy back to the
//! caller stay on one thread, with a connection pool to primary of that thread's own.

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

/// Connections the kernel queues for each caller listener before they are accepted (tokio's default for
/// `TcpListener::bind`).
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

/// The proxy's listening sockets, one per caller thread, all bound to one address.
pub struct CallerListeners {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl CallerListeners {
    /// Binds `count` listeners to `addr` (port 0: a free port, the same for all).
    pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Self> {
        let first = listen(addr)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..count.max(1) {
            sockets.push(listen(addr)?);
        }
        Ok(Self { sockets, addr })
    }

    /// The address callers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many listeners (and caller threads) there are.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// A listening socket that shares its address with the other caller threads' (as `TcpListener::bind` does it,
/// plus `SO_REUSEPORT`), handed over without a runtime: each caller thread registers its own with its runtime.
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}

/// Serves callers on a thread per listener until `shutdown` resolves; returns when every thread has let its
/// in-flight requests finish (up to the grace). The connection cap is shared by all threads.
pub async fn serve(
    listeners: CallerListeners,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    limits: ListenerLimits,
) -> io::Result<()> {
    let stop = CancellationToken::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut finished = Vec::with_capacity(listeners.len());
    for (index, socket) in listeners.sockets.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done, finished_rx) = oneshot::channel::<()>();
        let (proxy, thread_stop, connections) = (proxy.clone(), stop.clone(), connections.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{THREAD_NAME}-{index}"))
            .spawn(move || {
                CALLER_THREAD.with(|thread| thread.set(Some(index)));
                runtime.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => {
                            server::serve(listener, proxy, thread_stop.cancelled_owned(), limits, connections)
                                .await;
                        }
                        Err(error) => {
                            tracing::error!(%error, thread = index, "caller thread could not register its listener");
                        }
                    }
                });
                // Connections still open past the grace (and upgraded tunnels) end with the runtime.
                drop(runtime);
                let _ = done.send(());
            });
        if let Err(error) = spawned {
            stop.cancel();
            return Err(error);
        }
        finished.push(finished_rx);
    }
    shutdown.await;
    stop.cancel();
    for thread in finished {
        let _ = thread.await;
    }
    Ok(())
}

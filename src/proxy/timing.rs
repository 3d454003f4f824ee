//! Upstream response times stamped where they happen: when a request is written, and when the first bytes of its
//! answer reached the kernel (`SO_TIMESTAMPNS`), so that the time a busy thread took to notice an answer (the
//! shadow threads yield to the callers') is not counted as the upstream's.
//!
//! Used on plain HTTP/1.1 connections, where a connection carries one request at a time: the first bytes read
//! after a request was written are its answer's. Over TLS (the handshake's own messages interleave) and HTTP/2
//! (streams share the connection) responses carry no stamps and are timed as they are seen.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Uri;
use http::uri::Scheme;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

/// One connection's stamps, shared with every response it carries (in the response's extensions).
#[derive(Clone, Debug, Default)]
pub struct ArrivalClock(Arc<Stamps>);

#[derive(Debug, Default)]
struct Stamps {
    /// When the current request's first bytes were written (ns since the epoch).
    sent: AtomicU64,
    /// When its answer's first bytes arrived (ns since the epoch); 0 until they have.
    arrived: AtomicU64,
}

impl ArrivalClock {
    /// Time from writing the request to its answer's arrival, once the answer has begun.
    pub fn latency(&self) -> Option<Duration> {
        let arrived = self.0.arrived.load(Ordering::Acquire);
        let sent = self.0.sent.load(Ordering::Acquire);
        (arrived != 0 && arrived >= sent).then(|| Duration::from_nanos(arrived - sent))
    }
}

/// The time to `response`'s head as its connection stamped it, if it did.
pub fn head_latency<B>(response: &http::Response<B>) -> Option<Duration> {
    response.extensions().get::<ArrivalClock>()?.latency()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// Connects as [`HttpConnector`] does; plain `http` connections are stamped.
#[derive(Clone)]
pub struct StampingConnector {
    inner: HttpConnector,
    /// False for HTTP/2 upstreams, whose streams share a connection.
    stamp: bool,
}

impl StampingConnector {
    pub fn new(inner: HttpConnector, http1: bool) -> Self {
        Self {
            inner,
            stamp: http1,
        }
    }
}

impl Service<Uri> for StampingConnector {
    type Response = StampedStream;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<StampedStream, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let stamp = self.stamp && uri.scheme() != Some(&Scheme::HTTPS);
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            let clock = (stamp && enable_timestamps(io.inner())).then(ArrivalClock::default);
            Ok(StampedStream {
                io,
                clock,
                awaiting: false,
            })
        })
    }
}

/// A TCP connection that stamps each request's write and its answer's arrival.
pub struct StampedStream {
    io: TokioIo<TcpStream>,
    /// `None` when the connection is not stamped.
    clock: Option<ArrivalClock>,
    /// A request has been written and no answer has begun.
    awaiting: bool,
}

impl StampedStream {
    /// The connection's stamps, shared with every response it carries; `None` when it is not stamped.
    pub fn clock(&self) -> Option<ArrivalClock> {
        self.clock.clone()
    }

    /// Stamps a write: the first after an answer began is the next request's first.
    fn stamp_write(&mut self) {
        if let Some(clock) = &self.clock
            && !self.awaiting
        {
            clock.0.arrived.store(0, Ordering::Release);
            clock.0.sent.store(now_ns(), Ordering::Release);
            self.awaiting = true;
        }
    }
}

impl Connection for StampedStream {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        match &self.clock {
            Some(clock) => connected.extra(clock.clone()),
            None => connected,
        }
    }
}

impl Read for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(clock) = this.clock.as_ref().filter(|_| this.awaiting) else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let tcp = this.io.inner();
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            // SAFETY: `recv_stamped` only writes into the buffer, and only the `read` bytes it wrote are marked
            // filled.
            let unfilled = unsafe { buf.as_mut() };
            match tcp.try_io(tokio::io::Interest::READABLE, || {
                recv_stamped(tcp, unfilled)
            }) {
                Ok((read, stamp)) => {
                    if read > 0 {
                        clock
                            .0
                            .arrived
                            .store(stamp.unwrap_or_else(now_ns).max(1), Ordering::Release);
                        this.awaiting = false;
                    }
                    // SAFETY: the kernel initialised the first `read` bytes.
                    unsafe { buf.advance(read) };
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl Write for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.stamp_write();
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.stamp_write();
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }
}

/// Asks the kernel to stamp what arrives on `tcp`; false if it will not.
#[cfg(target_os = "linux")]
fn enable_timestamps(tcp: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a socket option set on an open socket, with a pointer to a live int of the size given.
    let set = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    set == 0
}

#[cfg(not(target_os = "linux"))]
fn enable_timestamps(_tcp: &TcpStream) -> bool {
    false
}

/// Reads into `buf` with `recvmsg`, returning the bytes read and the kernel's arrival stamp of that data (ns since
/// the epoch), if it gave one.
#[cfg(target_os = "linux")]
fn recv_stamped(
    tcp: &TcpStream,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Option<u64>)> {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one control message holding a timespec, aligned as the kernel writes it.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid empty one; every pointer set below outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `message` describes live buffers of the lengths given.
    let read = unsafe { libc::recvmsg(tcp.as_raw_fd(), &raw mut message, 0) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the control messages are walked with the kernel's own macros, within `msg_controllen`.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let time: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::timespec>());
                stamp = Some(time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64);
            }
            header = libc::CMSG_NXTHDR(&raw const message, header);
        }
    }
    Ok((read as usize, stamp))
}

#[cfg(not(target_os = "linux"))]
fn recv_stamped(
    tcp: &TcpStream,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Option<u64>)> {
    // SAFETY: the bytes are only written by the read, and only those read are used.
    let buf = unsafe { &mut *(buf as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
    tcp.try_read(buf).map(|read| (read, None))
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers every request on one keep-alive connection, and counts the connections it accepted.
    async fn keep_alive_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buffer = [0u8; 1024];
            loop {
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                if read == 0 {
                    return 1;
                }
                seen.extend_from_slice(&buffer[..read]);
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..end + 4);
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                }
            }
        });
        (addr, served)
    }

    #[tokio::test]
    async fn each_answer_is_stamped_between_its_request_and_its_reading() {
        let (addr, served) = keep_alive_server().await;
        let client = Client::builder(TokioExecutor::new())
            .build::<_, Empty<bytes::Bytes>>(StampingConnector::new(HttpConnector::new(), true));
        for _ in 0..3 {
            let before = now_ns();
            let response = client
                .get(format!("http://{addr}/").parse().unwrap())
                .await
                .unwrap();
            let seen = now_ns();
            let clock = response.extensions().get::<ArrivalClock>().unwrap().clone();
            let (sent, arrived) = (
                clock.0.sent.load(Ordering::Acquire),
                clock.0.arrived.load(Ordering::Acquire),
            );
            // This request's stamps, not an earlier one's on the same connection.
            assert!(before <= sent && sent <= arrived && arrived <= seen);
            assert!(clock.latency().unwrap() <= Duration::from_nanos(seen - before));
            response.into_body().collect().await.unwrap();
        }
        drop(client);
        assert_eq!(served.await.unwrap(), 1, "one connection carried all three");
    }

    #[tokio::test]
    async fn http2_connections_carry_no_stamps() {
        let mut connector = StampingConnector::new(HttpConnector::new(), false);
        let (addr, _served) = keep_alive_server().await;
        let stream = connector
            .call(format!("http://{addr}/").parse().unwrap())
            .await
            .unwrap();
        assert!(stream.clock.is_none());
    }
}

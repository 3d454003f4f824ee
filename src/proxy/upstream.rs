//! The pooled HTTP client that reaches the upstreams (hyper-util, keep-alive, HTTP/1.1 or h2c), and the
//! translation of its failures into typed upstream errors.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::exchange::Target;
use crate::exchange::UpstreamError;
use crate::proxy::pool::{Http1Pool, PoolLimits};
use crate::proxy::timing::StampingConnector;
use crate::values::UpstreamUrl;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body of a request to an upstream: the shared buffered bytes, or the caller's body streamed through.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A buffered body, cheap to clone for the three requests.
pub fn buffered(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The caller's body, streamed through as it arrives.
pub fn streamed(body: Incoming) -> UpstreamBody {
    body.map_err(BoxError::from).boxed_unsync()
}

/// The part of the caller's body already read, then the rest as it arrives.
pub fn prefixed(prefix: Vec<Bytes>, rest: Incoming) -> UpstreamBody {
    PrefixedBody {
        prefix: prefix.into(),
        rest,
    }
    .boxed_unsync()
}

struct PrefixedBody {
    prefix: VecDeque<Bytes>,
    rest: Incoming,
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().map(|chunk| chunk.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

/// Idle pooled connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// The largest read buffer of a connection to an upstream; it also bounds a response head (nginx's own default
/// is 4 or 8 KiB), past which the upstream's answer is a protocol error.
const UPSTREAM_READ_BUFFER: usize = 32 << 10;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read --upstream-ca {path}: {source}")]
    CaFile { path: String, source: io::Error },
    #[error("--upstream-ca {path} holds no usable certificate")]
    NoCertificate { path: String },
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

/// Where the noise baseline (what differs between two answers of the current version) comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// A second instance of the current version (`--secondary`): the recommended set-up.
    Secondary,
    /// Primary asked a second time (no `--secondary`): safe methods only; for others there is no baseline.
    PrimaryTwice,
}

/// Where the three upstreams are and how they are reached.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// The current version; its response goes back to the caller by default.
    pub primary: UpstreamUrl,
    /// A second instance of the current version: what differs between it and primary is noise. Primary
    /// itself when there is none (see `baseline`).
    pub secondary: UpstreamUrl,
    /// The new version under test.
    pub candidate: UpstreamUrl,
    /// Where the noise baseline comes from.
    pub baseline: Baseline,
    /// Speak HTTP/2 to the upstreams instead of HTTP/1.1.
    pub http2: bool,
    /// A PEM file of extra CA certificates trusted for https:// upstreams.
    pub ca_file: Option<PathBuf>,
    /// Time allowed to open a connection to an upstream.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to an upstream is kept.
    pub idle_timeout: Duration,
    /// Time allowed for the upstream that answers the caller to send its response headers.
    pub response_timeout: Duration,
    /// Time allowed for a whole shadow request.
    pub shadow_timeout: Duration,
}

impl UpstreamSettings {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_SHADOW_TIMEOUT: Duration = Duration::from_secs(5);

    /// The three upstreams, reached with the default settings.
    pub fn new(primary: UpstreamUrl, secondary: UpstreamUrl, candidate: UpstreamUrl) -> Self {
        Self {
            primary,
            secondary,
            candidate,
            baseline: Baseline::Secondary,
            http2: false,
            ca_file: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            shadow_timeout: Self::DEFAULT_SHADOW_TIMEOUT,
        }
    }

    /// Primary and candidate alone: primary is asked a second time for the noise baseline (safe methods
    /// only).
    pub fn without_secondary(primary: UpstreamUrl, candidate: UpstreamUrl) -> Self {
        Self {
            baseline: Baseline::PrimaryTwice,
            ..Self::new(primary.clone(), primary, candidate)
        }
    }

    /// The upstreams as a run records them: secondary's URL empty when primary was asked twice.
    pub fn run_urls(&self) -> [String; 3] {
        Target::ALL.map(|target| match (target, self.baseline) {
            (Target::Secondary, Baseline::PrimaryTwice) => String::new(),
            _ => self.url(target).to_string(),
        })
    }

    pub fn url(&self, target: Target) -> &UpstreamUrl {
        match target {
            Target::Primary => &self.primary,
            Target::Secondary => &self.secondary,
            Target::Candidate => &self.candidate,
        }
    }
}

/// A pooled client for one upstream. Each upstream has its own pool, so that a stalled shadow can never hold
/// connections (or HTTP/2 streams) that the caller's upstream needs, even when they share a host.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Pool,
    version: Version,
    /// For gRPC calls to an HTTP/1.1 upstream (gRPC needs HTTP/2): its own multiplexed connection, opened with
    /// the first call.
    grpc: Option<Box<Http2Client>>,
}

type Http2Client = Client<HttpsConnector<StampingConnector>, UpstreamBody>;

#[derive(Clone)]
enum Pool {
    /// HTTP/1.1, plain or over TLS: a connection per request in flight, the pool of our own.
    Http1(Http1Pool),
    /// HTTP/2: hyper-util's client, which multiplexes requests over a shared connection.
    Http2(Box<Http2Client>),
}

impl UpstreamClient {
    /// `tls` comes from [`tls_config`], built once for the three clients; `upstream` is the one it reaches.
    pub fn new(
        settings: &UpstreamSettings,
        upstream: &UpstreamUrl,
        tls: rustls::ClientConfig,
    ) -> Self {
        if settings.http2 {
            return Self {
                pool: Pool::Http2(Box::new(http2_client(settings, tls))),
                version: Version::HTTP_2,
                grpc: None,
            };
        }
        let limits = PoolLimits {
            max_idle: MAX_IDLE_PER_UPSTREAM,
            // Shorter than the keep-alive timeout of common upstream servers (Node.js: 5 s), so that a pooled
            // connection is not reused just as the upstream closes it.
            idle_timeout: settings.idle_timeout,
            // A connection's read buffer starts at 8 KiB and grows with what it reads, by default up to about
            // 400 KiB, a size it keeps while it waits (a black-holed upstream, the pool): times a thousand
            // connections, hundreds of MiB that no budget sees. Large bodies are read in more pieces instead.
            max_buf_size: UPSTREAM_READ_BUFFER,
        };
        let https = tls_connector(settings, tls.clone(), false);
        Self {
            pool: Pool::Http1(Http1Pool::new(https, upstream.origin(), limits)),
            version: Version::HTTP_11,
            grpc: Some(Box::new(http2_client(settings, tls))),
        }
    }

    /// The HTTP version a request is sent with: HTTP/2 for gRPC calls whatever the upstreams speak.
    pub fn version_for(&self, grpc: bool) -> Version {
        if grpc { Version::HTTP_2 } else { self.version }
    }

    /// The HTTP version requests to upstreams are sent with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Sends a request and returns the response head with its body still to read.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let client = match (&self.pool, &self.grpc) {
            (Pool::Http1(_), Some(grpc)) if request.version() == Version::HTTP_2 => grpc,
            (Pool::Http1(pool), _) => return pool.send(request).await,
            (Pool::Http2(client), _) => client,
        };
        client
            .request(request)
            .await
            .map_err(|error| classify_request_error(&error))
    }
}

/// The connector to an upstream: TCP (latency stamped per connection for HTTP/1.1), TLS for https:// with ALPN
/// offering exactly the version spoken, so that an https upstream cannot pick another one.
fn tls_connector(
    settings: &UpstreamSettings,
    tls: rustls::ClientConfig,
    http2: bool,
) -> HttpsConnector<StampingConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let http = StampingConnector::new(http, !http2);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if http2 {
        tls.enable_http2().wrap_connector(http)
    } else {
        tls.enable_http1().wrap_connector(http)
    }
}

/// hyper-util's HTTP/2 client (h2c prior knowledge for http://), which multiplexes requests over a shared
/// connection.
fn http2_client(settings: &UpstreamSettings, tls: rustls::ClientConfig) -> Http2Client {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(settings.idle_timeout)
        .pool_max_idle_per_host(MAX_IDLE_PER_UPSTREAM)
        .set_host(false)
        .http2_only(true);
    builder.build(tls_connector(settings, tls, true))
}

/// The TLS settings for https upstreams: the system's roots (Mozilla's when the system has none) plus `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    // The system's trust store first; an image without one falls back to Mozilla's roots.
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        let display = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
            path: display.clone(),
            source,
        })?;
        let certs: Vec<_> = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .collect();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ClientError::NoCertificate { path: display });
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The error and its causes on one line: `a: b: c`.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Maps a failed request (before a response head arrived) to its kind.
fn classify_request_error(error: &hyper_util::client::legacy::Error) -> UpstreamError {
    let message = error_chain(error);
    if error.is_connect() {
        return UpstreamError::Connect(message);
    }
    match find_cause::<hyper::Error>(error) {
        Some(cause) => classify_hyper(cause, message),
        None => UpstreamError::Reset(message),
    }
}

/// Maps a failure while reading a response body to its kind.
pub fn classify_body_error(error: &hyper::Error) -> UpstreamError {
    classify_hyper(error, error_chain(error))
}

pub(crate) fn classify_hyper(error: &hyper::Error, message: String) -> UpstreamError {
    if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() {
        UpstreamError::Protocol(message)
    } else {
        // Incomplete messages, closed channels and I/O errors: the connection went away under us.
        UpstreamError::Reset(message)
    }
}

fn find_cause<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(candidate) = current {
        if let Some(found) = candidate.downcast_ref::<E>() {
            return Some(found);
        }
        current = candidate.source();
    }
    None
}

//! The request each upstream is sent, on either path: header hygiene, URIs, Host and role header, buffered sends.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, EXPECT, HOST, TE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;

use super::caller::CallerPeer;
use super::{Proxy, of_thread};
use crate::analysis::rewrite::{RewriteId, Rewrites};
use crate::exchange::{Target, UpstreamError};
use crate::grpc;
use crate::proxy::headers::{ROLE_HEADER, add_forwarded, host_value, is_forwarded, strip_with};
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::upstream::{UpstreamBody, buffered};
use crate::values::UpstreamUrl;

/// The caller's request after header hygiene, addressed to each upstream.
pub(super) struct Forward {
    pub(super) method: Method,
    /// The caller's HTTP version, which the response is given back in.
    pub(super) version: Version,
    /// The request URI on each upstream (its path prefix in front), indexed by [`Target::index`]; only primary's
    /// for a request sent to primary alone.
    uris: [Option<Uri>; 3],
    headers: HeaderMap,
    caller_host: Option<HeaderValue>,
    /// The rewrite (the rules file's `[[rewrite]]`) each upstream is sent, if any.
    rewritten: [Option<RewriteId>; 3],
    /// What secondary and candidate are sent instead of the caller's body (a GraphQL operation sent by its
    /// persisted hash alone, given its text).
    pub(super) shadow_body: Option<Bytes>,
}

impl Forward {
    /// For all three upstreams; `None` when the URI, with an upstream's path prefix in front, is too long to be
    /// a URI.
    pub(super) fn new(
        parts: &http::request::Parts,
        caller: &CallerPeer,
        upstreams: &[UpstreamUrl; 3],
        rewrites: &Rewrites,
        metrics: &ProxyMetrics,
    ) -> Option<Self> {
        let mut rewritten = [None; 3];
        let mut uri_for = |target: Target| {
            let upstream = &upstreams[target.index()];
            // Without rewrites (the usual case) nothing is looked at.
            let rewrite = if rewrites.is_empty() {
                None
            } else {
                rewrites.request(target, &parts.uri)
            };
            match rewrite {
                Some((id, uri)) => {
                    rewritten[target.index()] = Some(id);
                    upstream.join_uri(&uri)
                }
                _ => upstream.join_uri(&parts.uri),
            }
        };
        let primary = upstreams[Target::Primary.index()].join_uri(&parts.uri)?;
        let secondary = uri_for(Target::Secondary)?;
        let candidate = uri_for(Target::Candidate)?;
        let uris = [Some(primary), Some(secondary), Some(candidate)];
        let mut forward = Self::with(parts, parts.headers.clone(), uris, caller, metrics);
        forward.rewritten = rewritten;
        Some(forward)
    }

    /// Secondary and candidate are sent `path?query` instead of the caller's URI, unless a rewrite addresses
    /// them; `false` when that is too long to be a URI.
    pub(super) fn ask_shadows_with_query(
        &mut self,
        path: &str,
        query: &str,
        upstreams: &[UpstreamUrl; 3],
    ) -> bool {
        let Ok(uri) = format!("{path}?{query}").parse::<Uri>() else {
            return false;
        };
        for target in [Target::Secondary, Target::Candidate] {
            if self.rewritten[target.index()].is_some() {
                continue;
            }
            match upstreams[target.index()].join_uri(&uri) {
                Some(joined) => self.uris[target.index()] = Some(joined),
                None => return false,
            }
        }
        true
    }

    /// The body `target` is sent: the caller's, or the shadows' own.
    pub(super) fn body_for<'b>(&'b self, target: Target, caller_body: &'b Bytes) -> &'b Bytes {
        self.own_body(target).unwrap_or(caller_body)
    }

    /// The body of its own `target` is sent instead of the caller's, if any.
    fn own_body(&self, target: Target) -> Option<&Bytes> {
        self.shadow_body
            .as_ref()
            .filter(|_| matches!(target, Target::Secondary | Target::Candidate))
    }

    /// For primary alone, taking the caller's headers rather than copying them: the caller's path of a request
    /// that is not shadowed builds one URI and copies no header.
    pub(super) fn for_primary(
        mut parts: http::request::Parts,
        caller: &CallerPeer,
        upstreams: &[UpstreamUrl; 3],
        metrics: &ProxyMetrics,
    ) -> Option<Self> {
        let primary = upstreams[Target::Primary.index()].join_uri(&parts.uri)?;
        let headers = std::mem::take(&mut parts.headers);
        Some(Self::with(
            &parts,
            headers,
            [Some(primary), None, None],
            caller,
            metrics,
        ))
    }

    fn with(
        parts: &http::request::Parts,
        mut headers: HeaderMap,
        uris: [Option<Uri>; 3],
        caller: &CallerPeer,
        metrics: &ProxyMetrics,
    ) -> Self {
        // The authority of an absolute-form request (or HTTP/2's :authority) names the host; Host otherwise.
        let caller_host = parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
            .or_else(|| headers.get(HOST).cloned());
        let mut dropped_forwarded = false;
        strip_with(&mut headers, |name| {
            if !caller.trusted && is_forwarded(name) {
                dropped_forwarded = true;
                return true;
            }
            // Host is set per upstream; a caller must not be able to pose as a shadow copy; the caller has been
            // told to continue already, and a buffered body has nothing left to wait for.
            name == HOST || name == ROLE_HEADER || name == EXPECT
        });
        if dropped_forwarded {
            metrics.forwarded_dropped();
        }
        add_forwarded(&mut headers, &caller.forwarded_for, caller_host.as_ref());
        Self {
            method: parts.method.clone(),
            version: parts.version,
            uris,
            headers,
            caller_host,
            rewritten: [None; 3],
            shadow_body: None,
        }
    }

    /// Methods that may be sent again when a pooled connection turned out to be dead (RFC 9110 §9.2.2).
    fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
    }
}

impl Proxy {
    /// Sends a buffered request; an idempotent one whose connection closed before any response came back is
    /// sent once more (a pooled connection that the upstream had just closed is the usual cause). Bounded by
    /// `--response-timeout` for the caller's upstream.
    pub(super) async fn send_buffered(
        &self,
        target: Target,
        forward: &Forward,
        body: &Bytes,
        for_caller: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let attempt = || async {
            let request = self.upstream_request(target, forward, buffered(body.clone()));
            if for_caller {
                self.send_for_caller(target, request).await
            } else {
                let clients = of_thread(&self.shadow_clients, crate::lane::current_thread_index());
                clients[target.index()].send(request).await
            }
        };
        match attempt().await {
            Err(UpstreamError::Reset(reason)) if forward.is_idempotent() => {
                tracing::debug!(%target, %reason, "connection closed before a response; sending once more");
                attempt().await
            }
            other => other,
        }
    }

    /// Addresses the forwarded request to one upstream. Secondary and candidate requests that are copies (not
    /// the caller's answer) carry the role header and, with `--shadow-host-suffix`, the `-shadow` Host.
    pub(super) fn upstream_request(
        &self,
        target: Target,
        forward: &Forward,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let mut headers = forward.headers.clone();
        if let Some(id) = forward.rewritten[target.index()] {
            self.rewrites.headers(id, &mut headers);
        }
        if let Some(own_body) = forward.own_body(target) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(own_body.len()));
        }
        self.address(
            target,
            forward.method.clone(),
            forward.uris[target.index()].clone(),
            headers,
            forward.caller_host.as_ref(),
            body,
        )
    }

    /// As [`Proxy::upstream_request`], for the one upstream a request goes to: nothing is copied.
    pub(super) fn sole_upstream_request(
        &self,
        target: Target,
        mut forward: Forward,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let uri = forward.uris[target.index()].take();
        self.address(
            target,
            forward.method,
            uri,
            forward.headers,
            forward.caller_host.as_ref(),
            body,
        )
    }

    fn address(
        &self,
        target: Target,
        method: Method,
        // Built for every upstream a request is sent to; `Forward::for_primary` is only sent to primary.
        uri: Option<Uri>,
        mut headers: HeaderMap,
        caller_host: Option<&HeaderValue>,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let is_copy = target != Target::Primary && Some(target) != self.responder;
        // Every set of clients speaks the same version.
        let client = &self.clients[0][target.index()];
        let grpc = grpc::is_grpc(&headers);
        let version = client.version_for(grpc);
        // Over HTTP/2 the host is the :authority, which names the host connected to: a gRPC call keeps it,
        // whatever `--preserve-host` and `--shadow-host-suffix` say (they are refused with `--upstream-http2`).
        let http1 = version != Version::HTTP_2;
        let suffixed = is_copy && self.shadow_host_suffix && http1;
        let host = match (caller_host, self.preserve_host && http1) {
            (Some(caller_host), true) => caller_host
                .to_str()
                .ok()
                .and_then(|caller_host| host_value(caller_host, suffixed)),
            _ => None,
        };
        if let Some(host) =
            host.or_else(|| self.hosts[target.index()][usize::from(suffixed)].clone())
        {
            headers.insert(HOST, host);
        }
        if is_copy {
            headers.insert(ROLE_HEADER, HeaderValue::from_static(target.as_str()));
        }
        if grpc {
            // gRPC servers want to hear that the client reads trailers (the call's status is in them); TE went
            // with the other hop-by-hop headers.
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
        // An HTTP/1.1 client sends a GET or HEAD whose length it does not know with no body at all; a caller's
        // chunked body, streamed on, must keep its chunked framing to arrive.
        if version == Version::HTTP_11
            && matches!(method, Method::GET | Method::HEAD)
            && !body.is_end_stream()
            && body.size_hint().exact().is_none()
        {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri.unwrap_or_default();
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        request
    }
}

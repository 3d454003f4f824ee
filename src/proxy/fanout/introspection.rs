//! GraphQL schemas read by introspection (`--graphql-introspect`): primary's, secondary's and candidate's asked
//! at start and every interval, each answer made comparable, and the three handed to the analysis as one
//! exchange of the endpoint `GraphQL schema`, so that a removed field is a breaking difference like any other.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio_util::sync::CancellationToken;

use super::{Proxy, of_thread};
use crate::budget::Stage;
use crate::exchange::{
    CapturedBody, Exchange, Outcome, RecordedRequest, Target, UpstreamError, UpstreamResponse,
    new_id,
};
use crate::graphql::SCHEMA_ENDPOINT;
use crate::graphql::schema::{INTROSPECTION_REQUEST, SchemaError, comparable};
use crate::proxy::upstream::buffered;

/// What one upstream's introspection gave.
enum Asked {
    Schema(Outcome),
    /// No schema from this upstream this time, and why (said once per upstream).
    Refused(SchemaError),
}

impl Proxy {
    /// Reads the three schemas at once, then every `--graphql-introspect-interval` until `stop`; a round under
    /// way when `stop` comes is finished (each request is bounded by `--shadow-timeout`).
    pub async fn introspect_graphql(self: Arc<Self>, stop: CancellationToken) {
        let (Some(every), Some(path)) = (
            self.graphql.introspect_every,
            self.graphql.paths.first().cloned(),
        ) else {
            return;
        };
        let Ok(uri) = path.parse::<Uri>() else {
            tracing::warn!(%path, "the GraphQL path is not a URI path; schemas are not introspected");
            return;
        };
        let mut said = [false; 3];
        loop {
            self.introspect_once(&uri, &mut said).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    async fn introspect_once(&self, uri: &Uri, said: &mut [bool; 3]) {
        let started_at = SystemTime::now();
        let (primary, secondary, candidate) = tokio::join!(
            self.ask_schema(Target::Primary, uri),
            self.ask_schema(Target::Secondary, uri),
            self.ask_schema(Target::Candidate, uri),
        );
        let mut outcomes = Vec::with_capacity(3);
        for (target, asked) in Target::ALL.into_iter().zip([primary, secondary, candidate]) {
            match asked {
                Asked::Schema(outcome) => outcomes.push(outcome),
                Asked::Refused(error) => {
                    if !std::mem::replace(&mut said[target.index()], true) {
                        tracing::warn!(%target, %error, "no GraphQL schema by introspection; skipped");
                    }
                    return;
                }
            }
        }
        let [primary, secondary, candidate]: [Outcome; 3] = match outcomes.try_into() {
            Ok(outcomes) => outcomes,
            Err(_) => return,
        };
        let request = RecordedRequest {
            method: Method::POST,
            uri: uri.clone(),
            version: Version::HTTP_11,
            headers: json_headers(),
            body: Bytes::from_static(INTROSPECTION_REQUEST.as_bytes()),
        };
        let bodies: usize = [&primary, &secondary, &candidate]
            .iter()
            .filter_map(|outcome| outcome.response())
            .filter_map(|response| response.body.bytes().map(|bytes| bytes.len()))
            .sum();
        let Some(charge) = self
            .budget
            .charge(Stage::ExchangeQueue, bodies + request.body.len())
        else {
            self.budget.shed(Stage::ExchangeQueue);
            return;
        };
        self.sink.offer(Exchange {
            id: new_id(),
            started_at,
            endpoint: SCHEMA_ENDPOINT.to_string(),
            request,
            primary,
            secondary,
            candidate,
            charge,
        });
    }

    /// One upstream's schema as comparable JSON, within `--shadow-timeout` and `--max-body`.
    async fn ask_schema(&self, target: Target, path: &Uri) -> Asked {
        let started = Instant::now();
        let failed =
            |error: UpstreamError| Asked::Schema(Outcome::failed(error, started.elapsed()));
        let Some(uri) = self.upstreams[target.index()].join_uri(path) else {
            return Asked::Refused(SchemaError::Malformed(
                "the path does not fit the URL".into(),
            ));
        };
        let mut request = Request::new(buffered(Bytes::from_static(
            INTROSPECTION_REQUEST.as_bytes(),
        )));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(host) = self.hosts[target.index()][0].clone() {
            headers.insert(HOST, host);
        }
        let clients = of_thread(&self.shadow_clients, crate::lane::current_thread_index());
        let asked = async {
            let response = clients[target.index()]
                .send(request)
                .await
                .map_err(failed)?;
            let (head, body) = response.into_parts();
            match Limited::new(body, self.max_body).collect().await {
                Ok(collected) => Ok((head.status, collected.to_bytes())),
                Err(error) if error.is::<LengthLimitError>() => {
                    Err(Asked::Refused(SchemaError::TooLarge))
                }
                Err(error) => Err(failed(UpstreamError::Reset(error.to_string()))),
            }
        };
        let (status, bytes) = match tokio::time::timeout(self.shadow_timeout, asked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(asked)) => return asked,
            Err(_) => return failed(UpstreamError::Timeout(self.shadow_timeout)),
        };
        let elapsed = started.elapsed();
        match comparable(&bytes) {
            Ok(schema) => Asked::Schema(Outcome {
                elapsed,
                result: Ok(UpstreamResponse {
                    status: StatusCode::OK,
                    headers: json_headers(),
                    body: CapturedBody::Complete(Bytes::from(schema)),
                }),
            }),
            Err(error) if status.is_success() => Asked::Refused(error),
            Err(_) => Asked::Refused(SchemaError::Disabled(format!("HTTP {status}"))),
        }
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

//! Schemas learned from primary's gRPC server reflection (`--grpc-reflection`): the first call to a service no
//! schema has makes the analysis ask primary for it, once, before the call is compared; what it learns is kept
//! until the process restarts.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderValue, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Limited};
use prost_reflect::prost_types::FileDescriptorProto;

use crate::exchange::Exchange;
use crate::grpc::reflection::{self, ask_for_files, ask_for_symbol, missing_imports};
use crate::grpc::schema::{Schemas, split_path};
use crate::grpc::status::Status;
use crate::pipeline::LearnSchemas;
use crate::proxy::upstream::{UpstreamClient, buffered};
use crate::values::UpstreamUrl;

/// Services asked about at most, whatever callers send: each question costs primary an answer.
const MAX_SERVICES: usize = 256;
/// The largest reflection answer read.
const MAX_ANSWER: usize = 16 << 20;
/// Rounds of asking for imports an answer left out.
const MAX_IMPORT_ROUNDS: usize = 4;
/// gRPC's UNIMPLEMENTED: the server has no such service (or no reflection).
const UNIMPLEMENTED: u32 = 12;
/// Asks that failed one after another before reflection is given up: each is waited for by the analysis.
const MAX_FAILURES_IN_A_ROW: usize = 3;

/// Asks primary for the schemas of the services its calls name, adding them to the analysis's schemas.
pub struct SchemaReflection {
    client: UpstreamClient,
    primary: UpstreamUrl,
    schemas: Schemas,
    timeout: Duration,
    /// Services asked about already, answered or not: never asked twice.
    asked: HashSet<String>,
    /// Asks that failed since the last that did not.
    failures_in_a_row: usize,
}

/// Why one reflection call gave no files.
enum CallError {
    /// This version of the reflection service is not served.
    Unimplemented,
    Failed(String),
}

impl SchemaReflection {
    pub fn new(
        client: UpstreamClient,
        primary: UpstreamUrl,
        schemas: Schemas,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            primary,
            schemas,
            timeout,
            asked: HashSet::new(),
            failures_in_a_row: 0,
        }
    }

    /// Learns the schema of the service `exchange` calls, if no schema has it and primary was not asked yet.
    pub async fn learn_for(&mut self, exchange: &Exchange) {
        if !crate::grpc::is_grpc(&exchange.request.headers) {
            return;
        }
        let Some((service, _)) = split_path(exchange.request.uri.path()) else {
            return;
        };
        if self.asked.contains(service)
            || self.asked.len() >= MAX_SERVICES
            || self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW
            || self.schemas.has_service(service)
        {
            return;
        }
        // A service primary does not have is not asked about: paths anyone can make up would each cost a
        // question.
        let Ok(answer) = &exchange.primary.result else {
            return;
        };
        if Status::of(None, &answer.headers).is_some_and(|status| status.code == UNIMPLEMENTED) {
            return;
        }
        self.asked.insert(service.to_string());
        let learned = match tokio::time::timeout(self.timeout, self.fetch(service)).await {
            Ok(Ok(files)) => self.schemas.add_files(files),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match learned {
            Ok(()) => {
                self.failures_in_a_row = 0;
                tracing::info!(%service, "learned a gRPC schema from primary's reflection");
            }
            Err(error) => {
                self.failures_in_a_row += 1;
                tracing::warn!(
                    %service, %error,
                    "primary's reflection did not give the service's schema; its calls are compared by field number"
                );
                if self.failures_in_a_row == MAX_FAILURES_IN_A_ROW {
                    // The analysis waits for each ask: a primary that cannot say is not asked again.
                    tracing::warn!(
                        "primary's reflection failed {MAX_FAILURES_IN_A_ROW} times in a row; no more services are asked about until restart"
                    );
                }
            }
        }
    }

    /// The files defining `service` and their imports, from the newest reflection version primary serves.
    async fn fetch(&self, service: &str) -> Result<Vec<FileDescriptorProto>, String> {
        for path in reflection::PATHS {
            let mut files = match self.call(path, ask_for_symbol(service)).await {
                Ok(files) => files,
                Err(CallError::Unimplemented) => continue,
                Err(CallError::Failed(error)) => return Err(error),
            };
            for _ in 0..MAX_IMPORT_ROUNDS {
                let missing: Vec<String> = missing_imports(&files)
                    .into_iter()
                    .filter(|name| !self.schemas.has_file(name))
                    .collect();
                if missing.is_empty() {
                    break;
                }
                match self
                    .call(path, ask_for_files(missing.iter().map(String::as_str)))
                    .await
                {
                    Ok(more) => files.extend(more),
                    Err(CallError::Unimplemented) => break,
                    Err(CallError::Failed(error)) => return Err(error),
                }
            }
            return Ok(files);
        }
        Err("primary serves no reflection service (v1 or v1alpha)".to_string())
    }

    /// One reflection call: `body` (the questions) sent, the files of every answer read.
    async fn call(
        &self,
        path: &'static str,
        body: Vec<u8>,
    ) -> Result<Vec<FileDescriptorProto>, CallError> {
        let failed = |what: String| CallError::Failed(format!("primary: {what}"));
        let uri = self
            .primary
            .join_uri(&Uri::from_static(path))
            .ok_or_else(|| failed("the reflection path does not fit its URL".to_string()))?;
        let mut request = Request::new(buffered(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        let response = self
            .client
            .send(request)
            .await
            .map_err(|error| failed(error.to_string()))?;
        let (head, body) = response.into_parts();
        let collected = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|error| failed(format!("the reflection answer: {error}")))?;
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        match Status::of(trailers.as_ref(), &head.headers) {
            Some(status) if status.code == UNIMPLEMENTED => return Err(CallError::Unimplemented),
            Some(status) if status.code != 0 => {
                return Err(failed(format!("{}: {}", status.name(), status.message)));
            }
            None if !head.status.is_success() => {
                return Err(failed(format!("HTTP {}", head.status)));
            }
            _ => {}
        }
        reflection::files(&bytes, MAX_ANSWER).map_err(failed)
    }
}

impl LearnSchemas for SchemaReflection {
    fn learn_for<'a>(
        &'a mut self,
        exchange: &'a Exchange,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(SchemaReflection::learn_for(self, exchange))
    }
}

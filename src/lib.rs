//! shadowdiff: a shadow proxy that sends each request to primary, secondary and candidate, and reports the
//! differences of the candidate that noise does not explain.

pub mod analysis;
pub mod app;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod demo;
pub mod encoding;
pub mod endpoint;
pub mod exchange;
pub mod features;
pub mod gate;
pub mod graphql;
pub mod grpc;
pub mod identifier;
pub mod instruments;
pub mod lane;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod paths;
pub mod pipeline;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod runs;
pub mod seal;
pub mod store;
pub mod telemetry;
pub mod traffic;
pub mod units;
pub mod values;
pub mod web;

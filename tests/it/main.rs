//! Integration tests: the app and stub upstreams on port 0, in one process.

mod admin_security;
mod analysed;
mod architecture;
mod bad_input;
mod bodies;
mod bounded;
mod browser;
mod browser_changes;
mod caller_path;
mod changes;
mod changes_shared;
mod clear;
mod crash;
mod delivery;
mod demo;
mod deploy_files;
mod edges;
mod faults;
mod gate;
mod graphql;
mod graphql_server;
mod grpc;
mod grpc_names;
mod hygiene;
mod json_properties;
mod keys;
mod lifecycle;
mod modes;
mod policy;
mod readme;
mod redaction;
mod replay;
mod rows;
mod sample_retention;
mod sealed;
mod shadow_lane;
mod store;
mod stored;
mod support;
mod upgrade;
mod verdicts;
mod web;
mod xml;

/// Counts what each thread allocates, for tests that bound memory ([`support::heap::peak_of`]).
#[global_allocator]
static HEAP: support::heap::Counting = support::heap::Counting;

//! Integration tests: the app and stub upstreams on port 0, in one process.

mod bodies;
mod caller_path;
mod edges;
mod hygiene;
mod lifecycle;
mod modes;
mod policy;
mod support;
mod verdicts;

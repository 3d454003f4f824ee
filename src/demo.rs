//! The demo: a small shop API in two versions (the candidate with known regressions, both with noise) and the
//! traffic that exercises it.

pub mod service;
pub mod traffic;

/// What the candidate changed, for the demo's banner and its test.
pub const CANDIDATE_CHANGES: &[&str] = &[
    "GET /users/{id}: `name` renamed to `full_name`",
    "GET /products/{id}: `price` turned from a number into a string",
    "GET /orders/{id}: a wrong `total` in 5% of orders",
    "GET /search: ten lookups one after another instead of one (about 10x slower)",
];

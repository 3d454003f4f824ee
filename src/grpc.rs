//! gRPC messages as the engine compares them: the framing split (`frame`), the schemas that name a method's
//! types (`schema`: descriptor sets, `.proto` files compiled at start), and messages decoded to proto3 JSON, or
//! keyed by field number when no schema knows them (`decode`), and a call's status from its trailers (`status`).

pub mod decode;
pub mod frame;
pub mod schema;
pub mod status;

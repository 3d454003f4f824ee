//! The shadow proxy: answers each caller from one upstream and reaches the others in the background.

pub mod callers;
pub mod capture;
pub mod fanout;
pub mod headers;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod reflection;
pub mod request_body;
pub mod request_tee;
pub mod server;
pub mod settings;
pub mod timing;
pub mod upstream;

pub use fanout::Proxy;
pub use settings::{ProxySettings, ResponseMode, ShadowSettings};

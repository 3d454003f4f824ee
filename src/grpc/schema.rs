//! Where a gRPC method's message types come from: FileDescriptorSets (`protoc --include_imports
//! --descriptor_set_out`, `buf build -o`) and `.proto` files compiled at start (no protoc needed), found by the
//! method's path (`/pkg.Service/Method`).

use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::grpc::renamed::{Renamed, renamed_fields};

use prost_reflect::prost_types::FileDescriptorProto;
use prost_reflect::{DescriptorPool, MessageDescriptor};

/// Schema input that cannot be used: which file, and why, on one line.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: cannot read the descriptor set: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a FileDescriptorSet: {reason}")]
    Descriptors { path: PathBuf, reason: String },
    #[error("{reason}")]
    Proto { reason: String },
}

/// The schemas a process knows, merged. Clones share one pool, which services learned later (from primary's
/// reflection) are added to.
#[derive(Clone, Debug, Default)]
pub struct Schemas {
    pool: Arc<RwLock<DescriptorPool>>,
    /// Whether schemas were given at start (descriptor sets, `.proto` files), as opposed to only learned.
    given: bool,
    /// Each method's renamed fields, found once (a method's types never change once in the pool).
    renamed: Arc<RwLock<HashMap<String, Arc<[Renamed]>>>>,
}

/// One method: its name, its message types and whether each side streams.
#[derive(Clone, Debug)]
pub struct Method {
    /// `pkg.Service/Method`.
    pub name: String,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

impl Method {
    /// `unary`, `server streaming`, `client streaming` or `bidirectional streaming`, for the endpoint page.
    pub fn streaming(&self) -> &'static str {
        match (self.client_streaming, self.server_streaming) {
            (false, false) => "unary",
            (false, true) => "server streaming",
            (true, false) => "client streaming",
            (true, true) => "bidirectional streaming",
        }
    }
}

impl Schemas {
    /// Reads the descriptor sets, then compiles the `.proto` files (imports found under `proto_paths`, or
    /// beside each file when none is given) into the same pool.
    pub fn load(
        descriptor_sets: &[PathBuf],
        protos: &[PathBuf],
        proto_paths: &[PathBuf],
    ) -> Result<Self, SchemaError> {
        let mut pool = DescriptorPool::new();
        for path in descriptor_sets {
            let bytes = std::fs::read(path).map_err(|error| SchemaError::Read {
                path: path.clone(),
                reason: error.to_string(),
            })?;
            pool.decode_file_descriptor_set(bytes.as_slice())
                .map_err(|error| SchemaError::Descriptors {
                    path: path.clone(),
                    reason: one_line(&error.to_string()),
                })?;
        }
        if !protos.is_empty() {
            let includes: Vec<PathBuf> = if proto_paths.is_empty() {
                let mut beside: Vec<PathBuf> = protos
                    .iter()
                    .map(|file| {
                        file.parent()
                            .filter(|dir| !dir.as_os_str().is_empty())
                            .unwrap_or(Path::new("."))
                            .to_path_buf()
                    })
                    .collect();
                beside.dedup();
                beside
            } else {
                proto_paths.to_vec()
            };
            let compiled = protox::Compiler::new(&includes)
                .and_then(|mut compiler| {
                    compiler.include_imports(true).open_files(protos)?;
                    Ok(compiler.file_descriptor_set())
                })
                .map_err(|error| SchemaError::Proto {
                    reason: match error.file() {
                        Some(file) => format!("{file}: {}", one_line(&error.to_string())),
                        None => one_line(&error.to_string()),
                    },
                })?;
            pool.add_file_descriptor_set(compiled)
                .map_err(|error| SchemaError::Proto {
                    reason: one_line(&error.to_string()),
                })?;
        }
        Ok(Self {
            pool: Arc::new(RwLock::new(pool)),
            given: !descriptor_sets.is_empty() || !protos.is_empty(),
            renamed: Arc::default(),
        })
    }

    /// The pool as it is now: descriptors share it, so nothing is copied and the lock is held only to clone it.
    fn pool(&self) -> DescriptorPool {
        self.pool
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Adds the files of a service learned at run time (any order; their imports in the pool or among them);
    /// the pool is left as it was when they do not make a whole schema.
    pub fn add_files(&self, files: Vec<FileDescriptorProto>) -> Result<(), String> {
        let mut grown = self.pool();
        grown
            .add_file_descriptor_protos(files)
            .map_err(|error| one_line(&error.to_string()))?;
        *self
            .pool
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = grown;
        Ok(())
    }

    /// Whether a schema has this file (`shop/v1/orders.proto`).
    pub fn has_file(&self, name: &str) -> bool {
        self.pool().get_file_by_name(name).is_some()
    }

    /// Whether a schema has this service (`pkg.Service`).
    pub fn has_service(&self, service: &str) -> bool {
        self.pool().get_service_by_name(service).is_some()
    }

    /// The method a request path names (`/pkg.Service/Method`), if a schema has it.
    pub fn method(&self, path: &str) -> Option<Method> {
        let (service, method) = split_path(path)?;
        let service = self.pool().get_service_by_name(service)?;
        let method = service.methods().find(|m| m.name() == method)?;
        Some(Method {
            name: format!("{}/{}", service.full_name(), method.name()),
            input: method.input(),
            output: method.output(),
            client_streaming: method.is_client_streaming(),
            server_streaming: method.is_server_streaming(),
        })
    }

    /// The fields of `method`'s messages whose JSON name is not their proto name (see [`renamed_fields`]).
    pub fn renamed_fields(&self, method: &Method) -> Arc<[Renamed]> {
        if let Some(found) = self
            .renamed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&method.name)
        {
            return found.clone();
        }
        let found: Arc<[Renamed]> = renamed_fields(method).into();
        self.renamed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(method.name.clone(), found.clone());
        found
    }

    /// Whether schemas were given at start: then a method none of them has is unknown, rather than one to
    /// compare by field number (services learned from reflection do not count: which were learned depends on
    /// which were called first).
    pub fn were_given(&self) -> bool {
        self.given
    }
}

/// `pkg.Service` and `Method` of a gRPC request path.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The endpoint name of a gRPC call: `gRPC pkg.Service/Method`.
pub fn endpoint_name(path: &str) -> Option<String> {
    split_path(path).map(|(service, method)| format!("gRPC {service}/{method}"))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SHOP: &str = r#"
syntax = "proto3";
package shop.v1;

enum Tier { TIER_UNSPECIFIED = 0; TIER_GOLD = 1; TIER_SILVER = 2; }

message Item { string sku = 1; int64 price_cents = 2; }

message GetOrderRequest { string id = 1; }
message Order {
  string id = 1;
  int32 quantity = 2;
  Tier tier = 3;
  repeated Item items = 4;
  string note = 5;
}

service Orders {
  rpc GetOrder(GetOrderRequest) returns (Order);
  rpc Watch(GetOrderRequest) returns (stream Order);
  rpc Upload(stream Item) returns (Order);
  rpc Chat(stream Item) returns (stream Item);
}
"#;

    /// `source` written to `dir/file_name` and compiled as the one `.proto` file.
    pub(crate) fn compile_proto(dir: &Path, file_name: &str, source: &str) -> Schemas {
        let proto = dir.join(file_name);
        std::fs::write(&proto, source).unwrap();
        Schemas::load(&[], &[proto], &[]).unwrap()
    }

    /// The shop schema, compiled from a `.proto` file in `dir`.
    pub(crate) fn shop(dir: &Path) -> Schemas {
        compile_proto(dir, "shop.proto", SHOP)
    }

    #[test]
    fn methods_are_found_by_path_with_their_streaming_kind() {
        let dir = tempfile::tempdir().unwrap();
        let schemas = shop(dir.path());
        let get = schemas.method("/shop.v1.Orders/GetOrder").unwrap();
        assert_eq!(get.name, "shop.v1.Orders/GetOrder");
        assert_eq!(get.input.full_name(), "shop.v1.GetOrderRequest");
        assert_eq!(get.output.full_name(), "shop.v1.Order");
        assert_eq!(get.streaming(), "unary");
        let kinds: Vec<&str> = ["Watch", "Upload", "Chat"]
            .iter()
            .map(|m| {
                schemas
                    .method(&format!("/shop.v1.Orders/{m}"))
                    .unwrap()
                    .streaming()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "server streaming",
                "client streaming",
                "bidirectional streaming"
            ]
        );
        assert!(schemas.method("/shop.v1.Orders/Nope").is_none());
        assert!(schemas.method("/shop.v1.Nope/GetOrder").is_none());
        assert!(schemas.method("not/a/grpc/path").is_none());
        assert_eq!(
            endpoint_name("/shop.v1.Orders/GetOrder").as_deref(),
            Some("gRPC shop.v1.Orders/GetOrder")
        );
    }

    #[test]
    fn a_descriptor_set_loads_like_the_proto_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let proto = dir.path().join("shop.proto");
        std::fs::write(&proto, SHOP).unwrap();
        let set = protox::compile([&proto], [dir.path()]).unwrap();
        let path = dir.path().join("shop.pb");
        std::fs::write(&path, prost::Message::encode_to_vec(&set)).unwrap();
        let schemas = Schemas::load(&[path], &[], &[]).unwrap();
        assert!(schemas.method("/shop.v1.Orders/Watch").is_some());
    }

    #[test]
    fn bad_schema_input_is_one_line_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pb");
        let error = Schemas::load(&[missing], &[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("missing.pb") && !error.contains('\n'),
            "{error}"
        );
        let garbage = dir.path().join("garbage.pb");
        std::fs::write(&garbage, b"\xff\xff\xff not protobuf").unwrap();
        let error = Schemas::load(&[garbage], &[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("garbage.pb: not a FileDescriptorSet"),
            "{error}"
        );
        let broken = dir.path().join("broken.proto");
        std::fs::write(
            &broken,
            "syntax = \"proto3\";\nmessage A { strin x = 1; }\n",
        )
        .unwrap();
        let error = Schemas::load(&[], &[broken], &[]).unwrap_err().to_string();
        assert!(
            error.contains("broken.proto") && !error.contains('\n'),
            "{error}"
        );
    }
}

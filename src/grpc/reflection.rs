//! gRPC server reflection (`grpc.reflection.v1.ServerReflection`, and `v1alpha` for older servers), as grpcurl
//! uses it: the request that asks for the files defining a symbol, and the files read from the answer.

use prost::Message as _;
use prost_reflect::prost_types::FileDescriptorProto;

use crate::grpc::frame;

/// The reflection method's path, newest version first.
pub const PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// `ServerReflectionRequest`, with the two questions asked here (the message is the same in both versions).
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionRequest {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(oneof = "Question", tags = "3, 4")]
    question: Option<Question>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Question {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
}

/// `ServerReflectionResponse`: the files, or an error; the other answers are not asked for.
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionResponse {
    #[prost(oneof = "Answer", tags = "4, 7")]
    answer: Option<Answer>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Answer {
    #[prost(message, tag = "4")]
    Files(FileDescriptorResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The request body asking for the file that defines `symbol` (a service's full name) and its imports.
pub fn ask_for_symbol(symbol: &str) -> Vec<u8> {
    ask(Question::FileContainingSymbol(symbol.to_string()))
}

/// The request body asking for the files of these names (imports the first answer left out).
pub fn ask_for_files<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    names
        .into_iter()
        .flat_map(|name| ask(Question::FileByFilename(name.to_string())))
        .collect()
}

fn ask(question: Question) -> Vec<u8> {
    let request = ReflectionRequest {
        host: String::new(),
        question: Some(question),
    };
    frame::frame(&request.encode_to_vec())
}

/// The files of a reflection answer's messages; an error answer or a malformed one says why.
pub fn files(body: &[u8], max_message: usize) -> Result<Vec<FileDescriptorProto>, String> {
    let messages = frame::split(body, None, max_message).map_err(|error| error.to_string())?;
    let mut files = Vec::new();
    for message in messages {
        let response = ReflectionResponse::decode(message.as_slice())
            .map_err(|error| format!("not a reflection answer: {error}"))?;
        match response.answer {
            Some(Answer::Files(found)) => {
                for bytes in found.file_descriptor_proto {
                    files.push(
                        FileDescriptorProto::decode(bytes.as_slice())
                            .map_err(|error| format!("not a file descriptor: {error}"))?,
                    );
                }
            }
            Some(Answer::Error(error)) => {
                return Err(format!(
                    "reflection error {}: {}",
                    error.error_code, error.error_message
                ));
            }
            None => return Err("an answer with neither files nor an error".to_string()),
        }
    }
    Ok(files)
}

/// The imports of `files` that none of them is.
pub fn missing_imports(files: &[FileDescriptorProto]) -> Vec<String> {
    let mut missing: Vec<String> = files
        .iter()
        .flat_map(|file| file.dependency.iter())
        .filter(|name| !files.iter().any(|file| file.name() == name.as_str()))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gives_its_files_and_an_error_answer_says_why() {
        let file = FileDescriptorProto {
            name: Some("shop.proto".into()),
            dependency: vec!["money.proto".into()],
            ..FileDescriptorProto::default()
        };
        let answer = ReflectionResponse {
            answer: Some(Answer::Files(FileDescriptorResponse {
                file_descriptor_proto: vec![file.encode_to_vec()],
            })),
        };
        let found = files(&frame::frame(&answer.encode_to_vec()), 1 << 20).unwrap();
        assert_eq!(found, [file]);
        assert_eq!(missing_imports(&found), ["money.proto"]);

        let error = ReflectionResponse {
            answer: Some(Answer::Error(ErrorResponse {
                error_code: 5,
                error_message: "symbol not found".into(),
            })),
        };
        let said = files(&frame::frame(&error.encode_to_vec()), 1 << 20).unwrap_err();
        assert_eq!(said, "reflection error 5: symbol not found");
        assert!(files(&[0, 0, 0, 0, 9, 1], 1 << 20).is_err());

        let asked = ask_for_symbol("shop.v1.Orders");
        let request = ReflectionRequest::decode(&asked[5..]).unwrap();
        assert_eq!(
            request.question,
            Some(Question::FileContainingSymbol("shop.v1.Orders".into()))
        );
    }
}

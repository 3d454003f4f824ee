//! Bodies of structured formats other than JSON (XML, CSV, NDJSON) read into the JSON diff's tree, so that
//! their differences have paths, kinds, classes and rules as JSON's do.

pub mod rows;
pub mod xml;

use crate::analysis::BodySkip;
use crate::analysis::decode::ContentKind;
use crate::analysis::tree::Node;
use crate::budget::Charge;

/// Why a body of a structured type could not be read as one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StructureFailure {
    /// Not a document of its type: the bodies are then compared as text, as invalid JSON is.
    Invalid,
    /// Not read, for this counted reason (a DTD, too deep, over the memory budget).
    Skipped(BodySkip),
}

/// Which of the two bodies a failure is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    Primary,
    Other,
}

/// Two bodies of one structured kind as trees to diff, or which side could not be read and why. XML's two
/// trees are built together: a child that repeats in either answer is an array in both.
pub fn parse_pair<'a>(
    kind: ContentKind,
    primary: &'a [u8],
    other: &'a [u8],
    scratch: &mut Charge,
) -> Result<(Node<'a>, Node<'a>), (Side, StructureFailure)> {
    if kind == ContentKind::Xml {
        return xml::parse_pair(primary, other, scratch);
    }
    let primary = read_one(kind, primary, scratch).map_err(|failure| (Side::Primary, failure))?;
    let other = read_one(kind, other, scratch).map_err(|failure| (Side::Other, failure))?;
    Ok((primary, other))
}

/// One body of a structured kind as a tree (an XML document's arrays where its own names repeat).
fn read_one<'a>(
    kind: ContentKind,
    bytes: &'a [u8],
    scratch: &mut Charge,
) -> Result<Node<'a>, StructureFailure> {
    match kind {
        ContentKind::Xml => xml::parse_one(bytes, scratch),
        ContentKind::Csv => rows::csv(bytes, scratch),
        ContentKind::Ndjson => rows::ndjson(bytes, scratch),
        _ => Err(StructureFailure::Invalid),
    }
}

/// Whether one body alone reads as its kind: told apart from the other side when a pair fails on primary.
pub fn parse_one(kind: ContentKind, bytes: &[u8], scratch: &mut Charge) -> bool {
    read_one(kind, bytes, scratch).is_ok()
}

/// A stored body of a structured kind as the tree it is compared as, for showing it (its bytes are already
/// bounded by the sample's cap); `None` when it is not of such a kind or does not read as one.
pub fn as_value(media_type: &str, body: &str) -> Option<serde_json::Value> {
    let kind = crate::analysis::decode::structured_kind(media_type)?;
    read_one(kind, body.as_bytes(), &mut Charge::none())
        .ok()
        .map(|tree| tree.to_value())
}

/// The (path, kind) of each difference the JSON walk finds from one tree to the other, without rules.
#[cfg(test)]
pub(crate) fn walked(
    primary: &Node<'_>,
    other: &Node<'_>,
) -> Vec<(String, crate::analysis::diff::DiffKind)> {
    crate::analysis::json::diff(
        primary,
        other,
        crate::analysis::json::JsonOptions::default(),
        &crate::analysis::rules::EndpointRules::default(),
        "body",
    )
    .into_iter()
    .map(|change| (change.path, change.kind))
    .collect()
}

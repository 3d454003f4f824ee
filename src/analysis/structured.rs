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
    let each = |read: fn(&'a [u8], &mut Charge) -> Result<Node<'a>, StructureFailure>,
                scratch: &mut Charge| {
        let primary = read(primary, scratch).map_err(|failure| (Side::Primary, failure))?;
        let other = read(other, scratch).map_err(|failure| (Side::Other, failure))?;
        Ok((primary, other))
    };
    match kind {
        ContentKind::Xml => xml::parse_pair(primary, other, scratch),
        ContentKind::Csv => each(rows::csv, scratch),
        ContentKind::Ndjson => each(rows::ndjson, scratch),
        _ => Err((Side::Primary, StructureFailure::Invalid)),
    }
}

/// Whether one body alone reads as its kind: told apart from the other side when a pair fails on primary.
pub fn parse_one(kind: ContentKind, bytes: &[u8], scratch: &mut Charge) -> bool {
    match kind {
        ContentKind::Xml => xml::parse_one(bytes, scratch).is_ok(),
        ContentKind::Csv => rows::csv(bytes, scratch).is_ok(),
        ContentKind::Ndjson => rows::ndjson(bytes, scratch).is_ok(),
        _ => false,
    }
}

/// A stored body of a structured kind as the tree it is compared as, for showing it (its bytes are already
/// bounded by the sample's cap); `None` when it is not of such a kind or does not read as one.
pub fn as_value(media_type: &str, body: &str) -> Option<serde_json::Value> {
    let kind = crate::analysis::decode::structured_kind(media_type)?;
    let mut scratch = Charge::none();
    let tree = match kind {
        ContentKind::Xml => xml::parse_one(body.as_bytes(), &mut scratch),
        ContentKind::Csv => rows::csv(body.as_bytes(), &mut scratch),
        ContentKind::Ndjson => rows::ndjson(body.as_bytes(), &mut scratch),
        _ => return None,
    };
    tree.ok().map(|tree| tree.to_value())
}

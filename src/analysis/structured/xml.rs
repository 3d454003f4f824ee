//! XML bodies as trees: elements by local name, attributes as `@name`, repeated children as arrays.

use super::{Side, StructureFailure};
use crate::analysis::tree::Node;
use crate::budget::Charge;

/// Both documents as trees, a child name that repeats under one parent in either an array in both.
pub fn parse_pair<'a>(
    _primary: &'a [u8],
    _other: &'a [u8],
    _scratch: &mut Charge,
) -> Result<(Node<'a>, Node<'a>), (Side, StructureFailure)> {
    Err((Side::Primary, StructureFailure::Invalid))
}

/// One document as a tree, a child name that repeats under one parent an array.
pub fn parse_one<'a>(
    _bytes: &'a [u8],
    _scratch: &mut Charge,
) -> Result<Node<'a>, StructureFailure> {
    Err(StructureFailure::Invalid)
}

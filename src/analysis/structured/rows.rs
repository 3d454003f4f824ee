//! CSV bodies as arrays of rows of named columns, NDJSON bodies as arrays of JSON values.

use super::StructureFailure;
use crate::analysis::tree::Node;
use crate::budget::Charge;

/// A CSV body as an array of objects keyed by the header row's names.
pub fn csv<'a>(_bytes: &'a [u8], _scratch: &mut Charge) -> Result<Node<'a>, StructureFailure> {
    Err(StructureFailure::Invalid)
}

/// A newline-delimited JSON body (or a JSON text sequence) as an array of its values.
pub fn ndjson<'a>(_bytes: &'a [u8], _scratch: &mut Charge) -> Result<Node<'a>, StructureFailure> {
    Err(StructureFailure::Invalid)
}

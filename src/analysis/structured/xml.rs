//! XML bodies as trees: elements by local name, attributes as `@name`, repeated children as arrays.
//!
//! - A document is an object holding its root element, so paths read as the document does:
//!   `body/Envelope/Body/GetOrderResponse/order/total`.
//! - Names are local: prefixes are dropped and what counts is the namespace name (URI) they are bound to, so
//!   documents that use other prefixes for the same namespaces are equal. Where the elements at one place are
//!   not all in one and the same namespace in both documents (it differs between them, or within one), each of
//!   them carries an `@xmlns` entry holding its namespace name (empty for none), so a change of namespace is a
//!   difference at `…/element/@xmlns`; attributes at such a place are keyed `@{namespace}name`. Namespace
//!   declarations (`xmlns`, `xmlns:p`) are not attributes.
//! - An element without attributes or children is its text, a string, trimmed (the empty string when it has
//!   none). An element with attributes or children is an object of `@attribute` entries (their order never
//!   matters), child elements by name and, when it has text of its own, `#text`. The shape is decided per place
//!   over both documents of a pair: an element with attributes or children in one makes the elements at its
//!   place objects in both, so that an added attribute is `…/price/@currency` extra, not a type change.
//! - A child name that occurs more than once under one parent, in either document, is an array at that place in
//!   both: one `<item>` against two is `array_length` at `…/item`.
//! - Values stay strings (XML has no types). White space between elements, comments, processing instructions
//!   and the XML declaration are ignored; CDATA is text; character references and the five predefined entities
//!   are resolved.
//! - Never read, and counted: a document with a DTD (`<!DOCTYPE`), whose entities could expand to gigabytes or
//!   name files to fetch (`xml_doctype`); elements nested deeper than 128 (`xml_too_deep`); a document whose
//!   trees would not fit the memory budget, charged before it is read (`memory_budget`). A reference to any
//!   other entity, a prefix bound to no namespace, bytes that are not UTF-8 (documents in other encodings
//!   included) and anything else not well-formed make a body invalid, compared as text.

mod read;

use std::borrow::Cow;

use read::{Attribute, Document, NO_NAMESPACE, NONE, Places};

use super::{Side, StructureFailure};
use crate::analysis::BodySkip;
use crate::analysis::tree::Node;
use crate::budget::Charge;

pub use read::MAX_DEPTH;

/// The key of an element's own text when it also has attributes or children.
pub const TEXT_KEY: &str = "#text";

/// The key of an element's namespace name, where namespaces are not the same throughout a place.
pub const NAMESPACE_KEY: &str = "@xmlns";

/// Both documents as trees, a child name that repeats under one parent in either an array in both, an element
/// with attributes or children in either an object in both.
pub fn parse_pair<'a>(
    primary: &'a [u8],
    other: &'a [u8],
    scratch: &mut Charge,
) -> Result<(Node<'a>, Node<'a>), (Side, StructureFailure)> {
    let mut places = Places::new();
    let primary_document =
        charge_and_read(primary, &mut places, 0, scratch).map_err(|f| (Side::Primary, f))?;
    let other_document =
        charge_and_read(other, &mut places, 1, scratch).map_err(|f| (Side::Other, f))?;
    let primary_tree = build(primary_document, &places, scratch).map_err(|f| (Side::Primary, f))?;
    let other_tree = build(other_document, &places, scratch).map_err(|f| (Side::Other, f))?;
    Ok((primary_tree, other_tree))
}

/// One document as a tree, a child name that repeats under one parent an array.
pub fn parse_one<'a>(bytes: &'a [u8], scratch: &mut Charge) -> Result<Node<'a>, StructureFailure> {
    let mut places = Places::new();
    let document = charge_and_read(bytes, &mut places, 0, scratch)?;
    build(document, &places, scratch)
}

/// Reads a document after charging what its trees may hold; a DTD is told before the charge, so that a
/// document declaring one is `xml_doctype` whatever the budget.
fn charge_and_read<'a>(
    bytes: &'a [u8],
    places: &mut Places<'a>,
    which: usize,
    scratch: &mut Charge,
) -> Result<Document<'a>, StructureFailure> {
    if declares_doctype(bytes) {
        return Err(StructureFailure::Skipped(BodySkip::XmlDoctype));
    }
    if !scratch.try_grow(read::tree_bytes(bytes)) {
        return Err(StructureFailure::Skipped(BodySkip::MemoryBudget));
    }
    read::read(bytes, places, which)
}

/// Whether the prolog (before the root element, past the declaration, comments, processing instructions and
/// white space) holds a `<!DOCTYPE`.
fn declares_doctype(bytes: &[u8]) -> bool {
    let mut rest = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    loop {
        rest = rest.trim_ascii_start();
        let end = if rest.starts_with(b"<?") {
            memchr::memmem::find(rest, b"?>").map(|at| at + 2)
        } else if rest.starts_with(b"<!--") {
            memchr::memmem::find(&rest[4..], b"-->").map(|at| at + 7)
        } else {
            return rest.starts_with(b"<!DOCTYPE");
        };
        match end {
            Some(end) => rest = &rest[end..],
            None => return false,
        }
    }
}

/// A document's tree: an object holding its root element.
fn build<'a>(
    mut document: Document<'a>,
    places: &Places<'a>,
    scratch: &mut Charge,
) -> Result<Node<'a>, StructureFailure> {
    let root_name = document.elements[0].local;
    let mut builder = Builder {
        document: &mut document,
        places,
        scratch,
        children: Vec::new(),
    };
    let root = builder.element(0)?;
    Ok(Node::object(vec![(Cow::Borrowed(root_name), root)]))
}

struct Builder<'d, 'a> {
    document: &'d mut Document<'a>,
    places: &'d Places<'a>,
    scratch: &'d mut Charge,
    /// Children's nodes (with their place and name) gathered for the elements being built, shared by the whole
    /// build so that an element's children cost no allocation of their own.
    children: Vec<(u32, &'a str, Node<'a>)>,
}

impl<'a> Builder<'_, 'a> {
    /// One element's node, its text and attribute values moved out of the document.
    fn element(&mut self, index: u32) -> Result<Node<'a>, StructureFailure> {
        let element = &mut self.document.elements[index as usize];
        let text = element.text.take();
        let place = &self.places.places[element.place as usize];
        let qualified = place.qualified();
        if !place.has_structure && !qualified {
            return Ok(Node::String(text.unwrap_or(Cow::Borrowed(""))));
        }
        let (first_attribute, end_attribute) = element.attributes;
        let namespace = element.namespace;
        let mut child = element.first_child;

        let base = self.children.len();
        while child != NONE {
            let element = &self.document.elements[child as usize];
            let (place, local, next) = (element.place, element.local, element.next_sibling);
            let node = self.element(child)?;
            self.children.push((place, local, node));
            child = next;
        }
        // Children of one name are gathered in document order (the sort is stable).
        self.children[base..].sort_by_key(|(place, ..)| *place);

        // Sized exactly, so that the boxed entries keep the allocation: one per attribute and name of child.
        let names = self.children[base..].chunk_by(|a, b| a.0 == b.0).count();
        let attribute_count = (end_attribute - first_attribute) as usize;
        let mut entries = Vec::with_capacity(
            attribute_count + usize::from(qualified) + usize::from(text.is_some()) + names,
        );
        for at in first_attribute..end_attribute {
            let key = attribute_key(
                self.places,
                self.scratch,
                &self.document.attributes[at as usize],
            )?;
            let value = std::mem::take(&mut self.document.attributes[at as usize].value);
            entries.push((key, Node::String(value)));
        }
        if qualified {
            let name = self.places.namespace(namespace).clone();
            entries.push((Cow::Borrowed(NAMESPACE_KEY), Node::String(name)));
        }
        if let Some(text) = text {
            entries.push((Cow::Borrowed(TEXT_KEY), Node::String(text)));
        }
        let mut children = self.children.drain(base..);
        while let Some((place, local, node)) = children.next() {
            if self.places.places[place as usize].repeated {
                let run = children
                    .as_slice()
                    .iter()
                    .take_while(|(next, ..)| *next == place)
                    .count();
                let mut items = Vec::with_capacity(run + 1);
                items.push(node);
                items.extend(children.by_ref().take(run).map(|(_, _, node)| node));
                entries.push((Cow::Borrowed(local), Node::Array(items.into_boxed_slice())));
            } else {
                // Only a repeated place holds more than one child of a parent.
                entries.push((Cow::Borrowed(local), node));
            }
        }
        drop(children);
        Ok(object(entries))
    }
}

/// An object of entries whose keys are unique but for documents that are not namespace-well-formed (two
/// prefixes for one namespace naming one attribute twice): sorted here, and built without the copy
/// [`Node::object`] makes to drop duplicates unless there are some.
fn object<'a>(mut entries: Vec<(Cow<'a, str>, Node<'a>)>) -> Node<'a> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if entries.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return Node::object(entries);
    }
    Node::Object(entries.into_boxed_slice())
}

/// `@name`, or `@{namespace}name` where the attribute's namespace is not the same throughout its place (whose
/// length, which the namespace name can make any, is charged first).
fn attribute_key<'a>(
    places: &Places<'a>,
    scratch: &mut Charge,
    attribute: &Attribute<'a>,
) -> Result<Cow<'a, str>, StructureFailure> {
    let place = &places.places[attribute.place as usize];
    if place.qualified() && attribute.namespace != NO_NAMESPACE {
        let namespace = places.namespace(attribute.namespace);
        if !scratch.try_grow(namespace.len() + attribute.local.len() + 3) {
            return Err(StructureFailure::Skipped(BodySkip::MemoryBudget));
        }
        return Ok(Cow::Owned(format!("@{{{namespace}}}{}", attribute.local)));
    }
    Ok(Cow::Owned(format!("@{}", attribute.local)))
}

#[cfg(test)]
mod tests;

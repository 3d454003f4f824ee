//! Reading an XML document into a light element tree, its places (paths by local name) shared with the other
//! document of a pair, so that what makes an array or an object at a place is known for both before any node is
//! built.

use std::borrow::Cow;
use std::collections::HashMap;

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::attributes::Attributes;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};

use super::super::StructureFailure;
use crate::analysis::BodySkip;
use crate::analysis::tree::BYTES_PER_VALUE;

/// Elements nested deeper than this are not read (`xml_too_deep`), as JSON's nesting stops at 128.
pub const MAX_DEPTH: usize = 128;

/// No element: the parent of a root, the end of a list of children.
pub(super) const NONE: u32 = u32::MAX;

/// The namespace of names bound to none.
pub(super) const NO_NAMESPACE: u32 = 0;

/// Which document of a pair.
pub(super) type DocumentIndex = usize;

/// One document's elements and attributes; element 0 is the root.
#[derive(Default)]
pub(super) struct Document<'a> {
    pub elements: Vec<Element<'a>>,
    pub attributes: Vec<Attribute<'a>>,
}

pub(super) struct Element<'a> {
    pub place: u32,
    pub namespace: u32,
    pub local: &'a str,
    /// The element's own text, trimmed; `None` when there is none (or only white space).
    pub text: Option<Cow<'a, str>>,
    /// Its attributes, a range of [`Document::attributes`].
    pub attributes: (u32, u32),
    pub first_child: u32,
    pub next_sibling: u32,
}

pub(super) struct Attribute<'a> {
    pub place: u32,
    pub namespace: u32,
    pub local: &'a str,
    pub value: Cow<'a, str>,
}

/// Where in a document an element or attribute sits: its parent's place and its local name.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PlaceKey<'a> {
    parent: u32,
    attribute: bool,
    local: &'a str,
}

/// Hashed in two writes, not four: the parent and the kind in one word (fixed-size, so the name needs no
/// length after it).
impl std::hash::Hash for PlaceKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64((u64::from(self.parent) << 1) | u64::from(self.attribute));
        state.write(self.local.as_bytes());
    }
}

/// What the documents of a pair hold at one place.
#[derive(Clone)]
pub(super) struct Place<'a> {
    /// A parent holds more than one element here, in either document.
    pub repeated: bool,
    /// An element here has attributes or children, in either document.
    pub has_structure: bool,
    /// The namespaces seen here, per document.
    namespaces: [Seen; 2],
    /// The last element (per document) that had a child here: another child of the same one is a repeat.
    last_parent: [u32; 2],
    /// The local name here, and the child element's place found last from here: a run of repeated children
    /// finds its place without hashing.
    local: &'a str,
    last_child: u32,
}

impl Place<'_> {
    /// Whether names here carry their namespace: it differs between the documents, or within one.
    pub fn qualified(&self) -> bool {
        match self.namespaces {
            [Seen::Mixed, _] | [_, Seen::Mixed] => true,
            [Seen::One(a), Seen::One(b)] => a != b,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Nothing,
    One(u32),
    Mixed,
}

impl Seen {
    fn add(&mut self, namespace: u32) {
        *self = match *self {
            Seen::Nothing => Seen::One(namespace),
            Seen::One(seen) if seen == namespace => Seen::One(seen),
            _ => Seen::Mixed,
        };
    }
}

/// The places of one or two documents and the namespace names they use, numbered alike for both.
#[derive(Default)]
pub(super) struct Places<'a> {
    index: HashMap<PlaceKey<'a>, u32>,
    pub places: Vec<Place<'a>>,
    /// Namespace names, the first empty (no namespace); borrowed from the declaring document when possible.
    namespaces: Vec<Cow<'a, str>>,
    namespace_ids: HashMap<Cow<'a, str>, u32>,
    /// The namespace last resolved: most elements are in their parent's, compared before any hashing.
    last_namespace: u32,
}

impl<'a> Places<'a> {
    pub fn new() -> Self {
        let mut places = Self::default();
        places.namespaces.push(Cow::Borrowed(""));
        places.namespace_ids.insert(Cow::Borrowed(""), NO_NAMESPACE);
        places
    }

    pub fn namespace(&self, id: u32) -> &Cow<'a, str> {
        &self.namespaces[id as usize]
    }

    fn place(&mut self, parent: u32, attribute: bool, local: &'a str) -> u32 {
        let cached = match (attribute, self.places.get(parent as usize)) {
            (false, Some(parent)) => parent.last_child,
            _ => NONE,
        };
        if let Some(place) = self.places.get(cached as usize)
            && place.local == local
        {
            return cached;
        }
        let key = PlaceKey {
            parent,
            attribute,
            local,
        };
        let next = self.places.len() as u32;
        let places = &mut self.places;
        let found = *self.index.entry(key).or_insert_with(|| {
            places.push(Place {
                repeated: false,
                has_structure: false,
                namespaces: [Seen::Nothing; 2],
                last_parent: [NONE; 2],
                local,
                last_child: NONE,
            });
            next
        });
        if !attribute && let Some(parent) = self.places.get_mut(parent as usize) {
            parent.last_child = found;
        }
        found
    }

    /// Numbers a namespace name declared in a document (kept borrowed from it).
    fn declare(&mut self, name: &'a str) {
        if !self.namespace_ids.contains_key(name) {
            let id = self.namespaces.len() as u32;
            self.namespaces.push(Cow::Borrowed(name));
            self.namespace_ids.insert(Cow::Borrowed(name), id);
        }
    }

    /// The number of a resolved name's namespace; a prefix bound to nothing makes the document invalid.
    fn namespace_id(&mut self, resolved: ResolveResult<'_>) -> Result<u32, StructureFailure> {
        match resolved {
            ResolveResult::Unbound => Ok(NO_NAMESPACE),
            ResolveResult::Bound(namespace) => {
                let name = namespace.into_inner();
                if self.namespaces[self.last_namespace as usize] == name {
                    return Ok(self.last_namespace);
                }
                if let Some(&id) = self.namespace_ids.get(name) {
                    self.last_namespace = id;
                    return Ok(id);
                }
                // Only the built-in `xml` namespace is bound without being declared in the document.
                let id = self.namespaces.len() as u32;
                self.namespaces.push(Cow::Owned(name.to_string()));
                self.namespace_ids.insert(Cow::Owned(name.to_string()), id);
                self.last_namespace = id;
                Ok(id)
            }
            ResolveResult::Unknown(_) => Err(StructureFailure::Invalid),
        }
    }
}

/// Bytes the trees of a document may hold at most, charged before it is read: its text three times over (text
/// joined from pieces into strings that may double their capacity, attribute values with references resolved),
/// and for each `<` and `=` (an upper bound on elements and attributes) its light element, its node, its
/// place and the spare capacity of the vectors that hold them.
pub fn tree_bytes(bytes: &[u8]) -> usize {
    const PER_MARK: usize = 10 * BYTES_PER_VALUE;
    // Counted in chunks into a byte-sized counter, which the compiler turns into vector compares.
    let marks: usize = bytes
        .chunks(255)
        .map(|chunk| {
            let count = chunk.iter().fold(0u8, |count, &byte| {
                count + u8::from(matches!(byte, b'<' | b'='))
            });
            usize::from(count)
        })
        .sum();
    3 * bytes.len() + (marks + 1) * PER_MARK
}

/// An element being read: its index, its last child so far, and its text so far.
struct Open<'a> {
    index: u32,
    last_child: u32,
    text: Text<'a>,
}

/// Text joined from its pieces (text, CDATA, references), trimmed at both ends. White space between elements
/// is held back, not copied, until more text follows it.
#[derive(Default)]
struct Text<'a> {
    text: Option<Cow<'a, str>>,
    pending_space: Option<Cow<'a, str>>,
}

impl<'a> Text<'a> {
    fn push(&mut self, piece: Cow<'a, str>) {
        if is_space(&piece) {
            if self.text.is_some() {
                match &mut self.pending_space {
                    Some(pending) => pending.to_mut().push_str(&piece),
                    None => self.pending_space = Some(piece),
                }
            }
            return;
        }
        self.text = Some(match self.text.take() {
            None => trim_start(piece),
            Some(text) => {
                let mut joined = text.into_owned();
                if let Some(space) = self.pending_space.take() {
                    joined.push_str(&space);
                }
                joined.push_str(&piece);
                Cow::Owned(joined)
            }
        });
    }

    fn finish(self) -> Option<Cow<'a, str>> {
        self.text.map(|text| match text {
            Cow::Borrowed(text) => Cow::Borrowed(text.trim_end_matches(is_xml_space)),
            Cow::Owned(mut text) => {
                let end = text.trim_end_matches(is_xml_space).len();
                text.truncate(end);
                Cow::Owned(text)
            }
        })
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_space(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

fn trim_start(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text.trim_start_matches(is_xml_space)),
        Cow::Owned(text) => Cow::Owned(text.trim_start_matches(is_xml_space).to_string()),
    }
}

/// The part of `input` that `part` is a slice of, with `input`'s lifetime: the reader hands out an element's
/// tag borrowed only for as long as its event, though it is a slice of the input.
fn within<'a>(input: &'a str, part: &str) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(input.as_ptr() as usize)?;
    let found = input.get(start..start.checked_add(part.len())?)?;
    (found.as_ptr() == part.as_ptr()).then_some(found)
}

/// A character or predefined entity reference's text; any other entity is undefined (no DTD is ever read).
fn resolve_reference(reference: &BytesRef<'_>) -> Result<Cow<'static, str>, StructureFailure> {
    match reference.resolve_char_ref() {
        Ok(Some(character)) => Ok(Cow::Owned(character.to_string())),
        Ok(None) => resolve_xml_entity(reference)
            .map(Cow::Borrowed)
            .ok_or(StructureFailure::Invalid),
        Err(_) => Err(StructureFailure::Invalid),
    }
}

/// Reads one document into `document`, numbering its places in `places` as document `which` of the pair.
pub(super) fn read<'a>(
    bytes: &'a [u8],
    places: &mut Places<'a>,
    which: DocumentIndex,
) -> Result<Document<'a>, StructureFailure> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let input = std::str::from_utf8(bytes).map_err(|_| StructureFailure::Invalid)?;
    let mut reader = NsReader::from_str(input);
    let mut reading = Reading {
        input,
        which,
        places,
        document: Document::default(),
        open: Vec::new(),
    };
    loop {
        let event = reader.read_event().map_err(|_| StructureFailure::Invalid)?;
        match event {
            Event::Start(start) => {
                let index = reading.open_element(&start, &reader)?;
                reading.open.push(Open {
                    index,
                    last_child: NONE,
                    text: Text::default(),
                });
            }
            Event::Empty(start) => {
                reading.open_element(&start, &reader)?;
            }
            Event::End(_) => {
                let open = reading.open.pop().ok_or(StructureFailure::Invalid)?;
                reading.document.elements[open.index as usize].text = open.text.finish();
            }
            Event::Text(text) => reading.text(text.xml10_content(), true)?,
            Event::CData(data) => reading.text(data.xml10_content(), false)?,
            Event::GeneralRef(reference) => reading.text(resolve_reference(&reference)?, false)?,
            // A DTD can declare entities that expand to gigabytes, or fetch files: it is never read.
            Event::DocType(_) => return Err(StructureFailure::Skipped(BodySkip::XmlDoctype)),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if !reading.open.is_empty() || reading.document.elements.is_empty() {
        return Err(StructureFailure::Invalid);
    }
    Ok(reading.document)
}

/// A document being read.
struct Reading<'a, 'p> {
    input: &'a str,
    which: DocumentIndex,
    places: &'p mut Places<'a>,
    document: Document<'a>,
    open: Vec<Open<'a>>,
}

impl<'a> Reading<'a, '_> {
    /// A piece of text: the open element's, or, outside the root, white space (`space_allowed`) or an error.
    fn text(&mut self, piece: Cow<'a, str>, space_allowed: bool) -> Result<(), StructureFailure> {
        match self.open.last_mut() {
            Some(open) => {
                open.text.push(piece);
                Ok(())
            }
            None if space_allowed && is_space(&piece) => Ok(()),
            None => Err(StructureFailure::Invalid),
        }
    }

    /// Adds the element `start` opens (with its attributes) as the last child of the open element, and
    /// returns its index.
    fn open_element(
        &mut self,
        start: &BytesStart<'_>,
        reader: &NsReader<&'a [u8]>,
    ) -> Result<u32, StructureFailure> {
        if self.open.len() >= MAX_DEPTH {
            return Err(StructureFailure::Skipped(BodySkip::XmlTooDeep));
        }
        let parent = self.open.last().map_or(NONE, |open| open.index);
        if parent == NONE && !self.document.elements.is_empty() {
            // A second root.
            return Err(StructureFailure::Invalid);
        }
        let tag = within(self.input, start).ok_or(StructureFailure::Invalid)?;
        let name_length = start.name().as_ref().len();
        let resolver = reader.resolver();
        let (resolved, local) = resolver.resolve_element(QName(&tag[..name_length]));
        let local = local.into_inner();

        let parent_place = match parent {
            NONE => NONE,
            index => self.document.elements[index as usize].place,
        };
        let local_place = self.places.place(parent_place, false, local);
        let index =
            u32::try_from(self.document.elements.len()).map_err(|_| StructureFailure::Invalid)?;
        let which = self.which;

        // The resolver already holds this tag's declarations (an attribute may use a prefix declared after it);
        // declaring them here only lets their names be borrowed from the body.
        let first_attribute = self.document.attributes.len() as u32;
        if tag.len() > name_length {
            let mut attributes = Attributes::new(tag, name_length);
            attributes.with_checks(true);
            for attribute in attributes {
                let attribute = attribute.map_err(|_| StructureFailure::Invalid)?;
                if attribute.key.as_namespace_binding().is_some() {
                    if let Cow::Borrowed(name) = attribute.value {
                        self.places.declare(name);
                    }
                    continue;
                }
                let (resolved, attribute_local) = resolver.resolve_attribute(attribute.key);
                let attribute_namespace = self.places.namespace_id(resolved)?;
                let value = attribute
                    .normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|_| StructureFailure::Invalid)?;
                let attribute_local = attribute_local.into_inner();
                let attribute_place = self.places.place(local_place, true, attribute_local);
                self.places.places[attribute_place as usize].namespaces[which]
                    .add(attribute_namespace);
                self.document.attributes.push(Attribute {
                    place: attribute_place,
                    namespace: attribute_namespace,
                    local: attribute_local,
                    value,
                });
            }
        }
        let has_attributes = self.document.attributes.len() as u32 > first_attribute;
        let namespace = self.places.namespace_id(resolved)?;

        let place = &mut self.places.places[local_place as usize];
        place.namespaces[which].add(namespace);
        if parent != NONE {
            if place.last_parent[which] == parent {
                place.repeated = true;
            }
            place.last_parent[which] = parent;
        }
        place.has_structure |= has_attributes;
        if parent_place != NONE {
            self.places.places[parent_place as usize].has_structure = true;
        }

        self.document.elements.push(Element {
            place: local_place,
            namespace,
            local,
            text: None,
            attributes: (first_attribute, self.document.attributes.len() as u32),
            first_child: NONE,
            next_sibling: NONE,
        });
        if let Some(open) = self.open.last_mut() {
            match open.last_child {
                NONE => self.document.elements[open.index as usize].first_child = index,
                last => self.document.elements[last as usize].next_sibling = index,
            }
            open.last_child = index;
        }
        Ok(index)
    }
}

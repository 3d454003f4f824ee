//! CSV bodies as arrays of rows of named columns, NDJSON bodies as arrays of JSON values.
//!
//! A CSV body's first record is its header; every further record is an object of its cells (strings, as they
//! read) keyed by the header's names, so a changed cell is `body/3/price`. An NDJSON body (or a JSON text
//! sequence) is the array of its JSON values, so a changed value on the fourth line is `body/3/...`. Text is
//! borrowed from the body wherever it stands there as it reads; memory is charged before anything is built.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use csv::StringRecord;

use super::StructureFailure;
use crate::analysis::BodySkip;
use crate::analysis::json;
use crate::analysis::tree::{self, Node};
use crate::budget::Charge;

/// The widest CSV record read: a body with a wider one is not read as CSV (it is compared as text).
pub const MAX_COLUMNS: usize = 1024;

/// A byte-order mark, which some exporters put before the header.
pub(crate) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What separates the records of a JSON text sequence (RFC 7464).
pub(crate) const RECORD_SEPARATOR: u8 = 0x1E;

/// Memory the CSV reader holds besides the records (its input buffer), and a row's order of columns, charged
/// once.
const READER_BYTES: usize = 24 << 10;

/// The longest name a cell beyond the header gets (its column number, perhaps with a `_2` suffix).
const EXTRA_NAME_BYTES: usize = 16;

/// What a column's bookkeeping holds besides its name's text: its name, its place in the sorted order, and its
/// entries in the sets that keep names unique.
const COLUMN_BYTES: usize = 3 * tree::BYTES_PER_VALUE;

/// A CSV body as an array of objects keyed by the header row's names.
///
/// Header names are made unique (see [`Columns`]); a cell beyond the header is named by its 1-based column
/// number; a row shorter than the header lacks the columns it does not reach. A header-only body is an empty
/// array. Not UTF-8, or a record wider than [`MAX_COLUMNS`]: `Invalid`.
pub fn csv<'a>(bytes: &'a [u8], scratch: &mut Charge) -> Result<Node<'a>, StructureFailure> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|_| StructureFailure::Invalid)?;
    let bound = CsvBound::of(bytes);
    charge(scratch, bound.tree_bytes())?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = StringRecord::new();
    let mut cells: Vec<Cow<'a, str>> = Vec::new();
    if !read_record(&mut reader, &mut record)? {
        return Ok(Node::Array(Box::default()));
    }
    borrow_fields(text, &record, &mut cells);
    // The columns' names are held three times (given, reserved against repeats, and where the search for a
    // free name stopped) besides their slots.
    let header_text: usize = cells.iter().map(|name| name.len()).sum();
    let column_slots = bound.cells.min(MAX_COLUMNS).saturating_mul(COLUMN_BYTES);
    charge(
        scratch,
        header_text.saturating_mul(3).saturating_add(column_slots),
    )?;
    let mut columns = Columns::new(std::mem::take(&mut cells));
    // Names that are not in the body (made unique, escaped in it) are copied into every row that has them.
    let copied_key = columns.longest_copied_name().max(EXTRA_NAME_BYTES);
    charge(scratch, bound.cells.saturating_mul(copied_key))?;
    let mut rows = Vec::new();
    let mut order = Vec::new();
    while read_record(&mut reader, &mut record)? {
        borrow_fields(text, &record, &mut cells);
        columns.widen_to(cells.len());
        columns.order(cells.len(), &mut order);
        let entries: Box<[_]> = order
            .iter()
            .map(|&column| {
                let cell = std::mem::take(&mut cells[column]);
                (columns.names[column].clone(), Node::String(cell))
            })
            .collect();
        // The names are unique and taken in their sorted order, as an object's entries must be.
        debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
        rows.push(Node::Object(entries));
    }
    Ok(Node::Array(rows.into_boxed_slice()))
}

/// Takes `bytes` from `scratch`, or says the body is skipped for the memory budget.
fn charge(scratch: &mut Charge, bytes: usize) -> Result<(), StructureFailure> {
    if scratch.try_grow(bytes) {
        Ok(())
    } else {
        Err(StructureFailure::Skipped(BodySkip::MemoryBudget))
    }
}

/// Reads the next record; `Invalid` for a record that is not UTF-8 or is wider than [`MAX_COLUMNS`].
fn read_record(
    reader: &mut csv::Reader<&[u8]>,
    record: &mut StringRecord,
) -> Result<bool, StructureFailure> {
    match reader.read_record(record) {
        Ok(more) if record.len() <= MAX_COLUMNS => Ok(more),
        _ => Err(StructureFailure::Invalid),
    }
}

/// Upper bounds of what a CSV body's tree holds, from one pass over its bytes: every cell ends at a comma or at
/// the end of a line, and every row at the end of a line or of the body.
struct CsvBound {
    body: usize,
    rows: usize,
    cells: usize,
}

impl CsvBound {
    fn of(bytes: &[u8]) -> Self {
        let (commas, line_ends) = bytes.iter().fold((0usize, 0usize), |(commas, ends), byte| {
            (
                commas + usize::from(*byte == b','),
                ends + usize::from(matches!(byte, b'\n' | b'\r')),
            )
        });
        let rows = line_ends + 1;
        Self {
            body: bytes.len(),
            rows,
            cells: commas + rows,
        }
    }

    /// The rows and cells, the cells' text when copied (never more than the body), and what the reader holds
    /// (its record buffer, which may grow to twice the longest record).
    fn tree_bytes(&self) -> usize {
        // A row is an element of the array, which may hold twice its length while it grows.
        let rows = self.rows.saturating_mul(2 * size_of::<Node<'static>>());
        let cells = self.cells.saturating_mul(tree::BYTES_PER_VALUE);
        self.body
            .saturating_mul(3)
            .saturating_add(rows)
            .saturating_add(cells)
            .saturating_add(READER_BYTES)
    }
}

/// The fields of a record, each borrowed from the body where it stands there as it reads (unquoted, or quoted
/// without doubled quotes inside), else copied: most cells then cost the body nothing more.
fn borrow_fields<'a>(text: &'a str, record: &StringRecord, fields: &mut Vec<Cow<'a, str>>) {
    fields.clear();
    // The reader's position is where it started the record, before the blank lines it skipped.
    let start = record
        .position()
        .and_then(|position| usize::try_from(position.byte()).ok())
        .and_then(|at| text.get(at..))
        .map(|rest| text.len() - rest.trim_start_matches(['\r', '\n']).len());
    let mut at = start;
    for field in record {
        let found = at.and_then(|at| verbatim(text, at, field));
        match found {
            Some((borrowed, next)) => {
                fields.push(Cow::Borrowed(borrowed));
                at = Some(next);
            }
            None => {
                fields.push(Cow::Owned(field.to_owned()));
                // Where the next field starts is no longer known: the rest of the record is copied.
                at = None;
            }
        }
    }
}

/// The field `field` as it stands in `text` at `at` (quoted or not), and where the field after it starts;
/// `None` when it does not stand there as it reads. What is borrowed always equals the field, whatever the
/// text is.
fn verbatim<'a>(text: &'a str, at: usize, field: &str) -> Option<(&'a str, usize)> {
    let quoted = text.as_bytes().get(at) == Some(&b'"');
    let start = at + usize::from(quoted);
    let end = start.checked_add(field.len())?;
    let borrowed = text.get(start..end).filter(|found| *found == field)?;
    let after = if quoted {
        (text.as_bytes().get(end) == Some(&b'"')).then_some(end + 1)?
    } else {
        end
    };
    let next = after + usize::from(text.as_bytes().get(after) == Some(&b','));
    Some((borrowed, next))
}

/// The names of a CSV body's columns, unique and not empty, and their order by name (the order of an object's
/// entries). An empty header name becomes its 1-based column number; a name already taken by an earlier column
/// gets the first of `_2`, `_3`, ... that no header names; a cell beyond the header is named by its column
/// number, made unique the same way.
struct Columns<'a> {
    names: Vec<Cow<'a, str>>,
    /// Column indices sorted by name.
    sorted: Vec<usize>,
    /// Every name given so far, and every name the header has.
    taken: HashSet<String>,
    /// The suffix each name wanted more than once was last given.
    suffixes: HashMap<String, usize>,
}

impl<'a> Columns<'a> {
    fn new(header: Vec<Cow<'a, str>>) -> Self {
        let taken = header
            .iter()
            .filter(|name| !name.is_empty())
            .map(|name| name.to_string())
            .collect();
        let mut columns = Self {
            names: Vec::with_capacity(header.len()),
            sorted: Vec::new(),
            taken,
            suffixes: HashMap::new(),
        };
        // The header's own names were reserved above: only the first of each keeps it.
        let mut given: HashSet<Cow<'a, str>> = HashSet::with_capacity(header.len());
        for (index, name) in header.into_iter().enumerate() {
            let name = if name.is_empty() {
                Cow::Owned(columns.free_name((index + 1).to_string()))
            } else if given.contains(&name) {
                Cow::Owned(columns.free_name(name.into_owned()))
            } else {
                name
            };
            given.insert(name.clone());
            columns.names.push(name);
        }
        let names = &columns.names;
        columns.sorted = (0..names.len()).collect();
        columns
            .sorted
            .sort_unstable_by(|&a, &b| names[a].cmp(&names[b]));
        columns
    }

    /// `wanted`, or when it is taken the first of `wanted_2`, `wanted_3`, ... that is not. The search for a
    /// name goes on from the suffix the last search for it ended at, so that a header of one name repeated
    /// costs in proportion to its length.
    fn free_name(&mut self, wanted: String) -> String {
        let mut suffix = self.suffixes.get(&wanted).copied().unwrap_or(1);
        let mut name = if suffix == 1 {
            wanted.clone()
        } else {
            format!("{wanted}_{suffix}")
        };
        while self.taken.contains(&name) {
            suffix += 1;
            name = format!("{wanted}_{suffix}");
        }
        self.taken.insert(name.clone());
        self.suffixes.insert(wanted, suffix);
        name
    }

    /// Names the columns up to `width`: cells beyond the header by their column number.
    fn widen_to(&mut self, width: usize) {
        for index in self.names.len()..width {
            let name = self.free_name((index + 1).to_string());
            let at = self
                .sorted
                .partition_point(|&column| self.names[column].as_ref() < name.as_str());
            self.sorted.insert(at, index);
            self.names.push(Cow::Owned(name));
        }
    }

    /// The first `width` columns in their names' order, into `order`: picked from the order of all columns
    /// when the row has most of them, else sorted for this row, so that the work stays in proportion to the
    /// row's cells however wide an earlier row was.
    fn order(&self, width: usize, order: &mut Vec<usize>) {
        order.clear();
        if width.saturating_mul(2) >= self.names.len() {
            order.extend(self.sorted.iter().copied().filter(|&column| column < width));
        } else {
            order.extend(0..width);
            order.sort_unstable_by(|&a, &b| self.names[a].cmp(&self.names[b]));
        }
    }

    /// The longest name that is not borrowed from the body, which every row having its column copies.
    fn longest_copied_name(&self) -> usize {
        self.names
            .iter()
            .filter_map(|name| match name {
                Cow::Owned(owned) => Some(owned.len()),
                Cow::Borrowed(_) => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// A newline-delimited JSON body (or a JSON text sequence) as an array of its values.
///
/// Each line that is not blank is one JSON value; a body with a record separator (0x1E) anywhere is a JSON
/// text sequence, whose records (which may span lines) are the values. A value that is not JSON: `Invalid`;
/// nested too deep: `JsonTooDeep`.
pub fn ndjson<'a>(bytes: &'a [u8], scratch: &mut Charge) -> Result<Node<'a>, StructureFailure> {
    let (count, trees) = json_texts(bytes).fold((0usize, 0usize), |(count, trees), text| {
        (count + 1, trees.saturating_add(json::tree_bytes(text)))
    });
    charge(
        scratch,
        trees.saturating_add(count.saturating_mul(size_of::<Node<'static>>())),
    )?;
    let mut values = Vec::with_capacity(count);
    for text in json_texts(bytes) {
        let value = tree::parse(text).map_err(|error| {
            if error.to_string().contains("recursion limit") {
                StructureFailure::Skipped(BodySkip::JsonTooDeep)
            } else {
                StructureFailure::Invalid
            }
        })?;
        values.push(value);
    }
    Ok(Node::Array(values.into_boxed_slice()))
}

/// What separates the JSON texts of a body: the record separator when there is one anywhere (a JSON text
/// sequence, whose texts may span lines), else the newline. JSON never holds a raw 0x1E, not even in a string,
/// so newline-delimited JSON has none.
pub(crate) fn json_separator(bytes: &[u8]) -> u8 {
    if bytes.contains(&RECORD_SEPARATOR) {
        RECORD_SEPARATOR
    } else {
        b'\n'
    }
}

/// Whether a record holds nothing but JSON whitespace (a blank line, the end after the last newline).
pub(crate) fn is_blank(record: &[u8]) -> bool {
    record
        .iter()
        .all(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
}

/// The JSON texts of a body, blank records skipped.
fn json_texts(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let separator = json_separator(bytes);
    bytes
        .split(move |byte| *byte == separator)
        .filter(|record| !is_blank(record))
}

#[cfg(test)]
mod tests;

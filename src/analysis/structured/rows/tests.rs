//! CSV and NDJSON bodies read as trees: names, shapes, bounds, what is borrowed, and differences' paths.

use std::borrow::Cow;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::analysis::diff::DiffKind;
use crate::analysis::json::{JsonOptions, diff};
use crate::analysis::rules::{EndpointRules, Rule, RuleSet, RuleSpec};
use crate::budget::{MemoryBudget, Stage};

fn csv_value(text: &str) -> Value {
    csv(text.as_bytes(), &mut Charge::none())
        .expect("reads as CSV")
        .to_value()
}

fn ndjson_value(text: &str) -> Value {
    ndjson(text.as_bytes(), &mut Charge::none())
        .expect("reads as NDJSON")
        .to_value()
}

/// The (path, kind) of each difference from primary's body to the other's, both read with `read`.
fn differences(
    read: for<'a> fn(&'a [u8], &mut Charge) -> Result<Node<'a>, StructureFailure>,
    primary: &str,
    other: &str,
) -> Vec<(String, DiffKind)> {
    let primary = read(primary.as_bytes(), &mut Charge::none()).unwrap();
    let other = read(other.as_bytes(), &mut Charge::none()).unwrap();
    crate::analysis::structured::walked(&primary, &other)
}

fn paths(found: &[(&str, DiffKind)]) -> Vec<(String, DiffKind)> {
    found
        .iter()
        .map(|(path, kind)| (path.to_string(), *kind))
        .collect()
}

#[test]
fn csv_rows_are_objects_of_string_cells_keyed_by_the_header() {
    assert_eq!(
        csv_value("id,name,price\n1,ada,3.50\n2,bob,4\n"),
        json!([
            {"id": "1", "name": "ada", "price": "3.50"},
            {"id": "2", "name": "bob", "price": "4"},
        ])
    );
    // Quoted fields keep their commas, quotes and line breaks; CRLF, a lone CR and no final line end all end
    // records; a byte-order mark before the header is not part of the first name.
    assert_eq!(
        csv_value("\u{feff}id,note\r\n1,\"a, \"\"b\"\"\r\nc\"\r2,\"\"\n3,plain"),
        json!([
            {"id": "1", "note": "a, \"b\"\r\nc"},
            {"id": "2", "note": ""},
            {"id": "3", "note": "plain"},
        ])
    );
}

#[test]
fn a_header_alone_or_nothing_is_an_empty_array_and_blank_lines_are_no_rows() {
    assert_eq!(csv_value("id,name\n"), json!([]));
    assert_eq!(csv_value("id,name"), json!([]));
    assert_eq!(csv_value(""), json!([]));
    assert_eq!(
        csv_value("\n\nid\n\n1\r\n\r\n2\n\n"),
        json!([{"id": "1"}, {"id": "2"}])
    );
    // A line of one empty quoted field is a row, not a blank line.
    assert_eq!(csv_value("id\n\"\"\n"), json!([{"id": ""}]));
}

#[test]
fn empty_and_repeated_header_names_are_made_unique_predictably() {
    // Empty: the 1-based column number; repeated: the first free `_2`, `_3`, ... (`name_2` is the header's
    // own).
    assert_eq!(
        csv_value("name,,name,name_2,,name\na,b,c,d,e,f\n"),
        json!([{"name": "a", "2": "b", "name_3": "c", "name_2": "d", "5": "e", "name_4": "f"}])
    );
    // A column number the header already uses as a name is made unique the same way.
    assert_eq!(csv_value("2,\nx,y\n"), json!([{"2": "x", "2_2": "y"}]));
    let repeated = format!(
        "{}\n{}\n",
        vec!["a"; MAX_COLUMNS].join(","),
        vec!["1"; MAX_COLUMNS].join(",")
    );
    let names: Vec<String> = csv_value(&repeated)[0]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut expected: Vec<String> = (2..=MAX_COLUMNS).map(|n| format!("a_{n}")).collect();
    expected.push("a".into());
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn cells_beyond_the_header_are_named_by_column_number_and_short_rows_lack_columns() {
    assert_eq!(
        csv_value("a,b\n1,2,3,4\n5\n6,7\n"),
        json!([
            {"a": "1", "b": "2", "3": "3", "4": "4"},
            {"a": "5"},
            {"a": "6", "b": "7"},
        ])
    );
    assert_eq!(
        csv_value("a,3\n1,2,x\n"),
        json!([{"a": "1", "3": "2", "3_2": "x"}])
    );
}

#[test]
fn cells_and_names_are_borrowed_from_the_body_where_they_stand_as_they_read() {
    let body = b"id,\"na,me\",\"q\"\"uote\"\n1,\"x,y\",\"say \"\"hi\"\"\"\n";
    let Node::Array(rows) = csv(body, &mut Charge::none()).unwrap() else {
        panic!("an array");
    };
    let Node::Object(entries) = &rows[0] else {
        panic!("an object");
    };
    let found: Vec<(&str, bool, bool)> = entries
        .iter()
        .map(|(name, cell)| {
            let Node::String(cell) = cell else {
                panic!("string cells");
            };
            (
                name.as_ref(),
                matches!(name, Cow::Borrowed(_)),
                matches!(cell, Cow::Borrowed(_)),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("id", true, true),
            ("na,me", true, true),
            ("q\"uote", false, false)
        ]
    );
}

#[test]
fn csv_that_is_not_utf8_or_too_wide_is_invalid() {
    let mut scratch = Charge::none();
    assert_eq!(
        csv(b"name\n\xff\xfe\n", &mut scratch),
        Err(StructureFailure::Invalid)
    );
    let widest = vec!["c"; MAX_COLUMNS].join(",");
    assert!(csv(widest.as_bytes(), &mut scratch).is_ok());
    let wider = format!("a\n{}\n", vec!["1"; MAX_COLUMNS + 1].join(","));
    assert_eq!(
        csv(wider.as_bytes(), &mut scratch),
        Err(StructureFailure::Invalid)
    );
}

#[test]
fn memory_is_charged_before_reading_and_a_refusal_is_a_counted_skip() {
    let body = "id,name\n1,ada\n2,bob\n".repeat(50);
    let mut unbounded = Charge::none();
    csv(body.as_bytes(), &mut unbounded).unwrap();
    let cells = 2 * 100;
    assert!(unbounded.bytes() >= body.len() + cells * tree::BYTES_PER_VALUE);

    let budget = MemoryBudget::new(body.len());
    let mut scratch = budget.empty(Stage::Analysis);
    let skipped = Err(StructureFailure::Skipped(BodySkip::MemoryBudget));
    assert_eq!(csv(body.as_bytes(), &mut scratch), skipped);
    let lines = "{\"id\":1,\"name\":\"ada\"}\n".repeat(100);
    assert_eq!(ndjson(lines.as_bytes(), &mut scratch), skipped);
    assert_eq!(scratch.bytes(), 0, "a refused charge takes nothing");
}

#[test]
fn a_changed_cell_and_a_missing_row_have_row_and_column_paths() {
    let primary = "id,price\n1,3.50\n2,4.00\n3,5.00\n";
    let candidate = "id,price\n1,3.50\n2,4.10\n";
    assert_eq!(
        differences(csv, primary, candidate),
        paths(&[
            ("body/1/price", DiffKind::ValueChanged),
            ("body", DiffKind::ArrayLength),
            ("body/2", DiffKind::Missing),
        ])
    );
    // Cells are text: a number written another way is another value.
    assert_eq!(
        differences(csv, "n\n4.0\n", "n\n4\n"),
        paths(&[("body/0/n", DiffKind::ValueChanged)])
    );
    // A column renamed in the header is a column missing and another extra in every row.
    assert_eq!(
        differences(csv, "id,cost\n1,2\n", "id,price\n1,2\n"),
        paths(&[
            ("body/0/cost", DiffKind::Missing),
            ("body/0/price", DiffKind::Extra),
        ])
    );
}

#[test]
fn a_row_dropped_from_the_middle_is_one_missing_row_when_the_rows_are_unordered() {
    let primary = csv("id,price\n1,3\n2,4\n3,5\n".as_bytes(), &mut Charge::none()).unwrap();
    let candidate = csv("id,price\n1,3\n3,5\n".as_bytes(), &mut Charge::none()).unwrap();
    let found = |rules: &EndpointRules<'_>| -> Vec<(String, DiffKind)> {
        diff(&primary, &candidate, JsonOptions::default(), rules, "body")
            .into_iter()
            .map(|change| (change.path, change.kind))
            .collect()
    };
    // In order, the rows after the gap are compared with their successors.
    assert_eq!(
        found(&EndpointRules::default()),
        paths(&[
            ("body/1/id", DiffKind::ValueChanged),
            ("body/1/price", DiffKind::ValueChanged),
            ("body", DiffKind::ArrayLength),
            ("body/2", DiffKind::Missing),
        ])
    );
    let spec = serde_json::from_str::<RuleSpec>(r#"{"path":"body","action":"unordered"}"#).unwrap();
    let rules = RuleSet::new(vec![Rule::new(spec).unwrap()]);
    assert_eq!(
        found(&rules.for_endpoint("GET /prices.csv")),
        paths(&[
            ("body", DiffKind::ArrayLength),
            ("body/1", DiffKind::Missing)
        ])
    );
}

#[test]
fn ndjson_lines_are_the_elements_of_an_array() {
    assert_eq!(
        ndjson_value("{\"a\":1}\n[2]\r\n\"three\"\n\n  \t\n4\n"),
        json!([{"a": 1}, [2], "three", 4])
    );
    assert_eq!(ndjson_value(""), json!([]));
    assert_eq!(ndjson_value("\n\r\n"), json!([]));
    assert_eq!(ndjson_value("null"), json!([null]));
}

#[test]
fn a_json_text_sequence_is_split_at_its_record_separators() {
    // Its records may span lines.
    let body = "\u{1e}{\n  \"a\": 1\n}\n\u{1e}[2,\n3]\n\u{1e}\n";
    assert_eq!(ndjson_value(body), json!([{"a": 1}, [2, 3]]));
}

#[test]
fn ndjson_strings_are_borrowed_and_failures_are_told_apart() {
    let Node::Array(values) = ndjson(b"\"plain\"\n", &mut Charge::none()).unwrap() else {
        panic!("an array");
    };
    assert!(matches!(&values[0], Node::String(Cow::Borrowed("plain"))));

    let mut scratch = Charge::none();
    assert_eq!(
        ndjson(b"{\"a\":1}\nnot json\n", &mut scratch),
        Err(StructureFailure::Invalid)
    );
    // A pretty-printed document is not one value per line.
    assert_eq!(
        ndjson(b"{\n\"a\": 1\n}\n", &mut scratch),
        Err(StructureFailure::Invalid)
    );
    let deep = format!("1\n{}{}\n", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        ndjson(deep.as_bytes(), &mut scratch),
        Err(StructureFailure::Skipped(BodySkip::JsonTooDeep))
    );
}

#[test]
fn a_changed_value_and_a_missing_line_have_line_paths() {
    let primary = "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n{\"id\":4,\"tags\":[\"a\"]}\n";
    let candidate = "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n{\"id\":4,\"tags\":[\"b\"]}\n";
    assert_eq!(
        differences(ndjson, primary, candidate),
        paths(&[("body/3/tags/0", DiffKind::ValueChanged)])
    );
    assert_eq!(
        differences(ndjson, primary, "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n"),
        paths(&[
            ("body", DiffKind::ArrayLength),
            ("body/3", DiffKind::Missing)
        ])
    );
}

proptest! {
    #[test]
    fn any_bytes_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = csv(&bytes, &mut Charge::none());
        let _ = ndjson(&bytes, &mut Charge::none());
    }

    #[test]
    fn csv_like_bytes_read_without_panicking(
        bytes in proptest::collection::vec(
            prop_oneof![Just(b','), Just(b'"'), Just(b'\n'), Just(b'\r'), Just(b'a'), Just(0xEF), Just(0xBB),
                        Just(0xBF), any::<u8>()],
            0..256,
        )
    ) {
        let _ = csv(&bytes, &mut Charge::none());
        let _ = ndjson(&bytes, &mut Charge::none());
    }

    /// Whatever the cells hold and however wide the rows, they read back as the csv writer was given them.
    #[test]
    fn written_rows_read_back_as_written(
        rows in proptest::collection::vec(
            proptest::collection::vec("[a,\"\r\n é]{0,6}", 1..7),
            1..6,
        )
    ) {
        let header = ["c1", "c2", "c3"];
        let mut writer = ::csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        writer.write_record(header).unwrap();
        for row in &rows {
            writer.write_record(row).unwrap();
        }
        let body = writer.into_inner().unwrap();
        let expected: Vec<Value> = rows
            .iter()
            .map(|row| {
                // Cells beyond the header are named by their 1-based column number.
                let name = |column: usize| {
                    header
                        .get(column)
                        .map_or((column + 1).to_string(), |name| name.to_string())
                };
                let cells = row
                    .iter()
                    .enumerate()
                    .map(|(column, cell)| (name(column), json!(cell)));
                Value::Object(cells.collect())
            })
            .collect();
        let read = csv(&body, &mut Charge::none()).unwrap().to_value();
        prop_assert_eq!(read, Value::Array(expected));
    }
}

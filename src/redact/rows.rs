//! CSV and NDJSON bodies as stored: the columns and fields named like secret fields redacted.

use csv::{ByteRecord, ReaderBuilder, Terminator, WriterBuilder};
use serde_json::Value;

use super::Redactor;
use crate::analysis::structured::rows::{UTF8_BOM, is_blank, json_separator};

impl Redactor {
    /// A CSV body with every cell of a column whose header names a secret field replaced by its keyed hash, and
    /// the personal data in the other cells (the header's too); `None` when nothing needed changing. A changed
    /// body is written anew: quoted only where it must be, its line ends those of its first.
    pub(super) fn csv_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if self.json_fields.is_empty() && !self.redacts_values() {
            return None;
        }
        let (bom, records) = match body.strip_prefix(UTF8_BOM) {
            Some(rest) => (UTF8_BOM, rest),
            None => (&[][..], body),
        };
        let mut reader = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(records);
        let terminator = if records.windows(2).any(|pair| pair == b"\r\n") {
            Terminator::CRLF
        } else {
            Terminator::Any(b'\n')
        };
        let mut writer = WriterBuilder::new()
            .flexible(true)
            .terminator(terminator)
            .from_writer(bom.to_vec());
        let (mut record, mut redacted) = (ByteRecord::new(), ByteRecord::new());
        let mut secret_columns: Option<Vec<bool>> = None;
        let mut changed = false;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return self.partial_body(body),
            }
            // The header's own cells name the columns: only their personal data is replaced.
            let header = secret_columns.is_none();
            let secret = secret_columns.get_or_insert_with(|| {
                record
                    .iter()
                    .map(|name| self.is_secret_field(&String::from_utf8_lossy(name)))
                    .collect()
            });
            redacted.clear();
            for (column, cell) in record.iter().enumerate() {
                let clean = if !header && secret.get(column) == Some(&true) {
                    Some(self.token(cell).into_bytes())
                } else {
                    self.cell_values(cell)
                };
                changed |= clean.is_some();
                redacted.push_field(clean.as_deref().unwrap_or(cell));
            }
            if writer.write_byte_record(&redacted).is_err() {
                return self.partial_body(body);
            }
        }
        if !changed {
            return None;
        }
        writer.into_inner().ok()
    }

    /// An ordinary cell with the personal data in it replaced, and, as in a JSON string, the secret query
    /// parameters of a URL in it; `None` when there were none.
    fn cell_values(&self, cell: &[u8]) -> Option<Vec<u8>> {
        match std::str::from_utf8(cell) {
            Ok(text) => self.text_value(text).map(String::into_bytes),
            Err(_) => self.bytes_values(cell),
        }
    }

    /// An NDJSON body (or a JSON text sequence) with each value's secret fields and personal data redacted, as
    /// [`Redactor::json`] does; values that needed nothing, blank lines and separators stay as they were. A
    /// body with a record that is not JSON is stored as a part that cannot be parsed is. `None` when nothing
    /// needed changing.
    pub(super) fn ndjson_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        if self.json_fields.is_empty() && !self.redacts_values() {
            return None;
        }
        let separator = json_separator(body);
        let mut redacted = Vec::with_capacity(body.len());
        let mut changed = false;
        for (index, record) in body.split(|byte| *byte == separator).enumerate() {
            if index > 0 {
                redacted.push(separator);
            }
            if is_blank(record) {
                redacted.extend_from_slice(record);
                continue;
            }
            let Ok(mut value) = serde_json::from_slice::<Value>(record) else {
                return self.partial_body(body);
            };
            let before = value.clone();
            self.json(&mut value);
            if value == before {
                redacted.extend_from_slice(record);
                continue;
            }
            changed = true;
            // The whitespace around the value (a CR before the newline, a json-seq record's newline) stays.
            let start = record.len() - record.trim_ascii_start().len();
            let end = record.trim_ascii_end().len();
            redacted.extend_from_slice(&record[..start]);
            if serde_json::to_writer(&mut redacted, &value).is_err() {
                return self.partial_body(body);
            }
            redacted.extend_from_slice(&record[end..]);
        }
        changed.then_some(redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::values::{ValueKind, ValuePatterns};
    use super::*;
    use crate::redact::UNPARSEABLE_WITH_SECRET;
    use http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    fn redactor() -> Redactor {
        Redactor::new(b"test key".to_vec(), &["ssn".to_string()])
    }

    fn text(bytes: Option<Vec<u8>>) -> String {
        String::from_utf8(bytes.expect("redacted")).unwrap()
    }

    #[test]
    fn cells_of_secret_columns_are_hashed_and_the_rest_kept() {
        let r = redactor();
        let body =
            b"id,Password,SSN,note\r\n1,hunter2,078-05-1120,\"a, b\"\r\n2,,x,plain,extra\r\n";
        let stored = text(r.csv_body(body));
        let password = r.token(b"hunter2");
        let ssn = r.token(b"078-05-1120");
        let empty = r.token(b"");
        let x = r.token(b"x");
        assert_eq!(
            stored,
            format!(
                "id,Password,SSN,note\r\n1,{password},{ssn},\"a, b\"\r\n2,{empty},{x},plain,extra\r\n"
            )
        );
        // Equal secrets hash equal, so that the stored bodies still compare.
        assert_eq!(text(r.csv_body(body)), stored);
    }

    #[test]
    fn a_csv_body_without_secrets_is_left_alone() {
        let r = redactor();
        assert_eq!(r.csv_body(b"id,name\n1,ada\n"), None);
        // A secret column without rows has nothing to hash.
        assert_eq!(r.csv_body(b"id,password\n"), None);
        assert_eq!(r.csv_body(b""), None);
    }

    #[test]
    fn personal_data_and_url_tokens_in_ordinary_cells_are_replaced() {
        let r = redactor().with_values(ValuePatterns::new(&[ValueKind::Email], &[]).unwrap());
        let body = "\u{feff}contact,ada@example.com\nada@example.com,https://x.example/?token=t0k&page=2\n";
        let stored = text(r.csv_body(body.as_bytes()));
        let mail = r.token(b"ada@example.com");
        let link = format!("https://x.example/?token={}&page=2", r.token(b"t0k"));
        assert_eq!(stored, format!("\u{feff}contact,{mail}\n{mail},{link}\n"));
    }

    #[test]
    fn each_ndjson_value_has_its_secret_fields_redacted() {
        let r = redactor();
        let body = b"{\"user\":\"ada\",\"token\":\"t0k\"}\r\n{\"id\":2}\r\n\r\n[{\"ssn\":123}]\r\n";
        let stored = text(r.ndjson_body(body));
        let expected = format!(
            "{{\"token\":\"{}\",\"user\":\"ada\"}}\r\n{{\"id\":2}}\r\n\r\n[{{\"ssn\":\"{}\"}}]\r\n",
            r.token(b"t0k"),
            r.token(b"123")
        );
        assert_eq!(stored, expected);
        assert_eq!(r.ndjson_body(b"{\"id\":1}\n{\"id\":2}\n"), None);
    }

    #[test]
    fn a_json_text_sequence_keeps_its_separators() {
        let r = redactor();
        let body = b"\x1e{\"a\":1}\n\x1e{\n  \"password\": \"hunter2\"\n}\n";
        let stored = text(r.ndjson_body(body));
        assert_eq!(
            stored,
            format!(
                "\u{1e}{{\"a\":1}}\n\u{1e}{{\"password\":\"{}\"}}\n",
                r.token(b"hunter2")
            )
        );
    }

    #[test]
    fn an_ndjson_body_that_does_not_parse_is_stored_as_an_unparseable_part() {
        let r = redactor();
        assert_eq!(
            r.ndjson_body(b"{\"password\":\"hunter2\"}\n{\"password\": \n")
                .as_deref(),
            Some(UNPARSEABLE_WITH_SECRET)
        );
        assert_eq!(r.ndjson_body(b"{\"id\":1}\nnot json\n"), None);
    }

    #[test]
    fn bodies_are_redacted_as_their_media_type_says() {
        let r = redactor();
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        let csv = text(r.body(&headers, b"user,token\nada,t0k\n"));
        assert_eq!(csv, format!("user,token\nada,{}\n", r.token(b"t0k")));
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-ndjson"),
        );
        let ndjson = text(r.body(&headers, b"{\"token\":\"t0k\"}\n"));
        assert!(!ndjson.contains("t0k"), "{ndjson}");
    }

    proptest! {
        #[test]
        fn any_bytes_are_redacted_without_panicking(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b','), Just(b'"'), Just(b'\n'), Just(0x1e), Just(b'{'), any::<u8>()],
                0..256,
            )
        ) {
            let r = redactor().with_values(ValuePatterns::new(&ValueKind::ALL, &[]).unwrap());
            let mut with_header = b"password,note\n".to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = r.csv_body(&with_header);
            let _ = r.csv_body(&bytes);
            let _ = r.ndjson_body(&bytes);
        }
    }
}

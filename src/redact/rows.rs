//! CSV and NDJSON bodies as stored: the columns and fields named like secret fields redacted.

use super::Redactor;

impl Redactor {
    /// A CSV body with the cells of its secret columns redacted; `None` when nothing needed changing.
    pub(super) fn csv_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        self.partial_body(body)
    }

    /// An NDJSON body with each line's secret fields redacted; `None` when nothing needed changing.
    pub(super) fn ndjson_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        self.partial_body(body)
    }
}

//! XML bodies as stored: the text and attributes of elements named like secret fields redacted.

use super::Redactor;

impl Redactor {
    /// An XML body with its secret elements and attributes redacted; `None` when nothing needed changing.
    pub(super) fn xml_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        self.partial_body(body)
    }
}

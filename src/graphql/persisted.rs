//! Automatic persisted queries: the text behind each hash seen with it, kept in a bounded cache, so that an
//! operation a client later sends by its hash alone can be judged by what it does and sent to the shadows whole.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Texts kept at most.
pub const MAX_QUERIES: usize = 4_096;
/// Bytes of text kept at most, all queries together.
pub const MAX_BYTES: usize = 8 << 20;
/// The longest text kept; a longer one is still read, but not remembered.
pub const MAX_QUERY_BYTES: usize = 64 << 10;

/// Query texts by their SHA-256, the oldest forgotten first when either bound is reached. Shared by every
/// caller thread and the shadow lane; a lock held only to look up or insert one entry.
#[derive(Debug, Default)]
pub struct PersistedQueries {
    inner: Mutex<Texts>,
}

#[derive(Debug, Default)]
struct Texts {
    by_hash: HashMap<[u8; 32], Arc<str>>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

impl PersistedQueries {
    /// Remembers `query` under `hash` when the hash is the text's SHA-256 (as a server checks it), so that a
    /// caller cannot make a mutation pass for a query others send by its hash.
    pub fn learn(&self, hash: &str, query: &str) {
        let Some(key) = parse_hash(hash) else {
            return;
        };
        if query.len() > MAX_QUERY_BYTES || self.holds(&key) {
            // Known already (a text is kept only under its own hash), as when the lane reads a request the
            // caller's path has read: no hash to compute again.
            return;
        }
        if Sha256::digest(query.as_bytes())[..] != key[..] {
            return;
        }
        let mut texts = self.lock();
        if texts.by_hash.contains_key(&key) {
            return;
        }
        while texts.by_hash.len() >= MAX_QUERIES || texts.bytes + query.len() > MAX_BYTES {
            let Some(oldest) = texts.order.pop_front() else {
                break;
            };
            if let Some(text) = texts.by_hash.remove(&oldest) {
                texts.bytes -= text.len();
            }
        }
        texts.bytes += query.len();
        texts.order.push_back(key);
        texts.by_hash.insert(key, Arc::from(query));
    }

    fn holds(&self, key: &[u8; 32]) -> bool {
        self.lock().by_hash.contains_key(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Texts> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The text seen with this hash, if it is still kept.
    pub fn text(&self, hash: &str) -> Option<Arc<str>> {
        let key = parse_hash(hash)?;
        self.lock().by_hash.get(&key).cloned()
    }

    /// Texts kept now.
    pub fn len(&self) -> usize {
        self.lock().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A SHA-256 in hex (64 digits, either case).
fn parse_hash(hash: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hash, &mut key).ok()?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn a_text_is_kept_under_its_own_hash_only() {
        let queries = PersistedQueries::default();
        let query = "query Posts { allPosts { id } }";
        queries.learn(&hash_of("mutation { drop }"), query);
        assert_eq!(queries.text(&hash_of("mutation { drop }")), None);
        queries.learn(&hash_of(query), query);
        assert_eq!(queries.text(&hash_of(query)).as_deref(), Some(query));
        assert_eq!(
            queries.text(&hash_of(query).to_uppercase()).as_deref(),
            Some(query)
        );
        assert_eq!(queries.text("not hex"), None);
        queries.learn("abc", query);
        assert_eq!(queries.len(), 1);
    }

    #[test]
    fn the_oldest_texts_are_forgotten_past_the_bounds() {
        let queries = PersistedQueries::default();
        let texts: Vec<String> = (0..MAX_QUERIES + 10)
            .map(|n| format!("{{ field{n} }}"))
            .collect();
        for text in &texts {
            queries.learn(&hash_of(text), text);
        }
        assert_eq!(queries.len(), MAX_QUERIES);
        assert_eq!(queries.text(&hash_of(&texts[0])), None);
        assert!(queries.text(&hash_of(&texts[MAX_QUERIES + 9])).is_some());

        let big = format!("{{ a {} }}", " ".repeat(MAX_QUERY_BYTES));
        queries.learn(&hash_of(&big), &big);
        assert_eq!(queries.text(&hash_of(&big)), None);
        let large: Vec<String> = (0..200)
            .map(|n| format!("{{ b{n} {} }}", " ".repeat(60 << 10)))
            .collect();
        for text in &large {
            queries.learn(&hash_of(text), text);
        }
        let kept = queries.inner.lock().unwrap().bytes;
        assert!(kept <= MAX_BYTES, "{kept}");
        assert!(queries.text(&hash_of(&large[199])).is_some());
    }
}

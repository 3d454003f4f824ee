//! Latency per target as compact log-bucket sketches (1 % relative error, memory in proportion to the buckets
//! held), mergeable across time buckets and replicas; their percentiles, and the latency-regression verdict with
//! secondary as the noise baseline.

use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde::{Deserialize, Serialize};

use crate::exchange::Target;

/// Values are microseconds, from 1 µs to one hour; anything outside is clamped, so odd values cannot make a
/// sketch grow beyond the buckets of that range.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Relative accuracy of a quantile: the representative value of a bucket is within 1 % of every value in it.
const RELATIVE_ACCURACY: f64 = 0.01;

/// DDSketch's bucket growth factor: bucket `i` holds the values in `(GAMMA^(i-1), GAMMA^i]`.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// The bucket of [`HIGHEST_MICROS`]; 1 µs is bucket 0, so every index fits a `u16` (checked by a test).
const MAX_INDEX: u16 = 1101;

/// Fewest samples per target for a latency verdict.
pub const MIN_SAMPLES: u64 = 100;

/// Prefix of the sketch encoding; legacy HDR blobs start with a different cookie, so the two cannot be confused.
const MAGIC: &[u8; 4] = b"SDL1";

/// Latency values (microseconds) in logarithmic buckets, kept sparse: only buckets that hold a value take
/// memory (10 bytes each), so an empty sketch allocates nothing and a busy one a few KiB at most.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySketch {
    /// Bucket indices, strictly increasing.
    indices: Vec<u16>,
    /// Count per bucket, parallel to `indices`; never zero.
    counts: Vec<u64>,
    /// Sum of `counts` (saturating), so `len` needs no walk.
    total: u64,
}

impl LatencySketch {
    pub fn record(&mut self, micros: u64) {
        self.record_n(micros, 1);
    }

    pub fn record_n(&mut self, micros: u64, count: u64) {
        // A zero count would leave an empty bucket behind, which the encoding rejects.
        if count == 0 {
            return;
        }
        let index = index_of(micros);
        match self.indices.binary_search(&index) {
            Ok(at) => self.counts[at] = self.counts[at].saturating_add(count),
            Err(at) => {
                self.indices.insert(at, index);
                self.counts.insert(at, count);
            }
        }
        self.total = self.total.saturating_add(count);
    }

    /// Merges `other` in; exact, since both sides use the same buckets.
    pub fn add(&mut self, other: &LatencySketch) {
        if other.is_empty() {
            return;
        }
        let union = union_len(&self.indices, &other.indices);
        if union == self.indices.len() {
            // Every bucket of `other` is already here (the usual case once a sketch has warmed up): add in place.
            let mut at = 0;
            for (index, count) in other.indices.iter().zip(&other.counts) {
                while self.indices[at] < *index {
                    at += 1;
                }
                self.counts[at] = self.counts[at].saturating_add(*count);
            }
        } else {
            // New buckets: one merge into Vecs of exactly the union's size, rather than repeated inserts.
            let mut indices = Vec::with_capacity(union);
            let mut counts = Vec::with_capacity(union);
            let (mut a, mut b) = (0, 0);
            while a < self.indices.len() || b < other.indices.len() {
                let take_self = b == other.indices.len()
                    || (a < self.indices.len() && self.indices[a] <= other.indices[b]);
                let take_other = a == self.indices.len()
                    || (b < other.indices.len() && other.indices[b] <= self.indices[a]);
                let mut count = 0u64;
                let mut index = 0;
                if take_self {
                    index = self.indices[a];
                    count = count.saturating_add(self.counts[a]);
                    a += 1;
                }
                if take_other {
                    index = other.indices[b];
                    count = count.saturating_add(other.counts[b]);
                    b += 1;
                }
                indices.push(index);
                counts.push(count);
            }
            self.indices = indices;
            self.counts = counts;
        }
        self.total = self.total.saturating_add(other.total);
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The value (microseconds) at quantile `q` (clamped to [0, 1]), within 1 % of the recorded value of rank
    /// `ceil(q * len)` (counting from 1, at least 1); 0 for an empty sketch.
    ///
    /// The rank is the nearest-rank one HDR histograms use rather than DDSketch's `q * (len - 1)`: with the
    /// hundred-odd samples of a minute the two pick different samples at p99, and stored verdicts must read back
    /// as they were first reported.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let Some(last) = self.indices.last() else {
            return 0;
        };
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut cumulative = 0u64;
        for (index, count) in self.indices.iter().zip(&self.counts) {
            cumulative = cumulative.saturating_add(*count);
            if cumulative >= rank {
                return representative(*index);
            }
        }
        // Only reachable when the total saturated and the counts' sum fell short of it.
        representative(*last)
    }

    /// Bytes this sketch holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.indices.capacity() * size_of::<u16>() + self.counts.capacity() * size_of::<u64>()
    }
}

/// The bucket of a value, after clamping it to [1 µs, 1 h].
fn index_of(micros: u64) -> u16 {
    let value = micros.clamp(1, HIGHEST_MICROS) as f64;
    // The float-to-int cast saturates; the `min` keeps float noise at the top from leaving the range.
    ((value.ln() / GAMMA.ln()).ceil() as u16).min(MAX_INDEX)
}

/// The value a bucket reports: the point whose relative distance to both bucket ends is the stated accuracy.
fn representative(index: u16) -> u64 {
    ((2.0 * GAMMA.powi(i32::from(index)) / (GAMMA + 1.0)).round() as u64).max(1)
}

/// How many distinct indices two strictly increasing lists hold together.
fn union_len(a: &[u16], b: &[u16]) -> usize {
    let (mut i, mut j, mut len) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
        len += 1;
    }
    len + (a.len() - i) + (b.len() - j)
}

/// One sketch per target.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    sketches: [LatencySketch; 3],
}

/// Percentiles of one target, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub samples: u64,
}

impl Latencies {
    pub fn record(&mut self, target: Target, elapsed: Duration) {
        // The sketch clamps to [1 µs, 1 h].
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sketches[target.index()].record(micros);
    }

    pub fn histogram(&self, target: Target) -> &LatencySketch {
        &self.sketches[target.index()]
    }

    pub fn merge(&mut self, other: &Latencies) {
        for target in Target::ALL {
            self.merge_target(target, other.histogram(target));
        }
    }

    pub fn merge_target(&mut self, target: Target, sketch: &LatencySketch) {
        self.sketches[target.index()].add(sketch);
    }

    pub fn summary(&self, target: Target) -> LatencySummary {
        let sketch = self.histogram(target);
        let ms = |quantile: f64| sketch.value_at_quantile(quantile) as f64 / 1000.0;
        LatencySummary {
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            samples: sketch.len(),
        }
    }

    /// The candidate's p99 is more than `factor` times secondary's, each with at least [`MIN_SAMPLES`] samples.
    /// Secondary runs the current code and travels the candidate's path (sent from the same shadow threads, at
    /// the same moment, through the same kind of pool), so it is the baseline: primary answers on the caller's
    /// path, whose threads run first, and a candidate must not look slow for being a shadow.
    pub fn regression(&self, factor: f64) -> bool {
        let (secondary, candidate) = (
            self.histogram(Target::Secondary),
            self.histogram(Target::Candidate),
        );
        if secondary.len() < MIN_SAMPLES || candidate.len() < MIN_SAMPLES {
            return false;
        }
        let p99 = |sketch: &LatencySketch| sketch.value_at_quantile(0.99) as f64;
        p99(candidate) > factor * p99(secondary)
    }

    pub fn is_empty(&self) -> bool {
        self.sketches.iter().all(LatencySketch::is_empty)
    }

    /// Bytes held on the heap by the three sketches.
    pub fn heap_bytes(&self) -> usize {
        self.sketches.iter().map(LatencySketch::heap_bytes).sum()
    }
}

/// The storage encoding of a sketch: `SDL1`, the bucket count, then per bucket the index as a delta from the
/// previous one (the first from 0) and the count, all unsigned LEB128 varints.
pub fn encode(sketch: &LatencySketch) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 1 + 3 * sketch.indices.len());
    bytes.extend_from_slice(MAGIC);
    write_varint(&mut bytes, sketch.indices.len() as u64);
    let mut previous = 0;
    for (index, count) in sketch.indices.iter().zip(&sketch.counts) {
        write_varint(&mut bytes, u64::from(index - previous));
        write_varint(&mut bytes, *count);
        previous = *index;
    }
    bytes
}

/// Reads a stored sketch, or a histogram that older versions stored (HDR V2); `None` if the bytes are neither.
pub fn decode(bytes: &[u8]) -> Option<LatencySketch> {
    match bytes.strip_prefix(MAGIC) {
        Some(body) => decode_sketch(body),
        None => decode_legacy(bytes),
    }
}

fn decode_sketch(mut bytes: &[u8]) -> Option<LatencySketch> {
    let buckets = read_varint(&mut bytes)?;
    // Each bucket takes at least two bytes and there are only so many buckets, so a bogus count is rejected
    // before anything is allocated for it.
    if buckets > u64::from(MAX_INDEX) + 1 || buckets > (bytes.len() / 2) as u64 {
        return None;
    }
    let buckets = buckets as usize;
    let mut sketch = LatencySketch {
        indices: Vec::with_capacity(buckets),
        counts: Vec::with_capacity(buckets),
        total: 0,
    };
    let mut previous: Option<u16> = None;
    for _ in 0..buckets {
        let delta = read_varint(&mut bytes)?;
        let index = match previous {
            None => delta,
            // Strictly increasing, so a bucket appears once.
            Some(_) if delta == 0 => return None,
            Some(previous) => u64::from(previous).checked_add(delta)?,
        };
        if index > u64::from(MAX_INDEX) {
            return None;
        }
        let count = read_varint(&mut bytes)?;
        if count == 0 {
            return None;
        }
        let index = index as u16;
        sketch.indices.push(index);
        sketch.counts.push(count);
        sketch.total = sketch.total.saturating_add(count);
        previous = Some(index);
    }
    bytes.is_empty().then_some(sketch)
}

fn write_varint(bytes: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(low);
            return;
        }
        bytes.push(low | 0x80);
    }
}

/// Reads a minimal unsigned LEB128 varint of at most 64 bits; only the minimal form is accepted, so every
/// sketch has exactly one encoding.
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for position in 0..10 {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        // The tenth byte holds only the 64th bit.
        if position == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * position);
        if byte & 0x80 == 0 {
            return (position == 0 || byte != 0).then_some(value);
        }
    }
    None
}

/// The HDR V2 cookie (`V2Serializer`); the DEFLATE variant was never written by shadowdiff and is not accepted,
/// as its decompressed size cannot be bounded before inflating.
const LEGACY_V2_COOKIE: u32 = 0x1c84_9313;

/// Size of the HDR V2 header: cookie, payload length, normalizing offset, digits, lowest, highest, ratio.
const LEGACY_HEADER_LEN: usize = 40;

/// Largest highest-trackable value a legacy header may claim (about 12.7 days in µs): with at most 3 digits
/// this caps the count array the HDR deserializer allocates at 32 Ki counters (256 KiB), whatever the header says.
const LEGACY_HIGHEST_CAP: u64 = 1 << 40;

/// Reads an HDR V2 blob as older versions stored it, and re-buckets its recorded values into a sketch.
fn decode_legacy(bytes: &[u8]) -> Option<LatencySketch> {
    let header = bytes.get(..LEGACY_HEADER_LEN)?;
    let payload = &bytes[LEGACY_HEADER_LEN..];
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(header.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(header.get(at..at + 8)?.try_into().ok()?))
    };
    // The HDR deserializer sizes its buffers from the header before reading anything else, so the header is
    // checked here first: the payload length must be what follows (no 4 GiB buffer for a short blob), and the
    // bounds must describe a histogram of bounded size.
    let (cookie, payload_len, digits) = (u32_at(0)?, u32_at(4)?, u32_at(12)?);
    let (lowest, highest) = (u64_at(16)?, u64_at(24)?);
    if cookie != LEGACY_V2_COOKIE
        || usize::try_from(payload_len).ok()? != payload.len()
        || digits > 3
        || lowest == 0
        || highest > LEGACY_HIGHEST_CAP
    {
        return None;
    }
    // The deserializer negates a decoded zero-run length with overflow checks on; the one value that overflows
    // (i64::MIN, zigzag-encoded as u64::MAX) would panic instead of failing, so it is refused up front.
    let mut rest = payload;
    while !rest.is_empty() {
        if read_legacy_varint(&mut rest)? == u64::MAX {
            return None;
        }
    }
    let histogram: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).ok()?;
    let mut sketch = LatencySketch::default();
    for value in histogram.iter_recorded() {
        sketch.record_n(value.value_iterated_to(), value.count_at_value());
    }
    Some(sketch)
}

/// One HDR varint (LEB128-64b9B: up to eight 7-bit groups, then a full ninth byte).
fn read_legacy_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for position in 0..9 {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        if position == 8 {
            return Some(value | u64::from(byte) << 56);
        }
        value |= u64::from(byte & 0x7f) << (7 * position);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests;

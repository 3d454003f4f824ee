//! How numbers are written for people, on pages and in the gate's output: percentages, durations, counts.

/// `12.3%` (one decimal; `0%` for nothing, `<0.1%` for a little).
pub fn percent(fraction: f64) -> String {
    let value = fraction * 100.0;
    if value == 0.0 {
        "0%".to_string()
    } else if value < 0.1 {
        "<0.1%".to_string()
    } else if (99.95..100.0).contains(&value) {
        ">99.9%".to_string()
    } else {
        format!("{value:.1}%")
    }
}

/// Primary's and candidate's p99 side by side (`3.2 ms → 9.8 ms`), `slower` appended when the candidate's is
/// judged a latency regression.
pub fn p99_pair(primary_ms: f64, candidate_ms: f64, between: &str, slower: Option<&str>) -> String {
    let mut pair = format!("{}{between}{}", millis(primary_ms), millis(candidate_ms));
    if let Some(slower) = slower {
        pair.push_str(slower);
    }
    pair
}

/// `3.2 ms`, `450 µs`, `1.25 s`.
pub fn millis(ms: f64) -> String {
    if ms <= 0.0 {
        "–".to_string()
    } else if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// `2026-11-23 10:15:04Z` from unix milliseconds.
pub fn timestamp(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace('T', " ")
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

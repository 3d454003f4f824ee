//! The demo's traffic: an endless, deterministic mix of the service's endpoints (users, products, orders,
//! search, health), so that every run of the demo shows the same regressions at the same rates.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use crate::traffic::TrafficRequest;

const WORDS: [&str; 5] = ["lamp", "desk", "chair", "mug", "pen"];

/// Request `index` of the mix. Per ten requests: three users, two products, two orders, two searches and one
/// health check. Order ids run on, so the candidate's one-in-twenty bug hits exactly 5 % of orders.
pub fn request(index: u64) -> TrafficRequest {
    let round = index / 10;
    let path = match index % 10 {
        slot @ 0..=2 => format!("/users/{}", 1 + (round * 3 + slot) % 500),
        slot @ 3..=4 => format!("/products/{}", 1 + (round * 2 + slot - 3) % 300),
        slot @ 5..=6 => format!("/orders/{}", 1000 + round * 2 + slot - 5),
        slot @ 7..=8 => format!("/search?q={}", WORDS[((round * 2 + slot - 7) % 5) as usize]),
        _ => "/health".to_string(),
    };
    TrafficRequest {
        time: None,
        method: Method::GET,
        uri: path.parse().expect("the demo's paths are valid"),
        headers: vec![
            (
                HeaderName::from_static("accept"),
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("user-agent"),
                HeaderValue::from_static("shadowdiff-demo"),
            ),
        ],
        body: Bytes::new(),
        authority: None,
    }
}

/// The mix from the start, without end.
pub fn requests() -> impl Iterator<Item = TrafficRequest> {
    (0..).map(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_the_documented_shares_and_five_percent_buggy_orders() {
        let paths: Vec<String> = (0..1000).map(|i| request(i).uri.to_string()).collect();
        let share = |prefix: &str| paths.iter().filter(|p| p.starts_with(prefix)).count();
        assert_eq!(share("/users/"), 300);
        assert_eq!(share("/products/"), 200);
        assert_eq!(share("/orders/"), 200);
        assert_eq!(share("/search"), 200);
        assert_eq!(share("/health"), 100);
        let buggy = paths
            .iter()
            .filter_map(|p| p.strip_prefix("/orders/"))
            .filter(|id| id.parse::<u64>().unwrap() % 20 == 7)
            .count();
        assert_eq!(buggy, 10, "5 % of 200 orders");
    }
}

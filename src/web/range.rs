//! The time range a page or API call looks at: `range=15m|1h|6h|24h|7d|all`.

use serde::Deserialize;

use crate::clock::now_ms;
use crate::store::queries::TimeRange;

/// A choice of time range.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum RangeChoice {
    Minutes15,
    Hour,
    Hours6,
    Day,
    Week,
    #[default]
    All,
}

impl RangeChoice {
    pub const ALL: [RangeChoice; 6] = [
        RangeChoice::Minutes15,
        RangeChoice::Hour,
        RangeChoice::Hours6,
        RangeChoice::Day,
        RangeChoice::Week,
        RangeChoice::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RangeChoice::Minutes15 => "15m",
            RangeChoice::Hour => "1h",
            RangeChoice::Hours6 => "6h",
            RangeChoice::Day => "24h",
            RangeChoice::Week => "7d",
            RangeChoice::All => "all",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RangeChoice::Minutes15 => "last 15 minutes",
            RangeChoice::Hour => "last hour",
            RangeChoice::Hours6 => "last 6 hours",
            RangeChoice::Day => "last 24 hours",
            RangeChoice::Week => "last 7 days",
            RangeChoice::All => "whole run",
        }
    }

    /// Unknown values read as the whole run.
    pub fn parse(text: Option<&str>) -> Self {
        text.and_then(|text| Self::ALL.into_iter().find(|choice| choice.as_str() == text))
            .unwrap_or_default()
    }

    fn minutes(self) -> Option<i64> {
        match self {
            RangeChoice::Minutes15 => Some(15),
            RangeChoice::Hour => Some(60),
            RangeChoice::Hours6 => Some(360),
            RangeChoice::Day => Some(1_440),
            RangeChoice::Week => Some(10_080),
            RangeChoice::All => None,
        }
    }

    pub fn time_range(self) -> TimeRange {
        match self.minutes() {
            Some(minutes) => TimeRange::between_ms(Some(now_ms() - minutes * 60_000), None),
            None => TimeRange::all(),
        }
    }
}

/// Query parameters every report view takes.
#[derive(Debug, Default, Deserialize)]
pub struct ViewQuery {
    pub run: Option<String>,
    pub range: Option<String>,
    pub hide_noise: Option<String>,
}

impl ViewQuery {
    pub fn range(&self) -> RangeChoice {
        RangeChoice::parse(self.range.as_deref())
    }

    pub fn hides_noise(&self) -> bool {
        matches!(self.hide_noise.as_deref(), Some("1" | "true" | "on"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_default_to_all() {
        assert_eq!(RangeChoice::parse(Some("1h")), RangeChoice::Hour);
        assert_eq!(RangeChoice::parse(Some("nonsense")), RangeChoice::All);
        assert_eq!(RangeChoice::parse(None), RangeChoice::All);
        assert!(RangeChoice::Hour.time_range().from_minute.is_some());
        assert_eq!(RangeChoice::All.time_range(), TimeRange::all());
    }
}

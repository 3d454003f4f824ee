//! What pages show, made displayable: numbers and times formatted, JSON bodies rendered as HTML with the
//! differing places marked, text bodies as a unified diff. Everything that came from traffic is escaped here
//! or by the templates.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::analysis::diff::DiffKind;
pub use crate::analysis::kind::kind_label;
use crate::encoding::Markup;
pub use crate::units::{count, millis, percent, timestamp};

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    crate::encoding::escape(text, Markup::Html)
}

/// Marks for a JSON rendering: concrete body path (without the `body` prefix) to a CSS class.
pub type Marks = HashMap<String, &'static str>;

/// A piece of text, marked when it was between backticks (a path or a value, shown as code).
pub struct TextPart {
    pub code: bool,
    pub text: String,
}

/// `text with `code` in it` as pieces, for a template to escape each and set the code ones as code.
pub fn code_spans(text: &str) -> Vec<TextPart> {
    text.split('`')
        .enumerate()
        .filter(|(_, text)| !text.is_empty())
        .map(|(index, text)| TextPart {
            code: index % 2 == 1,
            text: text.to_string(),
        })
        .collect()
}

/// The CSS class that marks a difference of this kind.
pub fn mark_class(kind: DiffKind) -> &'static str {
    match kind {
        DiffKind::ValueChanged | DiffKind::Slower => "mark-changed",
        DiffKind::TypeChanged => "mark-type",
        DiffKind::Missing => "mark-missing",
        DiffKind::Extra => "mark-extra",
        DiffKind::ArrayLength | DiffKind::ArrayOrder => "mark-array",
    }
}

/// Pretty-prints JSON as escaped HTML, wrapping each marked value in `<span class="mark …">`.
pub fn json_html(value: &Value, marks: &Marks) -> String {
    let mut out = String::new();
    render_value(value, "", 0, marks, &mut out);
    out
}

fn render_value(value: &Value, pointer: &str, depth: usize, marks: &Marks, out: &mut String) {
    let mark = marks.get(pointer);
    if let Some(class) = mark {
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            r#"<span class="mark {class}" data-path="{}">"#,
            escape(pointer)
        );
    }
    let indent = |depth: usize| "  ".repeat(depth);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                out.push('\n');
                out.push_str(&indent(depth + 1));
                let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                let _ = write!(
                    out,
                    r#"<span class="j-key">{}</span>: "#,
                    escape(&quoted(key))
                );
                render_value(item, &child, depth + 1, marks, out);
                if i + 1 < map.len() {
                    out.push(',');
                }
            }
            out.push('\n');
            out.push_str(&indent(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push('\n');
                out.push_str(&indent(depth + 1));
                render_value(item, &format!("{pointer}/{i}"), depth + 1, marks, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
            }
            out.push('\n');
            out.push_str(&indent(depth));
            out.push(']');
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        Value::String(text) => {
            let _ = write!(
                out,
                r#"<span class="j-str">{}</span>"#,
                escape(&quoted(text))
            );
        }
        Value::Number(n) => {
            let _ = write!(out, r#"<span class="j-num">{n}</span>"#);
        }
        Value::Bool(b) => {
            let _ = write!(out, r#"<span class="j-lit">{b}</span>"#);
        }
        Value::Null => out.push_str(r#"<span class="j-lit">null</span>"#),
    }
    if mark.is_some() {
        out.push_str("</span>");
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// A line of a unified diff, classed by what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffLine {
    pub class: &'static str,
    pub text: String,
}

/// The unified diff of two texts (three lines of context), line by line.
pub fn unified_diff(primary: &str, other: &str, left: &str, right: &str) -> Vec<DiffLine> {
    let diff = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_millis(200))
        .diff_lines(primary, other);
    let rendered = diff
        .unified_diff()
        .context_radius(3)
        .header(left, right)
        .to_string();
    rendered
        .lines()
        .map(|line| DiffLine {
            class: match line.as_bytes().first() {
                Some(b'+') if !line.starts_with("+++") => "add",
                Some(b'-') if !line.starts_with("---") => "del",
                Some(b'@') => "hunk",
                _ => "ctx",
            },
            text: line.to_string(),
        })
        .collect()
}

/// A value split around the part that differs from the other side's: `before` and `after` are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub before: String,
    pub changed: String,
    pub after: String,
}

impl Split {
    /// A value with no other side to compare: all of it differs.
    pub fn whole(value: &str) -> Self {
        Self {
            before: String::new(),
            changed: value.to_string(),
            after: String::new(),
        }
    }
}

/// Both values split around what differs between them: the longest shared start and end (whole characters)
/// are kept apart from the middle, which is what a reader looks at.
pub fn split_difference(primary: &str, candidate: &str) -> (Split, Split) {
    let prefix: usize = primary
        .chars()
        .zip(candidate.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    let (rest_a, rest_b) = (&primary[prefix..], &candidate[prefix..]);
    let suffix: usize = rest_a
        .chars()
        .rev()
        .zip(rest_b.chars().rev())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    let split = |value: &str| Split {
        before: value[..prefix].to_string(),
        changed: value[prefix..value.len() - suffix].to_string(),
        after: value[value.len() - suffix..].to_string(),
    };
    (split(primary), split(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_leaves_no_markup() {
        let hostile = r#""><img src=x onerror=alert(1)><script>alert('x')</script>&"#;
        let escaped = escape(hostile);
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('"'));
        assert_eq!(escape("a & b"), "a &amp; b");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.0004), "<0.1%");
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(percent(0.99999), ">99.9%");
        assert_eq!(millis(0.25), "250 µs");
        assert_eq!(millis(12.34), "12.3 ms");
        assert_eq!(millis(1250.0), "1.25 s");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
    }

    #[test]
    fn json_renders_escaped_with_marks() {
        let value = json!({"user": {"name": "<script>x</script>", "age": 3}, "tags": ["a"]});
        let mut marks = Marks::new();
        marks.insert("/user/name".to_string(), "mark-changed");
        marks.insert("/tags".to_string(), "mark-array");
        let html = json_html(&value, &marks);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains(r#"<span class="mark mark-changed" data-path="/user/name">"#));
        assert!(html.contains(r#"<span class="mark mark-array" data-path="/tags">"#));
        assert_eq!(html.matches("<span class=\"mark ").count(), 2);
    }

    #[test]
    fn unified_diffs_class_their_lines() {
        let lines = unified_diff("a\nb\nc\n", "a\nB\nc\n", "primary", "candidate");
        let classes: Vec<&str> = lines.iter().map(|l| l.class).collect();
        assert!(classes.contains(&"del") && classes.contains(&"add") && classes.contains(&"hunk"));
        assert!(lines.iter().any(|l| l.text == "-b"));
    }

    #[test]
    fn values_split_around_what_differs() {
        let (a, b) = split_difference("price: 12.50 EUR", "price: 13.50 EUR");
        assert_eq!(
            (a.before.as_str(), a.changed.as_str(), a.after.as_str()),
            ("price: 1", "2", ".50 EUR")
        );
        assert_eq!(b.changed, "3");
        let (a, b) = split_difference("\"ada\"", "\"ada lovelace\"");
        assert_eq!((a.changed.as_str(), b.changed.as_str()), ("", " lovelace"));
        let (a, b) = split_difference("é1é", "é2é");
        assert_eq!(
            (a.before.as_str(), a.changed.as_str(), b.changed.as_str()),
            ("é", "1", "2")
        );
        let (a, _) = split_difference("aa", "aaa");
        assert_eq!(format!("{}{}{}", a.before, a.changed, a.after), "aa");
    }
}

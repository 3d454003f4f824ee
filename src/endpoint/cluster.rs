//! Endpoint templates learned from traffic: a path position that sees more than a threshold of distinct literal
//! values (slugs, user names, dates, file names) becomes `{param}`. The values are counted as keyed hashes and
//! never kept, since paths can carry tokens.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use serde::Serialize;

use crate::endpoint::pattern::{is_placeholder, path_segments, templated_segment};

/// The placeholder a learned position becomes.
pub const PARAM: &str = "{param}";

/// Positions of a path that take part in learning; past them a path's segments are kept as they are (the
/// endpoint cap then bounds what they can make), so that a path of thousands of segments costs no more than
/// one of a few.
const MAX_LEARNED_POSITIONS: usize = 32;

/// A learned template: in paths of `method` with `segments` segments whose earlier segments make `prefix`
/// (`/users`, or empty for the first segment), the next segment is a parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LearnedTemplate {
    pub method: String,
    pub segments: u32,
    pub prefix: String,
}

impl LearnedTemplate {
    /// The 0-based position of the generalised segment.
    pub fn position(&self) -> usize {
        if self.prefix.is_empty() {
            0
        } else {
            path_segments(&self.prefix).count()
        }
    }

    /// How the template reads: `GET /users/{param}/*` (one `*` per segment after the generalised one).
    pub fn display(&self) -> String {
        let after = (self.segments as usize).saturating_sub(self.position() + 1);
        format!(
            "{} {}/{PARAM}{}",
            self.method,
            self.prefix,
            "/*".repeat(after)
        )
    }

    fn key(&self) -> String {
        key(&self.method, self.segments as usize, &self.prefix)
    }
}

/// The lookup key of one position: method, segment count and the template before it.
fn key(method: &str, segments: usize, prefix: &str) -> String {
    format!("{method} {segments} {prefix}")
}

/// Learned templates by key, for naming and renaming.
#[derive(Clone, Debug, Default)]
pub struct TemplateSet {
    keys: HashSet<String>,
    /// Method and segment count of each template, so that names no template can touch are left at once.
    shapes: HashSet<(String, usize)>,
}

impl TemplateSet {
    pub fn new(templates: impl IntoIterator<Item = LearnedTemplate>) -> Self {
        let mut set = Self::default();
        for template in templates {
            set.insert(&template);
        }
        set
    }

    fn insert(&mut self, template: &LearnedTemplate) -> bool {
        self.shapes
            .insert((template.method.clone(), template.segments as usize));
        self.keys.insert(template.key())
    }

    fn contains(&self, method: &str, segments: usize, prefix: &str) -> bool {
        self.keys.contains(&key(method, segments, prefix))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The name an endpoint name made before these templates were learned has now (`GET /users/alice/repos`
    /// gives `GET /users/{param}/repos`); names that are not a method and a path, and names no template
    /// touches, are returned as they are.
    pub fn rename<'a>(&self, name: &'a str) -> Cow<'a, str> {
        let Some((method, path)) = name.split_once(' ') else {
            return Cow::Borrowed(name);
        };
        if !path.starts_with('/') || path == "/" || self.is_empty() {
            return Cow::Borrowed(name);
        }
        let segments: Vec<&str> = path_segments(path).collect();
        if !self.shapes.contains(&(method.to_string(), segments.len())) {
            return Cow::Borrowed(name);
        }
        let mut prefix = String::with_capacity(path.len());
        let mut changed = false;
        for (position, segment) in segments.iter().enumerate() {
            let generalise = position < MAX_LEARNED_POSITIONS
                && !is_placeholder(segment)
                && self.contains(method, segments.len(), &prefix);
            prefix.push('/');
            if generalise {
                prefix.push_str(PARAM);
                changed = true;
            } else {
                prefix.push_str(segment);
            }
        }
        if changed {
            Cow::Owned(format!("{method} {prefix}"))
        } else {
            Cow::Borrowed(name)
        }
    }
}

/// Learns templates from the paths it names.
#[derive(Debug)]
pub struct Clusterer {
    /// More distinct literals than this at one position make it a parameter.
    threshold: usize,
    /// Most positions counted at once; past it new positions are not counted (the endpoint cap bounds them).
    max_counting: usize,
    /// Keys the literal hashes (SipHash with a random key of this process): equal values hash equal here and
    /// nowhere else.
    hasher: RandomState,
    learned: TemplateSet,
    /// In learning order, for the dashboard and the store.
    templates: Vec<LearnedTemplate>,
    /// Templates learned here and not yet stored.
    fresh: Vec<LearnedTemplate>,
    /// Distinct literal hashes per position still being counted, sorted, at most `threshold + 1`.
    counting: HashMap<String, Vec<u64>>,
}

impl Clusterer {
    pub fn new(threshold: usize, max_counting: usize) -> Self {
        Self {
            threshold: threshold.max(1),
            max_counting,
            hasher: RandomState::new(),
            learned: TemplateSet::default(),
            templates: Vec::new(),
            fresh: Vec::new(),
            counting: HashMap::new(),
        }
    }

    /// The template of `path` (identifiers as `{id}`, learned positions as `{param}`), counting its literal
    /// segments and learning a position when it passes the threshold.
    pub fn template(&mut self, method: &str, path: &str) -> String {
        if path.is_empty() || path == "/" {
            return "/".to_string();
        }
        let segments: Vec<&str> = path_segments(path).collect();
        let count = segments.len();
        let mut prefix = String::with_capacity(path.len());
        for (position, raw) in segments.iter().enumerate() {
            let segment = templated_segment(raw);
            let generalise = position < MAX_LEARNED_POSITIONS
                && !is_placeholder(&segment)
                && self.observe(method, count, &prefix, &segment);
            prefix.push('/');
            prefix.push_str(if generalise { PARAM } else { &segment });
        }
        prefix
    }

    /// Counts one literal at a position; whether the position is (now) a parameter.
    fn observe(&mut self, method: &str, segments: usize, prefix: &str, literal: &str) -> bool {
        let key = key(method, segments, prefix);
        if self.learned.keys.contains(&key) {
            return true;
        }
        if !self.counting.contains_key(&key) && self.counting.len() >= self.max_counting {
            return false;
        }
        let hash = self.hasher.hash_one(literal);
        let seen = self.counting.entry(key).or_default();
        if let Err(at) = seen.binary_search(&hash) {
            seen.insert(at, hash);
        }
        if seen.len() <= self.threshold {
            return false;
        }
        self.learn(LearnedTemplate {
            method: method.to_string(),
            segments: segments as u32,
            prefix: prefix.to_string(),
        });
        true
    }

    fn learn(&mut self, template: LearnedTemplate) {
        if !self.learned.insert(&template) {
            return;
        }
        self.counting.remove(&template.key());
        // Positions after this one were counted under each of its literal values; under `{param}` they start
        // again, and the old counts would only hold memory.
        let shape = key(&template.method, template.segments as usize, "");
        let under = format!("{}/", template.prefix);
        self.counting.retain(|other, _| {
            !(other.starts_with(&shape) && other[shape.len()..].starts_with(&under))
        });
        tracing::info!(template = %template.display(), "endpoint template learned");
        self.templates.push(template.clone());
        self.fresh.push(template);
    }

    /// Takes templates learned elsewhere (another replica, an earlier start) as if learned here.
    pub fn adopt(&mut self, templates: impl IntoIterator<Item = LearnedTemplate>) {
        for template in templates {
            if self.learned.insert(&template) {
                self.counting.remove(&template.key());
                self.templates.push(template);
            }
        }
    }

    /// Templates learned here since the last call, to be stored.
    pub fn take_fresh(&mut self) -> Vec<LearnedTemplate> {
        std::mem::take(&mut self.fresh)
    }

    /// Every template known, in learning order.
    pub fn templates(&self) -> &[LearnedTemplate] {
        &self.templates
    }

    /// Forgets everything: a new run learns afresh.
    pub fn reset(&mut self) {
        self.learned = TemplateSet::default();
        self.templates.clear();
        self.fresh.clear();
        self.counting.clear();
    }

    /// Positions being counted now.
    pub fn counting(&self) -> usize {
        self.counting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks for the template of `count` GET paths, `path(0)` on, which teaches the clusterer.
    fn learn_from(clusterer: &mut Clusterer, count: usize, path: impl Fn(usize) -> String) {
        for n in 0..count {
            clusterer.template("GET", &path(n));
        }
    }

    /// Asks for each GET path's template in turn (asking teaches too, so the order counts) and checks it.
    fn assert_templates(clusterer: &mut Clusterer, expected: &[(&str, &str)]) {
        for (path, template) in expected {
            assert_eq!(clusterer.template("GET", path), *template, "GET {path}");
        }
    }

    /// Teaches the clusterer `count` GET paths, `{slug}` in `pattern` replaced by a distinct word each time.
    fn learn_slugs(clusterer: &mut Clusterer, count: usize, pattern: &str) {
        learn_from(clusterer, count, |n| pattern.replace("{slug}", &words(n)));
    }

    #[test]
    fn slugs_become_a_parameter_past_the_threshold() {
        let mut clusterer = Clusterer::new(50, 1000);
        for n in 0..50 {
            assert_eq!(
                clusterer.template("GET", &format!("/articles/my-post-number-{}", words(n))),
                format!("/articles/my-post-number-{}", words(n))
            );
        }
        assert!(clusterer.templates().is_empty());
        // The 51st distinct slug makes the position a parameter, for it and for every later one.
        assert_templates(
            &mut clusterer,
            &[
                ("/articles/another-post", "/articles/{param}"),
                ("/articles/my-post-number-a", "/articles/{param}"),
            ],
        );
        assert_eq!(clusterer.templates().len(), 1);
        assert_eq!(clusterer.templates()[0].display(), "GET /articles/{param}");
        assert_eq!(clusterer.take_fresh().len(), 1);
        assert!(clusterer.take_fresh().is_empty());
    }

    #[test]
    fn repeated_values_do_not_count_twice() {
        let mut clusterer = Clusterer::new(3, 1000);
        for _ in 0..100 {
            for name in ["alice", "bob", "carol"] {
                assert_eq!(
                    clusterer.template("GET", &format!("/users/{name}")),
                    format!("/users/{name}")
                );
            }
        }
        assert!(clusterer.templates().is_empty());
        assert_eq!(clusterer.template("GET", "/users/dave"), "/users/{param}");
    }

    #[test]
    fn usernames_in_the_middle_keep_what_follows() {
        let mut clusterer = Clusterer::new(50, 1000);
        learn_slugs(&mut clusterer, 200, "/users/{slug}/repos");
        assert_templates(
            &mut clusterer,
            &[
                ("/users/alice/repos", "/users/{param}/repos"),
                ("/users/alice/stars", "/users/{param}/stars"),
            ],
        );
        assert_eq!(clusterer.templates()[0].display(), "GET /users/{param}/*");
        assert_eq!(clusterer.templates()[0].position(), 1);
        // The counts of the third segment under each user name were let go when the name became a parameter.
        assert!(clusterer.counting() <= 4, "{}", clusterer.counting());
    }

    #[test]
    fn dates_and_file_names_generalise_but_identifiers_are_ids_at_once() {
        let mut clusterer = Clusterer::new(50, 1000);
        assert_templates(
            &mut clusterer,
            &[
                ("/orders/123", "/orders/{id}"),
                ("/files/42.json", "/files/{id}.json"),
            ],
        );
        learn_from(&mut clusterer, 60, |day| {
            format!("/reports/2026-{:02}-{:02}", 1 + day / 28, 1 + day % 28)
        });
        assert_eq!(
            clusterer.template("GET", "/reports/2027-01-01"),
            "/reports/{param}"
        );
        learn_slugs(&mut clusterer, 60, "/files/report-{slug}.pdf");
        assert_templates(
            &mut clusterer,
            &[
                ("/files/summary.docx", "/files/{param}"),
                // Identifiers never counted as literals: `/files/{id}.json` is still its own name.
                ("/files/43.json", "/files/{id}.json"),
            ],
        );
    }

    #[test]
    fn methods_segment_counts_and_prefixes_are_counted_apart() {
        let mut clusterer = Clusterer::new(10, 1000);
        learn_slugs(&mut clusterer, 11, "/tags/{slug}");
        assert_eq!(clusterer.template("GET", "/tags/new"), "/tags/{param}");
        // Another method, another segment count, another prefix: not learned.
        assert_eq!(clusterer.template("POST", "/tags/new"), "/tags/new");
        assert_templates(
            &mut clusterer,
            &[
                ("/tags/new/edit", "/tags/new/edit"),
                ("/labels/new", "/labels/new"),
            ],
        );
        // Mixed: a low-cardinality version segment stays, the name after it generalises.
        learn_from(&mut clusterer, 40, |n| {
            format!("/api/v{}/teams/{}", n % 2 + 1, words(n))
        });
        assert_templates(
            &mut clusterer,
            &[
                ("/api/v1/teams/red", "/api/v1/teams/{param}"),
                ("/api/v2/teams/red", "/api/v2/teams/{param}"),
                ("/api/v3/teams/red", "/api/v3/teams/red"),
            ],
        );
        // Case matters: `Alice` and `alice` are two values.
        let mut cased = Clusterer::new(1, 1000);
        assert_eq!(cased.template("GET", "/u/alice"), "/u/alice");
        assert_eq!(cased.template("GET", "/u/Alice"), "/u/{param}");
    }

    #[test]
    fn counting_is_bounded() {
        let mut clusterer = Clusterer::new(50, 10);
        learn_slugs(&mut clusterer, 1000, "/{slug}/x/y/z");
        assert!(clusterer.counting() <= 10);
    }

    #[test]
    fn templates_from_elsewhere_are_adopted_and_reset_forgets() {
        let mut clusterer = Clusterer::new(50, 1000);
        let template = LearnedTemplate {
            method: "GET".into(),
            segments: 3,
            prefix: "/users".into(),
        };
        clusterer.adopt([template.clone()]);
        assert_eq!(
            clusterer.template("GET", "/users/alice/repos"),
            "/users/{param}/repos"
        );
        assert!(clusterer.take_fresh().is_empty());
        clusterer.reset();
        assert_eq!(
            clusterer.template("GET", "/users/alice/repos"),
            "/users/alice/repos"
        );
    }

    #[test]
    fn names_made_before_learning_are_renamed() {
        let set = TemplateSet::new([
            LearnedTemplate {
                method: "GET".into(),
                segments: 3,
                prefix: "/users".into(),
            },
            LearnedTemplate {
                method: "GET".into(),
                segments: 3,
                prefix: "/users/{param}".into(),
            },
        ]);
        for (name, renamed) in [
            ("GET /users/alice/repos", "GET /users/{param}/{param}"),
            ("GET /users/{id}/repos", "GET /users/{id}/repos"),
            ("POST /users/alice/repos", "POST /users/alice/repos"),
            ("GET /users/alice", "GET /users/alice"),
            ("GET user-profile", "GET user-profile"),
            ("GET {other}", "GET {other}"),
        ] {
            assert_eq!(set.rename(name), renamed);
        }
        assert!(matches!(set.rename("GET /orders/a/b"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_path_of_many_segments_is_cheap() {
        let mut clusterer = Clusterer::new(2, 1000);
        let path = "/a".repeat(10_000);
        let template = clusterer.template("GET", &path);
        assert_eq!(template, path);
        assert!(clusterer.counting() <= MAX_LEARNED_POSITIONS);
    }

    /// A distinct word-like slug per number (no digits, so never an identifier).
    fn words(n: usize) -> String {
        let letters = b"abcdefghijklmnopqrstuvwxyz";
        let mut n = n;
        let mut out = String::new();
        loop {
            out.push(letters[n % 26] as char);
            n /= 26;
            if n == 0 {
                break;
            }
        }
        out
    }
}

//! User rules, per endpoint pattern and path pattern: ignore, noise, numeric tolerance, unordered array,
//! presence-only and type-only; read from a TOML file (`--rules`) or added through the API. The file also
//! holds per-endpoint shadow sample rates (`[[sample]]`) and per-target request rewrites (`[[rewrite]]`).
//!
//! ```toml
//! [[rule]]
//! endpoint = "GET /users/{id}"   # optional: every endpoint when absent
//! path = "body/updated_at"
//! action = "noise"
//!
//! [[rule]]
//! path = "body/items/*/price"
//! action = "tolerance"
//! absolute = 0.01                # and/or relative = 0.001
//!
//! [[rule]]                       # an intended change: reported apart, not a regression
//! endpoint = "GET /users/{id}"
//! path = "body/name"
//! action = "accept"
//! kind = "missing"               # optional: only this kind of difference (another is a regression again)
//! compat = "breaking"            # optional: only this compatibility class
//! note = "renamed to full_name; clients told in the 2026-11 changelog"
//! ```
//!
//! In patterns, `*` matches one segment (or, inside a segment, any characters) and `**` any number of segments;
//! `{key}` matches any object key (a map's position, learned as `{key}` or not yet).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analysis::compat::Compat;
use crate::analysis::diff::DiffKind;
use crate::analysis::rewrite::{Rewrite, RewriteSpec, Rewrites};

mod glob;
mod value_patterns;
pub use glob::{EndpointGlob, Glob};
pub use value_patterns::ValuePatternSpec;

/// What a rule does at the paths it matches.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleAction {
    /// Never compare these paths (nor anything below them).
    Ignore,
    /// Differences here are noise, whatever the counts say.
    Noise,
    /// Numbers within the tolerance are equal: `|a - b| <= absolute` or `|a - b| <= relative * max(|a|, |b|)`.
    Tolerance {
        absolute: Option<f64>,
        relative: Option<f64>,
    },
    /// The array here is compared as a multiset: order does not matter.
    Unordered,
    /// Only presence matters: a value here may change in any way.
    PresenceOnly,
    /// Only the JSON type matters: a value here may change as long as its type does not.
    TypeOnly,
    /// The candidate's difference here is intended: it is reported as accepted, not as a regression, as long
    /// as it stays of this kind and class (when given).
    Accept {
        kind: Option<DiffKind>,
        compat: Option<Compat>,
    },
}

impl RuleAction {
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    fn kind(&self) -> ActionKind {
        match self {
            RuleAction::Ignore => ActionKind::Ignore,
            RuleAction::Noise => ActionKind::Noise,
            RuleAction::Tolerance { .. } => ActionKind::Tolerance,
            RuleAction::Unordered => ActionKind::Unordered,
            RuleAction::PresenceOnly => ActionKind::PresenceOnly,
            RuleAction::TypeOnly => ActionKind::TypeOnly,
            RuleAction::Accept { .. } => ActionKind::Accept,
        }
    }

    /// Whether two numbers count as equal under a tolerance.
    pub fn within_tolerance(absolute: Option<f64>, relative: Option<f64>, a: f64, b: f64) -> bool {
        let delta = (a - b).abs();
        absolute.is_some_and(|tolerance| delta <= tolerance)
            || relative.is_some_and(|tolerance| delta <= tolerance * a.abs().max(b.abs()))
    }
}

/// The action names a rule may give.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Ignore,
    Noise,
    Tolerance,
    Unordered,
    PresenceOnly,
    TypeOnly,
    Accept,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Ignore => "ignore",
            ActionKind::Noise => "noise",
            ActionKind::Tolerance => "tolerance",
            ActionKind::Unordered => "unordered",
            ActionKind::PresenceOnly => "presence-only",
            ActionKind::TypeOnly => "type-only",
            ActionKind::Accept => "accept",
        }
    }
}

/// A rule as written in a rules file or sent to the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Endpoint pattern; every endpoint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path pattern.
    pub path: String,
    pub action: ActionKind,
    /// Tolerance rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<f64>,
    /// Tolerance rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
    /// Accept rules only: the kind of difference accepted (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiffKind>,
    /// Accept rules only: the compatibility class accepted (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat: Option<Compat>,
    /// Why: shown beside what the rule decides, in the reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The longest note a rule may carry.
pub const MAX_NOTE_CHARS: usize = 500;

impl RuleSpec {
    /// A rule without tolerance values.
    pub fn new(endpoint: Option<String>, path: impl Into<String>, action: ActionKind) -> Self {
        Self {
            endpoint,
            path: path.into(),
            action,
            absolute: None,
            relative: None,
            kind: None,
            compat: None,
            note: None,
        }
    }

    /// A rule accepting the candidate's difference of `kind` and `compat` at `path` as intended.
    pub fn accept(
        endpoint: Option<String>,
        path: impl Into<String>,
        kind: Option<DiffKind>,
        compat: Option<Compat>,
        note: Option<String>,
    ) -> Self {
        Self {
            kind,
            compat,
            note: note
                .map(|note| note.trim().to_string())
                .filter(|note| !note.is_empty()),
            ..Self::new(endpoint, path, ActionKind::Accept)
        }
    }

    fn to_action(&self) -> Result<RuleAction, String> {
        let has_tolerance = self.absolute.is_some() || self.relative.is_some();
        if self
            .note
            .as_ref()
            .is_some_and(|note| note.chars().count() > MAX_NOTE_CHARS)
        {
            return Err(format!("a note is at most {MAX_NOTE_CHARS} characters"));
        }
        if self.action != ActionKind::Accept && (self.kind.is_some() || self.compat.is_some()) {
            return Err(format!(
                "`kind` and `compat` apply to accept rules, not to {}",
                self.action.as_str()
            ));
        }
        Ok(match self.action {
            ActionKind::Tolerance => {
                if !has_tolerance {
                    return Err("a tolerance rule needs `absolute` or `relative`".to_string());
                }
                if [self.absolute, self.relative]
                    .into_iter()
                    .flatten()
                    .any(|t| !t.is_finite() || t < 0.0)
                {
                    return Err("a tolerance must be a finite number of 0 or more".to_string());
                }
                RuleAction::Tolerance {
                    absolute: self.absolute,
                    relative: self.relative,
                }
            }
            _ if has_tolerance => {
                return Err(format!(
                    "`absolute` and `relative` apply to tolerance rules, not to {}",
                    self.action.as_str()
                ));
            }
            ActionKind::Ignore => RuleAction::Ignore,
            ActionKind::Noise => RuleAction::Noise,
            ActionKind::Unordered => RuleAction::Unordered,
            ActionKind::PresenceOnly => RuleAction::PresenceOnly,
            ActionKind::TypeOnly => RuleAction::TypeOnly,
            ActionKind::Accept => RuleAction::Accept {
                kind: self.kind,
                compat: self.compat,
            },
        })
    }
}

/// A parsed rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub spec: RuleSpec,
    action: RuleAction,
    endpoint: EndpointGlob,
    path: Glob,
}

impl Rule {
    pub fn new(spec: RuleSpec) -> Result<Self, String> {
        let endpoint = match &spec.endpoint {
            Some(text) => EndpointGlob::parse(text)?,
            None => EndpointGlob::any(),
        };
        let path = Glob::parse(&spec.path)?;
        let root = spec
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        if !matches!(root, "status" | "error" | "header" | "body" | "*" | "**") {
            return Err(format!(
                "path `{}` must start with status, error, header/ or body (or a wildcard)",
                spec.path
            ));
        }
        let action = spec.to_action()?;
        Ok(Self {
            spec,
            action,
            endpoint,
            path,
        })
    }

    pub fn action(&self) -> &RuleAction {
        &self.action
    }

    pub fn applies_to_endpoint(&self, endpoint: &str) -> bool {
        self.endpoint.matches(endpoint)
    }
}

/// Why a rules file was rejected: which line, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RulesError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Every rule in force, in order; the first rule that matches a path decides.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Per-endpoint shadow sample rates (`[[sample]]`), the first that matches deciding.
    sampling: Vec<SampleRate>,
    /// What secondary or candidate is sent instead of the caller's request (`[[rewrite]]`).
    rewrites: Rewrites,
    /// Named patterns whose matches are stored only redacted (`[[redact_value]]`), checked.
    value_patterns: Vec<ValuePatternSpec>,
}

/// A `[[sample]]` table: the share of an endpoint's requests that are shadowed (0 keeps them to primary).
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRate {
    pub endpoint: EndpointGlob,
    pub rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleSpec {
    endpoint: String,
    rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RuleSpec>>,
    #[serde(default)]
    sample: Vec<toml::Spanned<SampleSpec>>,
    #[serde(default)]
    rewrite: Vec<toml::Spanned<RewriteSpec>>,
    #[serde(default)]
    redact_value: Vec<toml::Spanned<ValuePatternSpec>>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            sampling: Vec::new(),
            rewrites: Rewrites::default(),
            value_patterns: Vec::new(),
        }
    }

    /// The same rules with other ones added after them (stored rules after the file's); the sample rates stay.
    pub fn with_more(&self, more: impl IntoIterator<Item = Rule>) -> Self {
        let mut merged = self.clone();
        merged.rules.extend(more);
        merged
    }

    /// The per-endpoint shadow sample rates, in the file's order.
    pub fn sampling(&self) -> &[SampleRate] {
        &self.sampling
    }

    /// Reads a rules file, rejecting it with the line and reason of the first problem.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| RulesError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the rules file: {error}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Reads the rules file if there is one; no file is no rules.
    pub fn load_optional(path: Option<&Path>) -> Result<Self, RulesError> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, RulesError> {
        let error_at = |offset: usize, message: String| RulesError {
            file: file.to_string(),
            line: text[..offset.min(text.len())].matches('\n').count() + 1,
            message,
        };
        let parsed: RulesFile = toml::from_str(text).map_err(|error| {
            let offset = error.span().map_or(0, |span| span.start);
            error_at(offset, error.message().trim().to_string())
        })?;
        let mut rules = Vec::with_capacity(parsed.rule.len());
        for spanned in parsed.rule {
            let offset = spanned.span().start;
            let rule =
                Rule::new(spanned.into_inner()).map_err(|message| error_at(offset, message))?;
            rules.push(rule);
        }
        let mut sampling = Vec::with_capacity(parsed.sample.len());
        for spanned in parsed.sample {
            let offset = spanned.span().start;
            let spec = spanned.into_inner();
            if !(0.0..=1.0).contains(&spec.rate) {
                return Err(error_at(
                    offset,
                    format!("sample rate {} is out of range; expected 0 to 1", spec.rate),
                ));
            }
            let endpoint = EndpointGlob::parse_template(&spec.endpoint)
                .map_err(|message| error_at(offset, message))?;
            sampling.push(SampleRate {
                endpoint,
                rate: spec.rate,
            });
        }
        let mut rewrites = Vec::with_capacity(parsed.rewrite.len());
        for spanned in parsed.rewrite {
            let offset = spanned.span().start;
            rewrites.push(
                Rewrite::new(spanned.into_inner()).map_err(|message| error_at(offset, message))?,
            );
        }
        let mut value_patterns = Vec::with_capacity(parsed.redact_value.len());
        for spanned in parsed.redact_value {
            let offset = spanned.span().start;
            let spec = spanned.into_inner();
            spec.check().map_err(|message| error_at(offset, message))?;
            value_patterns.push(spec);
        }
        Ok(Self {
            rules,
            sampling,
            rewrites: Rewrites::new(rewrites),
            value_patterns,
        })
    }

    /// The named patterns whose matches are redacted by value.
    pub fn value_patterns(&self) -> &[ValuePatternSpec] {
        &self.value_patterns
    }

    /// The per-target request rewrites.
    pub fn rewrites(&self) -> &Rewrites {
        &self.rewrites
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that apply to one endpoint, for the analysis of its exchanges.
    pub fn for_endpoint(&self, endpoint: &str) -> EndpointRules<'_> {
        EndpointRules {
            rules: self
                .rules
                .iter()
                .filter(|rule| rule.applies_to_endpoint(endpoint))
                .collect(),
        }
    }
}

/// The rules of one endpoint.
#[derive(Clone, Debug, Default)]
pub struct EndpointRules<'a> {
    rules: Vec<&'a Rule>,
}

impl EndpointRules<'_> {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action of the first rule whose pattern matches this exact path, of those that change comparisons
    /// (accept rules apply to the counts: [`Self::accepting`]).
    pub fn at(&self, generalised_path: &str) -> Option<&RuleAction> {
        self.rules
            .iter()
            .filter(|rule| !matches!(rule.action(), RuleAction::Accept { .. }))
            .find(|rule| rule.path.matches(generalised_path))
            .map(|rule| rule.action())
    }

    /// The action of the first ignore or noise rule covering this path or one of its ancestors.
    pub fn verdict_override(&self, generalised_path: &str) -> Option<&RuleAction> {
        self.rules
            .iter()
            .filter(|rule| matches!(rule.action(), RuleAction::Ignore | RuleAction::Noise))
            .find(|rule| rule.path.covers(generalised_path))
            .map(|rule| rule.action())
    }

    /// The first accept rule for this exact place, if its difference is still the one accepted: of the kind and
    /// class the rule names (a field accepted as `missing` that comes back as `type_changed` is not accepted).
    pub fn accepting(
        &self,
        generalised_path: &str,
        kind: DiffKind,
        compat: Option<Compat>,
    ) -> Option<&Rule> {
        self.rules.iter().copied().find(|rule| match rule.action() {
            RuleAction::Accept {
                kind: accepted_kind,
                compat: accepted_compat,
            } => {
                rule.path.matches(generalised_path)
                    && accepted_kind.is_none_or(|accepted| accepted == kind)
                    && accepted_compat.is_none_or(|accepted| Some(accepted) == compat)
            }
            _ => false,
        })
    }

    pub fn ignores(&self, generalised_path: &str) -> bool {
        matches!(
            self.verdict_override(generalised_path),
            Some(RuleAction::Ignore)
        )
    }

    /// Whether differences of `kind` at this path count, under the rules that can be applied to counts after
    /// the fact: ignore (nothing at or below the path counts), presence-only (at the path only presence counts,
    /// below it nothing) and type-only (at the path only type and presence count, below it nothing). Noise is
    /// decided by [`Self::verdict_override`]; tolerance and unordered apply to comparisons only.
    pub fn counts(&self, generalised_path: &str, kind: DiffKind) -> bool {
        let presence = matches!(kind, DiffKind::Missing | DiffKind::Extra);
        let typed = presence || kind == DiffKind::TypeChanged;
        for rule in &self.rules {
            if !rule.path.covers(generalised_path) {
                continue;
            }
            let exact = rule.path.matches(generalised_path);
            match rule.action() {
                RuleAction::Ignore => return false,
                RuleAction::PresenceOnly => return exact && presence,
                RuleAction::TypeOnly => return exact && typed,
                _ => {}
            }
        }
        true
    }
}

/// Rules written as a rules file (`[[rule]]` tables) that [`RuleSet::parse`] reads back: what the dashboard
/// decided, for `--rules` in CI.
pub fn rules_file(specs: &[RuleSpec]) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        rule: &'a [RuleSpec],
    }
    // Plain strings, numbers and enums always serialize.
    toml::to_string(&File { rule: specs }).unwrap_or_default()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} at {}",
            self.spec.action.as_str(),
            self.spec.endpoint.as_deref().unwrap_or("*"),
            self.spec.path
        )
    }
}

#[cfg(test)]
mod tests;

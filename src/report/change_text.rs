//! How a change reads: its places summed up (many under one parent with the same kind shown as the parent with
//! a count) and a one-line title ("`header/vary` missing on 11 endpoints").

use std::collections::{BTreeMap, BTreeSet};

use crate::analysis::compat::Compat;
use crate::analysis::diff::DiffKind;
use crate::report::changes::{ChangePlace, PlaceGroup};

/// Places under one parent with the same kind shown as one line from this many on.
pub const COLLAPSE_AT: usize = 3;
/// Place groups a title names before "and N more".
const TITLE_GROUPS: usize = 2;

/// What one distinct path of a change is, over its endpoints.
struct Distinct<'a> {
    compat: Compat,
    shapes: BTreeSet<Option<&'a str>>,
    endpoints: BTreeSet<&'a str>,
}

/// Distinct paths under one parent with one kind.
type Siblings<'a, 'b> = Vec<(&'a str, &'b Distinct<'a>)>;

/// The places of a change as a person reads them, most places first.
pub fn summary(places: &[ChangePlace]) -> Vec<PlaceGroup> {
    let mut distinct: BTreeMap<(&str, DiffKind), Distinct<'_>> = BTreeMap::new();
    for place in places {
        let entry = distinct
            .entry((place.path.as_str(), place.kind))
            .or_insert_with(|| Distinct {
                compat: place.compat,
                shapes: BTreeSet::new(),
                endpoints: BTreeSet::new(),
            });
        entry.compat = entry.compat.max(place.compat);
        entry.shapes.insert(place.shape.as_deref());
        entry.endpoints.insert(place.endpoint.as_str());
    }
    let mut siblings: BTreeMap<(Option<&str>, DiffKind), Siblings<'_, '_>> = BTreeMap::new();
    for ((path, kind), found) in &distinct {
        let parent = path.rsplit_once('/').map(|(parent, _)| parent);
        siblings
            .entry((parent, *kind))
            .or_default()
            .push((path, found));
    }
    let mut groups = Vec::new();
    for ((parent, kind), members) in siblings {
        match parent {
            Some(parent) if members.len() >= COLLAPSE_AT => {
                let shapes: BTreeSet<Option<&str>> = members
                    .iter()
                    .flat_map(|(_, found)| found.shapes.iter().copied())
                    .collect();
                let endpoints: BTreeSet<&str> = members
                    .iter()
                    .flat_map(|(_, found)| found.endpoints.iter().copied())
                    .collect();
                groups.push(PlaceGroup {
                    path: format!("{parent}/*"),
                    kind,
                    compat: members
                        .iter()
                        .map(|(_, found)| found.compat)
                        .max()
                        .unwrap_or(Compat::Changed),
                    shape: uniform(&shapes),
                    places: members.len(),
                    endpoints: endpoints.len(),
                });
            }
            _ => groups.extend(members.into_iter().map(|(path, found)| PlaceGroup {
                path: path.to_string(),
                kind,
                compat: found.compat,
                shape: uniform(&found.shapes),
                places: 1,
                endpoints: found.endpoints.len(),
            })),
        }
    }
    groups.sort_by(|a, b| {
        b.places
            .cmp(&a.places)
            .then_with(|| b.endpoints.cmp(&a.endpoints))
            .then_with(|| b.compat.cmp(&a.compat))
            .then_with(|| (a.path.as_str(), a.kind).cmp(&(b.path.as_str(), b.kind)))
    });
    groups
}

/// The one shape every place has, if they all have the same.
fn uniform(shapes: &BTreeSet<Option<&str>>) -> Option<String> {
    match shapes.iter().collect::<Vec<_>>().as_slice() {
        [Some(shape)] => Some(shape.to_string()),
        _ => None,
    }
}

/// One place group in words: "`body/price` number → string", "`body/user/*` missing ×20".
pub fn describe(group: &PlaceGroup) -> String {
    format!("`{}` {}", group.path, how(group))
}

/// How a place group changed, and how many places it stands for: "number → string", "missing ×20".
pub fn how(group: &PlaceGroup) -> String {
    let how = match (group.kind, group.shape.as_deref()) {
        (DiffKind::Slower, Some(shape)) => format!("slower ({shape})"),
        (DiffKind::Slower, None) => "slower".to_string(),
        (DiffKind::TypeChanged | DiffKind::ValueChanged, Some(shape)) => shape.to_string(),
        (DiffKind::ValueChanged, None) => "changed".to_string(),
        (DiffKind::TypeChanged, None) => "type changed".to_string(),
        (DiffKind::Missing, _) => "missing".to_string(),
        (DiffKind::Extra, _) => "extra".to_string(),
        (DiffKind::ArrayLength, _) => "length changed".to_string(),
        (DiffKind::ArrayOrder, _) => "order changed".to_string(),
    };
    if group.places > 1 {
        format!("{how} ×{}", group.places)
    } else {
        how
    }
}

/// The change in one line: its first place groups, where, and how many places trail it.
pub fn title(summary: &[PlaceGroup], endpoints: &[String], consequences: usize) -> String {
    let named: Vec<String> = summary.iter().take(TITLE_GROUPS).map(describe).collect();
    let mut title = named.join(", ");
    if summary.len() > TITLE_GROUPS {
        title.push_str(&format!(" and {} more", summary.len() - TITLE_GROUPS));
    }
    match endpoints {
        [only] => title.push_str(&format!(" on {only}")),
        many => title.push_str(&format!(" on {} endpoints", many.len())),
    }
    match consequences {
        0 => {}
        1 => title.push_str(", 1 place trailing it"),
        n => title.push_str(&format!(", {n} places trailing it")),
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(endpoint: &str, path: &str, kind: DiffKind, shape: Option<&str>) -> ChangePlace {
        ChangePlace {
            endpoint: endpoint.into(),
            path: path.into(),
            kind,
            compat: crate::analysis::compat::Compat::classify(kind, path, None, None),
            rate: 1.0,
            shape: shape.map(str::to_string),
            sample: None,
        }
    }

    #[test]
    fn many_fields_of_one_object_read_as_one_line() {
        let mut places: Vec<ChangePlace> = (0..20)
            .map(|n| {
                place(
                    "GET /u",
                    &format!("body/user/f{n}"),
                    DiffKind::Missing,
                    None,
                )
            })
            .collect();
        places.push(place(
            "GET /u",
            "body/user/id",
            DiffKind::TypeChanged,
            Some("number → string"),
        ));
        let summary = summary(&places);
        assert_eq!(summary.len(), 2);
        assert_eq!(describe(&summary[0]), "`body/user/*` missing ×20");
        assert_eq!(describe(&summary[1]), "`body/user/id` number → string");
        assert_eq!(
            title(&summary, &["GET /u".to_string()], 0),
            "`body/user/*` missing ×20, `body/user/id` number → string on GET /u"
        );
    }

    #[test]
    fn one_place_on_many_endpoints_is_one_line() {
        let places: Vec<ChangePlace> = (0..11)
            .map(|n| {
                place(
                    &format!("GET /e{n}"),
                    "header/vary",
                    DiffKind::Missing,
                    None,
                )
            })
            .collect();
        let endpoints: Vec<String> = places.iter().map(|p| p.endpoint.clone()).collect();
        let summary = summary(&places);
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].endpoints, 11);
        assert_eq!(
            title(&summary, &endpoints, 3),
            "`header/vary` missing on 11 endpoints, 3 places trailing it"
        );
    }
}

//! The object positions a run learned as maps (`key_positions`), read back for writers to adopt and for readers
//! to fold the places stored before a position was learned (`body/users/alice/name` read as
//! `body/users/{key}/name`), under the endpoint names the run's templates give.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use sqlx::{QueryBuilder, Row};

use crate::analysis::PathKey;
use crate::analysis::diff::DiffKind;
use crate::analysis::keys::{KeyPosition, LearnedKeys};
use crate::endpoint::cluster::TemplateSet;
use crate::store::queries::push_list;
use crate::store::{Pool, Store, StoreError, on_pool};

/// Positions read for one run at most: each endpoint follows a bounded number, and the endpoints are capped.
const MAX_POSITIONS_READ: i64 = 100_000;
/// Stored sample paths read to find those a folded place covers.
const MAX_SAMPLE_PATHS_READ: i64 = 20_000;
/// Stored places read for the writer's cap at start.
const MAX_PLACES_READ: i64 = 200_000;

/// The learned positions of every endpoint of a run, by the name readers give the endpoint.
#[derive(Clone, Debug, Default)]
pub struct KeyFolds {
    endpoints: HashMap<String, LearnedKeys>,
}

impl KeyFolds {
    /// `positions` under the names `templates` give their endpoints.
    pub fn new(positions: Vec<KeyPosition>, templates: &TemplateSet) -> Self {
        let mut endpoints: HashMap<String, LearnedKeys> = HashMap::new();
        for KeyPosition { endpoint, position } in positions {
            let name = templates.rename(&endpoint).into_owned();
            endpoints.entry(name).or_default().insert(position);
        }
        Self { endpoints }
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The learned positions of `endpoint` (a name as readers give it).
    pub fn of(&self, endpoint: &str) -> Option<&LearnedKeys> {
        self.endpoints.get(endpoint)
    }

    /// The place `path` of `endpoint` is read as.
    pub fn fold<'a>(&self, endpoint: &str, path: &'a str) -> Cow<'a, str> {
        match self.endpoints.get(endpoint) {
            Some(keys) => keys.fold(path),
            None => Cow::Borrowed(path),
        }
    }

    /// A stored signature read with its places folded (places that fold into one are one).
    pub fn fold_signature(&self, endpoint: &str, signature: Vec<PathKey>) -> Vec<PathKey> {
        let Some(keys) = self.endpoints.get(endpoint) else {
            return signature;
        };
        let folded: BTreeSet<PathKey> = signature
            .into_iter()
            .map(|(path, kind)| match keys.fold(&path) {
                Cow::Borrowed(_) => (path, kind),
                Cow::Owned(folded) => (folded, kind),
            })
            .collect();
        folded.into_iter().collect()
    }
}

impl Store {
    /// The object positions learned as maps in a run.
    pub async fn key_positions(&self, run_id: i64) -> Result<Vec<KeyPosition>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT endpoint, position FROM key_positions WHERE run_id = ");
            query.push_bind(run_id).push(" ORDER BY learned_at, endpoint, position LIMIT ").push_bind(MAX_POSITIONS_READ);
            let mut positions = Vec::new();
            for row in query.build().fetch_all(pool).await? {
                positions.push(KeyPosition { endpoint: row.try_get("endpoint")?, position: row.try_get("position")? });
            }
            Ok(positions)
        })
    }

    /// The run's learned positions by the names the run's `templates` give.
    pub async fn key_folds(
        &self,
        run_id: i64,
        templates: &TemplateSet,
    ) -> Result<KeyFolds, StoreError> {
        Ok(KeyFolds::new(self.key_positions(run_id).await?, templates))
    }

    /// The stored sample paths of `names` (the names rows of `endpoint` are stored under) that read as `path`:
    /// itself, and the per-key paths stored before a position was learned.
    pub(crate) async fn sample_paths_under(
        &self,
        run_id: i64,
        endpoint: &str,
        names: &[String],
        path: &str,
    ) -> Result<Vec<String>, StoreError> {
        let templates = TemplateSet::new(self.templates(run_id).await?);
        let folds = self.key_folds(run_id, &templates).await?;
        let Some(keys) = folds.of(endpoint) else {
            return Ok(vec![path.to_string()]);
        };
        let stored: Vec<String> = on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT DISTINCT path FROM sample_paths WHERE run_id = ");
            query.push_bind(run_id).push(" AND endpoint IN (");
            push_list(&mut query, names);
            query.push(") LIMIT ").push_bind(MAX_SAMPLE_PATHS_READ);
            let mut paths = Vec::new();
            for row in query.build().fetch_all(pool).await? {
                paths.push(row.try_get::<String, _>("path")?);
            }
            paths
        });
        let mut under: Vec<String> = stored
            .into_iter()
            .filter(|stored| keys.fold(stored) == path)
            .collect();
        if !under.iter().any(|stored| stored == path) {
            under.push(path.to_string());
        }
        Ok(under)
    }

    /// The places the run has stored per endpoint, as rows hold them.
    pub async fn stored_places(
        &self,
        run_id: i64,
    ) -> Result<Vec<(String, String, DiffKind)>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT DISTINCT endpoint, path, kind FROM path_counts WHERE run_id = ");
            query.push_bind(run_id).push(" LIMIT ").push_bind(MAX_PLACES_READ);
            let mut places = Vec::new();
            for row in query.build().fetch_all(pool).await? {
                let Some(kind) = DiffKind::parse(&row.try_get::<String, _>("kind")?) else { continue };
                places.push((row.try_get("endpoint")?, row.try_get("path")?, kind));
            }
            Ok(places)
        })
    }

    /// The places the run has stored per endpoint name as the analysis gives it (no template applied), those
    /// from before a map's position was learned folded into its `{key}` place: what a writer's cap starts from.
    pub async fn counted_places(
        &self,
        run_id: i64,
    ) -> Result<Vec<(String, String, DiffKind)>, StoreError> {
        let folds = KeyFolds::new(self.key_positions(run_id).await?, &TemplateSet::default());
        let places: BTreeSet<(String, String, DiffKind)> = self
            .stored_places(run_id)
            .await?
            .into_iter()
            .map(|(endpoint, path, kind)| {
                let path = folds.fold(&endpoint, &path).into_owned();
                (endpoint, path, kind)
            })
            .collect();
        Ok(places.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::cluster::LearnedTemplate;

    #[test]
    fn folds_follow_the_names_templates_give_and_merge_signature_places() {
        let templates = TemplateSet::new([LearnedTemplate {
            method: "GET".into(),
            segments: 2,
            prefix: "/teams".into(),
        }]);
        let folds = KeyFolds::new(
            vec![KeyPosition {
                endpoint: "GET /teams/core".into(),
                position: "body/users".into(),
            }],
            &templates,
        );
        assert!(folds.of("GET /teams/core").is_none());
        assert_eq!(
            folds.fold("GET /teams/{param}", "body/users/alice/name"),
            "body/users/{key}/name"
        );
        let signature = vec![
            ("body/users/alice/name".to_string(), DiffKind::ValueChanged),
            ("body/users/bob/name".to_string(), DiffKind::ValueChanged),
            ("body/version".to_string(), DiffKind::ValueChanged),
        ];
        assert_eq!(
            folds.fold_signature("GET /teams/{param}", signature.clone()),
            vec![
                ("body/users/{key}/name".to_string(), DiffKind::ValueChanged),
                ("body/version".to_string(), DiffKind::ValueChanged),
            ]
        );
        assert_eq!(
            folds.fold_signature("GET /other", signature.clone()),
            signature
        );
    }
}

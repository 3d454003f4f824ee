//! A GraphQL service rewritten, behind real GraphQL servers (async-graphql): queries reach every version and
//! mutations only primary (checked on each server's posts), endpoints are named by operation, persisted queries
//! work against servers that keep them, and an error list in the candidate's answers is a breaking change with
//! the data it nulled under it; the field the rewrite removed from the schema is a breaking difference of the
//! endpoint `GraphQL schema`; on both backends.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::apollo_persisted_queries::{
    ApolloPersistedQueries, LruCacheStorage,
};
use async_graphql::{
    BatchRequest, Context, EmptySubscription, ErrorExtensions, FieldResult, ID, Object, ObjectType,
    Schema, SimpleObject, SubscriptionType,
};
use http::Response;
use shadowdiff::analysis::compat::Compat;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::proxy::metrics::UnshadowedReason;

use crate::changes::{instance_with, report_of};
use crate::graphql::post_json;
use crate::support::db::TestDb;
use crate::support::stub::{Stub, full};

crate::support::on_both_backends!(a_graphql_rewrite_is_judged_by_operation,);

/// The posts one server holds; every version starts with the same twenty.
type Posts = Arc<Mutex<Vec<String>>>;

fn posts() -> Posts {
    Arc::new(Mutex::new((1..=20).map(|n| format!("Post {n}")).collect()))
}

/// The current version's post: it still has the field the rewrite removes.
#[derive(SimpleObject)]
#[graphql(name = "Post")]
struct PostV1 {
    id: ID,
    title: String,
    legacy_id: i32,
}

/// The rewrite's post.
#[derive(SimpleObject)]
#[graphql(name = "Post")]
struct PostV2 {
    id: ID,
    title: String,
}

fn find(context: &Context<'_>, id: &ID) -> Option<(usize, String)> {
    let posts = context.data_unchecked::<Posts>().lock().unwrap();
    let index: usize = id.parse().ok()?;
    posts
        .get(index.checked_sub(1)?)
        .map(|title| (index, title.clone()))
}

fn create(context: &Context<'_>, title: String) -> usize {
    let mut posts = context.data_unchecked::<Posts>().lock().unwrap();
    posts.push(title);
    posts.len()
}

struct QueryV1;

#[Object(name = "Query")]
impl QueryV1 {
    async fn post(&self, context: &Context<'_>, id: ID) -> Option<PostV1> {
        find(context, &id).map(|(index, title)| PostV1 {
            id: ID(index.to_string()),
            title,
            legacy_id: index as i32 + 1000,
        })
    }

    async fn all_posts(&self, context: &Context<'_>) -> Vec<ID> {
        let count = context.data_unchecked::<Posts>().lock().unwrap().len();
        (1..=count).map(|n| ID(n.to_string())).collect()
    }
}

struct MutationV1;

#[Object(name = "Mutation")]
impl MutationV1 {
    async fn create_post(&self, context: &Context<'_>, title: String) -> ID {
        ID(create(context, title).to_string())
    }
}

struct QueryV2;

#[Object(name = "Query")]
impl QueryV2 {
    /// Every fifth post fails to load in the rewrite.
    async fn post(&self, context: &Context<'_>, id: ID) -> FieldResult<Option<PostV2>> {
        let Some((index, title)) = find(context, &id) else {
            return Ok(None);
        };
        if index % 5 == 0 {
            return Err(async_graphql::Error::new("post unavailable")
                .extend_with(|_, extensions| extensions.set("code", "UNAVAILABLE")));
        }
        Ok(Some(PostV2 {
            id: ID(index.to_string()),
            title,
        }))
    }

    async fn all_posts(&self, context: &Context<'_>) -> Vec<ID> {
        let count = context.data_unchecked::<Posts>().lock().unwrap().len();
        (1..=count).map(|n| ID(n.to_string())).collect()
    }
}

struct MutationV2;

#[Object(name = "Mutation")]
impl MutationV2 {
    async fn create_post(&self, context: &Context<'_>, title: String) -> ID {
        ID(create(context, title).to_string())
    }
}

/// A GraphQL server over HTTP: POST bodies of one operation or a batch, persisted queries kept by hash.
async fn serve<Q, M>(query: Q, mutation: M, posts: Posts) -> Stub
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    EmptySubscription: SubscriptionType,
{
    let schema = Schema::build(query, mutation, EmptySubscription)
        .data(posts)
        .extension(ApolloPersistedQueries::new(LruCacheStorage::new(64)))
        .finish();
    Stub::start(move |seen| {
        let schema = schema.clone();
        async move {
            let answer = match serde_json::from_slice::<BatchRequest>(&seen.body) {
                Ok(batch) => serde_json::to_vec(&schema.execute_batch(batch).await).unwrap(),
                Err(error) => format!(r#"{{"errors":[{{"message":"{error}"}}]}}"#).into_bytes(),
            };
            Response::builder()
                .header("content-type", "application/json")
                .body(full(answer))
                .unwrap()
        }
    })
    .await
}

/// POSTs `body` to `/graphql` and gives back the caller's answer.
async fn post(app: &crate::support::TestApp, body: &str) -> serde_json::Value {
    serde_json::from_str(&post_json(app, "/graphql", body).await).unwrap()
}

const POST_QUERY: &str = "query Post($id: ID!) { post(id: $id) { id title } }";

async fn a_graphql_rewrite_is_judged_by_operation(db: TestDb) {
    let state = [posts(), posts(), posts()];
    let stubs = [
        serve(QueryV1, MutationV1, state[0].clone()).await,
        serve(QueryV1, MutationV1, state[1].clone()).await,
        serve(QueryV2, MutationV2, state[2].clone()).await,
    ];
    // The schemas are read at start; the next round would be an hour later.
    let app = instance_with(&db, "graphql", &stubs, |s| {
        s.proxy.shadow.graphql.introspect_every = Some(std::time::Duration::from_secs(3600))
    })
    .await;

    for id in 1..=20 {
        let body = serde_json::json!({"query": POST_QUERY, "variables": {"id": id.to_string()}});
        let answer = post(&app, &body.to_string()).await;
        assert_eq!(answer["data"]["post"]["title"], format!("Post {id}"));
    }
    for title in ["New 1", "New 2"] {
        let body = format!(r#"{{"query":"mutation {{ createPost(title: \"{title}\") }}"}}"#);
        post(&app, &body).await;
    }
    post(&app, r#"{"query":"{ allPosts }"}"#).await;
    let batch = post(
        &app,
        r#"[{"query":"query Titles { post(id: \"1\") { title } }"},{"query":"{ allPosts }"}]"#,
    )
    .await;
    assert_eq!(batch[0]["data"]["post"]["title"], "Post 1");

    // A persisted query as a client sends it: by hash first, with its text after the server's miss, then by
    // hash alone.
    let text = "query Second { post(id: \"2\") { title } }";
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    let extensions = format!(r#"{{"persistedQuery":{{"version":1,"sha256Hash":"{hash}"}}}}"#);
    let by_hash = format!(r#"{{"extensions":{extensions}}}"#);
    let missed = post(&app, &by_hash).await;
    assert_eq!(missed["errors"][0]["message"], "PersistedQueryNotFound");
    let with_text = format!(
        r#"{{"query":{},"extensions":{extensions}}}"#,
        serde_json::json!(text)
    );
    post(&app, &with_text).await;
    let found = post(&app, &by_hash).await;
    assert_eq!(found["data"]["post"]["title"], "Post 2");

    // The mutations ran on primary alone.
    let counts: Vec<usize> = state
        .iter()
        .map(|posts| posts.lock().unwrap().len())
        .collect();
    assert_eq!(counts, [22, 20, 20]);
    let proxy = &app.metrics.proxy;
    assert_eq!(
        proxy.unshadowed_count(UnshadowedReason::GraphqlSideEffect),
        2
    );
    assert_eq!(proxy.unshadowed_count(UnshadowedReason::GraphqlUnknown), 1);
    app.stop().await;

    let report = report_of(&db, "graphql").await;
    let endpoint = |name: &str| {
        report
            .endpoints
            .iter()
            .find(|endpoint| endpoint.endpoint == name)
            .unwrap_or_else(|| panic!("no endpoint {name}: {:#?}", report.endpoints))
    };
    assert_eq!(endpoint("GraphQL query Post").requests, 20);
    assert_eq!(endpoint("GraphQL query allPosts").requests, 1);
    assert_eq!(
        endpoint("GraphQL batch query Titles, query allPosts").requests,
        1
    );
    // The text, then the hash alone read through it.
    assert_eq!(endpoint("GraphQL query Second").requests, 2);
    assert_eq!(endpoint("GraphQL query Second").diff_rate, 0.0);

    // Every fifth post fails on the candidate: one breaking change, the nulled post trailing it.
    let errors = report
        .changes
        .iter()
        .find(|change| change.places[0].path == "body/errors")
        .unwrap_or_else(|| panic!("no change led by the error list: {:#?}", report.changes));
    assert_eq!(errors.compat, Compat::Breaking);
    assert_eq!(errors.requests, 4);
    assert_eq!(errors.endpoints, ["GraphQL query Post"]);
    assert_eq!(errors.places[0].kind, DiffKind::Extra);
    let trailing: Vec<&str> = errors
        .consequences
        .iter()
        .map(|place| place.path.as_str())
        .collect();
    // async-graphql nulls the whole `data` when a field fails: what trails is that, and nothing else.
    assert!(
        !trailing.is_empty() && trailing.iter().all(|path| path.starts_with("body/data")),
        "{errors:#?}"
    );
    assert_eq!(errors.places.len(), 1, "{errors:#?}");

    // The schemas, read by introspection: the field the rewrite removed, and nothing else.
    let schema = endpoint("GraphQL schema");
    assert_eq!(schema.requests, 1);
    let removed: Vec<(&str, DiffKind, Compat)> = schema
        .regressions
        .iter()
        .map(|r| (r.path.as_str(), r.kind, r.compat))
        .collect();
    assert_eq!(
        removed,
        [(
            "body/types/Post/fields/legacyId",
            DiffKind::Missing,
            Compat::Breaking
        )]
    );
}

//! The OpenAPI 3 document, made from the routes it is handed (the route table hands it the API's).

use serde_json::{Value, json};

use crate::web::route::Route;

/// The OpenAPI 3 document of `routes` (the route table's API and webhook routes).
pub fn document<'a>(routes: impl IntoIterator<Item = &'a Route>) -> Value {
    let mut paths = serde_json::Map::new();
    for route in routes {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let required = |name: &str| name == "endpoint" && route.path.ends_with("/samples");
        parameters.extend(
            route
                .query
                .iter()
                .map(|name| json!({"name": name, "in": "query", "required": required(name), "schema": {"type": "string"}})),
        );
        let (status, description) = match route.method {
            "post" if route.answer.is_some() => ("200", "JSON"),
            "post" => ("201", "created"),
            "delete" => ("204", "deleted"),
            _ => ("200", "JSON"),
        };
        let mut answer = json!({"description": description});
        if let Some(schema) = route.answer {
            answer["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
        }
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                status: answer,
                "400": {"description": "a bad option or body"},
                "401": {"description": "the admin token is required"},
                "404": {"description": "no such run, endpoint, exchange or rule"},
            },
        });
        if let Some(schema) = route.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}},
            });
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "shadowdiff", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The report of a shadow proxy: runs, endpoints, verdicts per place, samples, rules; \
                                 runs started and judged for deployment pipelines."},
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "security": [{"adminToken": []}, {}],
        "paths": paths,
    })
}

/// The request and answer bodies the routes name.
fn schemas() -> Value {
    let string = json!({"type": "string"});
    json!({
        "Rule": {"type": "object", "required": ["path", "action"], "properties": {
            "endpoint": string, "path": string,
            "action": {"type": "string", "enum": ["ignore", "noise", "tolerance", "unordered", "presence-only", "type-only", "accept"]},
            "absolute": {"type": "number"}, "relative": {"type": "number"},
            "kind": {"type": "string", "description": "accept: the kind of difference accepted (any when absent)"},
            "compat": {"type": "string", "enum": ["breaking", "additive", "changed"],
                       "description": "accept: the compatibility class accepted (any when absent)"},
            "note": {"type": "string", "description": "why; at most 500 characters"}
        }},
        "StartRun": {"type": "object", "required": ["label"], "properties": {"label": string}},
        "AcceptChange": {"type": "object", "properties": {"note": {"type": "string", "description": "why; at most 500 characters"}}},
        "Changes": {"type": "object", "properties": {
            "run": string, "requests": {"type": "integer"}, "diff_rate": {"type": "number"},
            "changes": {"type": "array", "items": {"type": "object", "properties": {
                "id": string, "title": string, "compat": {"type": "string", "enum": ["breaking", "additive", "changed"]},
                "requests": {"type": "integer"}, "endpoints": {"type": "array", "items": string},
                "places": {"type": "array", "items": {"$ref": "#/components/schemas/ChangePlace"}},
                "consequences": {"type": "array", "items": {"$ref": "#/components/schemas/ChangePlace"}},
                "predictors": {"type": "array", "items": {"type": "object", "properties": {
                    "feature": string, "value": {"type": "string", "nullable": true},
                    "failing_share": {"type": "number"}, "passing_share": {"type": "number"}
                }}},
                "sample": {"type": "string", "nullable": true}
            }}}
        }},
        "ChangePlace": {"type": "object", "properties": {
            "endpoint": string, "path": string, "kind": string,
            "compat": {"type": "string", "enum": ["breaking", "additive", "changed"]}, "rate": {"type": "number"}
        }},
        "StartedRun": {"type": "object", "properties": {
            "label": string, "id": {"type": "integer"}, "since_ms": {"type": "integer"}, "started": {"type": "boolean"}
        }},
        "Verdict": {"type": "object", "required": ["run", "passed", "enough_data", "requests", "diff_rate", "breaking",
                                                   "latency_regressions", "failing", "reason"], "properties": {
            "run": string,
            "passed": {"type": "boolean", "description": "false whenever enough_data is false"},
            "enough_data": {"type": "boolean", "description": "at least min_requests compared requests"},
            "requests": {"type": "integer"},
            "diff_rate": {"type": "number"},
            "breaking": {"type": "integer", "description": "places whose regression is breaking"},
            "latency_regressions": {"type": "integer", "description": "endpoints slower on the candidate"},
            "failing": {"type": "array", "items": {"type": "object", "properties": {
                "endpoint": string, "path": string, "kind": string,
                "compat": {"type": "string", "enum": ["breaking", "additive", "changed"]},
                "rate": {"type": "number"}, "sample": {"type": "string", "nullable": true}
            }}},
            "reason": string
        }},
        "FlaggerPayload": {"type": "object", "required": ["name", "namespace"], "properties": {
            "name": string, "namespace": string, "phase": string, "checksum": string,
            "metadata": {"type": "object", "additionalProperties": string,
                         "description": "run, max_diff_rate, min_requests, fail_on, latency, token"}
        }},
    })
}

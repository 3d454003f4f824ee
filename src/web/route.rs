//! One route of the admin listener's table: method, path, what the OpenAPI document says of it, handler.

use axum::routing::MethodRouter;

use crate::web::AdminState;

/// One route: a method on a path pattern (`{name}` is one segment, `{*name}` the rest), and its handler.
pub struct Route {
    /// `get`, `post` or `delete`, as OpenAPI writes them.
    pub method: &'static str,
    pub path: &'static str,
    /// What it does, for the OpenAPI document.
    pub summary: &'static str,
    /// Its query parameters, for the OpenAPI document.
    pub query: &'static [&'static str],
    /// The schemas (in the OpenAPI document's components) of its JSON body and of its answer, if any.
    pub body: Option<&'static str>,
    pub answer: Option<&'static str>,
    handler: fn() -> MethodRouter<AdminState>,
}

impl Route {
    /// A route without query parameters or bodies; [`route!`] writes its method once for both.
    pub const fn new(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        handler: fn() -> MethodRouter<AdminState>,
    ) -> Self {
        Self {
            method,
            path,
            summary,
            query: &[],
            body: None,
            answer: None,
            handler,
        }
    }

    /// With its query parameters.
    pub const fn query(self, query: &'static [&'static str]) -> Self {
        Self { query, ..self }
    }

    /// With the schema of its JSON body.
    pub const fn body(self, schema: &'static str) -> Self {
        Self {
            body: Some(schema),
            ..self
        }
    }

    /// With the schema of its answer.
    pub const fn answer(self, schema: &'static str) -> Self {
        Self {
            answer: Some(schema),
            ..self
        }
    }

    /// Its handler, for the router.
    pub fn method_router(&self) -> MethodRouter<AdminState> {
        (self.handler)()
    }
}

/// `route!(get PATH => handler, "what it does")`: a [`Route`] whose method is named once, for both the OpenAPI
/// document and the router.
macro_rules! route {
    ($method:ident $path:expr => $handler:expr, $summary:expr $(,)?) => {
        $crate::web::route::Route::new(stringify!($method), $path, $summary, || {
            axum::routing::$method($handler)
        })
    };
}
pub(crate) use route;

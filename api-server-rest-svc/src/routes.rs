//! The one route table: the router is built from it and the OpenAPI document generated from it,
//! so the two cannot drift apart.

use axum::routing::MethodFilter;
use serde_json::{json, Map, Value};

/// Which handler serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `GET /info`.
    Info,
    /// `GET /openapi.json`.
    OpenApi,
    /// `GET /cdh/resource/{repository}/{type}/{tag}`.
    Resource,
    /// `GET /aa/token`.
    Token,
    /// `GET /aa/evidence`.
    Evidence,
    /// `GET /aa/additional-evidence`.
    AdditionalEvidence,
    /// `POST /aa/aael`.
    Aael,
}

/// The HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET (HEAD is answered too).
    Get,
    /// POST.
    Post,
}

impl Verb {
    /// The router's method filter.
    pub fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
        }
    }

    /// The OpenAPI operation key.
    fn openapi_key(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
        }
    }
}

/// The backend a route needs; a route whose backend is not enabled by `--features` is not
/// served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Served always.
    Nothing,
    /// The Confidential Data Hub (`--features resource|all`).
    Resource,
    /// The Attestation Agent (`--features attestation|all`).
    Attestation,
}

/// A query parameter of a route.
#[derive(Debug)]
pub struct QueryParam {
    /// Its name.
    pub name: &'static str,
    /// Whether it must be present.
    pub required: bool,
    /// What it means.
    pub description: &'static str,
}

/// One route: what the router matches and what the OpenAPI document says.
#[derive(Debug)]
pub struct Route {
    /// The handler.
    pub handler: Handler,
    /// The one method served; any other gets 405.
    pub method: Verb,
    /// Path template in OpenAPI form (`{name}` for a path segment).
    pub path: &'static str,
    /// OpenAPI `operationId`.
    pub operation: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// What it needs enabled.
    pub needs: Needs,
    /// Query parameters.
    pub query: &'static [QueryParam],
    /// JSON schema name in `components` of the request body, if there is one.
    pub request_body: Option<&'static str>,
    /// Media type of a successful response body.
    pub content_type: &'static str,
    /// JSON schema name in `components` of the successful body, if it is JSON.
    pub response_schema: Option<&'static str>,
    /// Error statuses the route can answer, besides the 403/404/405/413/431/503 of every route.
    pub errors: &'static [(u16, &'static str)],
}

const OCTET_STREAM: &str = "application/octet-stream";
const JSON: &str = "application/json";

const RUNTIME_DATA: QueryParam = QueryParam {
    name: "runtime_data",
    required: true,
    description: "Data to bind into the evidence: its UTF-8 bytes, or with encoding=base64 \
                  URL-safe base64 without padding",
};
const ENCODING: QueryParam = QueryParam {
    name: "encoding",
    required: false,
    description: "Encoding of runtime_data: absent for the raw string, or `base64`",
};

/// Statuses of both evidence routes beyond [`COMMON_ERRORS`].
const EVIDENCE_ERRORS: &[(u16, &str)] = &[
    (400, "missing or undecodable runtime_data"),
    (500, "the Attestation Agent failed"),
];

/// Every route the server knows.
pub const ROUTES: &[Route] = &[
    Route {
        handler: Handler::Info,
        method: Verb::Get,
        path: "/info",
        operation: "info",
        summary: "Version, TEE and enabled features of this server",
        needs: Needs::Nothing,
        query: &[],
        request_body: None,
        content_type: JSON,
        response_schema: Some("VersionInfo"),
        errors: &[],
    },
    Route {
        handler: Handler::OpenApi,
        method: Verb::Get,
        path: "/openapi.json",
        operation: "openapi",
        summary: "This OpenAPI document",
        needs: Needs::Nothing,
        query: &[],
        request_body: None,
        content_type: JSON,
        response_schema: None,
        errors: &[],
    },
    Route {
        handler: Handler::Resource,
        method: Verb::Get,
        path: "/cdh/resource/{repository}/{type}/{tag}",
        operation: "get_resource",
        summary: "A KBS resource, fetched through the Confidential Data Hub",
        needs: Needs::Resource,
        query: &[],
        request_body: None,
        content_type: OCTET_STREAM,
        response_schema: None,
        errors: &[
            (400, "invalid resource path"),
            (500, "the Confidential Data Hub failed"),
        ],
    },
    Route {
        handler: Handler::Token,
        method: Verb::Get,
        path: "/aa/token",
        operation: "get_token",
        summary: "A token of the given type, from the Attestation Agent",
        needs: Needs::Attestation,
        query: &[QueryParam {
            name: "token_type",
            required: true,
            description: "Token type, e.g. `kbs`",
        }],
        request_body: None,
        content_type: OCTET_STREAM,
        response_schema: None,
        errors: &[
            (400, "missing or invalid token_type"),
            (500, "the Attestation Agent failed"),
        ],
    },
    Route {
        handler: Handler::Evidence,
        method: Verb::Get,
        path: "/aa/evidence",
        operation: "get_evidence",
        summary: "Evidence of the primary TEE with runtime_data bound into it",
        needs: Needs::Attestation,
        query: &[RUNTIME_DATA, ENCODING],
        request_body: None,
        content_type: OCTET_STREAM,
        response_schema: None,
        errors: EVIDENCE_ERRORS,
    },
    Route {
        handler: Handler::AdditionalEvidence,
        method: Verb::Get,
        path: "/aa/additional-evidence",
        operation: "get_additional_evidence",
        summary: "Evidence of the additional TEEs with runtime_data bound into it",
        needs: Needs::Attestation,
        query: &[RUNTIME_DATA, ENCODING],
        request_body: None,
        content_type: OCTET_STREAM,
        response_schema: None,
        errors: EVIDENCE_ERRORS,
    },
    Route {
        handler: Handler::Aael,
        method: Verb::Post,
        path: "/aa/aael",
        operation: "extend_aael",
        summary: "Records an event in the Attestation Agent eventlog",
        needs: Needs::Attestation,
        query: &[],
        request_body: Some("AaelEvent"),
        content_type: JSON,
        response_schema: Some("AaelResult"),
        errors: &[
            (400, "body is not an AaelEvent"),
            (500, "the Attestation Agent failed"),
        ],
    },
];

/// Statuses every route can answer.
const COMMON_ERRORS: &[(u16, &str)] = &[
    (403, "the client is not on the loopback interface"),
    (404, "unknown URL, or the route's feature is not enabled"),
    (405, "wrong method"),
    (413, "request body too large"),
    (431, "request headers too large"),
    (
        503,
        "backend unavailable, overloaded, or the request timed out",
    ),
];

impl Route {
    /// The path as the router matches it: path segments are taken whole as one wildcard,
    /// because they are validated together (a `%2F` or `..` must reach the validator, not
    /// fall through to a 404).
    pub fn router_path(&self) -> String {
        match self.path.find('{') {
            Some(first_param) => format!("{}*segments", &self.path[..first_param]),
            None => self.path.to_owned(),
        }
    }

    fn operation_json(&self) -> Value {
        let mut responses = Map::new();
        let mut ok = json!({ "description": "success" });
        let schema = match self.response_schema {
            Some(name) => json!({ "$ref": format!("#/components/schemas/{name}") }),
            None if self.content_type == JSON => json!({ "type": "object" }),
            None => json!({ "type": "string", "format": "binary" }),
        };
        ok["content"] = json!({ self.content_type: { "schema": schema } });
        responses.insert("200".to_owned(), ok);
        for (status, description) in self.errors.iter().chain(COMMON_ERRORS) {
            responses.insert(status.to_string(), json!({ "description": description }));
        }

        let mut parameters: Vec<Value> = path_params(self.path)
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
            })
            .collect();
        parameters.extend(self.query.iter().map(|param| {
            json!({
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": { "type": "string" },
            })
        }));

        let mut operation = json!({
            "operationId": self.operation,
            "summary": self.summary,
            "responses": responses,
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some(name) = self.request_body {
            operation["requestBody"] = json!({
                "required": true,
                "content": { JSON: { "schema": { "$ref": format!("#/components/schemas/{name}") } } },
            });
        }
        operation
    }
}

fn path_params(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn schemas() -> Value {
    let string = |description: &str| json!({ "type": "string", "description": description });
    json!({
        "VersionInfo": {
            "type": "object",
            "required": ["version", "feature"],
            "properties": {
                "version": string("Version of this server"),
                "tee": string("TEE of the podvm; absent when the Attestation Agent is not enabled or not reachable"),
                "additional_tees": {
                    "type": "array",
                    "items": { "type": "string" },
                    "description": "Additional TEEs; absent when there are none",
                },
                "feature": string("The --features value the server runs with"),
            },
        },
        "AaelEvent": {
            "type": "object",
            "required": ["domain", "operation", "content"],
            "properties": {
                "domain": string("Event domain"),
                "operation": string("Event operation"),
                "content": string("Event content"),
            },
        },
        "AaelResult": {
            "type": "object",
            "required": ["success"],
            "properties": {
                "success": string("\"true\" or \"false\""),
                "message": string("Why the event was not recorded"),
            },
        },
    })
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        entry[route.method.openapi_key()] = route.operation_json();
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "CoCo RESTful API",
            "description": "HTTP API for containers of a confidential pod to get resources, \
                            evidence and tokens from the Confidential Data Hub and the \
                            Attestation Agent.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
            "version": env!("CARGO_PKG_VERSION"),
        },
        "servers": [{ "url": "http://127.0.0.1:8006" }],
        "paths": paths,
        "components": { "schemas": schemas() },
    })
}

/// [`openapi`] as the pretty JSON text that is served and checked in.
pub fn openapi_text() -> String {
    format!("{:#}\n", openapi())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    /// The checked-in document must be what the route table generates;
    /// `UPDATE_OPENAPI=1 cargo test -p api-server-rest-svc openapi` rewrites it.
    #[test]
    fn checked_in_openapi_matches_route_table() {
        let generated = openapi_text();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(CHECKED_IN, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap();
        assert!(
            checked_in == generated,
            "{CHECKED_IN} is stale: run UPDATE_OPENAPI=1 cargo test -p api-server-rest-svc openapi"
        );
    }

    #[test]
    fn every_route_is_documented_once_with_its_method() {
        let doc = openapi();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.openapi_key()];
            assert_eq!(op["operationId"], route.operation, "{}", route.path);
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|ops| ops.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
    }

    #[test]
    fn resource_route_documents_its_path_parameters() {
        let doc = openapi();
        let params = doc["paths"]["/cdh/resource/{repository}/{type}/{tag}"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<_> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["repository", "type", "tag"]);
    }

    #[test]
    fn router_paths_use_one_wildcard_for_path_parameters() {
        let resource = ROUTES
            .iter()
            .find(|r| r.handler == Handler::Resource)
            .unwrap();
        assert_eq!(resource.router_path(), "/cdh/resource/*segments");
        assert_eq!(ROUTES[0].router_path(), "/info");
    }
}

//! A catalog service's OpenAPI document, read into the operations aibank forwards: each
//! `method path` the document declares is an endpoint, and nothing else is. Also the
//! matcher the proxy asks whether a request is declared, and the plain-text digest an
//! agent reads to learn the service in one go.
//!
//! What is accepted (anything else is a [`SpecError`], answered `400 INVALID_SPEC` with a
//! message naming the place, e.g. `openapi_spec.paths./x/{a}b: …`):
//! - an object whose `openapi` is a `3.0.x` or `3.1.x` version string (Swagger 2.0 is not);
//! - `paths`, a non-empty object whose keys start with `/` and are at most 2,000
//!   characters; each segment is plain (letters, digits, `-._~:@+`, not `.` or `..`) or a
//!   whole `{name}` segment; no empty segment except a trailing slash; no two templates
//!   that differ only in parameter names; a path item is not a `$ref`;
//! - at least one and at most 500 operations (`get`, `put`, `post`, `delete`, `patch`,
//!   `head`, `options`; `trace` is not forwarded and is ignored);
//! - parameters with a `name` and an `in` of `path`, `query`, `header` or `cookie`.
//!   Path-item parameters apply to each of its operations, which may override one by
//!   `name` and `in`. A `$ref` to `#/components/parameters/…` is resolved; any other
//!   `$ref` is kept as a parameter named by the reference, `in: "$ref"`. A `{name}` of the
//!   template the operation does not declare is added as a required path parameter.
//!
//! Only this subset is read, with typed serde structs rather than a full OpenAPI model:
//! the well-kept crates each read one version (`openapiv3` 3.0, `oas3` 3.1), and the
//! parts read here — paths, operations, parameters and a schema's `type` — are the same
//! in both versions except that 3.1 allows `type` to be a list.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MAX_OPERATIONS: usize = 500;
pub const MAX_PATH_CHARS: usize = 2_000;
/// How many `$ref` hops a parameter may take to its definition.
const MAX_REF_HOPS: usize = 8;
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
const LOCATIONS: [&str; 4] = ["path", "query", "header", "cookie"];

/// The endpoints of a service, sorted by path, then method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub endpoints: Vec<SpecEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecEndpoint {
    /// Upper case: `GET`, `POST`, …
    pub method: String,
    /// The template as declared: `/items/{id}`.
    pub path: String,
    /// The operation's `summary`, else the first line of its `description`.
    pub summary: Option<String>,
    pub parameters: Vec<SpecParameter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecParameter {
    pub name: String,
    #[serde(rename = "in")]
    pub location: String,
    pub required: bool,
    pub description: Option<String>,
    /// The schema's `type` (the first one other than `null` when 3.1 lists several).
    pub schema_type: Option<String>,
}

/// Why a document is not a usable spec; the message names the place that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl SpecError {
    fn at(place: &str, message: impl std::fmt::Display) -> SpecError {
        SpecError(format!("openapi_spec{place}: {message}"))
    }

    /// A value under `place` that did not read into its type.
    fn read(place: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> SpecError {
        match e.path().to_string().as_str() {
            "." => SpecError::at(place, e.inner()),
            inner => SpecError::at(&format!("{place}.{inner}"), e.inner()),
        }
    }
}

impl From<SpecError> for aibank_core::ApiError {
    fn from(e: SpecError) -> Self {
        aibank_core::ApiError::new(aibank_core::ErrorCode::InvalidSpec, e.0)
    }
}

#[derive(Deserialize)]
struct PathItem {
    #[serde(rename = "$ref")]
    reference: Option<Value>,
    #[serde(default)]
    parameters: Vec<RawParameter>,
    get: Option<Operation>,
    put: Option<Operation>,
    post: Option<Operation>,
    delete: Option<Operation>,
    patch: Option<Operation>,
    head: Option<Operation>,
    options: Option<Operation>,
}

impl PathItem {
    fn operation(&self, method: &str) -> Option<&Operation> {
        match method {
            "get" => self.get.as_ref(),
            "put" => self.put.as_ref(),
            "post" => self.post.as_ref(),
            "delete" => self.delete.as_ref(),
            "patch" => self.patch.as_ref(),
            "head" => self.head.as_ref(),
            "options" => self.options.as_ref(),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Operation {
    summary: Option<String>,
    description: Option<String>,
    #[serde(default)]
    parameters: Vec<RawParameter>,
}

/// A parameter or a reference to one; which of the two is decided after reading, so a
/// malformed one gets a message naming its field rather than "no variant matched".
#[derive(Deserialize, Clone)]
struct RawParameter {
    #[serde(rename = "$ref")]
    reference: Option<String>,
    name: Option<String>,
    #[serde(rename = "in")]
    location: Option<String>,
    #[serde(default)]
    required: bool,
    description: Option<String>,
    schema: Option<Schema>,
}

#[derive(Deserialize, Clone)]
struct Schema {
    #[serde(rename = "type")]
    kind: Option<Value>,
}

impl Schema {
    fn type_name(&self) -> Option<String> {
        match self.kind.as_ref()? {
            Value::String(s) => Some(s.clone()),
            Value::Array(kinds) => kinds
                .iter()
                .filter_map(Value::as_str)
                .find(|k| *k != "null")
                .map(str::to_owned),
            _ => None,
        }
    }
}

/// Reads `spec` into the service's endpoints, or says what is wrong with it.
pub fn parse(spec: &Value) -> Result<ServiceSpec, SpecError> {
    let Some(doc) = spec.as_object() else {
        return Err(SpecError::at("", "must be an OpenAPI document (an object)"));
    };
    check_version(doc.get("openapi"), doc.contains_key("swagger"))?;
    let paths = match doc.get("paths") {
        Some(Value::Object(paths)) if !paths.is_empty() => paths,
        Some(Value::Object(_)) => {
            return Err(SpecError::at(".paths", "declares no paths"));
        }
        Some(_) => return Err(SpecError::at(".paths", "must be an object")),
        None => return Err(SpecError::at(".paths", "is required")),
    };
    let mut endpoints = Vec::new();
    let mut shapes: BTreeMap<String, &str> = BTreeMap::new();
    for (path, item) in paths {
        let place = format!(".paths.{path}");
        let segments = check_template(path).map_err(|m| SpecError::at(&place, m))?;
        let shape = segments
            .iter()
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        if let Some(other) = shapes.insert(shape, path) {
            return Err(SpecError::at(
                &place,
                format!("is the same template as {other} with other parameter names"),
            ));
        }
        if !item.is_object() {
            return Err(SpecError::at(&place, "must be an object"));
        }
        let item: PathItem =
            serde_path_to_error::deserialize(item).map_err(|e| SpecError::read(&place, &e))?;
        if item.reference.is_some() {
            return Err(SpecError::at(
                &format!("{place}.$ref"),
                "a path item by reference is not supported; write it inline",
            ));
        }
        let shared = resolve_all(spec, &item.parameters, &format!("{place}.parameters"))?;
        for method in METHODS {
            let Some(op) = item.operation(method) else {
                continue;
            };
            if endpoints.len() == MAX_OPERATIONS {
                return Err(SpecError::at(
                    ".paths",
                    format!("declares more than {MAX_OPERATIONS} operations"),
                ));
            }
            let own = resolve_all(
                spec,
                &op.parameters,
                &format!("{place}.{method}.parameters"),
            )?;
            endpoints.push(SpecEndpoint {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                summary: summary(op),
                parameters: merge(&segments, shared.clone(), own),
            });
        }
    }
    if endpoints.is_empty() {
        return Err(SpecError::at(
            ".paths",
            format!("declares no operation (one of {})", METHODS.join(", ")),
        ));
    }
    endpoints.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    Ok(ServiceSpec { endpoints })
}

fn check_version(version: Option<&Value>, swagger: bool) -> Result<(), SpecError> {
    let supported = version.and_then(Value::as_str).is_some_and(|v| {
        ["3.0.", "3.1."].iter().any(|p| {
            v.strip_prefix(p)
                .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    if supported {
        return Ok(());
    }
    let hint = if swagger && version.is_none() {
        " (Swagger 2.0 is not supported)"
    } else {
        ""
    };
    Err(SpecError::at(
        ".openapi",
        format!("must be a version string 3.0.x or 3.1.x{hint}"),
    ))
}

/// The segments of a valid path template, or what is wrong with it.
fn check_template(path: &str) -> Result<Vec<&str>, String> {
    if path.chars().count() > MAX_PATH_CHARS {
        return Err(format!("is longer than {MAX_PATH_CHARS} characters"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must start with /".into());
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    let mut names = Vec::new();
    for seg in &segments {
        if seg.is_empty() {
            return Err("has an empty segment (//)".into());
        }
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Err(format!(
                    "the parameter {seg} must be a name of letters, digits, -, . or _"
                ));
            }
            if names.contains(&name) {
                return Err(format!("the parameter {seg} appears twice"));
            }
            names.push(name);
        } else if *seg == "." || *seg == ".." {
            return Err(format!("has a {seg} segment"));
        } else if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:@+".contains(c))
        {
            return Err(format!(
                "the segment {seg} must be plain (letters, digits, -._~:@+) or a whole {{name}}"
            ));
        }
    }
    Ok(segments)
}

fn summary(op: &Operation) -> Option<String> {
    let text = op.summary.as_deref().or_else(|| {
        op.description
            .as_deref()?
            .lines()
            .find(|l| !l.trim().is_empty())
    })?;
    let text = one_line(text);
    (!text.is_empty()).then_some(text)
}

fn resolve_all(
    spec: &Value,
    raw: &[RawParameter],
    place: &str,
) -> Result<Vec<SpecParameter>, SpecError> {
    raw.iter()
        .enumerate()
        .map(|(i, p)| resolve(spec, p, &format!("{place}[{i}]")))
        .collect()
}

fn resolve(spec: &Value, raw: &RawParameter, place: &str) -> Result<SpecParameter, SpecError> {
    let mut current = raw.clone();
    for _ in 0..MAX_REF_HOPS {
        let Some(reference) = current.reference.clone() else {
            return parameter(current, place);
        };
        let Some(pointer) = reference.strip_prefix("#/components/parameters/") else {
            // Outside what is resolved here: kept by its name, so the agent still sees it.
            return Ok(SpecParameter {
                name: reference,
                location: "$ref".into(),
                required: false,
                description: None,
                schema_type: None,
            });
        };
        let target = spec
            .pointer(&format!("/components/parameters/{pointer}"))
            .ok_or_else(|| SpecError::at(place, format!("$ref {reference} names no parameter")))?;
        current = serde_path_to_error::deserialize(target)
            .map_err(|e| SpecError::read(&format!("{place} ({reference})"), &e))?;
    }
    Err(SpecError::at(
        place,
        format!("$ref takes more than {MAX_REF_HOPS} hops"),
    ))
}

fn parameter(raw: RawParameter, place: &str) -> Result<SpecParameter, SpecError> {
    let name = match raw.name {
        Some(n) if !n.is_empty() => n,
        _ => return Err(SpecError::at(&format!("{place}.name"), "is required")),
    };
    let location = match raw.location {
        Some(l) if LOCATIONS.contains(&l.as_str()) => l,
        Some(l) => {
            return Err(SpecError::at(
                &format!("{place}.in"),
                format!("{l} is not one of {}", LOCATIONS.join(", ")),
            ))
        }
        None => return Err(SpecError::at(&format!("{place}.in"), "is required")),
    };
    Ok(SpecParameter {
        // A path parameter is always required, whatever the document says.
        required: raw.required || location == "path",
        name,
        location,
        description: raw.description.as_deref().map(one_line),
        schema_type: raw.schema.as_ref().and_then(Schema::type_name),
    })
}

/// The operation's parameters: the path item's, overridden by the operation's own of the
/// same name and location, plus any template parameter neither declares.
fn merge(
    segments: &[&str],
    shared: Vec<SpecParameter>,
    own: Vec<SpecParameter>,
) -> Vec<SpecParameter> {
    let mut all: Vec<SpecParameter> = shared
        .into_iter()
        .filter(|s| {
            !own.iter()
                .any(|o| o.name == s.name && o.location == s.location)
        })
        .collect();
    all.extend(own);
    for seg in segments {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !all.iter().any(|p| p.location == "path" && p.name == name) {
                all.push(SpecParameter {
                    name: name.to_owned(),
                    location: "path".into(),
                    required: true,
                    description: None,
                    schema_type: None,
                });
            }
        }
    }
    all
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A request segment a `{param}` could match but the upstream might read as a step up or
/// across the path: `.`, `..` and encoded slashes or dots.
fn is_traversal(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    let decoded = lower.replace("%2e", ".");
    decoded == "." || decoded == ".." || ["%2f", "%5c", "\\"].iter().any(|s| lower.contains(s))
}

impl ServiceSpec {
    /// The declared operation `method path` matches: `path` without its query; a `{param}`
    /// matches one non-empty segment, literal segments match exactly; a trailing slash
    /// matches only a template declared with one. Where several templates match, the one
    /// with literal segments earliest wins (`/items/mine` before `/items/{id}`). A path with
    /// a `.` or `..` segment (plain or percent-encoded) or an encoded slash matches nothing.
    pub fn find(&self, method: &str, path: &str) -> Option<&SpecEndpoint> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let rest = path.strip_prefix('/')?;
        let request: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let trailing = rest.ends_with('/');
        let request = if trailing {
            &request[..request.len() - 1]
        } else {
            &request[..]
        };
        if request.iter().any(|s| s.is_empty() || is_traversal(s)) {
            return None;
        }
        let mut best: Option<(Vec<bool>, &SpecEndpoint)> = None;
        for endpoint in &self.endpoints {
            if !endpoint.method.eq_ignore_ascii_case(method) {
                continue;
            }
            let template = endpoint.path.strip_prefix('/').unwrap_or_default();
            if template.ends_with('/') != trailing {
                continue;
            }
            let template = template.strip_suffix('/').unwrap_or(template);
            let segments: Vec<&str> = if template.is_empty() {
                Vec::new()
            } else {
                template.split('/').collect()
            };
            if segments.len() != request.len() {
                continue;
            }
            let mut literal = Vec::with_capacity(segments.len());
            let matched = segments.iter().zip(request).all(|(t, r)| {
                let is_param = t.starts_with('{');
                literal.push(!is_param);
                is_param || t == r
            });
            if matched && best.as_ref().is_none_or(|(score, _)| literal > *score) {
                best = Some((literal, endpoint));
            }
        }
        best.map(|(_, e)| e)
    }

    /// A plain-text digest an agent reads in one go: the service, its price, how to call
    /// it through `proxy_base` (e.g. `https://aibank.example/v1/proxy/svc_…`), and each
    /// endpoint's method, path, summary and parameters, one line each.
    pub fn agent_summary(
        &self,
        name: &str,
        description: &str,
        price_per_call_usd: &str,
        proxy_base: &str,
    ) -> String {
        let base = proxy_base.trim_end_matches('/');
        let mut out = String::new();
        let _ = writeln!(out, "Service: {}", one_line(name));
        let description = one_line(description);
        if !description.is_empty() {
            let _ = writeln!(out, "About: {description}");
        }
        let _ = writeln!(
            out,
            "Price: ${price_per_call_usd} per call, charged only when the service answers 2xx."
        );
        let _ = writeln!(
            out,
            "Call: send the endpoint's method to {base} followed by its path, with your \
             X-API-Key (or an x402 payment) and the parameters below."
        );
        let _ = writeln!(out, "Endpoints ({}):", self.endpoints.len());
        for e in &self.endpoints {
            let _ = write!(out, "- {} {}", e.method, e.path);
            if let Some(s) = &e.summary {
                let _ = write!(out, " — {s}");
            }
            out.push('\n');
            for p in &e.parameters {
                let _ = write!(out, "    {} {}", p.location, p.name);
                let mut traits = Vec::new();
                if let Some(t) = &p.schema_type {
                    traits.push(t.as_str());
                }
                if p.required {
                    traits.push("required");
                }
                if !traits.is_empty() {
                    let _ = write!(out, " ({})", traits.join(", "));
                }
                if let Some(d) = p.description.as_deref().filter(|d| !d.is_empty()) {
                    let _ = write!(out, ": {d}");
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v30() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Items", "version": "1"},
            "components": {"parameters": {
                "Limit": {"name": "limit", "in": "query", "description": "At most\n this many",
                          "schema": {"type": "integer"}},
                "Alias": {"$ref": "#/components/parameters/Limit"}
            }},
            "paths": {
                "/items/{id}": {
                    "parameters": [
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"name": "verbose", "in": "query", "schema": {"type": "boolean"}}
                    ],
                    "get": {"summary": "One item", "parameters": [
                        {"name": "verbose", "in": "query", "required": true, "description": "overridden"}
                    ]},
                    "delete": {"description": "\n  Deletes the item.\nForever."},
                    "trace": {"summary": "ignored"}
                },
                "/items": {
                    "get": {"operationId": "list", "parameters": [
                        {"$ref": "#/components/parameters/Alias"},
                        {"$ref": "other.yaml#/Token"}
                    ]},
                    "post": {"summary": "Add an item"}
                },
                "/items/mine": {"get": {"summary": "Mine"}},
                "/": {"head": {}},
                "/dirs/": {"get": {}}
            }
        })
    }

    fn v31() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "Weather", "version": "1"},
            "paths": {
                "/weather/{city}": {"get": {"summary": "Weather now", "parameters": [
                    {"name": "units", "in": "query", "schema": {"type": ["null", "string"]}}
                ]}}
            },
            "webhooks": {}
        })
    }

    fn err(spec: &Value) -> String {
        parse(spec).unwrap_err().to_string()
    }

    fn param(name: &str, location: &str, required: bool, ty: Option<&str>) -> SpecParameter {
        SpecParameter {
            name: name.into(),
            location: location.into(),
            required,
            description: None,
            schema_type: ty.map(str::to_owned),
        }
    }

    #[test]
    fn reads_a_3_0_document_into_sorted_endpoints() {
        let spec = parse(&v30()).unwrap();
        let ops: Vec<(&str, &str)> = spec
            .endpoints
            .iter()
            .map(|e| (e.method.as_str(), e.path.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("HEAD", "/"),
                ("GET", "/dirs/"),
                ("GET", "/items"),
                ("POST", "/items"),
                ("GET", "/items/mine"),
                ("DELETE", "/items/{id}"),
                ("GET", "/items/{id}"),
            ]
        );
        let get = spec.find("GET", "/items/7").unwrap();
        assert_eq!(get.summary.as_deref(), Some("One item"));
        // Path-item parameters merged; the operation's own `verbose` wins.
        let mut verbose = param("verbose", "query", true, None);
        verbose.description = Some("overridden".into());
        assert_eq!(
            get.parameters,
            [param("id", "path", true, Some("string")), verbose]
        );
        let delete = spec.find("DELETE", "/items/7").unwrap();
        assert_eq!(delete.summary.as_deref(), Some("Deletes the item."));
        assert_eq!(
            delete.parameters,
            [
                param("id", "path", true, Some("string")),
                param("verbose", "query", false, Some("boolean"))
            ]
        );
    }

    #[test]
    fn resolves_component_parameter_refs_and_keeps_others_by_name() {
        let spec = parse(&v30()).unwrap();
        let list = spec.find("GET", "/items").unwrap();
        let mut limit = param("limit", "query", false, Some("integer"));
        limit.description = Some("At most this many".into());
        assert_eq!(
            list.parameters,
            [limit, param("other.yaml#/Token", "$ref", false, None)]
        );
    }

    #[test]
    fn reads_a_3_1_document_with_type_lists_and_adds_undeclared_path_parameters() {
        let spec = parse(&v31()).unwrap();
        assert_eq!(spec.endpoints.len(), 1);
        let e = &spec.endpoints[0];
        assert_eq!(
            (e.method.as_str(), e.path.as_str()),
            ("GET", "/weather/{city}")
        );
        assert_eq!(
            e.parameters,
            [
                param("units", "query", false, Some("string")),
                param("city", "path", true, None)
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_an_openapi_3_document() {
        assert_eq!(
            err(&json!([])),
            "openapi_spec: must be an OpenAPI document (an object)"
        );
        assert_eq!(
            err(&json!({"swagger": "2.0", "paths": {"/a": {"get": {}}}})),
            "openapi_spec.openapi: must be a version string 3.0.x or 3.1.x (Swagger 2.0 is not supported)"
        );
        for version in [
            json!("2.0"),
            json!("3.2.0"),
            json!("3.1"),
            json!("3.0.x"),
            json!(3.1),
        ] {
            assert_eq!(
                err(&json!({"openapi": version, "paths": {"/a": {"get": {}}}})),
                "openapi_spec.openapi: must be a version string 3.0.x or 3.1.x",
                "{version}"
            );
        }
        assert_eq!(
            err(&json!({"openapi": "3.1.0"})),
            "openapi_spec.paths: is required"
        );
        assert_eq!(
            err(&json!({"openapi": "3.1.0", "paths": []})),
            "openapi_spec.paths: must be an object"
        );
        assert_eq!(
            err(&json!({"openapi": "3.1.0", "paths": {}})),
            "openapi_spec.paths: declares no paths"
        );
        assert_eq!(
            err(&json!({"openapi": "3.1.0", "paths": {"/a": {"trace": {}}, "/b": {}}})),
            "openapi_spec.paths: declares no operation (one of get, put, post, delete, patch, head, options)"
        );
    }

    #[test]
    fn refuses_bad_path_templates() {
        let one = |path: &str| err(&json!({"openapi": "3.0.0", "paths": {path: {"get": {}}}}));
        assert_eq!(one("items"), "openapi_spec.paths.items: must start with /");
        assert_eq!(
            one("/x/{a}b"),
            "openapi_spec.paths./x/{a}b: the segment {a}b must be plain (letters, digits, -._~:@+) or a whole {name}"
        );
        assert!(one("/x/{a}.{b}").starts_with("openapi_spec.paths./x/{a}.{b}: the parameter"));
        assert!(one("/x/{}").contains("the parameter {} must be a name"));
        assert!(one("/x/{a b}").contains("the parameter {a b} must be a name"));
        assert_eq!(
            one("/x/{a}/{a}"),
            "openapi_spec.paths./x/{a}/{a}: the parameter {a} appears twice"
        );
        assert_eq!(
            one("/a//b"),
            "openapi_spec.paths./a//b: has an empty segment (//)"
        );
        assert_eq!(
            one("/a/../b"),
            "openapi_spec.paths./a/../b: has a .. segment"
        );
        assert_eq!(one("/a/./b"), "openapi_spec.paths./a/./b: has a . segment");
        assert!(one("/a?b=1").contains("the segment a?b=1 must be plain"));
        assert!(one("/a%2Fb").contains("must be plain"));
        let long = format!("/{}", "a".repeat(MAX_PATH_CHARS));
        assert!(
            err(&json!({"openapi": "3.0.0", "paths": {long.clone(): {"get": {}}}}))
                .ends_with("is longer than 2000 characters")
        );
        let just = format!("/{}", "a".repeat(MAX_PATH_CHARS - 1));
        assert!(parse(&json!({"openapi": "3.0.0", "paths": {just: {"get": {}}}})).is_ok());
        assert!(parse(
            &json!({"openapi": "3.0.0", "paths": {"/a-b/c.d/~e:f@g+h/{i_j.k-l}": {"get": {}}}})
        )
        .is_ok());
        let twins = json!({"openapi": "3.0.0", "paths": {"/i/{id}": {"get": {}}, "/i/{name}": {"put": {}}}});
        assert_eq!(
            err(&twins),
            "openapi_spec.paths./i/{name}: is the same template as /i/{id} with other parameter names"
        );
    }

    #[test]
    fn refuses_malformed_path_items_and_parameters() {
        let item = |item: Value| err(&json!({"openapi": "3.1.0", "paths": {"/a": item}}));
        assert!(
            item(json!({"get": {"summary": 5}}))
                .starts_with("openapi_spec.paths./a.get.summary: invalid type"),
            "{}",
            item(json!({"get": {"summary": 5}}))
        );
        assert_eq!(item(json!([])), "openapi_spec.paths./a: must be an object");
        assert!(item(json!({"get": {"parameters": {}}}))
            .starts_with("openapi_spec.paths./a.get.parameters: invalid type: map"));
        assert_eq!(
            item(json!({"$ref": "#/x"})),
            "openapi_spec.paths./a.$ref: a path item by reference is not supported; write it inline"
        );
        assert_eq!(
            item(json!({"get": {"parameters": [{"in": "query"}]}})),
            "openapi_spec.paths./a.get.parameters[0].name: is required"
        );
        assert_eq!(
            item(json!({"parameters": [{"name": "q"}], "get": {}})),
            "openapi_spec.paths./a.parameters[0].in: is required"
        );
        assert_eq!(
            item(json!({"get": {"parameters": [{"name": "q", "in": "body"}]}})),
            "openapi_spec.paths./a.get.parameters[0].in: body is not one of path, query, header, cookie"
        );
        assert!(item(
            json!({"get": {"parameters": [{"name": "q", "in": "query", "required": "yes"}]}})
        )
        .starts_with("openapi_spec.paths./a.get.parameters[0].required: invalid type"));
        assert_eq!(
            item(json!({"get": {"parameters": [{"$ref": "#/components/parameters/Nope"}]}})),
            "openapi_spec.paths./a.get.parameters[0]: $ref #/components/parameters/Nope names no parameter"
        );
        let looping = json!({
            "openapi": "3.1.0",
            "components": {"parameters": {"A": {"$ref": "#/components/parameters/A"}}},
            "paths": {"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/A"}]}}}
        });
        assert_eq!(
            err(&looping),
            "openapi_spec.paths./a.get.parameters[0]: $ref takes more than 8 hops"
        );
    }

    #[test]
    fn refuses_more_than_500_operations() {
        let paths = |n: usize| {
            let mut paths = serde_json::Map::new();
            for i in 0..n {
                paths.insert(format!("/p{i}"), json!({"get": {}}));
            }
            json!({"openapi": "3.1.0", "paths": paths})
        };
        assert_eq!(parse(&paths(MAX_OPERATIONS)).unwrap().endpoints.len(), 500);
        assert_eq!(
            err(&paths(MAX_OPERATIONS + 1)),
            "openapi_spec.paths: declares more than 500 operations"
        );
    }

    #[test]
    fn find_matches_declared_operations_only() {
        let spec = parse(&v30()).unwrap();
        let found = |m: &str, p: &str| spec.find(m, p).map(|e| (e.method.clone(), e.path.clone()));
        let hit = |m: &str, p: &str| Some((m.to_owned(), p.to_owned()));
        assert_eq!(found("GET", "/items/42"), hit("GET", "/items/{id}"));
        assert_eq!(
            found("get", "/items/42?verbose=1"),
            hit("GET", "/items/{id}")
        );
        assert_eq!(found("GET", "/items/a%20b"), hit("GET", "/items/{id}"));
        // A literal segment wins over a template.
        assert_eq!(found("GET", "/items/mine"), hit("GET", "/items/mine"));
        assert_eq!(found("DELETE", "/items/mine"), hit("DELETE", "/items/{id}"));
        assert_eq!(found("GET", "/items"), hit("GET", "/items"));
        assert_eq!(found("HEAD", "/"), hit("HEAD", "/"));
        assert_eq!(found("GET", "/dirs/"), hit("GET", "/dirs/"));
        // Wrong method; HEAD is not GET.
        assert_eq!(found("PUT", "/items/42"), None);
        assert_eq!(found("HEAD", "/items/42"), None);
        assert_eq!(found("TRACE", "/items/42"), None);
        // Trailing slash only where declared.
        assert_eq!(found("GET", "/items/"), None);
        assert_eq!(found("GET", "/items/42/"), None);
        assert_eq!(found("GET", "/dirs"), None);
        // Extra, missing or empty segments.
        assert_eq!(found("GET", "/items/42/extra"), None);
        assert_eq!(found("GET", "/items//"), None);
        assert_eq!(found("GET", "//items"), None);
        assert_eq!(found("GET", "/Items"), None);
        assert_eq!(found("GET", "items"), None);
        assert_eq!(found("GET", ""), None);
        // Dot segments and encoded separators never fill a parameter.
        for p in [
            "/items/..",
            "/items/.",
            "/items/%2e%2e",
            "/items/.%2E",
            "/items/a%2Fb",
            "/items/a%5cb",
            "/items/a\\b",
            "/items/../items",
        ] {
            assert_eq!(found("GET", p), None, "{p}");
        }
        assert_eq!(found("GET", "/items/..."), hit("GET", "/items/{id}"));
    }

    #[test]
    fn agent_summary_lists_each_endpoint_with_its_parameters() {
        let spec = parse(&v31()).unwrap();
        let text = spec.agent_summary(
            "Weather",
            "Current weather\nfor any city.",
            "0.002",
            "https://aibank.example/v1/proxy/svc_1/",
        );
        assert_eq!(
            text,
            "Service: Weather\n\
             About: Current weather for any city.\n\
             Price: $0.002 per call, charged only when the service answers 2xx.\n\
             Call: send the endpoint's method to https://aibank.example/v1/proxy/svc_1 followed by its path, with your X-API-Key (or an x402 payment) and the parameters below.\n\
             Endpoints (1):\n\
             - GET /weather/{city} — Weather now\n    \
             query units (string)\n    \
             path city (required)\n"
        );
        let full = parse(&v30())
            .unwrap()
            .agent_summary("Items", "", "1", "https://a/x");
        assert!(!full.contains("About:"));
        assert!(full.contains("Endpoints (7):\n- HEAD /\n"));
        assert!(full.contains(
            "- GET /items\n    query limit (integer): At most this many\n    $ref other.yaml#/Token\n"
        ));
        assert!(full.contains(
            "- DELETE /items/{id} — Deletes the item.\n    path id (string, required)\n"
        ));
    }

    #[test]
    fn spec_errors_answer_invalid_spec() {
        let e: aibank_core::ApiError = parse(&json!({})).unwrap_err().into();
        assert_eq!(e.code(), aibank_core::ErrorCode::InvalidSpec);
        assert_eq!(
            e.message(),
            "openapi_spec.openapi: must be a version string 3.0.x or 3.1.x"
        );
    }
}

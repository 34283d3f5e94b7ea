//! `/data/v1`: PostgREST's HTTP conventions over [`Data`].
//!
//! `GET|HEAD|POST|PATCH|DELETE /<table>`, `GET|POST /rpc/<fn>`, `GET /` (OpenAPI), and the
//! service key's `admin/` endpoints (migrations, SQL console, schema reload). Handlers only
//! translate: query string and headers in, status, `Content-Range` and body out.

use std::sync::Arc;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{FromRequest, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use reactor_core::{ApiError, JsonBody, Principal};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{Data, Output, Shape, unwrap_single};
use crate::error::DataError;
use crate::grammar::{self, Condition, SelectItem};
use crate::migrations::{self, MigrationError, MigrationFile};
use crate::mutate::{Insert, Resolution};
use crate::render::{Body, Level, Levels};

/// Where the router answers. Its routes carry the prefix themselves rather than being nested
/// under it: a nested route is wrapped in two more services, each cloned (boxed) per request.
pub const PREFIX: &str = "/data/v1";

/// Handlers get the `Data` through one `Arc`: cloning `Data` itself per request touched one
/// reference count per handle it holds (pools, schema cache), all shared by every request.
pub fn router(data: Data) -> Router {
    let at = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(PREFIX, get(openapi))
        .route(&at("/admin/migrations"), post(apply))
        .route(&at("/admin/migrations/status"), post(status))
        .route(&at("/admin/query"), post(query))
        .route(&at("/admin/schema/reload"), post(reload))
        .route(&at("/admin/reset"), post(reset))
        .route(&at("/admin/types"), get(types))
        .route(&at("/rpc/{function}"), any(rpc))
        .route(&at("/{table}"), any(table))
        .with_state(Arc::new(data))
}

fn fail(e: DataError, principal: &Principal) -> Response {
    e.into_api(principal.user_id.is_some()).into_response()
}

/// What `Prefer:` asked for.
#[derive(Debug, Default, Clone)]
struct Prefer {
    return_: Option<String>,
    count: bool,
    resolution: Option<Resolution>,
    missing_default: bool,
    applied: Vec<String>,
}

impl Prefer {
    fn parse(headers: &HeaderMap) -> Prefer {
        let mut p = Prefer::default();
        for value in headers.get_all("prefer") {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                let applied = match token.split_once('=') {
                    Some(("return", r @ ("minimal" | "representation" | "headers-only"))) => {
                        p.return_ = Some(r.to_string());
                        true
                    }
                    Some(("count", "exact" | "planned" | "estimated")) => {
                        p.count = true;
                        true
                    }
                    Some(("resolution", "merge-duplicates")) => {
                        p.resolution = Some(Resolution::Merge);
                        true
                    }
                    Some(("resolution", "ignore-duplicates")) => {
                        p.resolution = Some(Resolution::Ignore);
                        true
                    }
                    Some(("missing", "default")) => {
                        p.missing_default = true;
                        true
                    }
                    _ => false,
                };
                if applied {
                    p.applied.push(token.to_string());
                }
            }
        }
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    Json,
    Object,
    Csv,
}

fn accept(headers: &HeaderMap) -> Result<Accept, ApiError> {
    let Some(value) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Accept::Json);
    };
    for media in value
        .split(',')
        .map(|m| m.split(';').next().unwrap_or("").trim())
    {
        match media {
            "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => {
                return Ok(Accept::Object);
            }
            "text/csv" => return Ok(Accept::Csv),
            "application/json" | "*/*" | "application/*" | "" | "application/openapi+json" => {
                return Ok(Accept::Json);
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "PGRST107",
        format!("None of these media types are available: {value}"),
    )
    .with_hint("ask for application/json, application/vnd.pgrst.object+json or text/csv"))
}

/// The query string read into the select list and per-level filters, plus the write
/// parameters. `args` are the names an rpc GET takes as arguments rather than filters.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub(crate) select: Option<Vec<SelectItem>>,
    pub(crate) levels: Levels,
    columns: Option<Vec<String>>,
    on_conflict: Option<Vec<String>>,
    args: Map<String, Value>,
}

pub(crate) fn parse_query(raw: Option<&str>, arg_names: &[String]) -> Result<Query, DataError> {
    let mut q = Query::default();
    let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes());
    for (key, value) in pairs {
        let (key, value) = (key.as_ref(), value.as_ref());
        if arg_names.iter().any(|a| a == key) {
            q.args
                .insert(key.to_string(), Value::String(value.to_string()));
            continue;
        }
        match key {
            "select" => q.select = Some(grammar::parse_select(key, value)?),
            "columns" => q.columns = Some(split_list(value)),
            "on_conflict" => q.on_conflict = Some(split_list(value)),
            _ => parse_level_param(&mut q.levels, key, value)?,
        }
    }
    Ok(q)
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `order`, `limit`, `offset`, `or`, `and`, `not.or`, `not.and`, each optionally prefixed by
/// an embed path (`author.order`), else a filter (`col`, `author.col`).
fn parse_level_param(levels: &mut Levels, key: &str, value: &str) -> Result<(), DataError> {
    let segments: Vec<&str> = key.split('.').collect();
    let (last, mut head) = match segments.split_last() {
        Some((last, head)) => (*last, head),
        None => return Ok(()),
    };
    let path = |head: &[&str]| head.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match last {
        "order" => levels.entry(path(head)).or_default().order = grammar::parse_order(key, value)?,
        "limit" => {
            levels.entry(path(head)).or_default().limit = Some(grammar::parse_count(key, value)?)
        }
        "offset" => {
            levels.entry(path(head)).or_default().offset = Some(grammar::parse_count(key, value)?)
        }
        "or" | "and" => {
            let negated = head.last() == Some(&"not");
            if negated {
                head = &head[..head.len() - 1];
            }
            let c = grammar::parse_logic(key, last == "or", negated, value)?;
            levels.entry(path(head)).or_default().conditions.push(c);
        }
        _ => {
            let (path, field) = grammar::parse_filter_key(key)?;
            let f = grammar::parse_filter(key, field, value)?;
            levels
                .entry(path)
                .or_default()
                .conditions
                .push(Condition::Filter(f));
        }
    }
    Ok(())
}

/// `Range: 0-9` → offset 0, limit 10, unless the query string set them.
fn apply_range(headers: &HeaderMap, levels: &mut Levels) -> Result<(), DataError> {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let spec = range.trim().trim_start_matches("items=");
    let (start, end) = spec.split_once('-').ok_or_else(|| {
        DataError::BadRequest(format!("Range \"{range}\" is not of the form 0-9"))
    })?;
    let start: u64 = start
        .trim()
        .parse()
        .map_err(|_| DataError::BadRequest(format!("Range \"{range}\" is not of the form 0-9")))?;
    let end: Option<u64> = match end.trim() {
        "" => None,
        e => Some(e.parse().map_err(|_| {
            DataError::BadRequest(format!("Range \"{range}\" is not of the form 0-9"))
        })?),
    };
    let top: &mut Level = levels.entry(Vec::new()).or_default();
    if top.offset.is_none() {
        top.offset = Some(start);
    }
    if let Some(end) = end {
        let n = end.saturating_sub(start) + 1;
        top.limit = Some(top.limit.map_or(n, |l| l.min(n)));
    }
    Ok(())
}

fn content_range(offset: u64, rows: i64, total: Option<i64>) -> String {
    let total = total.map_or("*".to_string(), |t| t.to_string());
    if rows <= 0 {
        format!("*/{total}")
    } else {
        format!("{offset}-{}/{total}", offset + rows as u64 - 1)
    }
}

fn respond(
    status: StatusCode,
    headers: Vec<(header::HeaderName, String)>,
    body: Option<(String, &'static str)>,
) -> Response {
    let mut response = match body {
        Some((text, content_type)) => {
            let mut r = Response::new(HttpBody::from(text));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        None => Response::new(HttpBody::empty()),
    };
    *response.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

const JSON: &str = "application/json; charset=utf-8";
const OBJECT: &str = "application/vnd.pgrst.object+json; charset=utf-8";
const CSV: &str = "text/csv; charset=utf-8";

/// The body as the caller asked for it: the array, its one object, or CSV.
fn render_body(
    body: String,
    rows: i64,
    accept: Accept,
) -> Result<(String, &'static str), DataError> {
    match accept {
        Accept::Json => Ok((body, JSON)),
        Accept::Object => {
            if rows != 1 {
                return Err(DataError::NotOne { rows });
            }
            Ok((unwrap_single(&body).to_string(), OBJECT))
        }
        Accept::Csv => Ok((to_csv(&body)?, CSV)),
    }
}

fn to_csv(body: &str) -> Result<String, DataError> {
    let rows: Vec<Map<String, Value>> =
        serde_json::from_str(body).map_err(|e| DataError::Internal(e.to_string()))?;
    let Some(first) = rows.first() else {
        return Ok(String::new());
    };
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let keys: Vec<&String> = first.keys().collect();
    let mut out = keys.iter().map(|k| field(k)).collect::<Vec<_>>().join(",");
    out.push('\n');
    for row in &rows {
        let line = keys
            .iter()
            .map(|k| match row.get(*k) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => field(s),
                Some(other) => field(&other.to_string()),
            })
            .collect::<Vec<_>>()
            .join(",");
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// One request's parts, as the handlers read them (the body under axum's default limit). They
/// are moved out of the request, not copied: the key middleware's principal and the headers.
struct Call {
    principal: Principal,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Some(principal) = parts.extensions.remove::<Principal>() else {
            // Only a route outside the key middleware gets here: a wiring mistake.
            tracing::error!("a data route was reached without the key middleware");
            return Err(ApiError::internal().into_response());
        };
        let method = parts.method.clone();
        let query = parts.uri.query().map(str::to_string);
        let headers = std::mem::take(&mut parts.headers);
        let body = Bytes::from_request(axum::extract::Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Call {
            principal,
            method,
            query,
            headers,
            body,
        })
    }
}

async fn table(State(data): State<Arc<Data>>, Path(table): Path<String>, call: Call) -> Response {
    let principal = &call.principal;
    handle_table(&data, principal, &table, &call)
        .await
        .unwrap_or_else(|e| fail(e, principal))
}

async fn handle_table(
    data: &Data,
    principal: &Principal,
    table: &str,
    call: &Call,
) -> Result<Response, DataError> {
    let (method, raw, headers, body) = (
        &call.method,
        call.query.as_deref(),
        &call.headers,
        &call.body[..],
    );
    let accept = match accept(headers) {
        Ok(a) => a,
        Err(e) => return Ok(e.into_response()),
    };
    let prefer = Prefer::parse(headers);
    let mut query = parse_query(raw, &[])?;
    let select = query
        .select
        .take()
        .unwrap_or_else(|| vec![SelectItem::Star]);
    let mut applied = prefer.applied.clone();
    let preference_header = |applied: &[String]| {
        (
            header::HeaderName::from_static("preference-applied"),
            applied.join(", "),
        )
    };

    if *method == Method::GET || *method == Method::HEAD {
        apply_range(headers, &mut query.levels)?;
        let offset = query
            .levels
            .get(&Vec::new())
            .and_then(|l| l.offset)
            .unwrap_or(0);
        let limited = query
            .levels
            .get(&Vec::new())
            .is_some_and(|l| l.limit.is_some() || l.offset.is_some());
        let shape = Shape {
            select,
            levels: query.levels,
            body: if *method == Method::HEAD {
                Body::None
            } else {
                Body::Json
            },
            count: prefer.count,
            single: accept == Accept::Object,
        };
        let Output { body, rows, total } = data.read(principal, table, &shape).await?;
        if let Some(total) = total
            && offset > 0
            && offset >= total as u64
            && rows == 0
        {
            return Err(DataError::RangeNotSatisfiable { offset, total });
        }
        let partial =
            limited && total.is_some_and(|t| (rows as u64 + offset) < t as u64 || offset > 0);
        let status = if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        let mut out_headers = vec![(header::CONTENT_RANGE, content_range(offset, rows, total))];
        if !applied.is_empty() {
            out_headers.push(preference_header(&applied));
        }
        let rendered = match body {
            Some(b) => Some(render_body(b, rows, accept)?),
            None => {
                if accept == Accept::Object && rows != 1 {
                    return Err(DataError::NotOne { rows });
                }
                None
            }
        };
        if *method == Method::HEAD {
            let content_type = match accept {
                Accept::Json => JSON,
                Accept::Object => OBJECT,
                Accept::Csv => CSV,
            };
            out_headers.push((header::CONTENT_TYPE, content_type.to_string()));
            return Ok(respond(status, out_headers, None));
        }
        return Ok(respond(status, out_headers, rendered));
    }

    let return_ = prefer
        .return_
        .clone()
        .unwrap_or_else(|| "minimal".to_string());
    let representation = return_ == "representation";
    let headers_only = return_ == "headers-only";
    let schema = data.schema();
    // headers-only needs the primary key of what was written, for Location.
    let pk: Vec<String> = schema
        .table(table)
        .map(|t| t.primary_key.clone())
        .unwrap_or_default();
    let (items, want) = if representation {
        (select, Body::Json)
    } else if headers_only && !pk.is_empty() && *method == Method::POST {
        (
            pk.iter()
                .map(|c| SelectItem::Field {
                    alias: None,
                    field: grammar::Field {
                        name: c.clone(),
                        path: vec![],
                    },
                    cast: None,
                })
                .collect(),
            Body::Json,
        )
    } else {
        (select, Body::None)
    };
    let shape = Shape {
        select: items,
        levels: query.levels,
        body: want,
        count: false,
        single: accept == Accept::Object,
    };
    let (output, success) = match *method {
        Method::POST => {
            let rows = json_rows(body)?;
            let insert = Insert {
                rows,
                columns: query.columns,
                missing_default: prefer.missing_default,
                on_conflict: query.on_conflict,
                resolution: prefer.resolution,
            };
            (
                data.insert(principal, table, &insert, &shape).await?,
                StatusCode::CREATED,
            )
        }
        Method::PATCH => {
            let patch = match parse_json(body)? {
                Value::Object(m) => m,
                _ => return Err(DataError::BadBody("PATCH takes one JSON object".into())),
            };
            (
                data.update(principal, table, &patch, &shape).await?,
                StatusCode::OK,
            )
        }
        Method::DELETE => (data.delete(principal, table, &shape).await?, StatusCode::OK),
        Method::PUT => {
            // One whole row, named by its primary key in the URL: insert it or replace it.
            let row = match parse_json(body)? {
                Value::Object(m) => m,
                _ => return Err(DataError::BadBody("PUT takes one JSON object".into())),
            };
            for (column, value) in put_key(&shape.levels, &pk)? {
                let given = match row.get(&column) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                };
                if given.as_deref() != Some(value.as_str()) {
                    return Err(DataError::Rule {
                        code: "PGRST115",
                        message: "Payload values do not match URL in primary key column(s)".into(),
                        hint: "the body's primary key must equal the one in the URL",
                    });
                }
            }
            let insert = Insert {
                rows: vec![row],
                columns: None,
                missing_default: false,
                on_conflict: Some(pk.clone()),
                resolution: Some(Resolution::Merge),
            };
            (
                data.insert(principal, table, &insert, &shape).await?,
                StatusCode::OK,
            )
        }
        _ => {
            return Ok(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "PGRST117",
                format!("Unsupported HTTP method: {method}"),
            )
            .into_response());
        }
    };
    applied.retain(|a| !a.starts_with("count="));
    let mut out_headers = Vec::new();
    if !applied.is_empty() {
        out_headers.push(preference_header(&applied));
    }
    let range = if *method == Method::POST {
        "*/*".to_string()
    } else {
        content_range(0, output.rows, None)
    };
    out_headers.push((header::CONTENT_RANGE, range));
    if representation {
        let body = output.body.unwrap_or_else(|| "[]".into());
        let rendered = render_body(body, output.rows, accept)?;
        return Ok(respond(success, out_headers, Some(rendered)));
    }
    if accept == Accept::Object && output.rows != 1 {
        return Err(DataError::NotOne { rows: output.rows });
    }
    if headers_only
        && let Some(body) = &output.body
        && let Some(location) = location(table, &pk, body)
    {
        out_headers.push((header::LOCATION, location));
    }
    let status = if *method == Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(respond(status, out_headers, None))
}

/// The `pk=eq.value` filters of a PUT: exactly one per primary-key column, and nothing else.
fn put_key(levels: &Levels, pk: &[String]) -> Result<Vec<(String, String)>, DataError> {
    let refused = || DataError::Rule {
        code: "PGRST105",
        message: "Filters must include all and only primary key columns with 'eq' operators".into(),
        hint: "name the row by its primary key, e.g. PUT /todos?id=eq.1",
    };
    if pk.is_empty() || levels.keys().any(|path| !path.is_empty()) {
        return Err(refused());
    }
    let conditions = levels
        .get(&Vec::new())
        .map(|l| l.conditions.as_slice())
        .unwrap_or_default();
    let mut found = Vec::new();
    for c in conditions {
        match c {
            Condition::Filter(f)
                if f.op == grammar::Op::Eq
                    && !f.negated
                    && f.quantifier.is_none()
                    && f.field.path.is_empty()
                    && pk.contains(&f.field.name)
                    && !found.iter().any(|(name, _)| name == &f.field.name) =>
            {
                if let grammar::Operand::Value(v) = &f.operand {
                    found.push((f.field.name.clone(), v.clone()));
                } else {
                    return Err(refused());
                }
            }
            _ => return Err(refused()),
        }
    }
    if found.len() != pk.len() {
        return Err(refused());
    }
    Ok(found)
}

/// `/<table>?<pk>=eq.<value>` for the first written row.
fn location(table: &str, pk: &[String], body: &str) -> Option<String> {
    let rows: Vec<Map<String, Value>> = serde_json::from_str(body).ok()?;
    let row = rows.first()?;
    let filters = pk
        .iter()
        .map(|c| {
            let v = match row.get(c)? {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!(
                "{}=eq.{}",
                form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>(),
                form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(format!("/{table}?{}", filters.join("&")))
}

fn parse_json(body: &[u8]) -> Result<Value, DataError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DataError::BadBody(
            "Empty or invalid json: the body is empty".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| DataError::BadBody(format!("Empty or invalid json: {e}")))
}

fn json_rows(body: &[u8]) -> Result<Vec<Map<String, Value>>, DataError> {
    match parse_json(body)? {
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(DataError::BadBody(
                    "every element of the array must be an object".into(),
                )),
            })
            .collect(),
        _ => Err(DataError::BadBody(
            "send a JSON object or an array of objects".into(),
        )),
    }
}

async fn rpc(State(data): State<Arc<Data>>, Path(function): Path<String>, call: Call) -> Response {
    let principal = &call.principal;
    handle_rpc(&data, principal, &function, &call)
        .await
        .unwrap_or_else(|e| fail(e, principal))
}

async fn handle_rpc(
    data: &Data,
    principal: &Principal,
    function: &str,
    call: &Call,
) -> Result<Response, DataError> {
    let (method, raw, headers, body) = (
        &call.method,
        call.query.as_deref(),
        &call.headers,
        &call.body[..],
    );
    let accept = match accept(headers) {
        Ok(a) => a,
        Err(e) => return Ok(e.into_response()),
    };
    let prefer = Prefer::parse(headers);
    let read_only = match *method {
        Method::GET | Method::HEAD => true,
        Method::POST => false,
        _ => {
            return Ok(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "PGRST117",
                format!("Unsupported HTTP method: {method}"),
            )
            .into_response());
        }
    };
    let arg_names: Vec<String> = if read_only {
        data.schema()
            .functions
            .get(function)
            .map(|fs| {
                fs.iter()
                    .flat_map(|f| f.args.iter().map(|a| a.name.clone()))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut query = parse_query(raw, &arg_names)?;
    let args = if read_only {
        std::mem::take(&mut query.args)
    } else if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match parse_json(body)? {
            Value::Object(m) => m,
            _ => {
                return Err(DataError::BadBody(
                    "rpc takes a JSON object of named arguments".into(),
                ));
            }
        }
    };
    apply_range(headers, &mut query.levels)?;
    let offset = query
        .levels
        .get(&Vec::new())
        .and_then(|l| l.offset)
        .unwrap_or(0);
    let shape = Shape {
        select: query.select.unwrap_or_else(|| vec![SelectItem::Star]),
        levels: query.levels,
        body: if *method == Method::HEAD {
            Body::None
        } else {
            Body::Json
        },
        count: prefer.count,
        single: false,
    };
    let out = data
        .rpc(principal, function, &args, &shape, read_only)
        .await?;
    let mut out_headers = Vec::new();
    if !out.single {
        out_headers.push((
            header::CONTENT_RANGE,
            content_range(offset, out.output.rows, out.output.total),
        ));
    }
    let body = out.output.body.unwrap_or_else(|| "null".into());
    if *method == Method::HEAD {
        return Ok(respond(StatusCode::OK, out_headers, None));
    }
    let rendered = if out.single {
        (body, JSON)
    } else {
        render_body(body, out.output.rows, accept)?
    };
    Ok(respond(StatusCode::OK, out_headers, Some(rendered)))
}

async fn openapi(State(data): State<Arc<Data>>) -> Response {
    let doc = crate::openapi::document(&data.schema());
    (
        [(
            header::CONTENT_TYPE,
            "application/openapi+json; charset=utf-8",
        )],
        Json(doc),
    )
        .into_response()
}

/// TypeScript types of the exposed schema (`reactor data types`); public like the OpenAPI
/// document, which says the same.
async fn types(State(data): State<Arc<Data>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/typescript; charset=utf-8",
        )],
        crate::types::typescript(&data.schema()),
    )
        .into_response()
}

/// `reactor data reset`: empties a development database (O1 only).
async fn reset(
    State(data): State<Arc<Data>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("resetting the database")?;
    migrations::reset(data.db()).await?;
    data.reload_schema().await.map_err(|e| e.into_api(true))?;
    Ok(Json(json!({ "reset": true })))
}

async fn reload(
    State(data): State<Arc<Data>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("reloading the schema cache")?;
    data.reload_schema().await.map_err(|e| e.into_api(true))?;
    let schema = data.schema();
    Ok(Json(
        json!({ "tables": schema.tables.len(), "functions": schema.functions.len() }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Files {
    files: Vec<MigrationFile>,
}

impl Files {
    /// The files with checksums computed here.
    fn checked(self) -> Vec<MigrationFile> {
        self.files
            .into_iter()
            .map(|f| MigrationFile::new(f.name, f.sql))
            .collect()
    }
}

impl From<MigrationError> for ApiError {
    fn from(e: MigrationError) -> Self {
        let hint = e.hint_text();
        let api = match &e {
            MigrationError::Modified { name } => {
                ApiError::new(StatusCode::CONFLICT, "migration_modified", e.to_string())
                    .with_details(name.clone())
            }
            MigrationError::Failed {
                file,
                line,
                column,
                message,
                code,
            } => ApiError::new(
                StatusCode::BAD_REQUEST,
                code.clone(),
                format!("{file}:{line}:{column}: {message}"),
            )
            .with_details(format!("{file}:{line}:{column}")),
            MigrationError::Untranslatable {
                file, line, column, ..
            } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_on_sqlite",
                e.to_string(),
            )
            .with_details(format!("{file}:{line}:{column}")),
            MigrationError::ResetRefused => {
                ApiError::new(StatusCode::BAD_REQUEST, "reset_refused", e.to_string())
                    .with_hint("on Postgres, drop what you no longer want with a new migration")
            }
            MigrationError::NotUtf8 { .. } | MigrationError::Read { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_migration", e.to_string())
            }
            MigrationError::Db(cause) => {
                tracing::error!(error = %cause, "migration failed");
                return ApiError::internal();
            }
        };
        match hint {
            Some(h) => api.with_hint(h),
            None => api,
        }
    }
}

async fn status(
    State(data): State<Arc<Data>>,
    Extension(principal): Extension<Principal>,
    JsonBody(files): JsonBody<Files>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("running migrations")?;
    let states = migrations::status(data.db(), &files.checked()).await?;
    Ok(Json(json!({ "migrations": states })))
}

async fn apply(
    State(data): State<Arc<Data>>,
    Extension(principal): Extension<Principal>,
    JsonBody(files): JsonBody<Files>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("running migrations")?;
    let applied = migrations::migrate(data.db(), &files.checked()).await?;
    if !applied.is_empty() {
        data.reload_schema().await.map_err(|e| e.into_api(true))?;
    }
    Ok(Json(json!({ "applied": applied })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
}

/// The SQL console: one statement, the owner's rights, the service key only. A statement
/// that changed the schema is visible to `/data/v1` right away: the cache is reloaded.
async fn query(
    State(data): State<Arc<Data>>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<QueryBody>,
) -> Result<Json<Value>, ApiError> {
    principal.require_service("running SQL")?;
    match crate::query::run(data.db(), &body.sql).await {
        Ok(result) => {
            if matches!(result, crate::query::QueryResult::Changed { .. }) {
                data.reload_schema().await.map_err(|e| e.into_api(true))?;
            }
            Ok(Json(json!(result)))
        }
        Err(crate::query::QueryError::Database { code, message }) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, code, message)
                .with_hint("check the statement"))
        }
        Err(crate::query::QueryError::Db(e)) => {
            tracing::error!(error = %e, "query failed");
            Err(ApiError::internal())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_params_split_paths_and_negation() {
        let mut levels = Levels::new();
        parse_level_param(&mut levels, "author.order", "name.desc").expect("order");
        parse_level_param(&mut levels, "not.or", "(a.eq.1,b.eq.2)").expect("not.or");
        parse_level_param(&mut levels, "author.books.limit", "2").expect("limit");
        parse_level_param(&mut levels, "author.name", "eq.x").expect("filter");
        let author = &levels[&vec!["author".to_string()]];
        assert_eq!(author.order.len(), 1);
        assert_eq!(author.conditions.len(), 1);
        assert_eq!(
            levels[&vec!["author".to_string(), "books".to_string()]].limit,
            Some(2)
        );
        let Condition::Logic { negated, or, .. } = &levels[&Vec::new()].conditions[0] else {
            panic!("logic")
        };
        assert!(*negated && *or);
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(content_range(0, 10, None), "0-9/*");
        assert_eq!(content_range(5, 2, Some(7)), "5-6/7");
        assert_eq!(content_range(0, 0, Some(0)), "*/0");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let csv = to_csv(r#"[{"a":1,"b":"x,y"},{"a":null,"b":"say \"hi\""}]"#).expect("csv");
        assert_eq!(csv, "a,b\n1,\"x,y\"\n,\"say \"\"hi\"\"\"\n");
    }
}

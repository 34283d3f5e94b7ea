//! `GET /data/v1/`: an OpenAPI 3 document of the exposed tables and functions, generated from
//! the schema cache (PostgREST serves the same at its root), so API explorers and client
//! generators work against a project without extra configuration.

use serde_json::{Map, Value, json};

use crate::schema::{Column, Kind, SchemaCache};

fn column_schema(c: &Column) -> Value {
    let mut s = match c.kind() {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int => json!({"type": "integer"}),
        Kind::Float => json!({"type": "number"}),
        Kind::Json => json!({}),
        Kind::Array => json!({"type": "array", "items": {}}),
        Kind::TsVector | Kind::Other => {
            let format = match c.ty.as_str() {
                "uuid" => Some("uuid"),
                "timestamp with time zone"
                | "timestamptz"
                | "timestamp without time zone"
                | "timestamp" => Some("date-time"),
                "date" => Some("date"),
                _ => None,
            };
            match format {
                Some(f) => json!({"type": "string", "format": f}),
                None => json!({"type": "string"}),
            }
        }
    };
    if let Value::Object(m) = &mut s {
        m.insert("description".into(), Value::String(c.ty.clone()));
        if c.nullable {
            m.insert("nullable".into(), Value::Bool(true));
        }
    }
    s
}

pub fn document(schema: &SchemaCache) -> Value {
    let mut names: Vec<&String> = schema.tables.keys().collect();
    names.sort();
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let params = |extra: &[&str]| {
        extra
            .iter()
            .map(|p| json!({"$ref": format!("#/components/parameters/{p}")}))
            .collect::<Vec<_>>()
    };
    for name in names {
        let table = &schema.tables[name];
        let properties: Map<String, Value> = table
            .columns
            .iter()
            .map(|c| (c.name.clone(), column_schema(c)))
            .collect();
        let required: Vec<&String> = table
            .columns
            .iter()
            .filter(|c| !c.nullable && c.default.is_none() && !c.generated)
            .map(|c| &c.name)
            .collect();
        schemas.insert(
            name.clone(),
            json!({"type": "object", "properties": properties, "required": required}),
        );
        let item = json!({"$ref": format!("#/components/schemas/{name}")});
        let rows = json!({"type": "array", "items": item});
        let ok = |desc: &str| json!({"description": desc, "content": {"application/json": {"schema": rows}}});
        let mut ops = json!({
            "get": {
                "tags": [name], "summary": format!("Read rows of {name}"),
                "parameters": params(&["select", "order", "limit", "offset", "range", "preferCount"]),
                "responses": {"200": ok("the rows"), "206": ok("a page of the rows")}
            }
        });
        if !table.view
            && let Value::Object(m) = &mut ops
        {
            m.insert("post".into(), json!({
                    "tags": [name], "summary": format!("Insert rows into {name}"),
                    "parameters": params(&["select", "columns", "onConflict", "preferWrite"]),
                    "requestBody": {"content": {"application/json": {"schema": {"oneOf": [item, rows]}}}},
                    "responses": {"201": ok("inserted")}
                }));
            m.insert(
                "patch".into(),
                json!({
                    "tags": [name], "summary": format!("Update filtered rows of {name}"),
                    "parameters": params(&["select", "preferWrite"]),
                    "requestBody": {"content": {"application/json": {"schema": item}}},
                    "responses": {"200": ok("updated"), "204": {"description": "updated"}}
                }),
            );
            m.insert(
                "delete".into(),
                json!({
                    "tags": [name], "summary": format!("Delete filtered rows of {name}"),
                    "parameters": params(&["select", "preferWrite"]),
                    "responses": {"200": ok("deleted"), "204": {"description": "deleted"}}
                }),
            );
            if !table.primary_key.is_empty() {
                m.insert(
                    "put".into(),
                    json!({
                        "tags": [name],
                        "summary": format!("Insert or replace one row of {name}, named by its primary key ({}=eq.…)", table.primary_key.join(", ")),
                        "parameters": params(&["select", "preferWrite"]),
                        "requestBody": {"content": {"application/json": {"schema": item}}},
                        "responses": {"200": ok("written"), "204": {"description": "written"}}
                    }),
                );
            }
        }
        paths.insert(format!("/{name}"), ops);
    }
    let mut functions: Vec<&String> = schema.functions.keys().collect();
    functions.sort();
    for name in functions {
        let Some(f) = schema.functions[name].first() else {
            continue;
        };
        let args: Map<String, Value> = f
            .args
            .iter()
            .map(|a| {
                let c = Column {
                    name: a.name.clone(),
                    ty: a.ty.clone(),
                    nullable: false,
                    default: None,
                    generated: false,
                };
                (a.name.clone(), column_schema(&c))
            })
            .collect();
        let required: Vec<&String> = f
            .args
            .iter()
            .filter(|a| !a.has_default)
            .map(|a| &a.name)
            .collect();
        let mut ops = json!({
            "post": {
                "tags": ["rpc"], "summary": format!("Call {name}"),
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": args, "required": required}}}},
                "responses": {"200": {"description": format!("returns {}", f.returns)}}
            }
        });
        if !f.volatile
            && let Value::Object(m) = &mut ops
        {
            m.insert(
                "get".into(),
                json!({
                    "tags": ["rpc"], "summary": format!("Call {name} (read-only)"),
                    "responses": {"200": {"description": format!("returns {}", f.returns)}}
                }),
            );
        }
        paths.insert(format!("/rpc/{name}"), ops);
    }
    let q = |name: &str, desc: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": desc});
    let h = |name: &str, desc: &str| json!({"name": name, "in": "header", "required": false, "schema": {"type": "string"}, "description": desc});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Reactor Data API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "PostgREST's URL grammar over the project's tables. Row-level security applies to every request."},
        "servers": [{"url": "/data/v1"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "select": q("select", "columns and embedded resources, e.g. id,title,author(name)"),
                "order": q("order", "e.g. created_at.desc.nullslast"),
                "limit": q("limit", "the maximum number of rows"),
                "offset": q("offset", "rows to skip"),
                "columns": q("columns", "the columns to insert"),
                "onConflict": q("on_conflict", "the unique columns an upsert resolves on"),
                "range": h("Range", "e.g. 0-24"),
                "preferCount": h("Prefer", "count=exact for the total in Content-Range"),
                "preferWrite": h("Prefer", "return=minimal|representation|headers-only, resolution=merge-duplicates|ignore-duplicates, missing=default")
            },
            "securitySchemes": {"apikey": {"type": "apiKey", "in": "header", "name": "apikey"},
                                "bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"apikey": []}, {"bearer": []}]
    })
}

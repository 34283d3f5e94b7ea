//! `/sites/v1`: every site at `/sites/v1/<name>/…` for anyone ([`public_router`]), the list of
//! sites for a project key ([`router`]), and [`fallback`], which the server asks for any path
//! no route claimed (the default site at `/`, or a site by its host name).

use axum::Router;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::{Site, Sites, serve};

/// The prefix every site is also served under.
pub const PREFIX: &str = "/sites/v1";

/// Routes anyone may call: the sites themselves.
pub fn public_router(sites: Sites) -> Router {
    Router::new()
        .route("/{name}", get(add_slash).head(add_slash))
        .route("/{name}/", get(serve_root).head(serve_root))
        .route("/{name}/{*path}", get(serve_path).head(serve_path))
        .with_state(sites)
}

/// Routes behind the key middleware: `GET /sites/v1`.
pub fn router(sites: Sites) -> Router {
    Router::new().route("/", get(list)).with_state(sites)
}

/// Serves `request` from the site its `Host` names under the configured domain, else from the
/// default site; `None` when there is no such site (the server then answers its JSON 404).
pub async fn fallback(
    sites: &Sites,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    let by_host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| sites.site_for_host(h));
    let site = by_host.or_else(|| sites.default_site())?;
    Some(serve(&site, method, uri.path(), uri.query(), headers, "").await)
}

async fn list(State(sites): State<Sites>) -> Response {
    let current = sites.current();
    let default = sites.default_site().map(|s| s.name.clone());
    let list: Vec<Value> = current.sites.iter().map(|s| describe(s)).collect();
    axum::Json(json!({
        "release": current.release,
        "default": default,
        "domain": sites.config().domain,
        "sites": list,
    }))
    .into_response()
}

fn describe(site: &Site) -> Value {
    let (files, bytes) = site.totals().unzip();
    json!({
        "name": site.name,
        "url": format!("{PREFIX}/{}/", site.name),
        "spa": site.spa,
        "source": match site.files {
            crate::Files::Dir(_) => "working tree",
            crate::Files::Assets(_) => "release",
        },
        "files": files,
        "bytes": bytes,
    })
}

async fn add_slash(Path(name): Path<String>, uri: Uri) -> Response {
    let mut location = format!("{PREFIX}/{name}/");
    if let Some(q) = uri.query() {
        location = format!("{location}?{q}");
    }
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn serve_root(
    State(sites): State<Sites>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    serve_named(&sites, &name, "/", &method, &uri, &headers).await
}

async fn serve_path(
    State(sites): State<Sites>,
    Path((name, _)): Path<(String, String)>,
    OriginalUri(original): OriginalUri,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // The raw path (the extractor's is decoded already, and `serve` decodes exactly once),
    // taken from the full URI since the router may be nested.
    let raw = original
        .path()
        .strip_prefix(&format!("{PREFIX}/{name}"))
        .unwrap_or("/")
        .to_string();
    serve_named(&sites, &name, &raw, &method, &uri, &headers).await
}

async fn serve_named(
    sites: &Sites,
    name: &str,
    raw: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let Some(site) = sites.current().site(name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no site named `{name}`"),
        )
            .into_response();
    };
    serve(
        &site,
        method,
        raw,
        uri.query(),
        headers,
        &format!("{PREFIX}/{name}"),
    )
    .await
}

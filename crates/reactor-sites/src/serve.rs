//! Answering one request for a site: redirects, the file a path names (`/about` may be
//! `about`, `about.html` or `about/index.html`), the SPA fallback, `404.html`; then content
//! type, validators, caching and encoding.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use percent_encoding::percent_decode_str;

use crate::{Asset, Files, Site};

/// Files up to this size are read whole; larger ones stream.
const READ_WHOLE: u64 = 256 * 1024;

/// Serves `raw_path` (the URL path below the site's root, still percent-encoded, starting with
/// `/`) of `site`. `base` is where the site's root is mounted (`""` at `/`,
/// `/sites/v1/web` under the API), for the redirects this makes.
pub async fn serve(
    site: &Site,
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    base: &str,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(path) = clean(raw_path) else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    let url_path = format!("/{}", path.rel);
    if let Some(response) = redirect(site, &url_path, query, base) {
        return with_rules(site, &url_path, response);
    }
    let response = match find(site, &path).await {
        Found::File(file) => respond(site, file, StatusCode::OK, method, headers).await,
        Found::AddSlash => {
            let mut location = format!("{base}/{}/", path.rel);
            if let Some(q) = query {
                location = format!("{location}?{q}");
            }
            moved(StatusCode::MOVED_PERMANENTLY, &location)
        }
        Found::Missing => not_found(site, &path, method, headers).await,
    };
    with_rules(site, &url_path, response)
}

/// A request path made safe: decoded, split into segments, `.`/`..` and hidden segments
/// refused (except `.well-known`), so nothing outside the site's files can be named.
struct Clean {
    /// `/`-joined segments, no leading or trailing slash (`""` for the root).
    rel: String,
    trailing_slash: bool,
}

fn clean(raw: &str) -> Option<Clean> {
    let decoded = percent_decode_str(raw).decode_utf8().ok()?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" => {}
            "." | ".." => return None,
            s if s.starts_with('.') && s != ".well-known" => return None,
            s => segments.push(s),
        }
    }
    Some(Clean {
        rel: segments.join("/"),
        trailing_slash: decoded.ends_with('/') || segments.is_empty(),
    })
}

enum Found {
    File(Resolved),
    /// A directory with an `index.html`, asked for without its slash.
    AddSlash,
    Missing,
}

/// A file chosen for a response.
struct Resolved {
    /// The site path it was found at: decides its type and caching.
    name: String,
    source: Source,
}

enum Source {
    Disk {
        path: PathBuf,
        len: u64,
        modified: Option<SystemTime>,
    },
    Asset {
        asset: Asset,
        modified: SystemTime,
    },
}

async fn find(site: &Site, path: &Clean) -> Found {
    let candidates: Vec<String> = if path.rel.is_empty() {
        vec!["index.html".into()]
    } else if path.trailing_slash {
        vec![format!("{}/index.html", path.rel)]
    } else {
        vec![path.rel.clone(), format!("{}.html", path.rel)]
    };
    for name in candidates {
        if let Some(source) = lookup(site, &name).await {
            return Found::File(Resolved { name, source });
        }
    }
    if !path.trailing_slash
        && lookup(site, &format!("{}/index.html", path.rel))
            .await
            .is_some()
    {
        return Found::AddSlash;
    }
    Found::Missing
}

/// The file at `name` (a cleaned site path), if the site has one.
async fn lookup(site: &Site, name: &str) -> Option<Source> {
    match &site.files {
        Files::Assets(assets) => assets.files.get(name).map(|a| Source::Asset {
            asset: a.clone(),
            modified: assets.modified,
        }),
        Files::Dir(root) => {
            let root = tokio::fs::canonicalize(root).await.ok()?;
            let path = tokio::fs::canonicalize(root.join(name)).await.ok()?;
            // A symbolic link in the working tree may point anywhere.
            if !path.starts_with(&root) {
                return None;
            }
            let meta = tokio::fs::metadata(&path).await.ok()?;
            meta.is_file().then(|| Source::Disk {
                path,
                len: meta.len(),
                modified: meta.modified().ok(),
            })
        }
    }
}

async fn not_found(site: &Site, path: &Clean, method: &Method, headers: &HeaderMap) -> Response {
    if site.spa
        && looks_like_a_page(&path.rel, headers)
        && let Some(source) = lookup(site, "index.html").await
    {
        let file = Resolved {
            name: "index.html".into(),
            source,
        };
        return respond(site, file, StatusCode::OK, method, headers).await;
    }
    if let Some(source) = lookup(site, "404.html").await {
        let file = Resolved {
            name: "404.html".into(),
            source,
        };
        return respond(site, file, StatusCode::NOT_FOUND, method, headers).await;
    }
    plain(StatusCode::NOT_FOUND, "Not Found")
}

/// A client-side route (`/todos/42`) rather than a missing asset (`/app.js`): no extension on
/// the last segment, or a browser asking for HTML.
fn looks_like_a_page(rel: &str, headers: &HeaderMap) -> bool {
    let last = rel.rsplit('/').next().unwrap_or("");
    !last.contains('.')
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

async fn respond(
    site: &Site,
    file: Resolved,
    status: StatusCode,
    method: &Method,
    request: &HeaderMap,
) -> Response {
    // What is sent: a local file (dev), or one representation of an asset, named by hash.
    let (disk_path, blob, len, etag, modified, encoding, vary) = match &file.source {
        Source::Disk {
            path,
            len,
            modified,
        } => {
            let stamp = modified
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let etag = format!("W/\"{len:x}-{stamp:x}\"");
            (Some(path), None, *len, etag, *modified, None, false)
        }
        Source::Asset { asset, modified } => {
            let ((sha256, len), encoding) = choose_encoding(asset, request);
            let etag = format!("\"{sha256}\"");
            let vary = asset.gzip.is_some() || asset.br.is_some();
            (
                None,
                Some(sha256),
                len,
                etag,
                Some(*modified),
                encoding,
                vary,
            )
        }
    };

    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, value(&content_type(&file.name)));
    h.insert(header::CACHE_CONTROL, value(cache_control(&file.name)));
    h.insert(header::ETAG, value(&etag));
    if let Some(modified) = modified {
        h.insert(
            header::LAST_MODIFIED,
            value(&httpdate::fmt_http_date(modified)),
        );
    }
    if vary {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if status == StatusCode::OK && not_modified(request, &etag, modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    if let Some(encoding) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    *response.status_mut() = status;
    if method == Method::HEAD {
        return response;
    }
    // A release's small files are kept in memory once read: they never change.
    if let (Some(sha256), Files::Assets(assets)) = (blob, &site.files)
        && let Some(bytes) = assets.memory.get(sha256)
    {
        *response.body_mut() = Body::from(bytes);
        return response;
    }
    let path = match (disk_path, blob, &site.files) {
        (Some(path), _, _) => Ok(path.clone()),
        (None, Some(sha256), Files::Assets(assets)) => assets.blobs.path(sha256).await,
        _ => Err(std::io::Error::other("an asset outside a release")),
    };
    match path {
        Ok(path) => match body(&path, len).await {
            Ok((body, whole)) => {
                if let (Some(sha256), Files::Assets(assets), Some(bytes)) =
                    (blob, &site.files, whole)
                {
                    assets.memory.put(sha256, bytes);
                }
                *response.body_mut() = body;
                return response;
            }
            Err(e) => {
                tracing::error!(site = %site.name, file = %file.name, error = %e, "a site's file cannot be read");
            }
        },
        Err(e) => {
            tracing::error!(site = %site.name, file = %file.name, error = %e, "a site's file cannot be fetched");
        }
    }
    plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

/// The body, and the bytes when the file was read whole.
async fn body(path: &Path, len: u64) -> std::io::Result<(Body, Option<bytes::Bytes>)> {
    if len <= READ_WHOLE {
        let bytes = bytes::Bytes::from(tokio::fs::read(path).await?);
        return Ok((Body::from(bytes.clone()), Some(bytes)));
    }
    let file = tokio::fs::File::open(path).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    Ok((body, None))
}

/// The representation to send: `(sha256, size)` and its `Content-Encoding`. Brotli when the
/// client takes it, then gzip, then the file itself.
fn choose_encoding<'a>(
    asset: &'a Asset,
    request: &HeaderMap,
) -> ((&'a str, u64), Option<&'static str>) {
    let accepted = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(br) = &asset.br
        && accepts(accepted, "br")
    {
        return ((&br.sha256, br.size), Some("br"));
    }
    if let Some(gz) = &asset.gzip
        && accepts(accepted, "gzip")
    {
        return ((&gz.sha256, gz.size), Some("gzip"));
    }
    ((&asset.sha256, asset.size), None)
}

/// Whether an `Accept-Encoding` list takes `coding` (named, or `*`, without `q=0`).
fn accepts(list: &str, coding: &str) -> bool {
    let mut star = false;
    for item in list.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        if name.eq_ignore_ascii_case(coding) {
            return !refused;
        }
        if name == "*" {
            star = !refused;
        }
    }
    star
}

/// `If-None-Match` (weak comparison), else `If-Modified-Since` to the second.
fn not_modified(request: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(list) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let ours = etag.trim_start_matches("W/");
        return list
            .split(',')
            .map(|t| t.trim())
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match (since, modified) {
        (Some(since), Some(modified)) => {
            let secs = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs()
            };
            secs(modified) <= secs(since)
        }
        _ => false,
    }
}

/// The `Content-Type` of a site path, with a charset for text.
fn content_type(name: &str) -> String {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let essence = match mime.essence_str() {
        // The registered type since RFC 9239.
        "application/javascript" => "text/javascript",
        other => other,
    };
    let texty = essence.starts_with("text/")
        || matches!(
            essence,
            "application/json" | "application/xml" | "image/svg+xml" | "application/manifest+json"
        );
    if texty {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

/// HTML is revalidated on every load (a deploy shows at once); a file whose name carries a
/// content hash never changes, so it is cached for a year; anything else for an hour.
fn cache_control(name: &str) -> &'static str {
    if name.ends_with(".html") {
        "public, max-age=0, must-revalidate"
    } else if is_hashed(name) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=3600"
    }
}

/// Whether a file name carries a build tool's content hash: `app-DiwrgTda.js` (Vite),
/// `main.3f2a1b9c.js` (webpack), or anything under `_next/static/` (Next.js). The hash is
/// the last `-` or `.` separated part before the extension, 8+ letters, digits or `_`, with
/// a digit or an uppercase letter past its first character (so `my-component.js` and
/// `site.Header.js` are not taken for hashed).
pub(crate) fn is_hashed(name: &str) -> bool {
    if name.starts_with("_next/static/") {
        return true;
    }
    let file = name.rsplit('/').next().unwrap_or(name);
    let Some((stem, _ext)) = file.rsplit_once('.') else {
        return false;
    };
    let Some(cut) = stem.rfind(['-', '.']) else {
        return false;
    };
    let (head, hash) = (&stem[..cut], &stem[cut + 1..]);
    !head.is_empty()
        && hash.len() >= 8
        && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && hash
            .bytes()
            .skip(1)
            .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// The first redirect rule that matches, as a response.
fn redirect(site: &Site, url_path: &str, query: Option<&str>, base: &str) -> Option<Response> {
    for rule in &site.redirects {
        let Some(splat) = matches(&rule.from, url_path) else {
            continue;
        };
        let mut target = rule.to.replace(":splat", splat);
        if target.starts_with('/') {
            target = format!("{base}{target}");
        }
        if let Some(q) = query
            && !target.contains('?')
        {
            target = format!("{target}?{q}");
        }
        let status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        return Some(moved(status, &target));
    }
    None
}

/// `pattern` (`/exact` or `/prefix/*`) against a site path; what `*` matched on success.
fn matches<'a>(pattern: &str, path: &'a str) -> Option<&'a str> {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.strip_prefix(prefix).or_else(|| {
            // `/docs/*` also matches `/docs`.
            (prefix.strip_suffix('/') == Some(path)).then_some("")
        }),
        None => (pattern == path || pattern.strip_suffix('/') == Some(path)).then_some(""),
    }
}

/// The site's `headers` rules that match, applied in order (a later rule wins).
fn with_rules(site: &Site, url_path: &str, mut response: Response) -> Response {
    for rule in &site.headers {
        if matches(&rule.path, url_path).is_none() {
            continue;
        }
        for (name, v) in &rule.values {
            if let (Ok(name), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    response
}

fn moved(status: StatusCode, location: &str) -> Response {
    let mut response = plain(status, "");
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_recognised() {
        for hashed in [
            "assets/index-DiwrgTda.js",
            "static/js/main.3f2a1b9c.js",
            "_next/static/chunks/app.js",
            "app-a1b2c3d4e5.css",
        ] {
            assert!(is_hashed(hashed), "{hashed}");
        }
        for plain in [
            "index.html",
            "logo.png",
            "my-component.js",
            "Component.js",
            "bootstrap-reboot.css",
            "-DiwrgTda.js",
        ] {
            assert!(!is_hashed(plain), "{plain}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/b",
            "/.env",
            "/a\\b",
            "/%00",
            "/%ff",
        ] {
            assert!(clean(bad).is_none(), "{bad}");
        }
        let ok = clean("/.well-known/security.txt").expect("allowed");
        assert_eq!(ok.rel, ".well-known/security.txt");
        let root = clean("/").expect("root");
        assert!(root.rel.is_empty() && root.trailing_slash);
        let spaced = clean("/a%20b/").expect("decoded");
        assert_eq!(spaced.rel, "a b");
        assert!(spaced.trailing_slash);
    }

    #[test]
    fn accept_encoding_is_read_with_q_values() {
        assert!(accepts("gzip, deflate, br", "br"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(accepts("*", "gzip"));
        assert!(!accepts("*, gzip;q=0", "gzip"));
        assert!(!accepts("identity", "gzip"));
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        assert_eq!(matches("/old/*", "/old/a/b"), Some("a/b"));
        assert_eq!(matches("/old/*", "/old"), Some(""));
        assert_eq!(matches("/docs", "/docs"), Some(""));
        assert_eq!(matches("/docs", "/docs/x"), None);
        assert_eq!(matches("/*", "/anything"), Some("anything"));
    }
}

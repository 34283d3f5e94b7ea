//! The serving rules, through the router a server mounts, on both kinds of files: a working
//! tree (what `reactor dev` serves) and a release's hashed assets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use reactor_sites::{
    Asset, Assets, BlobFuture, Blobs, Deployment, Files, Site, SiteHeaders, SiteRedirect, Sites,
    SitesConfig, Variant,
};
use tower::ServiceExt;

/// The files every case reads: a page, a nested page, a hashed asset, a 404 page, and a
/// secret beside the site that nothing may reach.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    for (name, text) in [
        ("index.html", "<h1>home</h1>"),
        ("about.html", "<h1>about</h1>"),
        ("docs/index.html", "<h1>docs</h1>"),
        ("assets/app-DiwrgTda.js", "console.log('app')"),
        ("logo.svg", "<svg/>"),
        ("404.html", "<h1>nothing here</h1>"),
        (".env", "SECRET=1"),
    ] {
        let path = site.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    std::fs::write(dir.path().join("secret.txt"), "outside").expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), site.join("link.txt"))
        .expect("symlink");
    dir
}

#[derive(Debug)]
struct DirBlobs(PathBuf);

impl Blobs for DirBlobs {
    fn path<'a>(&'a self, sha256: &'a str) -> BlobFuture<'a> {
        let path = self.0.join(sha256);
        Box::pin(async move {
            if path.is_file() {
                Ok(path)
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            }
        })
    }
}

/// The same tree as a release's assets: every file stored under a made-up hash; `index.html`
/// also has brotli and gzip "variants" (distinct bytes, so the test sees which one came).
fn release(dir: &Path) -> Files {
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let mut files = HashMap::new();
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        n += 1;
        let sha = format!("{n:064x}");
        std::fs::write(blobs.join(&sha), bytes).expect("write blob");
        Variant {
            sha256: sha,
            size: bytes.len() as u64,
        }
    };
    for name in [
        "index.html",
        "about.html",
        "docs/index.html",
        "assets/app-DiwrgTda.js",
        "logo.svg",
        "404.html",
    ] {
        let bytes = std::fs::read(dir.join("site").join(name)).expect("read");
        let v = put(&bytes);
        let (gzip, br) = if name == "index.html" {
            (Some(put(b"gzip-bytes")), Some(put(b"br-bytes")))
        } else {
            (None, None)
        };
        files.insert(
            name.to_string(),
            Asset {
                sha256: v.sha256,
                size: v.size,
                gzip,
                br,
            },
        );
    }
    Files::Assets(Assets {
        files,
        blobs: Arc::new(DirBlobs(blobs)),
        modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        memory: Default::default(),
    })
}

fn site(files: Files, spa: bool) -> Sites {
    let sites = Sites::new(SitesConfig {
        default_site: None,
        domain: Some("example.test".into()),
    });
    sites.replace(Deployment {
        release: Some("r1".into()),
        sites: vec![Arc::new(Site {
            name: "web".into(),
            spa,
            headers: vec![SiteHeaders {
                path: "/assets/*".into(),
                values: vec![("X-Frame-Options".into(), "DENY".into())],
            }],
            redirects: vec![SiteRedirect {
                from: "/old/*".into(),
                to: "/docs/:splat".into(),
                status: 308,
            }],
            files,
        })],
    });
    sites
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn get(sites: &Sites, uri: &str, headers: &[(&str, &str)]) -> Reply {
    call(sites, "GET", uri, headers).await
}

async fn call(sites: &Sites, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let app = axum::Router::new()
        .nest(
            reactor_sites::http::PREFIX,
            reactor_sites::http::public_router(sites.clone()),
        )
        .fallback({
            let sites = sites.clone();
            move |request: axum::extract::Request| {
                let sites = sites.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    reactor_sites::http::fallback(&sites, &parts.method, &parts.uri, &parts.headers)
                        .await
                        .unwrap_or_else(|| {
                            axum::response::IntoResponse::into_response(StatusCode::IM_A_TEAPOT)
                        })
                }
            }
        });
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The rules both kinds of files obey.
async fn common_rules(sites: &Sites) {
    // The default site at `/` and every site under the API prefix.
    for uri in ["/", "/sites/v1/web/"] {
        let r = get(sites, uri, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(r.body, "<h1>home</h1>", "{uri}");
        assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(
            r.header("cache-control"),
            "public, max-age=0, must-revalidate"
        );
        assert_eq!(r.header("x-content-type-options"), "nosniff");
    }
    let r = get(sites, "/sites/v1/web", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), "/sites/v1/web/");

    // Pretty URLs: `about.html` at `/about`, a directory's index after a slash.
    assert_eq!(get(sites, "/about", &[]).await.body, "<h1>about</h1>");
    let r = get(sites, "/sites/v1/web/docs?x=1", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), "/sites/v1/web/docs/?x=1");
    assert_eq!(get(sites, "/docs/", &[]).await.body, "<h1>docs</h1>");

    // A hashed asset is immutable; an unhashed one is cached briefly; types are right.
    let r = get(sites, "/assets/app-DiwrgTda.js", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        r.header("x-frame-options"),
        "DENY",
        "the site's header rule"
    );
    let r = get(sites, "/logo.svg", &[]).await;
    assert_eq!(r.header("content-type"), "image/svg+xml; charset=utf-8");
    assert_eq!(r.header("cache-control"), "public, max-age=3600");
    assert_eq!(
        r.header("x-frame-options"),
        "",
        "the rule is for /assets/* only"
    );

    // Conditional requests: the ETag, then Last-Modified.
    let first = get(sites, "/logo.svg", &[]).await;
    let etag = first.header("etag").to_string();
    assert!(!etag.is_empty());
    let r = get(sites, "/logo.svg", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), etag);
    let r = get(sites, "/logo.svg", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    let modified = first.header("last-modified").to_string();
    let r = get(sites, "/logo.svg", &[("if-modified-since", &modified)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = get(
        sites,
        "/logo.svg",
        &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // HEAD: the headers without the body; other methods are refused.
    let r = call(sites, "HEAD", "/about", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "14");
    assert!(r.body.is_empty());
    let r = call(sites, "POST", "/about", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "GET, HEAD");

    // Redirect rules, with what `*` matched and the query kept.
    let r = get(sites, "/sites/v1/web/old/a/b?q=1", &[]).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), "/sites/v1/web/docs/a/b?q=1");
    assert_eq!(
        get(sites, "/old/x", &[]).await.header("location"),
        "/docs/x"
    );

    // Nothing outside the site, no dotfiles, no directory listings.
    for uri in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sites/v1/web/%2e%2e/%2e%2e/secret.txt",
        "/.env",
        "/sites/v1/web/.env",
        "/link.txt",
        "/docs%5c..%5c..%5csecret.txt",
    ] {
        let r = get(sites, uri, &[]).await;
        assert!(
            r.status == StatusCode::NOT_FOUND,
            "{uri}: {} {}",
            r.status,
            r.body
        );
        assert!(
            !r.body.contains("outside") && !r.body.contains("SECRET"),
            "{uri}"
        );
    }
    let r = get(sites, "/assets/", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no listing of a directory");

    // A site by host under the configured domain; an unknown site under the prefix.
    let r = get(sites, "/about", &[("host", "web.example.test:8080")]).await;
    assert_eq!(r.body, "<h1>about</h1>");
    let r = get(sites, "/sites/v1/nope/", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("no site named `nope`"));
}

#[tokio::test]
async fn a_working_tree_is_served_by_the_rules() {
    let dir = tree();
    let sites = site(Files::Dir(dir.path().join("site")), false);
    common_rules(&sites).await;
    // 404.html answers what is missing, with 404.
    let r = get(&sites, "/todos/42", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, "<h1>nothing here</h1>");
    // A file added to the working tree is served at once (dev serves the tree as it is).
    std::fs::write(dir.path().join("site/new.txt"), "fresh").expect("write");
    assert_eq!(get(&sites, "/new.txt", &[]).await.body, "fresh");
}

#[tokio::test]
async fn a_release_is_served_by_the_rules_with_its_variants() {
    let dir = tree();
    let sites = site(release(dir.path()), false);
    common_rules(&sites).await;

    // The precompressed variant the client takes, brotli first; Vary says it depends.
    let r = get(&sites, "/", &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(r.body, "br-bytes");
    assert_eq!(r.header("content-encoding"), "br");
    assert_eq!(r.header("vary"), "Accept-Encoding");
    let r = get(&sites, "/", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.body, "gzip-bytes");
    assert_eq!(r.header("content-encoding"), "gzip");
    let gzip_etag = r.header("etag").to_string();
    let r = get(&sites, "/", &[("accept-encoding", "br;q=0, gzip;q=0")]).await;
    assert_eq!(r.body, "<h1>home</h1>");
    assert_eq!(r.header("content-encoding"), "");
    assert_ne!(
        r.header("etag"),
        gzip_etag,
        "each representation its own ETag"
    );
    // Last-Modified is the release's time.
    assert_eq!(
        r.header("last-modified"),
        httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
}

#[tokio::test]
async fn a_single_page_app_gets_index_html_for_its_routes() {
    let dir = tree();
    for files in [Files::Dir(dir.path().join("site")), release(dir.path())] {
        let sites = site(files, true);
        let r = get(&sites, "/todos/42", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "<h1>home</h1>");
        assert_eq!(
            r.header("cache-control"),
            "public, max-age=0, must-revalidate"
        );
        // A missing asset stays a 404 (a script must not receive HTML)…
        let r = get(&sites, "/assets/missing.js", &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // …unless a browser asks for a page.
        let r = get(&sites, "/report.pdf", &[("accept", "text/html,*/*")]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_release_whose_blob_is_missing_answers_500_not_a_wrong_file() {
    let dir = tree();
    let files = release(dir.path());
    std::fs::remove_dir_all(dir.path().join("blobs")).expect("rm");
    let sites = site(files, false);
    let r = get(&sites, "/about", &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_release_file_read_once_is_served_from_memory() {
    let dir = tree();
    let sites = site(release(dir.path()), false);
    assert_eq!(get(&sites, "/about", &[]).await.body, "<h1>about</h1>");
    // The disk copy gone, the bytes read once still answer (release files never change).
    std::fs::remove_dir_all(dir.path().join("blobs")).expect("rm");
    let r = get(&sites, "/about", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "<h1>about</h1>");
    assert_eq!(
        get(&sites, "/logo.svg", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

//! The Sites capability: a project's static sites, served from the active release or, under
//! `reactor dev`, straight from the working tree.
//!
//! A release's assets are addressed by SHA-256 (the bundle recorded each file's hash and its
//! precompressed variants); [`Blobs`] turns a hash into a local file, which is how a replica
//! that has never seen a release fetches its bytes once and then serves them from disk. The
//! set of sites is swapped whole ([`Sites::replace`]): a request holds the [`Site`] it started
//! with, so it finishes on that release even if a deploy lands meanwhile.

pub mod http;
mod serve;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

pub use reactor_manifest::{SiteHeaders, SiteRedirect};
pub use serve::serve;

/// Where a server finds its sites: the set in force, and which one answers at `/` and by host.
#[derive(Debug, Clone)]
pub struct Sites {
    current: Arc<RwLock<Arc<Deployment>>>,
    config: Arc<SitesConfig>,
}

/// Server settings for sites (`[sites]` in the server's config).
#[derive(Debug, Clone, Default)]
pub struct SitesConfig {
    /// The site served at `/`; the first site the manifest declares when unset.
    pub default_site: Option<String>,
    /// With `example.com`, `<site>.example.com` serves that site at its root.
    pub domain: Option<String>,
}

/// The sites of one release (or of the working tree), in the order the manifest declares them.
#[derive(Debug, Default)]
pub struct Deployment {
    /// The release these sites came from; `None` for the working tree or before any deploy.
    pub release: Option<String>,
    pub sites: Vec<Arc<Site>>,
}

/// One site and its serving rules.
#[derive(Debug)]
pub struct Site {
    pub name: String,
    /// Unknown paths that look like pages serve `index.html`.
    pub spa: bool,
    pub headers: Vec<SiteHeaders>,
    pub redirects: Vec<SiteRedirect>,
    pub files: Files,
}

/// Where a site's bytes are.
#[derive(Debug)]
pub enum Files {
    /// A directory on this machine (`reactor dev`: the working tree, read on every request).
    Dir(PathBuf),
    /// A release's assets.
    Assets(Assets),
}

/// A release's files by path (`/`-separated, relative to the site's root).
#[derive(Debug)]
pub struct Assets {
    pub files: HashMap<String, Asset>,
    pub blobs: Arc<dyn Blobs>,
    /// When the release was made: every asset's `Last-Modified`.
    pub modified: SystemTime,
    /// Small files read once, kept by hash.
    pub memory: Memory,
}

/// Release files held in memory by SHA-256, up to a byte budget (then nothing more is kept:
/// the files are immutable, so what is held never goes stale, and a deploy starts afresh).
#[derive(Debug)]
pub struct Memory {
    held: std::sync::Mutex<(HashMap<String, bytes::Bytes>, usize)>,
    budget: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            held: std::sync::Mutex::default(),
            budget: 64 * 1024 * 1024,
        }
    }
}

impl Memory {
    pub fn get(&self, sha256: &str) -> Option<bytes::Bytes> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(sha256)
            .cloned()
    }

    pub fn put(&self, sha256: &str, bytes: bytes::Bytes) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.1 + bytes.len() <= self.budget && !held.0.contains_key(sha256) {
            held.1 += bytes.len();
            held.0.insert(sha256.to_string(), bytes);
        }
    }
}

/// One file of a release: its hash and size, and the compressed variants the build made when
/// they were worth it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Asset {
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<Variant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub br: Option<Variant>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    pub sha256: String,
    pub size: u64,
}

/// A future that a [`Blobs`] implementation returns.
pub type BlobFuture<'a> = Pin<Box<dyn Future<Output = io::Result<PathBuf>> + Send + 'a>>;

/// Content-addressed bytes on this machine.
pub trait Blobs: Send + Sync + fmt::Debug {
    /// A local file holding the blob whose SHA-256 is `sha256` (hex), fetched into the cache
    /// first if this machine does not have it yet.
    fn path<'a>(&'a self, sha256: &'a str) -> BlobFuture<'a>;
}

impl Sites {
    pub fn new(config: SitesConfig) -> Sites {
        Sites {
            current: Arc::default(),
            config: Arc::new(config),
        }
    }

    /// Puts `deployment` in force; requests already running keep the sites they hold.
    pub fn replace(&self, deployment: Deployment) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(deployment);
    }

    pub fn current(&self) -> Arc<Deployment> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn config(&self) -> &SitesConfig {
        &self.config
    }

    /// The working tree's sites, as `reactor dev` serves them: each from its `source`
    /// directory, or from the `output` its build writes there.
    pub fn from_manifest(manifest: &reactor_manifest::Manifest) -> Deployment {
        Deployment {
            release: None,
            sites: manifest
                .sites
                .iter()
                .map(|s| {
                    let mut dir = manifest.root.join(&s.source);
                    if let Some(output) = &s.output {
                        dir = dir.join(output);
                    }
                    Arc::new(Site {
                        name: s.name.clone(),
                        spa: s.spa,
                        headers: s.headers.clone(),
                        redirects: s.redirects.clone(),
                        files: Files::Dir(dir),
                    })
                })
                .collect(),
        }
    }

    /// The site served at `/`: the configured one, else the first declared.
    pub fn default_site(&self) -> Option<Arc<Site>> {
        let current = self.current();
        match &self.config.default_site {
            Some(name) => current.site(name),
            None => current.sites.first().cloned(),
        }
    }

    /// The site a `Host` header names under the configured domain (`web.example.com`).
    pub fn site_for_host(&self, host: &str) -> Option<Arc<Site>> {
        let domain = self.config.domain.as_deref()?;
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let label = host
            .to_ascii_lowercase()
            .strip_suffix(&format!(".{}", domain.to_ascii_lowercase()))?
            .to_string();
        if label.contains('.') {
            return None;
        }
        self.current().site(&label)
    }
}

impl Deployment {
    pub fn site(&self, name: &str) -> Option<Arc<Site>> {
        self.sites.iter().find(|s| s.name == name).cloned()
    }
}

impl Site {
    /// Number of files and their total size (a working tree's are not counted).
    pub fn totals(&self) -> Option<(usize, u64)> {
        match &self.files {
            Files::Dir(_) => None,
            Files::Assets(a) => Some((a.files.len(), a.files.values().map(|f| f.size).sum())),
        }
    }
}

//! `reactor.toml`: the project's one file.
//!
//! Parsing happens in three passes so every error can point at its line and column:
//! 1. the TOML syntax (toml_edit keeps spans),
//! 2. the keys, checked against what each table allows, with a "did you mean",
//! 3. the typed values (serde with `Spanned`), then the rules that span several entries
//!    (duplicate names, a job's function, paths on disk, cron expressions).
//!
//! All problems of a pass are reported together, so one run fixes many.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml_edit::{Item, TableLike};

use crate::ManifestError;
use crate::diagnostic::{Diagnostic, did_you_mean};

/// The file name looked for by discovery.
pub const MANIFEST_FILE: &str = "reactor.toml";

/// A validated project manifest. Paths are as written, relative to [`Manifest::root`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The `reactor.toml` this was read from.
    pub path: PathBuf,
    /// The directory holding `reactor.toml`; every relative path starts here.
    pub root: PathBuf,
    pub project_id: String,
    pub name: String,
    pub default_context: Option<String>,
    pub data: DataConfig,
    pub functions: Vec<FunctionConfig>,
    pub sites: Vec<SiteConfig>,
    pub jobs: Vec<JobConfig>,
    pub gateway: GatewayConfig,
    pub connect: ConnectConfig,
}

/// `[connect]`: the third-party integrations users may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectConfig {
    pub integrations: Vec<IntegrationConfig>,
}

/// `[[connect.integrations]]`: one provider of the catalog, with this project's OAuth client.
/// The provider's own settings come from the catalog; the URLs here override them (a
/// generic `oauth2` provider has none of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationConfig {
    /// The URL segment (`/connect/v1/oauth/<name>/authorize`).
    pub name: String,
    /// A provider of the catalog (`github`, `google`, `oauth2`…), checked when Connect loads.
    pub provider: String,
    pub client_id: Option<String>,
    /// The name of the project secret holding the OAuth client secret.
    pub client_secret: Option<String>,
    /// Asked for in addition to the provider's default scopes.
    pub scopes: Vec<String>,
    /// Origins a finished connection may return the browser to (`https://app.example.com`).
    pub redirect_origins: Vec<String>,
    /// The name of the project secret webhooks are signed with.
    pub webhook_secret: Option<String>,
    /// Overrides the provider's PKCE setting.
    pub pkce: Option<bool>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    /// Where the proxy sends calls (the provider's API).
    pub base_url: Option<String>,
}

/// `[gateway]`: the AI gateway's providers and the models callers may name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayConfig {
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    /// `rk_pub_` callers without a signed-in user may call it [default: false].
    pub allow_anonymous: bool,
    /// One upstream attempt [default: 60000].
    pub timeout_ms: Option<u64>,
    /// Attempts of one target beyond the first, on 429, 5xx, timeout or connection error
    /// [default: 1].
    pub retries: Option<u32>,
    /// The first retry's delay, doubled each time [default: 200].
    pub backoff_ms: Option<u64>,
    /// Failures in a row after which a target is skipped… [default: 3]
    pub failures_before_cooldown: Option<u32>,
    /// …for this long [default: 30].
    pub cooldown_secs: Option<u64>,
    pub limits: Vec<LimitConfig>,
    pub prices: Vec<PriceConfig>,
}

/// A limit on each caller of one kind (`per`): every user, every org, or every project key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfig {
    pub per: LimitScope,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    /// In millionths of a dollar, from the price table.
    pub spend_per_day_micro: Option<u64>,
    pub spend_per_month_micro: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    User,
    Org,
    Key,
}

impl LimitScope {
    pub fn name(self) -> &'static str {
        match self {
            LimitScope::User => "user",
            LimitScope::Org => "org",
            LimitScope::Key => "key",
        }
    }
}

/// What an upstream model costs, in millionths of a dollar per million tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceConfig {
    /// The upstream's model name (a target's `model`).
    pub model: String,
    pub input_micro_per_million: u64,
    pub output_micro_per_million: u64,
}

/// An upstream the gateway may call; nothing else is reachable through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// The name of the project secret holding the API key (never the key itself).
    pub api_key_secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    OpenAiCompatible,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAiCompatible => "openai-compatible",
        }
    }
}

/// A model callers name, served by its targets in order (or by weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub name: String,
    pub targets: Vec<TargetConfig>,
    /// Identical requests (not streamed) are answered from the cache for this long.
    pub cache_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub provider: String,
    /// The upstream's name for the model.
    pub model: String,
    /// Share of the traffic among the targets that have one [default: none: in order].
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataConfig {
    pub migrations_dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            migrations_dir: PathBuf::from("data/migrations"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    pub name: String,
    pub source: PathBuf,
    pub runtime: Runtime,
    pub entry: String,
    /// Per-invocation limits; unset ones take the server's defaults.
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub concurrency: Option<u32>,
    /// Hosts the function may `fetch` (see [`HostPattern`]).
    pub allowed_hosts: Vec<String>,
    pub isolation: Isolation,
}

/// `isolation` of a function: how far one request's JavaScript state reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A fresh context per request: nothing survives it (the default).
    #[default]
    Request,
    /// A loaded instance per worker serves request after request: module state persists
    /// between requests, as in Workers or Deno, and requests cost far less.
    Instance,
}

/// An entry of a function's `allowed_hosts`: `api.example.com`, `api.example.com:8443`,
/// `*.example.com`, `[::1]:3000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase; without the `*.` of a wildcard.
    pub host: String,
    /// `*.example.com`: any subdomain of `host`, not `host` itself.
    pub wildcard: bool,
    /// Any port when absent.
    pub port: Option<u16>,
}

impl HostPattern {
    pub fn parse(entry: &str) -> Option<HostPattern> {
        let entry = entry.trim().to_ascii_lowercase();
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse().ok()?),
            };
            (format!("[{inside}]"), port)
        } else {
            match entry.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
                None => (entry.clone(), None),
            }
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (host, false),
        };
        let ok = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':')
            });
        ok.then_some(HostPattern {
            host,
            wildcard,
            port,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// In-process sandbox: QuickJS for `.ts`/`.js`, wasmtime for `.wasm`/`.wat`.
    Wasm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    pub name: String,
    pub source: PathBuf,
    pub framework: String,
    /// Unknown paths serve `index.html`.
    pub spa: bool,
    /// The command that builds the site, for frameworks other than `static`.
    pub build: Option<String>,
    /// The directory, relative to `source`, that `build` writes.
    pub output: Option<PathBuf>,
    /// Extra response headers by path pattern, in the order written.
    pub headers: Vec<SiteHeaders>,
    /// Redirects, the first match wins.
    pub redirects: Vec<SiteRedirect>,
}

/// Headers added to responses whose path matches `path` (`/exact` or `/prefix/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteHeaders {
    pub path: String,
    pub values: Vec<(String, String)>,
}

/// `from` (`/exact` or `/prefix/*`) answered by a redirect to `to`, where `:splat` stands for
/// what `*` matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRedirect {
    pub from: String,
    pub to: String,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    pub name: String,
    pub function: String,
    pub trigger: Trigger,
    /// Attempts before a run is dead [default: 3].
    pub max_attempts: Option<u32>,
    /// The first retry's delay; each next one doubles, with jitter [default: 1000].
    pub backoff_ms: Option<u64>,
    /// One attempt's time limit [default: 60000].
    pub timeout_ms: Option<u64>,
    /// Runs of this job at once (per `concurrency_key` value when set).
    pub concurrency: Option<u32>,
    /// A top-level field of the payload whose value groups runs for `concurrency`.
    pub concurrency_key: Option<String>,
    /// A top-level field of the payload: a second run with the same value within
    /// `dedup_window_secs` is the first run.
    pub dedup_key: Option<String>,
    /// [default: 3600]
    pub dedup_window_secs: Option<u64>,
    /// Cron: a tick missed while every server was down runs once at start.
    pub catch_up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Cron {
        schedule: String,
        timezone: Option<String>,
    },
    Event {
        event: String,
        table: Option<String>,
        bucket: Option<String>,
    },
    Queue,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let src = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(path, &src)
    }

    /// Validates `src` as the contents of `path`; `path`'s directory anchors relative paths.
    pub fn parse(path: &Path, src: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_with(path, src, true)
    }

    /// Validates a manifest that travelled inside a bundle: every rule but the ones about the
    /// project's files, which are not on the server (the bundle holds what they built).
    pub fn parse_snapshot(src: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_with(Path::new(MANIFEST_FILE), src, false)
    }

    fn parse_with(path: &Path, src: &str, check_fs: bool) -> Result<Manifest, ManifestError> {
        let root = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut cx = Checker {
            file: path,
            src,
            diagnostics: Vec::new(),
            check_fs,
        };

        let doc = toml_edit::Document::parse(src).map_err(|e| {
            ManifestError::Invalid(vec![Diagnostic::at(
                path,
                src,
                e.span(),
                format!("invalid TOML: {}", e.message().trim()),
            )])
        })?;
        cx.check_keys(doc.as_table(), "the top level", TOP_KEYS, &[]);
        for (key, allowed, what) in [
            ("functions", FUNCTION_KEYS, "[[functions]]"),
            ("sites", SITE_KEYS, "[[sites]]"),
            ("jobs", JOB_KEYS, "[[jobs]]"),
        ] {
            for entry in entries(doc.get(key)) {
                cx.check_keys(entry, what, allowed, TOP_KEYS);
                if key == "jobs"
                    && let Some(trigger) = entry.get("trigger").and_then(Item::as_table_like)
                {
                    cx.check_keys(trigger, "a job's `trigger`", TRIGGER_KEYS, &[]);
                }
                if key == "sites" {
                    for rule in entries(entry.get("headers")) {
                        cx.check_keys(rule, "a site's `headers`", SITE_HEADER_KEYS, &[]);
                    }
                    for rule in entries(entry.get("redirects")) {
                        cx.check_keys(rule, "a site's `redirects`", SITE_REDIRECT_KEYS, &[]);
                    }
                }
            }
        }
        if let Some(data) = doc.get("data").and_then(Item::as_table_like) {
            cx.check_keys(data, "[data]", DATA_KEYS, TOP_KEYS);
        }
        if let Some(gateway) = doc.get("gateway").and_then(Item::as_table_like) {
            cx.check_keys(gateway, "[gateway]", GATEWAY_KEYS, TOP_KEYS);
            for provider in entries(gateway.get("providers")) {
                cx.check_keys(provider, "[[gateway.providers]]", PROVIDER_KEYS, &[]);
            }
            for limit in entries(gateway.get("limits")) {
                cx.check_keys(limit, "[[gateway.limits]]", LIMIT_KEYS, &[]);
            }
            for price in entries(gateway.get("prices")) {
                cx.check_keys(price, "[[gateway.prices]]", PRICE_KEYS, &[]);
            }
            for model in entries(gateway.get("models")) {
                cx.check_keys(model, "[[gateway.models]]", MODEL_KEYS, &[]);
                for target in entries(model.get("targets")) {
                    cx.check_keys(target, "a model's `targets`", TARGET_KEYS, &[]);
                }
            }
        }
        if let Some(connect) = doc.get("connect").and_then(Item::as_table_like) {
            cx.check_keys(connect, "[connect]", CONNECT_KEYS, TOP_KEYS);
            for integration in entries(connect.get("integrations")) {
                cx.check_keys(
                    integration,
                    "[[connect.integrations]]",
                    INTEGRATION_KEYS,
                    &[],
                );
            }
        }
        cx.finish()?;

        let raw: RawManifest = toml::from_str(src).map_err(|e| {
            ManifestError::Invalid(vec![Diagnostic::at(
                path,
                src,
                e.span(),
                e.message().trim(),
            )])
        })?;
        let manifest = cx.validate(raw, root);
        cx.finish()?;
        Ok(manifest)
    }

    /// The absolute (or root-relative) directory of the SQL migrations.
    pub fn migrations_dir(&self) -> PathBuf {
        self.root.join(&self.data.migrations_dir)
    }

    pub fn function(&self, name: &str) -> Option<&FunctionConfig> {
        self.functions.iter().find(|f| f.name == name)
    }
}

const TOP_KEYS: &[&str] = &[
    "project_id",
    "name",
    "default_context",
    "data",
    "functions",
    "sites",
    "jobs",
    "gateway",
    "connect",
];
const CONNECT_KEYS: &[&str] = &["integrations"];
const INTEGRATION_KEYS: &[&str] = &[
    "name",
    "provider",
    "client_id",
    "client_secret",
    "scopes",
    "redirect_origins",
    "webhook_secret",
    "pkce",
    "authorization_url",
    "token_url",
    "base_url",
];
const GATEWAY_KEYS: &[&str] = &[
    "providers",
    "models",
    "limits",
    "prices",
    "allow_anonymous",
    "timeout_ms",
    "retries",
    "backoff_ms",
    "failures_before_cooldown",
    "cooldown_secs",
];
const PROVIDER_KEYS: &[&str] = &["name", "kind", "base_url", "api_key_secret"];
const MODEL_KEYS: &[&str] = &["name", "targets", "cache_ttl_secs"];
const TARGET_KEYS: &[&str] = &["provider", "model", "weight"];
const LIMIT_KEYS: &[&str] = &[
    "per",
    "requests_per_minute",
    "tokens_per_minute",
    "spend_per_day",
    "spend_per_month",
];
const PRICE_KEYS: &[&str] = &["model", "input_per_million", "output_per_million"];
const PROVIDER_KINDS: &[&str] = &["openai", "anthropic", "openai-compatible"];
const DATA_KEYS: &[&str] = &["migrations_dir"];
const FUNCTION_KEYS: &[&str] = &[
    "name",
    "source",
    "runtime",
    "entry",
    "memory_mb",
    "timeout_ms",
    "concurrency",
    "allowed_hosts",
    "isolation",
];
const SITE_KEYS: &[&str] = &[
    "name",
    "source",
    "framework",
    "spa",
    "build",
    "output",
    "headers",
    "redirects",
];
const SITE_HEADER_KEYS: &[&str] = &["for", "values"];
const SITE_REDIRECT_KEYS: &[&str] = &["from", "to", "status"];
const REDIRECT_STATUSES: &[i64] = &[301, 302, 303, 307, 308];
const JOB_KEYS: &[&str] = &[
    "name",
    "function",
    "trigger",
    "max_attempts",
    "backoff_ms",
    "timeout_ms",
    "concurrency",
    "concurrency_key",
    "dedup_key",
    "dedup_window_secs",
    "catch_up",
];
const TRIGGER_KEYS: &[&str] = &["type", "schedule", "timezone", "event", "table", "bucket"];

const RUNTIMES: &[&str] = &["wasm"];
const ENTRY_EXTENSIONS: &[&str] = &["ts", "mts", "js", "mjs", "wasm", "wat"];
const TRIGGER_TYPES: &[&str] = &["cron", "event", "queue"];
const DATA_EVENTS: &[&str] = &["data.insert", "data.update", "data.delete"];
const STORAGE_EVENTS: &[&str] = &["storage.object.created", "storage.object.deleted"];

/// The tables of an array of tables, written either as `[[x]]` or `x = [{…}]`.
fn entries(item: Option<&Item>) -> Vec<&dyn TableLike> {
    match item {
        Some(Item::ArrayOfTables(tables)) => tables.iter().map(|t| t as &dyn TableLike).collect(),
        Some(Item::Value(toml_edit::Value::Array(values))) => values
            .iter()
            .filter_map(|v| v.as_inline_table().map(|t| t as &dyn TableLike))
            .collect(),
        _ => Vec::new(),
    }
}

struct Checker<'a> {
    file: &'a Path,
    src: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// Whether paths must exist on disk (not for a manifest read back from a bundle).
    check_fs: bool,
}

impl Checker<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) -> &mut Diagnostic {
        let d = Diagnostic::at(self.file, self.src, span, message);
        self.diagnostics.push(d);
        self.diagnostics.last_mut().expect("just pushed")
    }

    fn finish(&mut self) -> Result<(), ManifestError> {
        if self.diagnostics.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::Invalid(std::mem::take(
                &mut self.diagnostics,
            )))
        }
    }

    /// Flags keys of `table` outside `allowed`; a key that belongs to `elsewhere` (the top
    /// level, say) gets a hint saying so rather than a spelling guess.
    fn check_keys(
        &mut self,
        table: &dyn TableLike,
        what: &str,
        allowed: &[&str],
        elsewhere: &[&str],
    ) {
        for (key, _) in table.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let span = table.key(key).and_then(|k| k.span());
            let hint = match did_you_mean(key, allowed.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None if elsewhere.contains(&key) => {
                    format!("`{key}` belongs at the top of the file, above the first [table]")
                }
                None if DATA_KEYS.contains(&key) => format!("`{key}` belongs in the [data] table"),
                None => format!("the keys allowed here are: {}", allowed.join(", ")),
            };
            self.error(span, format!("unknown key `{key}` in {what}"))
                .hint = Some(hint);
        }
    }

    fn validate(&mut self, raw: RawManifest, root: PathBuf) -> Manifest {
        self.check_slug(&raw.project_id, "project_id", 3, 63);
        if raw.name.get_ref().trim().is_empty() {
            self.error(Some(raw.name.span()), "`name` must not be empty")
                .hint =
                Some("give the project a human-readable name, e.g. name = \"My App\"".into());
        }
        if let Some(ctx) = &raw.default_context
            && !is_context_name(ctx.get_ref())
        {
            self.error(
                Some(ctx.span()),
                format!("`{}` is not a valid context name", ctx.get_ref()),
            )
            .hint = Some("context names use letters, digits, `-` and `_`".into());
        }

        let data = match raw.data {
            Some(d) => {
                let dir = d.migrations_dir.map(|dir| {
                    self.check_dir(&root, &dir, "migrations_dir");
                    PathBuf::from(dir.into_inner())
                });
                DataConfig {
                    migrations_dir: dir.unwrap_or_else(|| DataConfig::default().migrations_dir),
                }
            }
            None => DataConfig::default(),
        };

        self.check_unique("function", raw.functions.iter().map(|f| &f.name));
        self.check_unique("site", raw.sites.iter().map(|s| &s.name));
        self.check_unique("job", raw.jobs.iter().map(|j| &j.name));

        let functions: Vec<FunctionConfig> = raw
            .functions
            .into_iter()
            .map(|f| self.function(&root, f))
            .collect();

        let sites: Vec<SiteConfig> = raw.sites.into_iter().map(|s| self.site(&root, s)).collect();

        let jobs: Vec<JobConfig> = raw
            .jobs
            .into_iter()
            .map(|j| self.job(j, &functions))
            .collect();
        let gateway = raw.gateway.map(|g| self.gateway(g)).unwrap_or_default();
        let connect = raw.connect.map(|c| self.connect(c)).unwrap_or_default();

        Manifest {
            path: self.file.to_path_buf(),
            root,
            project_id: raw.project_id.into_inner(),
            name: raw.name.into_inner(),
            default_context: raw.default_context.map(Spanned::into_inner),
            data,
            functions,
            sites,
            jobs,
            gateway,
            connect,
        }
    }

    fn connect(&mut self, c: RawConnect) -> ConnectConfig {
        self.check_unique("integration", c.integrations.iter().map(|i| &i.name));
        let integrations = c
            .integrations
            .into_iter()
            .map(|i| {
                self.check_slug(&i.name, "integration name", 1, 63);
                self.check_slug(&i.provider, "provider name", 1, 63);
                for secret in [&i.client_secret, &i.webhook_secret].into_iter().flatten() {
                    self.check_secret_name(secret);
                }
                for url in [&i.authorization_url, &i.token_url, &i.base_url]
                    .into_iter()
                    .flatten()
                {
                    let u = url.get_ref();
                    let ok = (u.starts_with("https://") || u.starts_with("http://"))
                        && u.len() > "https://".len()
                        && !u.contains(['#', ' ']);
                    if !ok {
                        self.error(Some(url.span()), format!("`{u}` is not an http(s) URL"));
                    }
                }
                for origin in &i.redirect_origins {
                    if !is_origin(origin.get_ref()) {
                        self.error(
                            Some(origin.span()),
                            format!("`{}` is not an origin", origin.get_ref()),
                        )
                        .hint = Some(
                            "an origin is a scheme, a host and an optional port, without a path: \"https://app.example.com\" or \"http://localhost:5173\"".into(),
                        );
                    }
                }
                IntegrationConfig {
                    name: i.name.into_inner(),
                    provider: i.provider.into_inner(),
                    client_id: i.client_id,
                    client_secret: i.client_secret.map(Spanned::into_inner),
                    scopes: i.scopes,
                    redirect_origins: i
                        .redirect_origins
                        .into_iter()
                        .map(|o| o.into_inner().trim_end_matches('/').to_string())
                        .collect(),
                    webhook_secret: i.webhook_secret.map(Spanned::into_inner),
                    pkce: i.pkce,
                    authorization_url: i.authorization_url.map(Spanned::into_inner),
                    token_url: i.token_url.map(Spanned::into_inner),
                    base_url: i
                        .base_url
                        .map(|u| u.into_inner().trim_end_matches('/').to_string()),
                }
            })
            .collect();
        ConnectConfig { integrations }
    }

    /// A project secret's name (never the secret itself).
    fn check_secret_name(&mut self, secret: &Spanned<String>) {
        let name = secret.get_ref();
        let valid = (1..=128).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.error(
                Some(secret.span()),
                format!("`{name}` is not a secret name"),
            )
            .hint = Some(
                "name a project secret (`reactor secrets set NAME`), never the value itself".into(),
            );
        }
    }

    fn gateway(&mut self, g: RawGateway) -> GatewayConfig {
        self.check_unique("provider", g.providers.iter().map(|p| &p.name));
        self.check_unique("model", g.models.iter().map(|m| &m.name));
        let providers: Vec<ProviderConfig> = g
            .providers
            .into_iter()
            .map(|p| {
                self.check_slug(&p.name, "provider name", 1, 63);
                let kind = match p.kind.get_ref().as_str() {
                    "openai" => ProviderKind::OpenAi,
                    "anthropic" => ProviderKind::Anthropic,
                    "openai-compatible" => ProviderKind::OpenAiCompatible,
                    other => {
                        let hint = match did_you_mean(other, PROVIDER_KINDS.iter().copied()) {
                            Some(close) => format!("did you mean `{close}`?"),
                            None => format!("provider kinds: {}", PROVIDER_KINDS.join(", ")),
                        };
                        self.error(
                            Some(p.kind.span()),
                            format!("unknown provider kind `{other}`"),
                        )
                        .hint = Some(hint);
                        ProviderKind::OpenAiCompatible
                    }
                };
                let base_url = match (&p.base_url, kind) {
                    (Some(url), _) => {
                        let u = url.get_ref();
                        let ok = (u.starts_with("https://") || u.starts_with("http://"))
                            && u.len() > "https://".len()
                            && !u.contains(['?', '#', ' ']);
                        if !ok {
                            self.error(
                                Some(url.span()),
                                format!("`{u}` is not an http(s) base URL"),
                            )
                            .hint =
                                Some("for example base_url = \"https://api.openai.com/v1\"".into());
                        }
                        u.trim_end_matches('/').to_string()
                    }
                    (None, ProviderKind::OpenAi) => "https://api.openai.com/v1".into(),
                    (None, ProviderKind::Anthropic) => "https://api.anthropic.com/v1".into(),
                    (None, ProviderKind::OpenAiCompatible) => {
                        self.error(
                            Some(p.name.span()),
                            format!(
                                "provider `{}` of kind openai-compatible has no `base_url`",
                                p.name.get_ref()
                            ),
                        )
                        .hint = Some("add base_url = \"http://host:port/v1\"".into());
                        String::new()
                    }
                };
                if let Some(secret) = &p.api_key_secret {
                    self.check_secret_name(secret);
                }
                ProviderConfig {
                    name: p.name.into_inner(),
                    kind,
                    base_url,
                    api_key_secret: p.api_key_secret.map(Spanned::into_inner),
                }
            })
            .collect();
        let models = g
            .models
            .into_iter()
            .map(|m| {
                if m.targets.is_empty() {
                    self.error(
                        Some(m.name.span()),
                        format!("model `{}` has no targets", m.name.get_ref()),
                    )
                    .hint = Some(
                        "targets = [{ provider = \"openai\", model = \"gpt-4o-mini\" }]".into(),
                    );
                }
                if m.name.get_ref().is_empty() || m.name.get_ref().len() > 128 {
                    self.error(Some(m.name.span()), "a model name has 1 to 128 characters");
                }
                let targets = m
                    .targets
                    .into_iter()
                    .map(|t| {
                        if !providers.iter().any(|p| &p.name == t.provider.get_ref()) {
                            let hint = match did_you_mean(
                                t.provider.get_ref(),
                                providers.iter().map(|p| p.name.as_str()),
                            ) {
                                Some(close) => format!("did you mean `{close}`?"),
                                None => "declare it in a [[gateway.providers]] table".into(),
                            };
                            self.error(
                                Some(t.provider.span()),
                                format!(
                                    "model `{}` names provider `{}`, which is not declared",
                                    m.name.get_ref(),
                                    t.provider.get_ref()
                                ),
                            )
                            .hint = Some(hint);
                        }
                        let weight = self.check_range(t.weight, "weight", 1, 1000, "");
                        TargetConfig {
                            provider: t.provider.into_inner(),
                            model: t.model,
                            weight: weight.map(|w| w as u32),
                        }
                    })
                    .collect();
                let cache_ttl_secs = self
                    .check_range(
                        m.cache_ttl_secs,
                        "cache_ttl_secs",
                        1,
                        30 * 86_400,
                        "seconds",
                    )
                    .map(|v| v as u64);
                ModelConfig {
                    name: m.name.into_inner(),
                    targets,
                    cache_ttl_secs,
                }
            })
            .collect();
        GatewayConfig {
            providers,
            models,
            allow_anonymous: g.allow_anonymous.unwrap_or(false),
            timeout_ms: self
                .check_range(g.timeout_ms, "timeout_ms", 1, 900_000, "ms")
                .map(|v| v as u64),
            retries: self
                .check_range(g.retries, "retries", 0, 10, "retries")
                .map(|v| v as u32),
            backoff_ms: self
                .check_range(g.backoff_ms, "backoff_ms", 0, 60_000, "ms")
                .map(|v| v as u64),
            failures_before_cooldown: self
                .check_range(
                    g.failures_before_cooldown,
                    "failures_before_cooldown",
                    1,
                    1000,
                    "failures",
                )
                .map(|v| v as u32),
            cooldown_secs: self
                .check_range(g.cooldown_secs, "cooldown_secs", 0, 86_400, "seconds")
                .map(|v| v as u64),
            limits: g.limits.into_iter().map(|l| self.limit(l)).collect(),
            prices: g.prices.into_iter().map(|p| self.price(p)).collect(),
        }
    }

    fn limit(&mut self, l: RawLimit) -> LimitConfig {
        let per = match l.per.get_ref().as_str() {
            "user" => LimitScope::User,
            "org" => LimitScope::Org,
            "key" => LimitScope::Key,
            other => {
                self.error(
                    Some(l.per.span()),
                    format!("`per = \"{other}\"` is not a caller kind"),
                )
                .hint = Some("per = \"user\", \"org\" or \"key\"".into());
                LimitScope::Key
            }
        };
        let count = |cx: &mut Self, v: Option<Spanned<i64>>, key: &str| {
            cx.check_range(v, key, 1, i64::MAX / 4, "")
                .map(|v| v as u64)
        };
        LimitConfig {
            per,
            requests_per_minute: count(self, l.requests_per_minute, "requests_per_minute"),
            tokens_per_minute: count(self, l.tokens_per_minute, "tokens_per_minute"),
            spend_per_day_micro: self.dollars(l.spend_per_day, "spend_per_day"),
            spend_per_month_micro: self.dollars(l.spend_per_month, "spend_per_month"),
        }
    }

    fn price(&mut self, p: RawPrice) -> PriceConfig {
        PriceConfig {
            model: p.model,
            input_micro_per_million: self
                .dollars(Some(p.input_per_million), "input_per_million")
                .unwrap_or(0),
            output_micro_per_million: self
                .dollars(Some(p.output_per_million), "output_per_million")
                .unwrap_or(0),
        }
    }

    /// A dollar amount (an integer or a float, not negative) in millionths of a dollar.
    fn dollars(&mut self, v: Option<Spanned<f64>>, key: &str) -> Option<u64> {
        let v = v?;
        let d = *v.get_ref();
        if !d.is_finite() || !(0.0..=1e9).contains(&d) {
            self.error(
                Some(v.span()),
                format!("`{key}` = {d} is not an amount of dollars"),
            )
            .hint = Some("write dollars as a number, e.g. 5 or 0.15".into());
            return None;
        }
        Some((d * 1e6).round() as u64)
    }

    fn function(&mut self, root: &Path, f: RawFunction) -> FunctionConfig {
        self.check_slug(&f.name, "function name", 1, 63);
        let source_ok = self.check_dir(root, &f.source, "source");
        let runtime = match f.runtime.as_ref().map(|r| r.get_ref().as_str()) {
            None | Some("wasm") => Runtime::Wasm,
            Some(other) => {
                let span = f.runtime.as_ref().map(Spanned::span);
                self.error(
                    span,
                    format!(
                        "unknown runtime `{other}` for function `{}`",
                        f.name.get_ref()
                    ),
                )
                .hint = Some(format!("supported runtimes: {}", RUNTIMES.join(", ")));
                Runtime::Wasm
            }
        };
        let entry = f
            .entry
            .unwrap_or_else(|| Spanned::new(0..0, "index.ts".to_string()));
        let entry_span = (entry.span() != (0..0)).then(|| entry.span());
        let ext = Path::new(entry.get_ref())
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        if !ENTRY_EXTENSIONS.contains(&ext) {
            self.error(
                entry_span.clone().or(Some(f.name.span())),
                format!("entry `{}` has no supported extension", entry.get_ref()),
            )
            .hint = Some(format!(
                "an entry ends in .{}",
                ENTRY_EXTENSIONS.join(", .")
            ));
        } else if source_ok && self.check_fs {
            let path = root.join(f.source.get_ref()).join(entry.get_ref());
            if !path.is_file() {
                self.error(
                    entry_span.or(Some(f.source.span())),
                    format!("entry file `{}` does not exist", path.display()),
                )
                .hint = Some(format!(
                    "create it, or set `entry` to the file in `{}` that exports the handler",
                    f.source.get_ref()
                ));
            }
        }
        let memory_mb = self.check_range(f.memory_mb, "memory_mb", 1, 4096, "MiB");
        let timeout_ms = self.check_range(f.timeout_ms, "timeout_ms", 1, 900_000, "ms");
        let concurrency = self.check_range(f.concurrency, "concurrency", 1, 10_000, "invocations");
        let mut allowed_hosts = Vec::new();
        for host in f.allowed_hosts.unwrap_or_default() {
            if HostPattern::parse(host.get_ref()).is_none() {
                self.error(
                    Some(host.span()),
                    format!("`{}` is not a host", host.get_ref()),
                )
                .hint = Some(
                    "write a host name, optionally with a port or a leading `*.`: \"api.example.com\", \"localhost:3000\", \"*.example.com\"".into(),
                );
            } else {
                allowed_hosts.push(host.into_inner());
            }
        }
        let isolation = match f.isolation.as_ref().map(|i| i.get_ref().as_str()) {
            None | Some("request") => Isolation::Request,
            Some("instance") => Isolation::Instance,
            Some(other) => {
                self.error(
                    f.isolation.as_ref().map(Spanned::span),
                    format!("unknown isolation `{other}`"),
                )
                .hint = Some(
                    "use \"request\" (a fresh context per request, the default) or \"instance\" (state persists between requests)".into(),
                );
                Isolation::Request
            }
        };
        FunctionConfig {
            name: f.name.into_inner(),
            source: PathBuf::from(f.source.into_inner()),
            runtime,
            entry: entry.into_inner(),
            allowed_hosts,
            isolation,
            memory_mb: memory_mb.map(|v| v as u32),
            timeout_ms: timeout_ms.map(|v| v as u64),
            concurrency: concurrency.map(|v| v as u32),
        }
    }

    fn site(&mut self, root: &Path, s: RawSite) -> SiteConfig {
        self.check_slug(&s.name, "site name", 1, 63);
        if s.name.get_ref() == "releases" {
            self.error(
                Some(s.name.span()),
                "`releases` is a word of the sites API's routes",
            )
            .hint = Some("name the site after what it is, e.g. `web` or `docs`".into());
        }
        self.check_dir(root, &s.source, "source");
        let framework = s
            .framework
            .unwrap_or_else(|| Spanned::new(0..0, "static".to_string()));
        if framework.get_ref() != "static" && s.build.is_none() {
            self.error(
                Some(framework.span()),
                format!("site `{}` uses framework `{}` but has no `build` command", s.name.get_ref(), framework.get_ref()),
            )
            .hint = Some("add build = \"npm run build\" and output = \"dist\", or use framework = \"static\"".into());
        }
        if let Some(output) = &s.output {
            let rel = Path::new(output.get_ref());
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                self.error(
                    Some(output.span()),
                    "`output` must be a path inside the site's `source`",
                )
                .hint = Some("write it relative to `source`, e.g. output = \"dist\"".into());
            }
        }
        let headers = s
            .headers
            .into_iter()
            .map(|h| {
                self.check_site_pattern(&h.path, "for");
                let mut values = Vec::new();
                for (name, value) in h.values {
                    let name_ok = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    let value_ok = !value
                        .get_ref()
                        .bytes()
                        .any(|b| b == b'\r' || b == b'\n' || b == 0);
                    if !name_ok || !value_ok {
                        self.error(
                            Some(value.span()),
                            format!("`{name}` is not a valid header"),
                        )
                        .hint = Some(
                            "header names use letters, digits and `-`; values are one line".into(),
                        );
                    }
                    values.push((name, value.into_inner()));
                }
                SiteHeaders {
                    path: h.path.into_inner(),
                    values,
                }
            })
            .collect();
        let redirects = s
            .redirects
            .into_iter()
            .map(|r| {
                self.check_site_pattern(&r.from, "from");
                let to = r.to.get_ref();
                if !(to.starts_with('/') || to.starts_with("https://") || to.starts_with("http://"))
                {
                    self.error(
                        Some(r.to.span()),
                        format!("redirect target `{to}` is neither a path nor a URL"),
                    )
                    .hint = Some("start it with `/` or `https://`".into());
                }
                let status = r.status.map_or(301, |s| {
                    if !REDIRECT_STATUSES.contains(s.get_ref()) {
                        self.error(
                            Some(s.span()),
                            format!("{} is not a redirect status", s.get_ref()),
                        )
                        .hint = Some("use 301, 302, 303, 307 or 308".into());
                    }
                    *s.get_ref()
                });
                SiteRedirect {
                    from: r.from.into_inner(),
                    to: r.to.into_inner(),
                    status: status as u16,
                }
            })
            .collect();
        SiteConfig {
            name: s.name.into_inner(),
            source: PathBuf::from(s.source.into_inner()),
            framework: framework.into_inner(),
            spa: s.spa.unwrap_or(false),
            build: s.build,
            output: s.output.map(|o| PathBuf::from(o.into_inner())),
            headers,
            redirects,
        }
    }

    /// A site path pattern: starts with `/`; `*` only as its last character (a prefix match).
    fn check_site_pattern(&mut self, pattern: &Spanned<String>, key: &str) {
        let p = pattern.get_ref();
        let star = p.find('*');
        if !p.starts_with('/') || star.is_some_and(|i| i != p.len() - 1) {
            self.error(
                Some(pattern.span()),
                format!("`{key}` pattern `{p}` is not a site path"),
            )
            .hint = Some("start it with `/`; a `*` may end it, e.g. \"/assets/*\"".into());
        }
    }

    fn job(&mut self, j: RawJob, functions: &[FunctionConfig]) -> JobConfig {
        self.check_slug(&j.name, "job name", 1, 63);
        if ["runs", "events"].contains(&j.name.get_ref().as_str()) {
            self.error(
                Some(j.name.span()),
                format!("`{}` is a word of the jobs API's routes", j.name.get_ref()),
            )
            .hint = Some("name the job after what it does, e.g. `send-digest`".into());
        }
        if !functions.iter().any(|f| &f.name == j.function.get_ref()) {
            let hint = match did_you_mean(
                j.function.get_ref(),
                functions.iter().map(|f| f.name.as_str()),
            ) {
                Some(close) => format!("did you mean `{close}`?"),
                None if functions.is_empty() => {
                    "declare the function in a [[functions]] table first".into()
                }
                None => format!(
                    "declared functions: {}",
                    functions
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.error(
                Some(j.function.span()),
                format!(
                    "job `{}` runs function `{}`, which is not declared",
                    j.name.get_ref(),
                    j.function.get_ref()
                ),
            )
            .hint = Some(hint);
        }
        let trigger = self.trigger(j.trigger, j.name.get_ref());
        let max_attempts = self.check_range(j.max_attempts, "max_attempts", 1, 100, "attempts");
        let backoff_ms = self.check_range(j.backoff_ms, "backoff_ms", 0, 3_600_000, "ms");
        let timeout_ms = self.check_range(j.timeout_ms, "timeout_ms", 1, 3_600_000, "ms");
        let concurrency = self.check_range(j.concurrency, "concurrency", 1, 10_000, "runs");
        let dedup_window_secs = self.check_range(
            j.dedup_window_secs,
            "dedup_window_secs",
            1,
            30 * 86_400,
            "seconds",
        );
        JobConfig {
            name: j.name.into_inner(),
            function: j.function.into_inner(),
            trigger,
            max_attempts: max_attempts.map(|v| v as u32),
            backoff_ms: backoff_ms.map(|v| v as u64),
            timeout_ms: timeout_ms.map(|v| v as u64),
            concurrency: concurrency.map(|v| v as u32),
            concurrency_key: j.concurrency_key,
            dedup_key: j.dedup_key,
            dedup_window_secs: dedup_window_secs.map(|v| v as u64),
            catch_up: j.catch_up.unwrap_or(false),
        }
    }

    fn trigger(&mut self, t: Spanned<RawTrigger>, job: &str) -> Trigger {
        let span = t.span();
        let t = t.into_inner();
        match t.kind.get_ref().as_str() {
            "cron" => {
                let Some(schedule) = t.schedule else {
                    self.error(
                        Some(span),
                        format!("cron trigger of job `{job}` has no `schedule`"),
                    )
                    .hint =
                        Some("for example schedule = \"0 0 * * *\" (every day at midnight)".into());
                    return Trigger::Queue;
                };
                if let Err(why) = check_cron(schedule.get_ref()) {
                    self.error(
                        Some(schedule.span()),
                        format!("invalid cron expression `{}`: {why}", schedule.get_ref()),
                    )
                    .hint = Some("use 5 fields (minute hour day month weekday) or 6 with seconds first, e.g. \"*/5 * * * *\"".into());
                }
                if let Some(tz) = &t.timezone
                    && tz.parse::<chrono_tz::Tz>().is_err()
                {
                    self.error(
                        Some(span),
                        format!("`{tz}` in the trigger of job `{job}` is not a time zone"),
                    )
                    .hint = Some(
                        "use an IANA name such as \"Europe/Paris\" or \"America/New_York\"".into(),
                    );
                }
                Trigger::Cron {
                    schedule: schedule.into_inner(),
                    timezone: t.timezone,
                }
            }
            "event" => {
                let Some(event) = t.event else {
                    self.error(
                        Some(span),
                        format!("event trigger of job `{job}` has no `event`"),
                    )
                    .hint = Some("for example event = \"data.insert\", table = \"todos\"".into());
                    return Trigger::Queue;
                };
                let name = event.get_ref().as_str();
                if DATA_EVENTS.contains(&name) && t.table.is_none() {
                    self.error(
                        Some(event.span()),
                        format!("event `{name}` needs the `table` it watches"),
                    )
                    .hint = Some("add table = \"<table name>\" to the trigger".into());
                } else if STORAGE_EVENTS.contains(&name) && t.bucket.is_none() {
                    self.error(
                        Some(event.span()),
                        format!("event `{name}` needs the `bucket` it watches"),
                    )
                    .hint = Some("add bucket = \"<bucket name>\" to the trigger".into());
                } else if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    self.error(
                        Some(event.span()),
                        format!("`{name}` is not a valid event name"),
                    )
                    .hint = Some(
                        "event names use letters, digits, `.`, `_` and `-`, e.g. \"invoice.paid\""
                            .into(),
                    );
                }
                Trigger::Event {
                    event: event.into_inner(),
                    table: t.table,
                    bucket: t.bucket,
                }
            }
            "queue" => Trigger::Queue,
            other => {
                let hint = match did_you_mean(other, TRIGGER_TYPES.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("trigger types: {}", TRIGGER_TYPES.join(", ")),
                };
                self.error(
                    Some(t.kind.span()),
                    format!("unknown trigger type `{other}` for job `{job}`"),
                )
                .hint = Some(hint);
                Trigger::Queue
            }
        }
    }

    /// Lowercase letters, digits, `-` and `_`, starting with a letter or digit.
    fn check_slug(&mut self, value: &Spanned<String>, what: &str, min: usize, max: usize) {
        let v = value.get_ref();
        let ok = (min..=max).contains(&v.len())
            && v.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            self.error(Some(value.span()), format!("`{v}` is not a valid {what}"))
                .hint = Some(format!(
                "use {min} to {max} lowercase letters, digits, `-` and `_`, starting with a letter or digit"
            ));
        }
    }

    /// An optional integer setting within `min..=max`; out of range is an error naming both.
    fn check_range(
        &mut self,
        value: Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
        unit: &str,
    ) -> Option<i64> {
        let value = value?;
        let v = *value.get_ref();
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            self.error(Some(value.span()), format!("`{key}` = {v} is out of range"))
                .hint = Some(format!("use {min} to {max} {unit}"));
            None
        }
    }

    /// Names must be unique within functions, sites and jobs: they are URL segments.
    fn check_unique<'s>(
        &mut self,
        kind: &str,
        names: impl IntoIterator<Item = &'s Spanned<String>>,
    ) {
        let mut first_seen: HashMap<&str, Range<usize>> = HashMap::new();
        for name in names {
            match first_seen.get(name.get_ref().as_str()) {
                Some(first) => {
                    let first_line = self.src[..first.start].matches('\n').count() + 1;
                    self.error(
                        Some(name.span()),
                        format!("duplicate {kind} name `{}`", name.get_ref()),
                    )
                    .hint = Some(format!(
                        "it is first declared on line {first_line}; {kind} names must be unique"
                    ));
                }
                None => {
                    first_seen.insert(name.get_ref(), name.span());
                }
            }
        }
    }

    fn check_dir(&mut self, root: &Path, dir: &Spanned<String>, what: &str) -> bool {
        let rel = Path::new(dir.get_ref());
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            self.error(
                Some(dir.span()),
                format!("`{what}` must be a path inside the project"),
            )
            .hint = Some(
                "write it relative to the directory holding reactor.toml, without `..`".into(),
            );
            return false;
        }
        let full = root.join(rel);
        if self.check_fs && !full.is_dir() {
            self.error(
                Some(dir.span()),
                format!("{what} directory `{}` does not exist", full.display()),
            )
            .hint = Some(format!(
                "create it (mkdir -p {}) or fix the path",
                full.display()
            ));
            return false;
        }
        true
    }
}

fn check_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if expr.trim_start().starts_with('@') {
        // @daily, @hourly…: croner expands these.
    } else if !(5..=6).contains(&fields) {
        return Err(format!("it has {fields} fields"));
    }
    expr.parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub(crate) fn is_context_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `scheme://host[:port]`, nothing after.
fn is_origin(text: &str) -> bool {
    let text = text.trim_end_matches('/');
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' ', '\\'])
}

#[derive(Deserialize)]
struct RawManifest {
    project_id: Spanned<String>,
    name: Spanned<String>,
    default_context: Option<Spanned<String>>,
    data: Option<RawData>,
    #[serde(default)]
    functions: Vec<RawFunction>,
    #[serde(default)]
    sites: Vec<RawSite>,
    #[serde(default)]
    jobs: Vec<RawJob>,
    gateway: Option<RawGateway>,
    connect: Option<RawConnect>,
}

#[derive(Deserialize)]
struct RawConnect {
    #[serde(default)]
    integrations: Vec<RawIntegration>,
}

#[derive(Deserialize)]
struct RawIntegration {
    name: Spanned<String>,
    provider: Spanned<String>,
    client_id: Option<String>,
    client_secret: Option<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    redirect_origins: Vec<Spanned<String>>,
    webhook_secret: Option<Spanned<String>>,
    pkce: Option<bool>,
    authorization_url: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawGateway {
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    models: Vec<RawModel>,
    allow_anonymous: Option<bool>,
    timeout_ms: Option<Spanned<i64>>,
    retries: Option<Spanned<i64>>,
    backoff_ms: Option<Spanned<i64>>,
    failures_before_cooldown: Option<Spanned<i64>>,
    cooldown_secs: Option<Spanned<i64>>,
    #[serde(default)]
    limits: Vec<RawLimit>,
    #[serde(default)]
    prices: Vec<RawPrice>,
}

#[derive(Deserialize)]
struct RawLimit {
    per: Spanned<String>,
    requests_per_minute: Option<Spanned<i64>>,
    tokens_per_minute: Option<Spanned<i64>>,
    spend_per_day: Option<Spanned<f64>>,
    spend_per_month: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
struct RawPrice {
    model: String,
    input_per_million: Spanned<f64>,
    output_per_million: Spanned<f64>,
}

#[derive(Deserialize)]
struct RawProvider {
    name: Spanned<String>,
    kind: Spanned<String>,
    base_url: Option<Spanned<String>>,
    api_key_secret: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawModel {
    name: Spanned<String>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    cache_ttl_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
struct RawTarget {
    provider: Spanned<String>,
    model: String,
    weight: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
struct RawData {
    migrations_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawFunction {
    name: Spanned<String>,
    source: Spanned<String>,
    runtime: Option<Spanned<String>>,
    entry: Option<Spanned<String>>,
    memory_mb: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    isolation: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawSite {
    name: Spanned<String>,
    source: Spanned<String>,
    framework: Option<Spanned<String>>,
    spa: Option<bool>,
    build: Option<String>,
    output: Option<Spanned<String>>,
    #[serde(default)]
    headers: Vec<RawSiteHeaders>,
    #[serde(default)]
    redirects: Vec<RawSiteRedirect>,
}

#[derive(Deserialize)]
struct RawSiteHeaders {
    #[serde(rename = "for")]
    path: Spanned<String>,
    values: std::collections::BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
struct RawSiteRedirect {
    from: Spanned<String>,
    to: Spanned<String>,
    status: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
struct RawJob {
    name: Spanned<String>,
    function: Spanned<String>,
    trigger: Spanned<RawTrigger>,
    max_attempts: Option<Spanned<i64>>,
    backoff_ms: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    concurrency_key: Option<String>,
    dedup_key: Option<String>,
    dedup_window_secs: Option<Spanned<i64>>,
    catch_up: Option<bool>,
}

#[derive(Deserialize)]
struct RawTrigger {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    schedule: Option<Spanned<String>>,
    timezone: Option<String>,
    event: Option<Spanned<String>>,
    table: Option<String>,
    bucket: Option<String>,
}

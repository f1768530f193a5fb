//! Storage: every input and output of a stage is a URL — a plain path or `file://…` on local
//! disk, `s3://bucket/prefix` on S3 or an S3-compatible server, `memory://name/…` in tests —
//! resolved through one registry of [`ObjectStore`]s, so that a stage reads and writes the same
//! way on every store.
//!
//! S3 stores are built on first use, one per bucket, from the environment (`AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, …, read by
//! `object_store`'s `AmazonS3Builder::from_env`) with [`StorageSettings`] on top (from a job's
//! `[storage]` table or `PREFSMITH_STORAGE_*` variables): endpoint, region, retries with
//! exponential backoff, and a limit on concurrent requests.

use std::collections::HashMap;
use std::path::{Component, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::limit::LimitStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod parquet_source;
pub use parquet_source::ParquetSource;

/// How S3 stores are built: what the environment does not say, and how hard to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StorageSettings {
    /// The S3 endpoint (default: `AWS_ENDPOINT`, else AWS itself).
    pub endpoint: Option<String>,
    /// The region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1).
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (default: `AWS_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
    /// Retries of a failed request (transient errors only; default 10).
    pub max_retries: usize,
    /// Give up retrying a request after this many seconds (default 180).
    pub retry_timeout_secs: f64,
    /// First backoff between retries, in seconds (doubles each time, up to 15 s; default 0.1).
    pub initial_backoff_secs: f64,
    /// Requests in flight at once per bucket (default 16).
    pub max_concurrency: usize,
    /// Bytes buffered per output file before a multipart upload starts (default 10 MiB);
    /// smaller files are one PUT.
    pub multipart_threshold_bytes: usize,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            allow_http: None,
            max_retries: 10,
            retry_timeout_secs: 180.0,
            initial_backoff_secs: 0.1,
            max_concurrency: 16,
            multipart_threshold_bytes: 10 * 1024 * 1024,
        }
    }
}

impl StorageSettings {
    /// The defaults with `PREFSMITH_STORAGE_*` environment variables applied
    /// (`PREFSMITH_STORAGE_MAX_RETRIES`, `…_RETRY_TIMEOUT_SECS`, `…_INITIAL_BACKOFF_SECS`,
    /// `…_MAX_CONCURRENCY`, `…_MULTIPART_THRESHOLD_BYTES`).
    pub fn from_env() -> Result<Self> {
        let mut settings = Self::default();
        fn var<T: std::str::FromStr>(name: &str, into: &mut T) -> Result<()> {
            if let Ok(text) = std::env::var(name) {
                *into = text
                    .trim()
                    .parse()
                    .map_err(|_| Error::config(name, format!("cannot parse '{text}'")))?;
            }
            Ok(())
        }
        var("PREFSMITH_STORAGE_MAX_RETRIES", &mut settings.max_retries)?;
        var(
            "PREFSMITH_STORAGE_RETRY_TIMEOUT_SECS",
            &mut settings.retry_timeout_secs,
        )?;
        var(
            "PREFSMITH_STORAGE_INITIAL_BACKOFF_SECS",
            &mut settings.initial_backoff_secs,
        )?;
        var(
            "PREFSMITH_STORAGE_MAX_CONCURRENCY",
            &mut settings.max_concurrency,
        )?;
        var(
            "PREFSMITH_STORAGE_MULTIPART_THRESHOLD_BYTES",
            &mut settings.multipart_threshold_bytes,
        )?;
        settings.validate("PREFSMITH_STORAGE_*")?;
        Ok(settings)
    }

    /// Checks the values; `source` names where they came from.
    pub fn validate(&self, source: &str) -> Result<()> {
        if self.max_concurrency == 0 {
            return Err(Error::config(
                source,
                "'max-concurrency' must be at least 1",
            ));
        }
        if !(self.retry_timeout_secs.is_finite() && self.retry_timeout_secs >= 0.0) {
            return Err(Error::config(source, "'retry-timeout-secs' must be ≥ 0"));
        }
        if !(self.initial_backoff_secs.is_finite() && self.initial_backoff_secs > 0.0) {
            return Err(Error::config(source, "'initial-backoff-secs' must be > 0"));
        }
        if self.multipart_threshold_bytes < 5 * 1024 * 1024 {
            // S3 rejects multipart parts under 5 MiB (all but the last).
            return Err(Error::config(
                source,
                "'multipart-threshold-bytes' must be at least 5 MiB (S3's smallest part)",
            ));
        }
        Ok(())
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_secs_f64(self.initial_backoff_secs),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: Duration::from_secs_f64(self.retry_timeout_secs),
        }
    }
}

struct Registry {
    settings: Option<StorageSettings>,
    /// Stores by `scheme://authority`; S3 stores built from settings, or registered by hand.
    stores: HashMap<String, Arc<dyn ObjectStore>>,
    /// Keys of stores registered by hand (kept when the settings change).
    pinned: Vec<String>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    Mutex::new(Registry {
        settings: None,
        stores: HashMap::new(),
        pinned: Vec::new(),
    })
});

static LOCAL: LazyLock<Arc<dyn ObjectStore>> = LazyLock::new(|| Arc::new(LocalFileSystem::new()));

/// Sets how S3 stores are built from now on (stores built earlier are dropped; stores
/// registered with [`register_store`] stay).
pub fn configure(settings: StorageSettings) {
    let mut registry = REGISTRY.lock().expect("storage registry lock");
    let pinned = registry.pinned.clone();
    registry.stores.retain(|key, _| pinned.contains(key));
    registry.settings = Some(settings);
}

/// The settings S3 stores are built with.
pub fn settings() -> Result<StorageSettings> {
    REGISTRY.lock().expect("storage registry lock").settings()
}

impl Registry {
    /// The configured settings, else the environment's.
    fn settings(&self) -> Result<StorageSettings> {
        match &self.settings {
            Some(settings) => Ok(settings.clone()),
            None => StorageSettings::from_env(),
        }
    }
}

/// Serves `base` (`scheme://authority`, e.g. `s3://bucket` or `memory://test`) from `store`:
/// for tests (an in-memory store, a store that injects failures) and for stores the
/// environment cannot describe.
pub fn register_store(base: &str, store: Arc<dyn ObjectStore>) {
    let key = base.trim_end_matches('/').to_string();
    let mut registry = REGISTRY.lock().expect("storage registry lock");
    registry.stores.insert(key.clone(), store);
    if !registry.pinned.contains(&key) {
        registry.pinned.push(key);
    }
}

/// Removes a store registered with [`register_store`].
pub fn unregister_store(base: &str) {
    let key = base.trim_end_matches('/');
    let mut registry = REGISTRY.lock().expect("storage registry lock");
    registry.stores.remove(key);
    registry.pinned.retain(|k| k != key);
}

fn store_for(scheme: &str, authority: &str, spec: &str) -> Result<Arc<dyn ObjectStore>> {
    let key = format!("{scheme}://{authority}");
    let mut registry = REGISTRY.lock().expect("storage registry lock");
    if let Some(store) = registry.stores.get(&key) {
        return Ok(Arc::clone(store));
    }
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" => {
            let settings = registry.settings()?;
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(authority)
                .with_retry(settings.retry());
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &settings.region {
                builder = builder.with_region(region);
            }
            if let Some(allow) = settings.allow_http {
                builder = builder.with_allow_http(allow);
            }
            let s3 = builder.build().map_err(|e| Error::Storage {
                location: spec.into(),
                message: format!("cannot configure S3 for bucket '{authority}': {e}"),
            })?;
            Arc::new(LimitStore::new(s3, settings.max_concurrency))
        }
        // An in-memory store per name, created on first use (tests).
        "memory" => Arc::new(InMemory::new()),
        other => {
            return Err(Error::config(
                spec,
                format!(
                    "unsupported URL scheme '{other}://' (use a path, file://, s3:// or memory://)"
                ),
            ));
        }
    };
    registry.stores.insert(key, Arc::clone(&store));
    Ok(store)
}

/// A file or directory on some store.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    /// `scheme://authority` for remote stores; empty for local disk.
    base: String,
    path: StorePath,
    /// The local path as the user wrote it (joined with child names), for messages.
    local: Option<PathBuf>,
    /// The object's size, version tag and time, when a listing or a head request told them.
    meta: Option<ObjectMeta>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.local {
            Some(path) => write!(f, "{}", path.display()),
            None if self.path.as_ref().is_empty() => write!(f, "{}/", self.base),
            None => write!(f, "{}/{}", self.base, self.path),
        }
    }
}

impl PartialEq for Location {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base && self.path == other.path
    }
}

impl Location {
    /// Parses a path or URL. A trailing `/` is ignored (a prefix and a directory are the same).
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some((scheme, rest)) = spec.split_once("://") {
            if scheme == "file" {
                return Self::local(rest, spec);
            }
            let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
            if authority.is_empty() {
                return Err(Error::config(spec, "the URL names no bucket"));
            }
            let path = StorePath::parse(key.trim_end_matches('/'))
                .map_err(|e| Error::config(spec, format!("not a valid object path: {e}")))?;
            let store = store_for(scheme, authority, spec)?;
            return Ok(Self {
                store,
                base: format!("{scheme}://{authority}"),
                path,
                local: None,
                meta: None,
            });
        }
        Self::local(spec, spec)
    }

    fn local(path: &str, spec: &str) -> Result<Self> {
        let given = PathBuf::from(path);
        let absolute = std::path::absolute(&given).map_err(Error::io(&given))?;
        // Lexical normalisation: object paths have no `.` or `..` segments.
        let mut normal = PathBuf::new();
        for component in absolute.components() {
            match component {
                Component::ParentDir => {
                    normal.pop();
                }
                Component::CurDir => {}
                other => normal.push(other),
            }
        }
        let path = StorePath::from_absolute_path(&normal)
            .map_err(|e| Error::config(spec, format!("not a usable local path: {e}")))?;
        Ok(Self {
            store: Arc::clone(&LOCAL),
            base: String::new(),
            path,
            local: Some(given),
            meta: None,
        })
    }

    /// The location `name` below this one (`name` may hold `/`).
    pub fn child(&self, name: &str) -> Self {
        let mut path = self.path.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        Self {
            store: Arc::clone(&self.store),
            base: self.base.clone(),
            path,
            local: self.local.as_ref().map(|l| l.join(name)),
            meta: None,
        }
    }

    /// A location on the same store at object path `path` (from a listing below this one).
    fn listed(&self, meta: &ObjectMeta) -> Self {
        let mut location = match self.relative_name_of(&meta.location) {
            Some(name) => self.child(&name),
            None => Self {
                store: Arc::clone(&self.store),
                base: self.base.clone(),
                path: meta.location.clone(),
                local: self
                    .local
                    .as_ref()
                    .map(|_| PathBuf::from(format!("/{}", meta.location))),
                meta: None,
            },
        };
        location.meta = Some(meta.clone());
        location
    }

    fn relative_name_of(&self, path: &StorePath) -> Option<String> {
        let parts: Vec<_> = path.prefix_match(&self.path)?.collect();
        Some(
            parts
                .iter()
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    /// Records what a listing or head request said about the object.
    pub fn set_meta(&mut self, meta: ObjectMeta) {
        self.meta = Some(meta);
    }

    /// What a listing or head request said about the object, if one did.
    pub fn known_meta(&self) -> Option<&ObjectMeta> {
        self.meta.as_ref()
    }

    /// The object's metadata when known, else a head request (`None`: no object here).
    pub async fn meta(&self) -> Result<Option<ObjectMeta>> {
        match &self.meta {
            Some(meta) => Ok(Some(meta.clone())),
            None => self.head().await,
        }
    }

    /// The name of `other` relative to this location, when `other` lies below it.
    pub fn relative_name(&self, other: &Location) -> Option<String> {
        self.relative_name_of(&other.path)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path within the store.
    pub fn path(&self) -> &StorePath {
        &self.path
    }

    /// The local path, for local locations.
    pub fn local_path(&self) -> Option<PathBuf> {
        self.local
            .as_ref()
            .map(|_| PathBuf::from(format!("/{}", self.path)))
    }

    /// The last path segment.
    pub fn file_name(&self) -> String {
        self.path.filename().unwrap_or_default().to_string()
    }

    /// The URL DataFusion reads this location by (its store registered by
    /// [`register_with`](Self::register_with)).
    pub fn table_url(&self) -> String {
        match &self.local {
            Some(_) => format!("/{}", self.path),
            None => format!("{}/{}", self.base, self.path),
        }
    }

    /// Makes this location's store known to a DataFusion session.
    pub fn register_with(&self, ctx: &SessionContext) -> Result<()> {
        if self.local.is_none() {
            let url = ObjectStoreUrl::parse(&self.base)?;
            ctx.register_object_store(url.as_ref(), Arc::clone(&self.store));
        }
        Ok(())
    }

    /// The object's size and version tag, or `None` when there is no object here.
    pub async fn head(&self) -> Result<Option<ObjectMeta>> {
        // A local directory is not an object (the local store may answer either way).
        if self.local_path().is_some_and(|p| p.is_dir()) {
            return Ok(None);
        }
        match self.store.head(&self.path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error(self, e)),
        }
    }

    /// Every object below this prefix (recursively), sorted by path.
    pub async fn list(&self) -> Result<Vec<(Location, ObjectMeta)>> {
        let prefix = (!self.path.as_ref().is_empty()).then_some(&self.path);
        let mut found: Vec<ObjectMeta> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| storage_error(self, e))?;
        found.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        Ok(found
            .into_iter()
            .map(|meta| (self.listed(&meta), meta))
            .collect())
    }

    /// Reads the whole object.
    pub async fn read_bytes(&self) -> Result<Vec<u8>> {
        let result = self
            .store
            .get(&self.path)
            .await
            .map_err(|e| storage_error(self, e))?;
        let bytes = result.bytes().await.map_err(|e| storage_error(self, e))?;
        Ok(bytes.to_vec())
    }

    /// Writes the whole object in one request: it appears complete or not at all.
    pub async fn write_bytes(&self, bytes: Vec<u8>) -> Result<()> {
        if let Some(parent) = self
            .local_path()
            .and_then(|p| p.parent().map(PathBuf::from))
        {
            std::fs::create_dir_all(&parent).map_err(Error::io(&parent))?;
        }
        self.store
            .put(&self.path, bytes.into())
            .await
            .map_err(|e| storage_error(self, e))?;
        Ok(())
    }

    /// Deletes the object; a missing object is not an error.
    pub async fn delete(&self) -> Result<()> {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error(self, e)),
        }
    }
}

/// A storage failure at `location`, with a hint for the usual causes.
pub fn storage_error(location: &Location, error: object_store::Error) -> Error {
    let mut message = error.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    let hint = if message.contains("NoSuchBucket") {
        Some("the bucket does not exist")
    } else if message.contains("error sending request")
        || message.contains("Connection refused")
        || message.contains("connection closed")
        || message.contains("tcp connect error")
    {
        Some("cannot reach the object store: check AWS_ENDPOINT and that the server is up")
    } else if message.contains("InvalidAccessKeyId")
        || message.contains("SignatureDoesNotMatch")
        || message.contains("AccessDenied")
        || message.contains("403 Forbidden")
    {
        Some("access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    } else {
        None
    };
    if let Some(hint) = hint {
        message = format!("{hint} ({message})");
    }
    Error::Storage {
        location: location.to_string(),
        message,
    }
}

/// Whether `spec` names a remote store (anything but a local path).
pub fn is_remote(spec: &str) -> bool {
    spec.split_once("://")
        .is_some_and(|(scheme, _)| scheme != "file")
}

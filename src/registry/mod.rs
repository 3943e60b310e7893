//! Registry access: credentials as podman finds them, anonymous first and credentials on
//! refusal, `--insecure-registry` and extra CAs, bounded retries, and byte accounting. The
//! HTTP side (authentication challenges, tokens, connections) is in `http`.

pub mod auth;
mod blob;
pub mod cache;
pub mod files;
mod http;
pub mod layers;
pub mod manifest;
pub mod mirrors;
pub mod reference;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use auth::{Credentials, Found};
pub use blob::{BlobError, BlobReader};
use http::{Get, Http, HttpError};
use mirrors::Mirrors;
use reference::ImageRef;

const MAX_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const USER_AGENT: &str = concat!("kubectl-kmm/", env!("CARGO_PKG_VERSION"));

/// Things worth telling the user with `-v`. The output layer decides how to show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Which source of credentials served a repository (never the credentials themselves).
    Credentials {
        repository: String,
        source: String,
    },
    Anonymous {
        repository: String,
    },
    Retrying {
        registry: String,
        attempt: u32,
        reason: String,
    },
    PlainHttp {
        registry: String,
    },
    SkippedAuthFile {
        detail: String,
    },
    /// A mirror answered for an image.
    Mirror {
        image: String,
        mirror: String,
        origin: String,
    },
    /// A location of an image did not answer; the next one is tried.
    LocationFailed {
        image: String,
        reason: String,
    },
}

pub type Notifier = Arc<dyn Fn(Notice) + Send + Sync>;

/// The bound on a registry request when `--request-timeout` does not set one.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Proxy settings for registry traffic (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`).
#[derive(Debug, Clone, Default)]
pub struct Proxy {
    pub https: Option<String>,
    pub http: Option<String>,
    pub no_proxy: Option<String>,
}

impl Proxy {
    pub fn from_env() -> Self {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        Proxy {
            https: var(&["HTTPS_PROXY", "https_proxy"]),
            http: var(&["HTTP_PROXY", "http_proxy"]),
            no_proxy: var(&["NO_PROXY", "no_proxy"]),
        }
    }
}

pub struct RegistryOptions {
    /// `host[:port]` allowed plain HTTP or unverified TLS.
    pub insecure: Vec<String>,
    /// Insecure registries known to speak plain HTTP: TLS is not tried first.
    pub plain_http: Vec<String>,
    /// How long one request may take, its retries included (`--request-timeout`).
    pub request_timeout: Duration,
    /// PEM certificates trusted in addition to the system's.
    pub ca_certificates: Vec<Vec<u8>>,
    pub credentials: Credentials,
    pub mirrors: Mirrors,
    pub proxy: Proxy,
    pub notify: Notifier,
}

/// Read PEM files given to `--registry-ca`, one certificate per entry.
pub fn load_ca_files(paths: &[impl AsRef<Path>]) -> Result<Vec<Vec<u8>>> {
    let mut certs = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::CaFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let begin = "-----BEGIN CERTIFICATE-----";
        let end = "-----END CERTIFICATE-----";
        let mut found = 0;
        for block in text.split(begin).skip(1) {
            let Some(stop) = block.find(end) else { break };
            certs.push(format!("{begin}{}{end}\n", &block[..stop]).into_bytes());
            found += 1;
        }
        if found == 0 {
            return Err(Error::CaFile {
                path: path.to_path_buf(),
                reason: "no PEM certificate found".into(),
            });
        }
    }
    Ok(certs)
}

/// Totals for `-v` and the benchmark.
#[derive(Debug, Default)]
struct Stats {
    manifest_bytes: AtomicU64,
    blob_bytes: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    pub requests: u64,
    pub manifest_bytes: u64,
    pub blob_bytes: u64,
}

impl Transferred {
    /// What was transferred after `earlier` was taken.
    pub fn since(self, earlier: Transferred) -> Transferred {
        Transferred {
            requests: self.requests - earlier.requests,
            manifest_bytes: self.manifest_bytes - earlier.manifest_bytes,
            blob_bytes: self.blob_bytes - earlier.blob_bytes,
        }
    }
}

struct Inner {
    options: RegistryOptions,
    http: Http,
    settings: http::Settings,
    /// Insecure registries that turned out to speak plain HTTP.
    plain_http: Mutex<HashSet<String>>,
    /// Repositories where anonymous access was refused: go straight to credentials.
    needs_credentials: Mutex<HashSet<String>>,
    announced: Mutex<HashSet<String>>,
    stats: Stats,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    access: Arc<Access>,
}

/// Whose credentials, and which registries may skip TLS: the run's defaults, or one Module's
/// (its `imageRepoSecret` first, its `registryTLS`).
struct Access {
    credentials: Credentials,
    insecure: Vec<String>,
    /// Where else an image may be read from: one cluster's mirror sets and the mirror files.
    mirrors: Mirrors,
}

/// A raw manifest and the digest it was verified against.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub body: Bytes,
    pub digest: String,
}

/// Why one authentication mode did not work out.
enum Failure {
    /// Refused: the caller may try again with credentials.
    Unauthorized,
    Fatal(Error),
}

/// How a failed registry request should be handled.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    NotFound,
    Unauthorized,
    Retryable,
    Unreachable,
    Tls,
    Other,
}

pub(crate) fn looks_like_tls(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "invalidcontenttype",
        "corrupt message",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

fn classify(e: &HttpError) -> Class {
    match e {
        HttpError::Unauthorized(_) => Class::Unauthorized,
        HttpError::Status { code, codes, .. } => {
            let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(&c.as_str()));
            if has(&[
                "MANIFEST_UNKNOWN",
                "NAME_UNKNOWN",
                "BLOB_UNKNOWN",
                "NOT_FOUND",
            ]) {
                Class::NotFound
            } else if has(&["UNAUTHORIZED", "DENIED"]) {
                Class::Unauthorized
            } else if has(&["TOOMANYREQUESTS"]) {
                Class::Retryable
            } else {
                match code {
                    404 => Class::NotFound,
                    401 | 403 => Class::Unauthorized,
                    429 | 500..=599 => Class::Retryable,
                    _ => Class::Other,
                }
            }
        }
        HttpError::Request(err) => {
            let detail = crate::error::chain(err);
            if looks_like_tls(&detail) {
                Class::Tls
            } else if err.is_connect() {
                Class::Unreachable
            } else if err.is_timeout() || err.is_request() || err.is_body() || err.is_decode() {
                Class::Retryable
            } else {
                Class::Other
            }
        }
        HttpError::Invalid(_) => Class::Other,
    }
}

/// The digest of a manifest as received: sha256 of its bytes, which must be the digest it was
/// asked for by.
fn manifest_digest(body: &[u8], expected: Option<&str>) -> std::result::Result<String, HttpError> {
    use sha2::Digest;
    let Some(expected) = expected else {
        return Ok(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(body))
        ));
    };
    let actual = match expected.split_once(':') {
        Some(("sha256", _)) => format!("sha256:{}", hex::encode(sha2::Sha256::digest(body))),
        Some(("sha512", _)) => format!("sha512:{}", hex::encode(sha2::Sha512::digest(body))),
        _ => return Ok(expected.to_string()),
    };
    if actual == expected {
        Ok(actual)
    } else {
        Err(HttpError::Invalid(format!(
            "the manifest sent for {expected} has digest {actual}"
        )))
    }
}

/// What to GET from an image's repository.
struct Wanted {
    /// `manifests/<reference>` or `blobs/<digest>`.
    path: String,
    accept: Option<String>,
    range: Option<(u64, Option<u64>)>,
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Self {
        for detail in &options.credentials.skipped {
            (options.notify)(Notice::SkippedAuthFile {
                detail: detail.clone(),
            });
        }
        let access = Arc::new(Access {
            credentials: options.credentials.clone(),
            insecure: options.insecure.clone(),
            mirrors: options.mirrors.clone(),
        });
        let plain_http = options.plain_http.iter().cloned().collect();
        let settings = http::Settings {
            ca_certificates: options.ca_certificates.clone(),
            connect_timeout: options.request_timeout.min(Duration::from_secs(15)),
            read_timeout: options.request_timeout,
            user_agent: USER_AGENT,
            proxy: options.proxy.clone(),
        };
        Registry {
            access,
            inner: Arc::new(Inner {
                options,
                http: Http::default(),
                settings,
                plain_http: Mutex::new(plain_http),
                needs_credentials: Mutex::default(),
                announced: Mutex::default(),
                stats: Stats::default(),
            }),
        }
    }

    pub fn transferred(&self) -> Transferred {
        let s = &self.inner.stats;
        Transferred {
            requests: self.inner.http.sent.load(Ordering::Relaxed),
            manifest_bytes: s.manifest_bytes.load(Ordering::Relaxed),
            blob_bytes: s.blob_bytes.load(Ordering::Relaxed),
        }
    }

    fn notify(&self, notice: Notice) {
        (self.inner.options.notify)(notice);
    }

    /// The bound on one request (`--request-timeout`, else `DEFAULT_REQUEST_TIMEOUT`).
    pub fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    fn is_insecure(&self, registry: &str) -> bool {
        self.access.insecure.iter().any(|h| h == registry)
    }

    /// The same registry client (connections, what was learned about each registry, byte
    /// counts) with other credentials and more registries allowed to skip TLS.
    pub fn with_access(&self, credentials: Credentials, insecure: &[String]) -> Registry {
        let mut all = self.access.insecure.clone();
        all.extend(
            insecure
                .iter()
                .filter(|h| !all.contains(h))
                .cloned()
                .collect::<Vec<_>>(),
        );
        Registry {
            inner: self.inner.clone(),
            access: Arc::new(Access {
                credentials,
                insecure: all,
                mirrors: self.access.mirrors.clone(),
            }),
        }
    }

    /// The same registry client with other mirror rules (another cluster's mirror sets).
    pub fn with_mirrors(&self, mirrors: Mirrors) -> Registry {
        Registry {
            inner: self.inner.clone(),
            access: Arc::new(Access {
                credentials: self.access.credentials.clone(),
                insecure: self.access.insecure.clone(),
                mirrors,
            }),
        }
    }

    /// Two clients with the same key read every image from the same places with the same
    /// credentials, so what one read holds for the other. (A hash, kept in memory only.)
    pub fn access_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.access.credentials.hash_into(&mut hasher);
        self.access.insecure.hash(&mut hasher);
        format!("{:?}", self.access.mirrors).hash(&mut hasher);
        hasher.finish()
    }

    /// The mirror rules this client applies.
    pub fn mirrors(&self) -> &Mirrors {
        &self.access.mirrors
    }

    /// The credentials this client tries.
    pub fn credentials(&self) -> &Credentials {
        &self.access.credentials
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic while holding one of these locks cannot leave the sets inconsistent.
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// GET `wanted` from `image`'s repository and `read` the answer, with retries, the HTTP
    /// fallback for insecure registries, and anonymous access first with credentials on refusal.
    async fn call<T, F, Fut>(&self, image: &ImageRef, wanted: Wanted, read: F) -> Result<T>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, HttpError>>,
    {
        // A peer that accepts and never answers: the whole call, retries included, is bounded.
        let after = self.inner.options.request_timeout;
        let call = self.call_unbounded(image, &wanted, &read);
        match tokio::time::timeout(after, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::RegistryTimeout {
                registry: image.registry.clone(),
                image: image.to_string(),
                after,
            }),
        }
    }

    async fn call_unbounded<T, F, Fut>(
        &self,
        image: &ImageRef,
        wanted: &Wanted,
        read: &F,
    ) -> Result<T>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, HttpError>>,
    {
        let repository = image.repository_path();
        let found = self.access.credentials.lookup(image);
        let anonymous_first = found.is_none()
            || !(Self::lock(&self.inner.needs_credentials).contains(&repository)
                || self.inner.http.refuses_anonymous(&image.registry));
        if anonymous_first {
            match self.attempt(image, None, wanted, read).await {
                Err(Failure::Unauthorized) if found.is_some() => {
                    Self::lock(&self.inner.needs_credentials).insert(repository.clone());
                }
                Err(Failure::Unauthorized) => return Err(self.unauthorized(image, None)),
                Err(Failure::Fatal(e)) => return Err(e),
                Ok(value) => {
                    self.announce(&repository, None);
                    return Ok(value);
                }
            }
        }
        let found = found.as_ref();
        match self.attempt(image, found, wanted, read).await {
            Ok(value) => {
                self.announce(&repository, found);
                Ok(value)
            }
            Err(Failure::Unauthorized) => Err(self.unauthorized(image, found)),
            Err(Failure::Fatal(e)) => Err(e),
        }
    }

    fn unauthorized(&self, image: &ImageRef, found: Option<&Found>) -> Error {
        let credentials = match found {
            Some(f) => format!("credentials from {} were refused", f.source),
            None => {
                let searched = self.access.credentials.searched();
                if searched.is_empty() {
                    "anonymous access was refused and no auth file was found".to_string()
                } else {
                    format!(
                        "anonymous access was refused and none of {} has an entry for it",
                        searched.join(", ")
                    )
                }
            }
        };
        let helpers = self.access.credentials.helper_failures();
        let credentials = if helpers.is_empty() {
            credentials
        } else {
            format!("{credentials}; {}", helpers.join("; "))
        };
        Error::Unauthorized {
            image: image.to_string(),
            registry: image.registry.clone(),
            credentials,
        }
    }

    fn announce(&self, repository: &str, found: Option<&Found>) {
        // Once per repository and source: Modules may reach one repository with their own secrets.
        let key = format!("{repository} {}", found.map_or("", |f| f.source.as_str()));
        if Self::lock(&self.inner.announced).insert(key) {
            self.notify(match found {
                Some(f) => Notice::Credentials {
                    repository: repository.to_string(),
                    source: f.source.clone(),
                },
                None => Notice::Anonymous {
                    repository: repository.to_string(),
                },
            });
        }
    }

    /// One authentication mode, with retries.
    async fn attempt<T, F, Fut>(
        &self,
        image: &ImageRef,
        found: Option<&Found>,
        wanted: &Wanted,
        read: &F,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, HttpError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let was_plain = Self::lock(&self.inner.plain_http).contains(&image.registry);
            let get = Get {
                registry: &image.registry,
                repository: &image.repository,
                path: wanted.path.clone(),
                plain_http: was_plain,
                accept_invalid_certificates: self.is_insecure(&image.registry),
                accept: wanted.accept.clone(),
                range: wanted.range,
            };
            let answer = self.inner.http.get(&self.inner.settings, &get, found).await;
            let error = match answer {
                Ok(response) if response.status().is_success() => match read(response).await {
                    Ok(value) => return Ok(value),
                    Err(e) => e,
                },
                Ok(response) => http::status_error(response).await,
                Err(e) => e,
            };
            let class = classify(&error);
            let detail = error.describe();
            if matches!(class, Class::Tls | Class::Unreachable)
                && self.is_insecure(&image.registry)
                && !was_plain
            {
                // podman's rule for insecure registries: HTTPS without verification, then HTTP.
                // Concurrent requests may all learn it; it is said once.
                if Self::lock(&self.inner.plain_http).insert(image.registry.clone()) {
                    self.notify(Notice::PlainHttp {
                        registry: image.registry.clone(),
                    });
                }
                attempt -= 1;
                continue;
            }
            match class {
                Class::Unauthorized => return Err(Failure::Unauthorized),
                Class::NotFound => {
                    return Err(Failure::Fatal(Error::ImageNotFound {
                        role: "image",
                        image: image.to_string(),
                        registry: image.registry.clone(),
                    }));
                }
                Class::Tls => {
                    return Err(Failure::Fatal(Error::RegistryTls {
                        registry: image.registry.clone(),
                        detail,
                    }));
                }
                Class::Retryable | Class::Unreachable if attempt < MAX_ATTEMPTS => {
                    self.notify(Notice::Retrying {
                        registry: image.registry.clone(),
                        attempt,
                        reason: detail,
                    });
                    tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
                }
                Class::Unreachable => {
                    return Err(Failure::Fatal(Error::RegistryUnreachable {
                        registry: image.registry.clone(),
                        detail,
                    }));
                }
                Class::Retryable | Class::Other => {
                    return Err(Failure::Fatal(Error::RegistryProtocol {
                        registry: image.registry.clone(),
                        image: image.to_string(),
                        detail,
                    }));
                }
            }
        }
    }

    /// GET a manifest by tag or digest. The digest is verified against the body.
    pub async fn manifest(&self, image: &ImageRef) -> Result<RawManifest> {
        let reference = match (&image.digest, &image.tag) {
            (Some(digest), _) => digest.clone(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        };
        let wanted = Wanted {
            path: format!("manifests/{reference}"),
            accept: Some(manifest::ACCEPTED.join(", ")),
            range: None,
        };
        let expected = image.digest.clone();
        let read = |response: reqwest::Response| {
            let expected = expected.clone();
            async move {
                let body = response.bytes().await?;
                let digest = manifest_digest(&body, expected.as_deref())?;
                Ok((body, digest))
            }
        };
        let (body, digest) = self.call(image, wanted, read).await?;
        self.inner
            .stats
            .manifest_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(RawManifest { body, digest })
    }

    /// GET the manifest of `image` where the mirror rules say to look, in order. Returns the
    /// manifest and the location that answered: fetch the image's blobs from there.
    pub async fn manifest_located(&self, image: &ImageRef) -> Result<(RawManifest, ImageRef)> {
        let mirrors = &self.access.mirrors;
        let (candidates, blocked) = mirrors.candidates(image);
        if candidates.len() == 1 && !blocked {
            return match self.manifest(image).await {
                Ok(m) => Ok((m, image.clone())),
                Err(e @ (Error::RegistryUnreachable { .. } | Error::RegistryTls { .. }))
                    if image.digest.is_none() && mirrors.covers_as_digest(image) =>
                {
                    Err(Error::TagNotMirrored {
                        image: image.to_string(),
                        detail: e.to_string(),
                    })
                }
                Err(e) => Err(e),
            };
        }
        let mut tried = Vec::new();
        let mut all_not_found = true;
        for candidate in &candidates {
            match self.manifest(&candidate.image).await {
                Ok(m) => {
                    if let Some(origin) = &candidate.origin {
                        self.notify(Notice::Mirror {
                            image: image.to_string(),
                            mirror: candidate.image.to_string(),
                            origin: origin.clone(),
                        });
                    }
                    return Ok((m, candidate.image.clone()));
                }
                Err(e) => {
                    all_not_found &= matches!(e, Error::ImageNotFound { .. });
                    let place = match &candidate.origin {
                        Some(origin) => format!("mirror {} ({origin})", candidate.image),
                        None => format!("source {}", candidate.image),
                    };
                    self.notify(Notice::LocationFailed {
                        image: image.to_string(),
                        reason: format!("{place}: {e}"),
                    });
                    tried.push(format!("{place}: {e}"));
                }
            }
        }
        if blocked {
            tried.push(format!(
                "source {} not contacted (NeverContactSource)",
                image.repository_path()
            ));
        }
        Err(Error::MirrorsFailed {
            image: image.to_string(),
            tried: tried.join("; "),
            all_not_found,
        })
    }
}

//! The distribution API as the plugin uses it: GET of manifests and of blob ranges.
//!
//! Round trips are what a registry on another continent costs, so nothing is asked twice:
//! - no `GET /v2/` probe: a request goes out as it is, and a registry that wants credentials
//!   says how in its 401 (`WWW-Authenticate`), which is remembered for the registry;
//! - bearer tokens are fetched once per registry, repository and identity, and reused until
//!   they expire (concurrent requests wait for the one fetch);
//! - one pool of kept-alive connections per TLS mode serves every image of the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::auth::Found;
use crate::error::chain;

/// How a registry wants to be authenticated, from its last 401.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    registry: String,
    repository: String,
    /// The credential source, or None for an anonymous token.
    identity: Option<String>,
}

#[derive(Clone)]
struct Token {
    value: String,
    /// When to stop using it.
    expires: Instant,
}

/// How long a token without `expires_in` is reused: the distribution spec's default.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Renew a token this long before it expires, so it does not lapse in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// Why a request did not succeed.
#[derive(Debug)]
pub(super) enum HttpError {
    /// Refused (401 or 403, or the token service refused).
    Unauthorized(String),
    /// Any other non-success status, with the distribution error codes of its body.
    Status {
        code: u16,
        codes: Vec<String>,
        message: String,
    },
    /// No answer, a broken connection, TLS.
    Request(reqwest::Error),
    /// An answer that breaks the protocol (a manifest that does not match its digest…).
    Invalid(String),
}

impl HttpError {
    pub(super) fn describe(&self) -> String {
        match self {
            HttpError::Unauthorized(detail) | HttpError::Invalid(detail) => detail.clone(),
            HttpError::Request(e) => chain(e),
            HttpError::Status { code, message, .. } => {
                let message = message.trim();
                if message.is_empty() {
                    format!("HTTP {code}")
                } else {
                    format!(
                        "HTTP {code}: {}",
                        message.chars().take(200).collect::<String>()
                    )
                }
            }
        }
    }
}

impl From<reqwest::Error> for HttpError {
    fn from(e: reqwest::Error) -> Self {
        HttpError::Request(e)
    }
}

/// What the HTTP clients are built with.
pub(super) struct Settings {
    pub ca_certificates: Vec<Vec<u8>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub user_agent: &'static str,
    pub proxy: super::Proxy,
}

/// One GET: where, what to accept, which bytes.
pub(super) struct Get<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    /// `manifests/<reference>` or `blobs/<digest>`.
    pub path: String,
    pub plain_http: bool,
    pub accept_invalid_certificates: bool,
    pub accept: Option<String>,
    /// First byte and, when bounded, how many.
    pub range: Option<(u64, Option<u64>)>,
}

#[derive(Default)]
pub(super) struct Http {
    pools: Mutex<HashMap<bool, reqwest::Client>>,
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Option<Token>>>>>,
    /// Every HTTP request sent, token requests included.
    pub(super) sent: std::sync::atomic::AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Maps of what was learned: a panic while one is held cannot leave them inconsistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The host that serves a registry name (Docker Hub's API lives elsewhere than its name).
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    }
}

impl Http {
    /// The pool for one TLS mode, built on first use.
    fn pool(&self, settings: &Settings, insecure: bool) -> Result<reqwest::Client, String> {
        let mut pools = lock(&self.pools);
        if let Some(client) = pools.get(&insecure) {
            return Ok(client.clone());
        }
        let mut certificates = Vec::new();
        for pem in &settings.ca_certificates {
            certificates.push(reqwest::Certificate::from_pem(pem).map_err(|e| chain(&e))?);
        }
        let mut builder = reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .tls_certs_merge(certificates)
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .user_agent(settings.user_agent);
        let no_proxy = || {
            settings
                .proxy
                .no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string)
        };
        if let Some(address) = &settings.proxy.https {
            let proxy = reqwest::Proxy::https(address).map_err(|e| chain(&e))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy()));
        }
        if let Some(address) = &settings.proxy.http {
            let proxy = reqwest::Proxy::http(address).map_err(|e| chain(&e))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy()));
        }
        let client = builder.build().map_err(|e| chain(&e))?;
        pools.insert(insecure, client.clone());
        Ok(client)
    }

    /// True when the registry is known to refuse every anonymous request (HTTP Basic).
    pub(super) fn refuses_anonymous(&self, registry: &str) -> bool {
        lock(&self.challenges).get(registry) == Some(&Challenge::Basic)
    }

    /// GET, authenticated as the registry asks: `identity`'s credentials or anonymously.
    /// Returns any answer that is not a refusal; the caller judges its status.
    pub(super) async fn get(
        &self,
        settings: &Settings,
        request: &Get<'_>,
        identity: Option<&Found>,
    ) -> Result<Response, HttpError> {
        let pool = self
            .pool(settings, request.accept_invalid_certificates)
            .map_err(|e| HttpError::Invalid(format!("cannot set up the HTTP client: {e}")))?;
        let scheme = if request.plain_http { "http" } else { "https" };
        let url = format!(
            "{scheme}://{}/v2/{}/{}",
            api_host(request.registry),
            request.repository,
            request.path
        );
        let known = lock(&self.challenges).get(request.registry).cloned();
        let (mut authorization, mut reused) = match &known {
            None => (None, false),
            Some(challenge) => {
                self.authorization(&pool, challenge, request, identity, false)
                    .await?
            }
        };
        let mut retried = false;
        loop {
            let mut builder = pool.get(&url);
            if let Some(accept) = &request.accept {
                builder = builder.header(ACCEPT, accept);
            }
            if let Some((first, len)) = request.range {
                let range = match len {
                    Some(len) => format!("bytes={first}-{}", (first + len).saturating_sub(1)),
                    None => format!("bytes={first}-"),
                };
                builder = builder.header(RANGE, range);
            }
            if let Some(value) = &authorization {
                builder = builder.header(AUTHORIZATION, value.clone());
            }
            self.count();
            let response = builder.send().await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(parse_challenge);
            let refused = refusal(response).await;
            let Some(challenge) = challenge else {
                return Err(HttpError::Unauthorized(refused));
            };
            let changed = known.as_ref() != Some(&challenge);
            lock(&self.challenges).insert(request.registry.to_string(), challenge.clone());
            // Once more when the registry said how to authenticate, or when the bearer token
            // it refused was an old one; a fresh refusal is final.
            if retried || !(changed || reused) {
                return Err(HttpError::Unauthorized(refused));
            }
            retried = true;
            let renew = !changed;
            (authorization, reused) = self
                .authorization(&pool, &challenge, request, identity, renew)
                .await?;
            if authorization.is_none() {
                return Err(HttpError::Unauthorized(refused));
            }
        }
    }

    fn count(&self) {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The Authorization header for `challenge`, fetching a bearer token when none is held
    /// (or `renew`: the one held was refused), and whether it is a token fetched earlier.
    async fn authorization(
        &self,
        pool: &reqwest::Client,
        challenge: &Challenge,
        request: &Get<'_>,
        identity: Option<&Found>,
        renew: bool,
    ) -> Result<(Option<HeaderValue>, bool), HttpError> {
        let (realm, service) = match challenge {
            Challenge::Basic => return Ok((identity.map(basic), false)),
            Challenge::Bearer { realm, service } => (realm, service),
        };
        let key = TokenKey {
            registry: request.registry.to_string(),
            repository: request.repository.to_string(),
            identity: identity.map(|f| f.source.clone()),
        };
        let slot = lock(&self.tokens).entry(key).or_default().clone();
        let mut held = slot.lock().await;
        let fresh = held
            .as_ref()
            .filter(|t| !renew && t.expires > Instant::now());
        let (token, reused) = match fresh {
            Some(token) => (token.clone(), true),
            None => {
                let token = self
                    .fetch_token(pool, realm, service.as_deref(), request, identity)
                    .await?;
                *held = Some(token.clone());
                (token, false)
            }
        };
        let value = HeaderValue::from_str(&format!("Bearer {}", token.value))
            .map_err(|_| HttpError::Invalid("the token service sent an unusable token".into()))?;
        Ok((Some(sensitive(value)), reused))
    }

    async fn fetch_token(
        &self,
        pool: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        request: &Get<'_>,
        identity: Option<&Found>,
    ) -> Result<Token, HttpError> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            HttpError::Invalid(format!(
                "the registry's token realm {realm:?} is not a URL: {e}"
            ))
        })?;
        url.query_pairs_mut()
            .append_pair("scope", &format!("repository:{}:pull", request.repository));
        if let Some(service) = service {
            url.query_pairs_mut().append_pair("service", service);
        }
        let mut builder = pool.get(url);
        if let Some(found) = identity {
            builder = builder.header(AUTHORIZATION, basic(found));
        }
        self.count();
        let response = builder.send().await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let refused = refusal(response).await;
            return Err(HttpError::Unauthorized(format!(
                "the token service refused: {refused}"
            )));
        }
        if !status.is_success() {
            return Err(status_error(response).await);
        }
        let body = response.bytes().await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            HttpError::Invalid(format!("the token service's answer is not a token: {e}"))
        })?;
        let value = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| HttpError::Invalid("the token service's answer has no token".into()))?;
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        // Renewed a little early, so it does not lapse in flight (short tokens: halfway).
        let usable = lifetime.saturating_sub(TOKEN_MARGIN.min(lifetime / 2));
        Ok(Token {
            value,
            expires: Instant::now() + usable,
        })
    }
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

fn basic(found: &Found) -> HeaderValue {
    use base64::Engine;
    let pair = format!(
        "{}:{}",
        found.credential.username, found.credential.password
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    // Base64 is always a valid header value.
    sensitive(
        HeaderValue::from_str(&format!("Basic {encoded}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic")),
    )
}

/// What a 401 or 403 said, short.
async fn refusal(response: Response) -> String {
    let code = response.status().as_u16();
    match status_error_from(code, response.bytes().await.unwrap_or_default()) {
        HttpError::Status { message, .. } if !message.trim().is_empty() => {
            format!(
                "HTTP {code}: {}",
                message.trim().chars().take(200).collect::<String>()
            )
        }
        _ => format!("HTTP {code}"),
    }
}

/// The error for a non-success answer, its distribution error codes read from the body.
pub(super) async fn status_error(response: Response) -> HttpError {
    let code = response.status().as_u16();
    match response.bytes().await {
        Ok(body) => status_error_from(code, body),
        Err(e) => HttpError::Status {
            code,
            codes: Vec::new(),
            message: chain(&e),
        },
    }
}

fn status_error_from(code: u16, body: Bytes) -> HttpError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(&body) {
        Ok(envelope) if !envelope.errors.is_empty() => HttpError::Status {
            code,
            message: envelope
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            codes: envelope.errors.into_iter().map(|e| e.code).collect(),
        },
        _ => HttpError::Status {
            code,
            codes: Vec::new(),
            message: String::from_utf8_lossy(&body).into_owned(),
        },
    }
}

/// `Basic realm=…` or `Bearer realm="…",service="…",scope="…"`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let parameters = parse_parameters(rest);
    let value = |name: &str| {
        parameters
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: value("realm")?,
        service: value("service"),
    })
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn parse_parameters(input: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        pairs.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_as_registries_send_them() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=https://quay.io/v2/auth, service=quay.io"#),
            Some(Challenge::Bearer {
                realm: "https://quay.io/v2/auth".into(),
                service: Some("quay.io".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_parameters(r#"realm="a\"b,c", service=d"#),
            vec![
                ("realm".to_string(), "a\"b,c".to_string()),
                ("service".to_string(), "d".to_string())
            ]
        );
    }

    #[test]
    fn error_envelopes_give_their_codes() {
        let body = Bytes::from_static(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        match status_error_from(404, body) {
            HttpError::Status {
                code,
                codes,
                message,
            } => {
                assert_eq!(code, 404);
                assert_eq!(codes, ["MANIFEST_UNKNOWN"]);
                assert_eq!(message, "MANIFEST_UNKNOWN: manifest unknown");
            }
            other => panic!("{other:?}"),
        }
        match status_error_from(502, Bytes::from_static(b"bad gateway")) {
            HttpError::Status { codes, message, .. } => {
                assert!(codes.is_empty());
                assert_eq!(message, "bad gateway");
            }
            other => panic!("{other:?}"),
        }
    }
}

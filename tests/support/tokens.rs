//! A token service for docker-registry's bearer-token auth (distribution's `auth: token:`), as
//! quay.io and registry.redhat.io run one: `GET /token?scope=repository:<repo>:pull&service=…`,
//! answered with an ES256 JWT whose `x5c` certificate the registry trusts.
//!
//! Policy: pulls of repositories under `private/` and every push need the user's password;
//! other pulls are granted anonymously. A refused scope is answered with a token granting
//! nothing, as real token services do, so the registry is the one that refuses.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

pub const SERVICE: &str = "kubectl-kmm-tests";
pub const ISSUER: &str = "kubectl-kmm-token-service";

/// One token request: the scope asked for, and the user it came with (None: anonymous).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub scope: String,
    pub user: Option<String>,
}

pub struct TokenService {
    pub realm: String,
    /// PEM of the certificate the tokens are signed with: the registry's `rootcertbundle`.
    pub certificate_pem: String,
    asked: Arc<Mutex<Vec<Asked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Signer {
    key: ring::signature::EcdsaKeyPair,
    certificate_der: Vec<u8>,
    user: String,
    password: String,
}

impl TokenService {
    /// Start on a free port; the registry is configured with `TestRegistry::with_tokens`.
    /// Call from within the tests' runtime.
    pub fn start(user: &str, password: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["token-service".to_string()]).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer = Arc::new(Signer {
            key: ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &rng,
            )
            .unwrap(),
            certificate_der: certificate.der().to_vec(),
            user: user.to_string(),
            password: password.to_string(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let asked = asked.clone();
            tokio::spawn(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, signer.clone(), asked.clone()));
                }
            })
        };
        TokenService {
            realm: format!("http://{addr}/token"),
            certificate_pem: certificate.pem(),
            asked,
            task,
        }
    }

    /// Token requests so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    signer: Arc<Signer>,
    asked: Arc<Mutex<Vec<Asked>>>,
) {
    let Some(head) = super::read_http_head(&mut stream).await else {
        return;
    };
    let head = String::from_utf8_lossy(&head).to_string();
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(super::percent_decode)
        .collect();
    let user = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().strip_prefix("Basic ").map(str::to_string))
                .flatten()
        })
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .and_then(|pair| String::from_utf8(pair).ok());
    let authenticated = match &user {
        None => false,
        Some(pair) if *pair == format!("{}:{}", signer.user, signer.password) => true,
        Some(_) => {
            let body = r#"{"details":"invalid username or password"}"#;
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            return;
        }
    };
    let user_name = user.map(|pair| pair.split(':').next().unwrap_or_default().to_string());
    let mut access = Vec::new();
    for scope in &scopes {
        asked.lock().unwrap().push(Asked {
            scope: scope.clone(),
            user: user_name.clone(),
        });
        // repository:<name>:<actions>
        let mut parts = scope.splitn(3, ':');
        let (kind, name, actions) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|action| authenticated || (*action == "pull" && !name.starts_with("private/")))
            .collect();
        access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [STANDARD.encode(&signer.certificate_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user_name.clone().unwrap_or_default(),
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", scopes.join(",")),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rng = ring::rand::SystemRandom::new();
    let signature = signer.key.sign(&rng, signing_input.as_bytes()).unwrap();
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    let _ = stream
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
}

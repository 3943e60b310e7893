//! Build image layers and manifests in memory and push them to a test registry.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use oci_client::secrets::RegistryAuth;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::registry::{RegistryLog, TestRegistry, answered};

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic incompressible bytes (xorshift), so big layers stay big once compressed.
pub struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    pub fn new(seed: u64, len: u64) -> Self {
        Noise {
            state: seed | 1,
            left: len,
        }
    }
}

impl Read for Noise {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = (out.len() as u64).min(self.left) as usize;
        for chunk in out[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A tar layer built entry by entry.
pub struct TarLayer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for TarLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TarLayer {
    pub fn new() -> Self {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        TarLayer { builder }
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.builder.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, data.len() as u64, 0o644);
        self.builder.append_data(&mut h, path, data).unwrap();
        self
    }

    /// `size` bytes of noise, streamed into the tar.
    pub fn noise(mut self, path: &str, size: u64, seed: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, size, 0o644);
        self.builder
            .append_data(&mut h, path, Noise::new(seed, size))
            .unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0, 0o644);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0, 0o777);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    /// `.wh.<name>` next to `path`: deletes `path` from lower layers.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let marker = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&marker, b"")
    }

    /// `<dir>/.wh..wh..opq`: hides everything lower layers had in `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Docker,
    Oci,
}

#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub data: Bytes,
    pub digest: String,
    /// Digest of the uncompressed tar, for the config's rootfs.diff_ids.
    pub diff_id: String,
}

pub fn layer(tar: Vec<u8>, compression: Compression, flavor: Flavor) -> Blob {
    let diff_id = sha256(&tar);
    let data = match compression {
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&tar).unwrap();
            enc.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(&tar[..], 3).unwrap(),
        Compression::Plain => tar,
    };
    let media_type = match (flavor, compression) {
        (Flavor::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (Flavor::Docker, Compression::Plain) => "application/vnd.docker.image.rootfs.diff.tar",
        (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Flavor::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Flavor::Oci, Compression::Plain) => "application/vnd.oci.image.layer.v1.tar",
    };
    Blob {
        media_type: media_type.into(),
        digest: sha256(&data),
        data: data.into(),
        diff_id,
    }
}

pub struct Image {
    pub flavor: Flavor,
    /// Go arch name of the config (`amd64`, `arm64`, …).
    pub goarch: &'static str,
    /// Bottom first.
    pub layers: Vec<Blob>,
}

impl Image {
    /// An amd64 image of one gzip layer holding `tar`.
    pub fn single(tar: Vec<u8>) -> Image {
        Image {
            flavor: Flavor::Docker,
            goarch: "amd64",
            layers: vec![layer(tar, Compression::Gzip, Flavor::Docker)],
        }
    }

    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.data.len() as u64).sum()
    }
}

#[derive(Debug, Clone)]
pub struct Pushed {
    /// `host:port/repo@sha256:…`
    pub reference: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// Config plus layers as stored (0 for an index).
    pub image_size: u64,
}

pub struct Pusher {
    client: oci_client::Client,
    registry: String,
    auth: RegistryAuth,
    /// The registry's log: a push returns once the registry has logged its manifest, so a test
    /// that counts the requests after it counts only its own.
    log: Arc<RegistryLog>,
}

impl Pusher {
    pub fn new(registry: &TestRegistry) -> Self {
        Self::via(registry, &registry.addr)
    }

    /// Push through `addr` (a proxy in front of `registry`): references then name `addr`.
    pub fn via(registry: &TestRegistry, addr: &str) -> Self {
        super::install_crypto();
        let mut config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Http,
            ..Default::default()
        };
        if let Some(ca) = registry.ca_pem() {
            config.protocol = oci_client::client::ClientProtocol::Https;
            config.extra_root_certificates = vec![oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: std::fs::read(ca).unwrap(),
            }];
        }
        let auth = match &registry.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        Pusher {
            client: oci_client::Client::try_from(config).unwrap(),
            registry: addr.to_string(),
            auth,
            log: registry.log.clone(),
        }
    }

    fn reference(&self, repo: &str, tag: Option<&str>) -> oci_client::Reference {
        oci_client::Reference::with_tag(
            self.registry.clone(),
            repo.to_string(),
            tag.unwrap_or("latest").to_string(),
        )
    }

    async fn prepare(&self, reference: &oci_client::Reference) {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
    }

    pub async fn push_blob(&self, repo: &str, data: Bytes, digest: &str) {
        let reference = self.reference(repo, None);
        self.prepare(&reference).await;
        self.client
            .push_blob(&reference, data, digest)
            .await
            .unwrap();
    }

    /// Push raw manifest bytes; `tag` None pushes by digest only.
    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        body: Vec<u8>,
        media_type: &str,
    ) -> Pushed {
        let digest = sha256(&body);
        let reference = match tag {
            Some(tag) => self.reference(repo, Some(tag)),
            None => oci_client::Reference::with_digest(
                self.registry.clone(),
                repo.to_string(),
                digest.clone(),
            ),
        };
        self.prepare(&reference).await;
        let size = body.len() as u64;
        let logged = self.log.lines().len();
        self.client
            .push_manifest_raw(
                &reference,
                body,
                http::HeaderValue::from_str(media_type).unwrap(),
            )
            .await
            .unwrap();
        let put = format!(
            "PUT /v2/{repo}/manifests/{}",
            tag.unwrap_or(digest.as_str())
        );
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            log.wait_for(logged, |line| {
                answered(line).as_deref() == Some(put.as_str())
            })
        })
        .await
        .unwrap();
        Pushed {
            reference: format!("{}/{repo}@{digest}", self.registry),
            digest,
            size,
            media_type: media_type.into(),
            image_size: 0,
        }
    }

    pub async fn push_image(&self, repo: &str, tag: Option<&str>, image: &Image) -> Pushed {
        self.push_labelled(repo, tag, image, &[]).await
    }

    /// `push_image` with `labels` in the config (`config.Labels`, as buildah writes them).
    pub async fn push_labelled(
        &self,
        repo: &str,
        tag: Option<&str>,
        image: &Image,
        labels: &[(&str, &str)],
    ) -> Pushed {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let inner = if labels.is_empty() {
            json!({})
        } else {
            json!({ "Labels": labels })
        };
        let config = serde_json::to_vec(&json!({
            "architecture": image.goarch,
            "os": "linux",
            "config": inner,
            "rootfs": {"type": "layers", "diff_ids": image.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_digest = sha256(&config);
        self.push_blob(repo, config.clone().into(), &config_digest)
            .await;
        for layer in &image.layers {
            self.push_blob(repo, layer.data.clone(), &layer.digest)
                .await;
        }
        let (media_type, config_type) = match image.flavor {
            Flavor::Docker => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            ),
            Flavor::Oci => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            ),
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": image.layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.data.len()
            })).collect::<Vec<_>>(),
        });
        let mut pushed = self
            .push_manifest(
                repo,
                tag,
                serde_json::to_vec_pretty(&manifest).unwrap(),
                media_type,
            )
            .await;
        pushed.image_size = config.len() as u64 + image.size();
        pushed
    }

    /// A Docker manifest list or OCI index over already pushed images.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: Option<&str>,
        flavor: Flavor,
        children: &[(&Pushed, &str)],
    ) -> Pushed {
        let media_type = match flavor {
            Flavor::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
            Flavor::Oci => "application/vnd.oci.image.index.v1+json",
        };
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": children.iter().map(|(p, goarch)| json!({
                "mediaType": p.media_type, "digest": p.digest, "size": p.size,
                "platform": {"architecture": goarch, "os": "linux"}
            })).collect::<Vec<_>>(),
        });
        self.push_manifest(
            repo,
            tag,
            serde_json::to_vec_pretty(&index).unwrap(),
            media_type,
        )
        .await
    }
}

//! Image manifests and indexes, Docker and OCI flavours, parsed from the raw registry body.

use serde::Deserialize;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What we send in `Accept`: all four, or quay may answer with schema 1 (ocp-release.md §1.3).
pub const ACCEPTED: &[&str] = &[
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IndexEntry {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    pub config: Descriptor,
    /// Bottom (index 0) to top, as in the manifest.
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    /// Compressed size of the whole image as the registry stores it.
    pub fn total_size(&self) -> u64 {
        self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Vec<IndexEntry>),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

/// Parse a manifest body. `content_type` is the registry's header, used when the body has no
/// `mediaType` (OCI makes it optional).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, String> {
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    if raw.schema_version == Some(1) {
        return Err("Docker schema 1 manifests are not supported".into());
    }
    let media_type = raw
        .media_type
        .as_deref()
        .or(content_type)
        .unwrap_or_default();
    let is_index = match media_type {
        DOCKER_MANIFEST_LIST | OCI_INDEX => true,
        DOCKER_MANIFEST | OCI_MANIFEST => false,
        _ if raw.manifests.is_some() => true,
        _ if raw.layers.is_some() => false,
        other => return Err(format!("unknown manifest media type {other:?}")),
    };
    if is_index {
        let manifests = raw
            .manifests
            .ok_or_else(|| "index without \"manifests\"".to_string())?;
        Ok(Manifest::Index(manifests))
    } else {
        let config = raw
            .config
            .ok_or_else(|| "image manifest without \"config\"".to_string())?;
        let layers = raw
            .layers
            .ok_or_else(|| "image manifest without \"layers\"".to_string())?;
        Ok(Manifest::Image(ImageManifest { config, layers }))
    }
}

/// Pick `linux/<goarch>` from an index. Entries without a platform, and attestation manifests
/// (`unknown/unknown`), never match.
pub fn select_platform<'a>(entries: &'a [IndexEntry], goarch: &str) -> Option<&'a IndexEntry> {
    let matching = entries.iter().filter(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == goarch)
    });
    // arm64 images may carry a variant; prefer v8 or none, as container runtimes do.
    let mut best = None;
    for entry in matching {
        let variant = entry.platform.as_ref().and_then(|p| p.variant.as_deref());
        match variant {
            None | Some("v8") => return Some(entry),
            Some(_) if best.is_none() => best = Some(entry),
            Some(_) => {}
        }
    }
    best
}

/// `linux/amd64, linux/arm64` for error messages.
pub fn describe_platforms(entries: &[IndexEntry]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if list.is_empty() {
        "no platforms".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_oci_image_manifests() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":7},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:a","size":10},
                      {"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:b","size":20}]}"#;
        let Manifest::Image(m) = parse(docker, None).unwrap() else {
            panic!("expected an image")
        };
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.total_size(), 37);

        // OCI without mediaType in the body: the header decides.
        let oci = br#"{"schemaVersion":2,"config":{"digest":"sha256:c","size":1},"layers":[]}"#;
        assert!(matches!(
            parse(oci, Some(OCI_MANIFEST)).unwrap(),
            Manifest::Image(_)
        ));
    }

    #[test]
    fn indexes_and_platform_choice() {
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests":[
              {"digest":"sha256:att","platform":{"os":"unknown","architecture":"unknown"}},
              {"digest":"sha256:armv7","platform":{"os":"linux","architecture":"arm64","variant":"v9"}},
              {"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
              {"digest":"sha256:amd","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        let Manifest::Index(entries) = parse(list, None).unwrap() else {
            panic!("expected an index")
        };
        assert_eq!(
            select_platform(&entries, "amd64").unwrap().digest,
            "sha256:amd"
        );
        assert_eq!(
            select_platform(&entries, "arm64").unwrap().digest,
            "sha256:arm"
        );
        assert!(select_platform(&entries, "s390x").is_none());
        assert_eq!(
            describe_platforms(&entries),
            "unknown/unknown, linux/arm64/v9, linux/arm64/v8, linux/amd64"
        );
    }

    #[test]
    fn rejects_schema1_and_garbage() {
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).is_err());
        assert!(parse(b"not json", None).is_err());
        assert!(parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None).is_err());
    }
}

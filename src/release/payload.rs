//! The release payload's metadata files (`release-manifests/` in the payload image).

use serde::Deserialize;
use std::collections::BTreeMap;

pub const IMAGE_REFERENCES: &str = "release-manifests/image-references";
pub const RELEASE_METADATA: &str = "release-manifests/release-metadata";
/// Real payloads carry about 200 tags (~150 KiB); anything near this limit is not a payload.
pub const METADATA_LIMIT: u64 = 16 * 1024 * 1024;
/// The payload tag of the RHEL 9 driver-toolkit (5.x payloads add `driver-toolkit-10`).
pub const DTK_TAG: &str = "driver-toolkit";
/// The RHEL 10 driver-toolkit of 5.x payloads.
pub const DTK_10_TAG: &str = "driver-toolkit-10";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReferences {
    /// `metadata.name`: the release version.
    pub name: String,
    /// `spec.tags[]`, name → `from.name`, for `DockerImage` sources.
    pub tags: BTreeMap<String, String>,
}

impl ImageReferences {
    /// The pull spec of component `tag`, as oc's `--image-for` finds it.
    pub fn image_for(&self, tag: &str) -> Option<&str> {
        self.tags.get(tag).map(String::as_str)
    }
}

#[derive(Deserialize)]
struct RawImageStream {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct RawSpec {
    #[serde(default)]
    tags: Vec<RawTag>,
}

#[derive(Deserialize)]
struct RawTag {
    name: String,
    #[serde(default)]
    from: Option<RawFrom>,
}

#[derive(Deserialize)]
struct RawFrom {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

/// Parse `image-references`: an `image.openshift.io/v1` ImageStream in JSON.
pub fn parse_image_references(bytes: &[u8]) -> Result<ImageReferences, String> {
    let raw: RawImageStream = serde_json::from_slice(bytes)
        .map_err(|e| format!("{IMAGE_REFERENCES} is not valid JSON: {e}"))?;
    if raw.kind.as_deref() != Some("ImageStream")
        || raw.api_version.as_deref() != Some("image.openshift.io/v1")
    {
        return Err(format!(
            "{IMAGE_REFERENCES} is not an image.openshift.io/v1 ImageStream"
        ));
    }
    let mut tags = BTreeMap::new();
    for tag in raw.spec.tags {
        if let Some(from) = tag.from
            && from.kind == "DockerImage"
            && !from.name.is_empty()
        {
            // First entry wins, as in oc's findImageSpec.
            tags.entry(tag.name).or_insert(from.name);
        }
    }
    Ok(ImageReferences {
        name: raw.metadata.name,
        tags,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseMetadata {
    pub version: String,
    /// `release.openshift.io/architecture`, set to `multi` only on multi payloads.
    pub architecture: Option<String>,
}

#[derive(Deserialize)]
struct RawReleaseMetadata {
    kind: Option<String>,
    version: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
}

/// Parse `release-metadata` (kind `cincinnati-metadata-v0`).
pub fn parse_release_metadata(bytes: &[u8]) -> Result<ReleaseMetadata, String> {
    let raw: RawReleaseMetadata = serde_json::from_slice(bytes)
        .map_err(|e| format!("{RELEASE_METADATA} is not valid JSON: {e}"))?;
    if raw.kind.as_deref() != Some("cincinnati-metadata-v0") {
        return Err(format!(
            "{RELEASE_METADATA} is not of kind cincinnati-metadata-v0"
        ));
    }
    let version = raw
        .version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{RELEASE_METADATA} has no version"))?;
    let architecture = raw
        .metadata
        .get("release.openshift.io/architecture")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(ReleaseMetadata {
        version,
        architecture,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_driver_toolkit() {
        let refs = br#"{"kind":"ImageStream","apiVersion":"image.openshift.io/v1",
          "metadata":{"name":"4.19.0","annotations":{}},
          "spec":{"lookupPolicy":{"local":false},"tags":[
            {"name":"rhel-coreos","from":{"kind":"DockerImage","name":"q.io/a/b@sha256:1"}},
            {"name":"driver-toolkit","annotations":{"x":"y"},"from":{"kind":"DockerImage","name":"q.io/a/b@sha256:2"},"generation":null},
            {"name":"driver-toolkit","from":{"kind":"DockerImage","name":"q.io/a/b@sha256:3"}},
            {"name":"odd","from":{"kind":"ImageStreamTag","name":"x:y"}}]}}"#;
        let parsed = parse_image_references(refs).unwrap();
        assert_eq!(parsed.name, "4.19.0");
        assert_eq!(parsed.image_for(DTK_TAG), Some("q.io/a/b@sha256:2"));
        assert_eq!(parsed.image_for("odd"), None);
    }

    #[test]
    fn rejects_other_documents() {
        assert!(parse_image_references(b"{}").is_err());
        assert!(parse_image_references(b"kind: ImageStream").is_err());
        assert!(parse_image_references(br#"{"kind":"ImageStream","apiVersion":"v1"}"#).is_err());
    }

    #[test]
    fn release_metadata() {
        let m = parse_release_metadata(
            br#"{"kind":"cincinnati-metadata-v0","version":"4.19.0","previous":["4.18.1"],
                 "metadata":{"url":"u","release.openshift.io/architecture":"multi"}}"#,
        )
        .unwrap();
        assert_eq!(m.version, "4.19.0");
        assert_eq!(m.architecture.as_deref(), Some("multi"));
        assert!(parse_release_metadata(br#"{"kind":"cincinnati-metadata-v0"}"#).is_err());
        assert!(parse_release_metadata(br#"{"kind":"x","version":"1.2.3"}"#).is_err());
    }
}

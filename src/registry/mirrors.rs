//! Image mirrors for disconnected clusters, applied as the nodes' container runtime applies
//! them (ocp-release.md §5.4): ImageDigestMirrorSet and ImageContentSourcePolicy for digest
//! references only, ImageTagMirrorSet for tag references only; the most specific source wins;
//! its mirrors are tried in order, then the source itself unless `NeverContactSource`; whole
//! repositories are rewritten, not only hosts.

use serde_json::Value;

use super::reference::ImageRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Digest,
    Tag,
}

/// One `source → mirrors` entry of an IDMS, ITMS or ICSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSet {
    pub source: String,
    pub mirrors: Vec<String>,
    pub never_contact_source: bool,
    pub applies: Applies,
    /// `ImageDigestMirrorSet/name` or a file, for `-v`.
    pub origin: String,
}

/// Where to look for an image, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub image: ImageRef,
    /// The mirror set that sent us there; None for the source itself.
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    sets: Vec<MirrorSet>,
}

fn entries<'a>(object: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    object["spec"][list].as_array().into_iter().flatten()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

fn origin_of(object: &Value, kind: &str) -> String {
    format!(
        "{kind}/{}",
        object["metadata"]["name"].as_str().unwrap_or("(unnamed)")
    )
}

/// Mirror sets of one object, by its kind (ImageDigestMirrorSet, ImageTagMirrorSet,
/// ImageContentSourcePolicy). `origin` overrides the `Kind/name` label (files).
pub fn sets_of(object: &Value, origin: Option<&str>) -> Result<Vec<MirrorSet>, String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let origin = origin
        .map(str::to_string)
        .unwrap_or_else(|| origin_of(object, kind));
    let (list, applies, policy_field) = match kind {
        "ImageDigestMirrorSet" => ("imageDigestMirrors", Applies::Digest, true),
        "ImageTagMirrorSet" => ("imageTagMirrors", Applies::Tag, true),
        // ICSP always allows contacting the source.
        "ImageContentSourcePolicy" => ("repositoryDigestMirrors", Applies::Digest, false),
        other => {
            return Err(format!(
                "expected ImageDigestMirrorSet, ImageTagMirrorSet or ImageContentSourcePolicy, not {other:?}"
            ));
        }
    };
    let mut sets = Vec::new();
    for entry in entries(object, list) {
        let Some(source) = entry["source"].as_str().filter(|s| !s.is_empty()) else {
            return Err(format!("{origin}: an entry has no source"));
        };
        sets.push(MirrorSet {
            source: source.trim_end_matches('/').to_string(),
            mirrors: strings(&entry["mirrors"])
                .into_iter()
                .map(|m| m.trim_end_matches('/').to_string())
                .collect(),
            never_contact_source: policy_field
                && entry["mirrorSourcePolicy"].as_str() == Some("NeverContactSource"),
            applies,
            origin: origin.clone(),
        });
    }
    Ok(sets)
}

/// How well `source` matches a repository path: (exact-kind rank, length), or None.
/// A path prefix on a `/` boundary beats a `*.host` wildcard; longer beats shorter.
fn specificity(source: &str, repository: &str) -> Option<(u8, usize)> {
    if let Some(suffix) = source.strip_prefix('*') {
        let host = repository.split('/').next().unwrap_or_default();
        let host = host.split(':').next().unwrap_or(host);
        return host.ends_with(suffix).then_some((0, source.len()));
    }
    (repository == source || repository.starts_with(&format!("{source}/")))
        .then_some((1, source.len()))
}

/// `repository` with its `source` part replaced by `mirror`.
fn rewrite(repository: &str, source: &str, mirror: &str) -> String {
    let rest = if source.starts_with('*') {
        // A wildcard names the host: the path after it moves under the mirror.
        repository
            .split_once('/')
            .map(|(_, p)| p)
            .unwrap_or_default()
    } else {
        repository[source.len()..].trim_start_matches('/')
    };
    if rest.is_empty() {
        mirror.to_string()
    } else {
        format!("{mirror}/{rest}")
    }
}

impl Mirrors {
    pub fn add(&mut self, sets: Vec<MirrorSet>) {
        self.sets.extend(sets);
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Would a digest reference to the same repository be mirrored? (For the hint that
    /// IDMS/ICSP do not apply to tags.)
    pub fn covers_as_digest(&self, image: &ImageRef) -> bool {
        let repository = image.repository_path();
        self.sets
            .iter()
            .any(|s| s.applies == Applies::Digest && specificity(&s.source, &repository).is_some())
    }

    /// Where to look for `image`, in order; the source last, unless the winning source says
    /// NeverContactSource. Also says whether the source was left out.
    pub fn candidates(&self, image: &ImageRef) -> (Vec<Candidate>, bool) {
        let applies = if image.digest.is_some() {
            Applies::Digest
        } else {
            Applies::Tag
        };
        let repository = image.repository_path();
        let best = self
            .sets
            .iter()
            .filter(|s| s.applies == applies)
            .filter_map(|s| specificity(&s.source, &repository).map(|rank| (rank, s)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, s)| s.source.clone());
        let source_candidate = Candidate {
            image: image.clone(),
            origin: None,
        };
        let Some(best) = best else {
            return (vec![source_candidate], false);
        };
        // Every set for that same source, merged in order.
        let winners: Vec<&MirrorSet> = self
            .sets
            .iter()
            .filter(|s| s.applies == applies && s.source == best)
            .collect();
        let mut out: Vec<Candidate> = Vec::new();
        for set in &winners {
            for mirror in &set.mirrors {
                let rewritten = rewrite(&repository, &set.source, mirror);
                let Some((registry, repo)) = rewritten.split_once('/') else {
                    continue;
                };
                let candidate = ImageRef {
                    registry: registry.to_string(),
                    repository: repo.to_string(),
                    tag: image.tag.clone(),
                    digest: image.digest.clone(),
                };
                if candidate != *image && !out.iter().any(|c| c.image == candidate) {
                    out.push(Candidate {
                        image: candidate,
                        origin: Some(set.origin.clone()),
                    });
                }
            }
        }
        let blocked = winners.iter().any(|s| s.never_contact_source);
        if !blocked {
            out.push(source_candidate);
        }
        (out, blocked)
    }
}

/// An `--idms-file` (multi-document YAML, every document an ImageDigestMirrorSet) or an
/// `--icsp-file` (one ImageContentSourcePolicy, YAML or JSON), as oc takes them.
pub fn parse_file(text: &str, label: &str, expect: &str) -> Result<Vec<MirrorSet>, String> {
    use serde::Deserialize;
    let mut sets = Vec::new();
    let mut documents = 0;
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| format!("not YAML or JSON: {e}"))?;
        if value.is_null() {
            continue;
        }
        documents += 1;
        if value["kind"].as_str() != Some(expect) {
            return Err(format!(
                "document {documents} is a {}, not an {expect}",
                value["kind"].as_str().unwrap_or("object without kind")
            ));
        }
        sets.extend(sets_of(&value, Some(label))?);
    }
    if documents == 0 {
        return Err(format!("no {expect} in it"));
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sha256:fe0322730440f1cbe6fffaaa8cac131b56574bec8abe3ec5b462e17557fecb32";

    fn image(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    fn mirrors(objects: &[Value]) -> Mirrors {
        let mut m = Mirrors::default();
        for o in objects {
            m.add(sets_of(o, None).unwrap());
        }
        m
    }

    fn locations(m: &Mirrors, i: &str) -> Vec<String> {
        m.candidates(&image(i))
            .0
            .iter()
            .map(|c| c.image.to_string())
            .collect()
    }

    fn idms(name: &str, entries: Value) -> Value {
        json!({"kind": "ImageDigestMirrorSet", "metadata": {"name": name}, "spec": {"imageDigestMirrors": entries}})
    }

    #[test]
    fn digest_references_use_idms_and_icsp_tags_use_itms() {
        let m = mirrors(&[
            idms(
                "release",
                json!([{"source": "quay.io/openshift-release-dev/ocp-release", "mirrors": ["mirror.local/ocp4/release"]}]),
            ),
            json!({"kind": "ImageTagMirrorSet", "metadata": {"name": "tags"}, "spec": {"imageTagMirrors": [
                {"source": "quay.io/openshift-release-dev", "mirrors": ["mirror.local/tags"]}]}}),
            json!({"kind": "ImageContentSourcePolicy", "metadata": {"name": "old"}, "spec": {"repositoryDigestMirrors": [
                {"source": "quay.io/openshift-release-dev/ocp-v4.0-art-dev", "mirrors": ["mirror.local/ocp4/art"]}]}}),
        ]);
        assert_eq!(
            locations(
                &m,
                &format!("quay.io/openshift-release-dev/ocp-release@{D}")
            ),
            vec![
                format!("mirror.local/ocp4/release@{D}"),
                format!("quay.io/openshift-release-dev/ocp-release@{D}")
            ]
        );
        // The tag goes through the ITMS; its whole repository path is rewritten.
        assert_eq!(
            locations(
                &m,
                "quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64"
            ),
            vec![
                "mirror.local/tags/ocp-release:4.19.0-x86_64",
                "quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64"
            ]
        );
        let (candidates, _) = m.candidates(&image(&format!(
            "quay.io/openshift-release-dev/ocp-v4.0-art-dev@{D}"
        )));
        assert_eq!(
            candidates[0].origin.as_deref(),
            Some("ImageContentSourcePolicy/old")
        );
        // No rule for it: only the source.
        assert_eq!(
            locations(&m, "registry.redhat.io/a/b:1"),
            vec!["registry.redhat.io/a/b:1"]
        );
    }

    #[test]
    fn the_most_specific_source_wins_and_sets_for_it_merge_in_order() {
        let m = mirrors(&[
            idms(
                "broad",
                json!([{"source": "quay.io/openshift-release-dev", "mirrors": ["wrong.local/all"]}]),
            ),
            idms(
                "a",
                json!([{"source": "quay.io/openshift-release-dev/ocp-release", "mirrors": ["first.local/r", "second.local/r"]}]),
            ),
            idms(
                "b",
                json!([{"source": "quay.io/openshift-release-dev/ocp-release", "mirrors": ["second.local/r", "third.local/r"]}]),
            ),
            idms(
                "wild",
                json!([{"source": "*.io", "mirrors": ["wild.local/io"]}]),
            ),
        ]);
        assert_eq!(
            locations(
                &m,
                &format!("quay.io/openshift-release-dev/ocp-release@{D}")
            ),
            vec![
                format!("first.local/r@{D}"),
                format!("second.local/r@{D}"),
                format!("third.local/r@{D}"),
                format!("quay.io/openshift-release-dev/ocp-release@{D}"),
            ]
        );
        assert_eq!(
            locations(&m, &format!("quay.io/openshift-release-dev/other@{D}"))[0],
            format!("wrong.local/all/other@{D}")
        );
        // A wildcard host moves the whole path under the mirror.
        assert_eq!(
            locations(&m, &format!("registry.example.io/product/repo@{D}"))[0],
            format!("wild.local/io/product/repo@{D}")
        );
        // A source is a path prefix on a "/" boundary only.
        assert_eq!(
            locations(&m, &format!("quay.io/openshift-release-dev-x/r@{D}"))[0],
            format!("wild.local/io/openshift-release-dev-x/r@{D}")
        );
    }

    #[test]
    fn never_contact_source() {
        let m = mirrors(&[idms(
            "strict",
            json!([{"source": "quay.io/ocp", "mirrors": ["mirror.local/ocp"], "mirrorSourcePolicy": "NeverContactSource"}]),
        )]);
        let (candidates, blocked) = m.candidates(&image(&format!("quay.io/ocp/release@{D}")));
        assert!(blocked);
        assert_eq!(candidates.len(), 1);
        assert_eq!(
            candidates[0].image.to_string(),
            format!("mirror.local/ocp/release@{D}")
        );
    }

    #[test]
    fn files_as_oc_takes_them() {
        let idms_file = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: a\nspec:\n  imageDigestMirrors:\n  - source: quay.io/a\n    mirrors: [m.local/a]\n---\napiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: b\nspec:\n  imageDigestMirrors:\n  - source: quay.io/b\n    mirrors: [m.local/b]\n";
        assert_eq!(
            parse_file(idms_file, "f.yaml", "ImageDigestMirrorSet")
                .unwrap()
                .len(),
            2
        );
        assert!(
            parse_file("kind: Pod\n", "f", "ImageDigestMirrorSet")
                .unwrap_err()
                .contains("not an ImageDigestMirrorSet")
        );
        assert!(parse_file("", "f", "ImageDigestMirrorSet").is_err());
        assert!(parse_file("{", "f", "ImageDigestMirrorSet").is_err());
        let icsp = r#"{"kind":"ImageContentSourcePolicy","metadata":{"name":"x"},"spec":{"repositoryDigestMirrors":[{"source":"quay.io/a","mirrors":["m/a"]}]}}"#;
        let sets = parse_file(icsp, "icsp.json", "ImageContentSourcePolicy").unwrap();
        assert!(!sets[0].never_contact_source);
        assert_eq!(sets[0].origin, "icsp.json");
    }
}

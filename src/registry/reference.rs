//! Fully qualified image references (`host[:port]/repo[:tag][@digest]`), parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use regex::Regex;
use std::sync::LazyLock;

static REPOSITORY_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").expect("static regex"));
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("static regex"));
static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$").expect("static regex")
});
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
        .expect("static regex")
});

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]`
    pub registry: String,
    /// `path/to/repo`, without the registry.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseImageRefError(pub String);

impl fmt::Display for ParseImageRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ImageRef {
    /// The same repository, pinned to `digest` (the tag is dropped: the digest is what was read).
    pub fn pinned(&self, digest: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// `host/repo`, the name auth files and mirror rules are keyed by.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Parse `host[:port]/path` (no tag, no digest), as given to `--release-repo`.
    pub fn parse_repository(input: &str) -> Result<ImageRef, ParseImageRefError> {
        let parsed: ImageRef = input.parse()?;
        if parsed.tag.is_some() || parsed.digest.is_some() {
            return Err(ParseImageRefError(format!(
                "{input:?} is a repository and must not carry a tag or digest"
            )));
        }
        Ok(parsed)
    }
}

impl FromStr for ImageRef {
    type Err = ParseImageRefError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ParseImageRefError(format!("{input:?}: {reason}"));
        if input.is_empty() {
            return Err(err("empty image reference"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace"));
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                if !DIGEST.is_match(digest) {
                    return Err(err(
                        "the digest must be sha256: followed by 64 lowercase hex digits",
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        let (name, tag) = match name_and_tag.rfind(':') {
            Some(colon) if !name_and_tag[colon..].contains('/') => {
                let tag = &name_and_tag[colon + 1..];
                if !TAG.is_match(tag) {
                    return Err(err(&format!("{tag:?} is not a valid tag")));
                }
                (&name_and_tag[..colon], Some(tag.to_string()))
            }
            _ => (name_and_tag, None),
        };
        let Some((registry, repository)) = name.split_once('/') else {
            return Err(err(
                "expected a fully qualified reference such as quay.io/namespace/repository:tag",
            ));
        };
        let looks_like_host =
            registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !looks_like_host || !HOST.is_match(registry) {
            return Err(err(&format!(
                "{registry:?} is not a registry host; write the registry explicitly, e.g. quay.io/{name}"
            )));
        }
        if repository.is_empty()
            || !repository
                .split('/')
                .all(|component| REPOSITORY_COMPONENT.is_match(component))
        {
            return Err(err(&format!(
                "{repository:?} is not a valid repository path (lowercase letters, digits and . _ - separators)"
            )));
        }
        Ok(ImageRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:fe0322730440f1cbe6fffaaa8cac131b56574bec8abe3ec5b462e17557fecb32";

    #[test]
    fn parses_tags_digests_and_ports() {
        let r: ImageRef = "quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64"
            .parse()
            .unwrap();
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.repository, "openshift-release-dev/ocp-release");
        assert_eq!(r.tag.as_deref(), Some("4.19.0-x86_64"));

        let r: ImageRef = format!("127.0.0.1:5000/ocp/release@{D}").parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/ocp/release@{D}"));

        let r: ImageRef = "localhost/a/b".parse().unwrap();
        assert_eq!(r.repository, "a/b");
        let r: ImageRef = format!("mirror.local:8443/x/y:t@{D}").parse().unwrap();
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.digest.as_deref(), Some(D));
    }

    #[test]
    fn rejects_what_a_registry_would_reject() {
        for bad in [
            "",
            "ocp-release:4.19.0",
            "openshift-release-dev/ocp-release:4.19.0",
            "quay.io/",
            "quay.io/UPPER/case",
            "quay.io/a/b:bad tag",
            "quay.io/a/b@sha256:short",
            "quay.io/a/b:",
            "quay.io/a//b",
            "quay.io/a/b:-tag",
        ] {
            assert!(
                bad.parse::<ImageRef>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn pinning_drops_the_tag() {
        let r: ImageRef = "quay.io/a/b:1".parse().unwrap();
        assert_eq!(r.pinned(D).to_string(), format!("quay.io/a/b@{D}"));
        assert_eq!(r.repository_path(), "quay.io/a/b");
        assert!(ImageRef::parse_repository("quay.io/a/b:1").is_err());
        assert!(ImageRef::parse_repository("quay.io/a/b").is_ok());
    }
}

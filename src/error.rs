//! The one error type of the plugin and the one place that maps errors to exit codes.
//!
//! Every variant names what was tried (image, registry, object) and `hint()` says what to do
//! next. No variant ever carries a password, token or pull secret.

use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes documented for runbooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything verified (or the command simply succeeded).
    Success = 0,
    /// At least one Module failed verification.
    VerificationFailed = 1,
    /// Bad input: flags, versions, pull specs, images that are not what they claim to be.
    BadInput = 2,
    /// The preflight did not complete before `--timeout`.
    TimedOut = 3,
    /// The environment: registry or cluster unreachable, TLS, unauthorized, KMM missing.
    Environment = 4,
    /// Ctrl-C while following: the preflight is left in the cluster (128 + SIGINT).
    Interrupted = 130,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status as u8)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    InvalidArgument { message: String, hint: String },

    #[error("cannot read registry credentials file {}: {reason}", path.display())]
    AuthFile { path: PathBuf, reason: String },

    #[error("cannot read CA certificates from {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },

    #[error("{role} {image} was not found in registry {registry}")]
    ImageNotFound {
        role: &'static str,
        image: String,
        registry: String,
    },

    #[error("{role} {image} has no image for platform {platform} (it offers: {available})")]
    NoPlatform {
        role: &'static str,
        image: String,
        platform: String,
        available: String,
    },

    #[error("{role} {image} has an unsupported manifest: {reason}")]
    UnsupportedManifest {
        role: &'static str,
        image: String,
        reason: String,
    },

    #[error("{image} is not an OpenShift release payload: {reason}")]
    NotAReleasePayload { image: String, reason: String },

    #[error("release {image} has no {tag:?} image in release-manifests/image-references")]
    NoDriverToolkitTag { image: String, tag: String },

    #[error("driver-toolkit image {image} does not contain /{path}")]
    DtkFileMissing { image: String, path: String },

    #[error("driver-toolkit image {image} has a malformed /{path}: {reason}")]
    DtkFileMalformed {
        image: String,
        path: String,
        reason: String,
    },

    #[error("{image}: /{path} is {size} bytes, more than the {limit} bytes allowed for it")]
    FileTooLarge {
        image: String,
        path: String,
        size: u64,
        limit: u64,
    },

    #[error("{image}: a layer could not be read: {reason}")]
    CorruptLayer { image: String, reason: String },

    #[error("not authorized to read {image} from registry {registry} ({credentials})")]
    Unauthorized {
        image: String,
        registry: String,
        /// Where the credentials came from, or that there were none. Never the credentials.
        credentials: String,
    },

    #[error("registry {registry} is unreachable: {detail}")]
    RegistryUnreachable { registry: String, detail: String },

    #[error("registry {registry} did not answer within {} while reading {image}", humantime::format_duration(*after))]
    RegistryTimeout {
        registry: String,
        image: String,
        after: std::time::Duration,
    },

    #[error("gave up after {} (--timeout) while {step}", humantime::format_duration(*after))]
    DeadlineExceeded {
        after: std::time::Duration,
        step: String,
    },

    #[error("TLS connection to registry {registry} failed: {detail}")]
    RegistryTls { registry: String, detail: String },

    #[error("registry {registry} failed while reading {image}: {detail}")]
    RegistryProtocol {
        registry: String,
        image: String,
        detail: String,
    },

    #[error("no location of {image} answered: {tried}")]
    MirrorsFailed {
        image: String,
        tried: String,
        /// Every location said "not found": the image is missing, not the network.
        all_not_found: bool,
    },

    #[error("{image}: only its source was tried, and {detail}")]
    TagNotMirrored { image: String, detail: String },

    #[error("no usable kubeconfig: {detail}")]
    Kubeconfig { detail: String },

    #[error("the kubeconfig {} does not exist", path.display())]
    KubeconfigMissing { path: PathBuf },

    #[error("cannot reach the cluster at {server}: {detail}")]
    ClusterUnreachable { server: String, detail: String },

    #[error("the cluster at {server} refused the credentials of the current context: {detail}")]
    ClusterUnauthorized { server: String, detail: String },

    #[error("forbidden: {detail}")]
    Forbidden { detail: String },

    /// Something the run cannot tell from where it stands (e.g. a spoke whose kernels the hub
    /// does not know).
    #[error("{detail}")]
    NotKnown { detail: String },

    #[error("KMM is not installed: the cluster has {looked_for}")]
    KmmNotInstalled { looked_for: String },

    #[error("the cluster answered {code} to {action}: {detail}")]
    ClusterApi {
        action: String,
        code: u16,
        detail: String,
    },

    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: String, name: String },

    #[error("other preflight objects exist: {names}")]
    ExistingPreflights { names: String },

    #[error("{kind} {name} exists with another spec: {difference}")]
    PreflightDiffers {
        kind: String,
        name: String,
        difference: String,
    },

    #[error("no preflight object named {name}")]
    PreflightNotFound { name: String },
}

impl Error {
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Name the image's role ("release image", "driver-toolkit image") in "not found" errors.
    pub fn with_role(self, role: &'static str) -> Error {
        match self {
            Error::ImageNotFound {
                image, registry, ..
            } => Error::ImageNotFound {
                role,
                image,
                registry,
            },
            other => other,
        }
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::InvalidArgument { .. }
            | Error::AuthFile { .. }
            | Error::CaFile { .. }
            | Error::ImageNotFound { .. }
            | Error::NoPlatform { .. }
            | Error::UnsupportedManifest { .. }
            | Error::NotAReleasePayload { .. }
            | Error::NoDriverToolkitTag { .. }
            | Error::DtkFileMissing { .. }
            | Error::DtkFileMalformed { .. }
            | Error::FileTooLarge { .. }
            | Error::CorruptLayer { .. }
            | Error::AlreadyExists { .. }
            | Error::ExistingPreflights { .. }
            | Error::PreflightDiffers { .. }
            | Error::PreflightNotFound { .. } => ExitStatus::BadInput,
            Error::MirrorsFailed { all_not_found, .. } => {
                if *all_not_found {
                    ExitStatus::BadInput
                } else {
                    ExitStatus::Environment
                }
            }
            Error::ClusterApi { code, .. } if (400..500).contains(code) => ExitStatus::BadInput,
            Error::Unauthorized { .. }
            | Error::RegistryUnreachable { .. }
            | Error::RegistryTimeout { .. }
            | Error::DeadlineExceeded { .. }
            | Error::RegistryTls { .. }
            | Error::RegistryProtocol { .. }
            | Error::TagNotMirrored { .. }
            | Error::Kubeconfig { .. }
            | Error::KubeconfigMissing { .. }
            | Error::ClusterUnreachable { .. }
            | Error::ClusterUnauthorized { .. }
            | Error::Forbidden { .. }
            | Error::KmmNotInstalled { .. }
            | Error::ClusterApi { .. }
            | Error::NotKnown { .. } => ExitStatus::Environment,
        }
    }

    /// What the user can do next.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Error::InvalidArgument { hint, .. } => hint.clone(),
            Error::AuthFile { .. } => {
                "fix the file (it must be a JSON object with an \"auths\" map) or point \
                 --registry-config at another one"
                    .into()
            }
            Error::CaFile { .. } => "--registry-ca expects a file of PEM certificates".into(),
            Error::ImageNotFound { role, .. } if *role == "release image" => {
                "check the version and --arch; for a release outside the default repository \
                 pass --release-repo or a full pull spec"
                    .into()
            }
            Error::ImageNotFound { .. } => {
                "check that the image was mirrored to this registry".into()
            }
            Error::NoPlatform { .. } => "pick one of the offered platforms with --arch".into(),
            Error::UnsupportedManifest { .. } => {
                "only Docker v2 schema 2 and OCI manifests and indexes are supported".into()
            }
            Error::NotAReleasePayload { .. } => "pass an OpenShift release image, e.g. \
                 quay.io/openshift-release-dev/ocp-release:4.19.0-x86_64"
                .into(),
            Error::NoDriverToolkitTag { .. } => {
                "driver-toolkit is part of OpenShift 4.6 and later payloads; check that this is \
                 an OpenShift (not OKD-SCOS or a custom) payload, or pass --kernel and \
                 --dtk-image yourself"
                    .into()
            }
            Error::DtkFileMissing { .. } | Error::DtkFileMalformed { .. } => {
                "the image is not a usable driver-toolkit; pass --kernel (and --dtk-image) yourself"
                    .into()
            }
            Error::FileTooLarge { .. } | Error::CorruptLayer { .. } => {
                "the image looks damaged; check it with `skopeo inspect`".into()
            }
            Error::Unauthorized {
                registry, image, ..
            } => {
                let repo = repository_of(image);
                format!(
                    "log in with `podman login {registry}` (or pass --registry-config with an auth \
                     file that has an entry for {registry} or {repo}); the OpenShift pull secret \
                     from console.redhat.com works for quay.io/openshift-release-dev"
                )
            }
            Error::RegistryUnreachable { registry, .. } => format!(
                "check the network path to {registry} (proxy settings, firewall, DNS); for a \
                 disconnected cluster use its mirror registry"
            ),
            Error::RegistryTimeout { registry, .. } => format!(
                "the registry accepted the connection but sent nothing: check {registry} (or the \
                 proxy in front of it); --request-timeout sets how long a request may take \
                 (30s for registries by default)"
            ),
            Error::DeadlineExceeded { .. } => {
                "--timeout bounds the whole command; give it more time, or find out why that \
                 step is slow with -v"
                    .into()
            }
            Error::RegistryTls { registry, .. } => format!(
                "add the registry's CA with --registry-ca FILE, or, for a test registry only, \
                 --insecure-registry {registry}"
            ),
            Error::RegistryProtocol { .. } => "retry later; run with -v for details".into(),
            Error::MirrorsFailed { .. } => {
                "check the cluster's ImageDigestMirrorSets and ImageTagMirrorSets (or \
                 --idms-file/--icsp-file), the mirror's credentials and CA (--registry-ca); -v \
                 shows every attempt"
                    .into()
            }
            Error::TagNotMirrored { .. } => {
                "ImageDigestMirrorSets and ImageContentSourcePolicies mirror digest references \
                 only: add an ImageTagMirrorSet for it, or give the release by digest (the \
                 cluster's ClusterVersion lists digests)"
                    .into()
            }
            Error::Kubeconfig { .. } => {
                "log in with `oc login` (or point --kubeconfig / KUBECONFIG at a kubeconfig)".into()
            }
            Error::KubeconfigMissing { .. } => {
                "check the path given to --kubeconfig (without it, KUBECONFIG or ~/.kube/config is \
                 read)"
                    .into()
            }
            Error::ClusterUnreachable { detail, .. } if detail.contains("--request-timeout") => {
                "check --context/--kubeconfig and the network path to the API server".into()
            }
            Error::ClusterUnreachable { .. } => {
                "check --context/--kubeconfig and the network path to the API server".into()
            }
            Error::ClusterUnauthorized { .. } => {
                "log in again (`oc login`), or pick another --context or --user".into()
            }
            Error::NotKnown { .. } => return None,
            Error::Forbidden { .. } => {
                "ask a cluster admin for the kubectl-kmm ClusterRole (see README, RBAC), or use \
                 --as to impersonate an allowed user"
                    .into()
            }
            Error::KmmNotInstalled { .. } => {
                "install the Kernel Module Management operator (OperatorHub on OpenShift), or \
                 check that --context points at the right cluster"
                    .into()
            }
            Error::ClusterApi { .. } => "run with -v for details".into(),
            Error::AlreadyExists { name, .. } => format!(
                "pick another --name, follow it with `kubectl kmm status {name} -w`, or add \
                 --replace to delete it first"
            ),
            Error::ExistingPreflights { .. } => {
                "in KMM 2.4 and later two preflights fight over the same per-Module objects; \
                 add --replace to delete them first (or delete them yourself)"
                    .into()
            }
            Error::PreflightDiffers { name, .. } => format!(
                "add --replace to delete it and create this one, pick another --name, or follow \
                 it as it is with `kubectl kmm status {name} -w`"
            ),
            Error::PreflightNotFound { .. } => {
                "list the preflights with `kubectl kmm status`".into()
            }
        };
        Some(hint)
    }
}

/// `host[:port]/path` of an image reference, without tag or digest.
fn repository_of(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// An error and its sources, outermost first: HTTP stacks hide the useful part ("connection
/// refused", "invalid peer certificate") in the sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

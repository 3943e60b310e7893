//! Command-line definitions only: no behaviour here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum, ValueHint};

use crate::output::{Format, ReportFormat};
use crate::release::Arch;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-kmm",
    bin_name = "kubectl kmm",
    version = crate::commands::version::TEXT,
    about = "Kernel Module Management helpers: check that every KMM Module will work on an OpenShift release before upgrading",
    propagate_version = true,
    after_help = TOP_EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More detail on stderr: credential sources, retries, bytes fetched
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No colour, even on a terminal (NO_COLOR is honoured too)
    #[arg(long, global = true)]
    pub no_color: bool,
}

const TOP_EXAMPLES: &str = "\
Examples:
  # Before upgrading to 4.19.0: check every KMM Module, follow to the verdict
  kubectl kmm preflight --release 4.19.0

  # Preflights in the cluster
  kubectl kmm status

  # A release's driver-toolkit image and kernel
  kubectl kmm dtk --release 4.19.0 -o json";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every KMM Module against a release (or kernel) and follow the check to its verdict
    #[command(after_help = PREFLIGHT_HELP)]
    Preflight(Box<PreflightArgs>),
    /// Check, without the operator, that every Module will load on the target kernel
    #[command(after_help = CHECK_HELP)]
    Check(Box<CheckArgs>),
    /// Show (or follow) existing preflights
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Find a release's driver-toolkit image and kernel, straight from the registry
    #[command(after_help = DTK_HELP)]
    Dtk(DtkArgs),
    /// Print the plugin's version and git commit
    #[command(after_help = VERSION_EXAMPLES)]
    Version(VersionArgs),
    /// Print a shell completion script for kubectl-kmm
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion(CompletionArgs),
}

const VERSION_EXAMPLES: &str = "\
Examples:
  kubectl kmm version
  kubectl kmm version -o json";

const COMPLETION_EXAMPLES: &str = "\
Examples:
  # bash, for kubectl-kmm run directly
  source <(kubectl kmm completion bash)

  # zsh
  kubectl kmm completion zsh > \"${fpath[1]}/_kubectl-kmm\"

  # `kubectl kmm <TAB>` goes through kubectl (1.26+): put the hook on PATH
  install -m 0755 kubectl_complete-kmm ~/.local/bin/";

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to print a completion script for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// What each command's verdicts and exit codes mean, in its own `--help`: krew users never see
/// the README.
const PREFLIGHT_HELP: &str = "\
Examples:
  # Before upgrading to 4.19.0: check every Module, follow to the verdict
  kubectl kmm preflight --release 4.19.0

  # The real-time kernel, in a runbook (no prompt, JSON, exit code)
  kubectl kmm preflight --release 4.19.0 --rt --yes --replace --cleanup -o json

  # A kernel you already know, without a release
  kubectl kmm preflight --kernel 5.14.0-570.19.1.el9_6.x86_64

  # Show the object that would be created, change nothing
  kubectl kmm preflight --release 4.19.0 --dry-run=client

Verdicts, per Module (the RESULT of KMM's word, STATUS, and of the client check, CHECK):
  Verified    KMM's preflight passed it and the client check found in its image what the
              nodes will load (CHECK Ready, WillBuild, WillSign, or Loads with --deep)
  Failed      KMM failed it, or the client check found that a node would not load it: final at
              once, whatever KMM says later
  InProgress  waiting for KMM's word
  Unknown     its nodes boot a kernel KMM's object does not check, and the client check could
              not run there
  CHECK verdicts are those of `kubectl kmm check` (see its --help).
  Result of the run (-o json `result`): Success, Failure, Unknown, TimedOut, NoModules (the
  cluster has none: nothing was verified), Created or Following (--no-wait: the object was
  created, or one of the same spec was already there), Interrupted.

Exit codes:
  0    every Module verified, or no Modules (said so), or --no-wait/--dry-run did what it asked
  1    a Module failed verification (also when --timeout passed after one had failed)
  2    bad input: a flag, release, kernel or name; other preflight objects in the way (without
       --replace); one of the same name with another spec
  3    --timeout passed while Modules were still in progress
  4    environment: cluster or registry unreachable, unauthorized or too slow (--timeout before
       the object exists), TLS failure, KMM not installed
  130  Ctrl-C (the object stays: `kubectl kmm status NAME -w` resumes)";

const CHECK_HELP: &str = "\
Examples:
  # Before upgrading to 4.19.0: will every Module's image load on its kernel?
  kubectl kmm check --release 4.19.0

  # The real-time kernel, for the Modules of one namespace, as JSON
  kubectl kmm check --release 4.19.0 --rt -n nic -o json

  # Modules from files, no cluster needed (a driver vendor's CI)
  kubectl kmm check --kernel 5.14.0-570.19.1.el9_6.x86_64 -f module.yaml

  # Which of the updates the cluster is offered can every Module take?
  kubectl kmm check --updates

  # Two kernels, from stdin
  kubectl get modules -A -o yaml | kubectl kmm check -f - \\
      --kernel 5.14.0-570.19.1.el9_6.x86_64 --kernel 5.14.0-570.19.1.el9_6.x86_64+rt

  # Several clusters in one run (one table, CLUSTER first; the worst exit code)
  kubectl kmm check --release 4.19.0 --contexts prod-east,prod-west

  # From an ACM hub: every ManagedClusterModule for every cluster it selects; or exactly the
  # clusters and release of a TALM ClusterGroupUpgrade
  kubectl kmm check --hub --release 4.19.0
  kubectl kmm check --hub --cgu ztp/upgrade-4-19

  # Load every module in the release's kernel itself, in a throw-away qemu VM
  kubectl kmm check --release 4.19.0 --boot

Verdicts, one per Module and kernel:
  Loads      --deep: Ready, and the kernel's own checks accept every module file (vermagic,
             symbol CRCs, licence, namespaces) against the driver-toolkit's Module.symvers;
             --boot: the target kernel loaded every file in a VM, each init returned 0
  Inconclusive
             --boot: the target kernel linked every file but an init returned an error, as a
             driver without its device does (not a failure: the exit code counts it as passed)
  Ready      the image holds everything modprobe needs for that kernel, where the node's worker
             looks (whether the kernel accepts the files is what --deep adds)
  WillBuild  the image does not exist, and KMM has what it needs to build it
  WillSign   the image does not exist, and KMM has what it needs to sign its unsigned image
  Failed     a node would not load it: the reason names what was looked for and what was found
  Unknown    could not be checked from here: a registry unreachable or refusing, a Secret or
             ConfigMap that may not be read, or one not in the -f files
  Result of the run (-o json `result`): Success, Failure, Unknown, Invalid (KMM would refuse a
  Module), NoModules (the cluster has none: nothing was checked, and a warning says so),
  TimedOut (--timeout passed before every Module was checked, and none of those checked failed).

Exit codes:
  0  every Module is Loads, Inconclusive, Ready, WillBuild or WillSign, or the cluster has no Module (said
     so); --updates or several --release: a listed release is safe for every Module
  1  a Module is Failed (also when --timeout passed after one had failed); --updates: no
     listed release is safe
  2  bad input: a flag, kernel, release or file; a Module KMM would refuse; no Module in the
     files, the namespace or the names given
  4  environment: a cluster or registry unreachable, unauthorized or too slow (--timeout), KMM
     not installed; or a Module is Unknown
  Several clusters (--contexts, --hub): the worst of the clusters' codes, 2 over 1 over 4 over
  0; a cluster that cannot be reached is Unknown (4) and never stops the others";

const STATUS_HELP: &str = "\
Examples:
  # Every preflight in the cluster
  kubectl kmm status

  # One preflight, KMM's word and the client check together
  kubectl kmm status preflight-4-19-0 --check

  # One preflight, followed until it completes
  kubectl kmm status preflight-4-19-0 -w

What it shows is KMM's word only: KMM 2.4+ passes a Module whose image exists but holds no
module for the kernel. --check adds the client check of `kubectl kmm check` for the
preflight's kernel, as `preflight` does.

Results: Success (every Module verified), Failure (one failed), InProgress (KMM is not done:
exit 0 without -w), and with -w TimedOut or Interrupted.

Exit codes:
  0    shown; with -w, every Module verified
  1    a Module failed verification
  2    bad input; no preflight of that name
  3    -w: --timeout passed while Modules were in progress
  4    environment: cluster unreachable, unauthorized, KMM not installed
  130  Ctrl-C while following";

/// A duration as kubectl takes it: `90s`, `30m`, `1h30m`, a bare number of seconds, or `0` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

/// `check -o`: every report format but `name` (a check creates no object to name).
fn check_format() -> impl clap::builder::TypedValueParser<Value = ReportFormat> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["table", "wide", "json", "yaml"])
        .map(|s| ReportFormat::from_str(&s, false).unwrap_or(ReportFormat::Table))
}

/// An image reference, checked as the registry client will read it; kept as typed.
fn image_reference(input: &str) -> Result<String, String> {
    let input = input.trim();
    input
        .parse::<crate::registry::reference::ImageRef>()
        .map(|_| input.to_string())
        .map_err(|e| format!("not an image reference: {e}"))
}

fn parse_timeout(input: &str) -> Result<Timeout, String> {
    let input = input.trim();
    if input == "0" {
        return Ok(Timeout(None));
    }
    if let Ok(seconds) = input.parse::<u64>() {
        return Ok(Timeout(Some(Duration::from_secs(seconds))));
    }
    match humantime::parse_duration(input) {
        Ok(d) if d.is_zero() => Ok(Timeout(None)),
        Ok(d) => Ok(Timeout(Some(d))),
        Err(_) => Err("expected a duration such as 90s, 30m or 1h30m (0 for none)".into()),
    }
}

/// Several clusters in one run (with the repeatable `--context` of `KubeArgs`).
#[derive(Debug, Args, Clone, Default)]
pub struct FleetArgs {
    /// Several kubeconfig contexts, comma-separated: one run over all their clusters, one
    /// table with a CLUSTER column, the worst exit code
    #[arg(long, value_name = "A,B,…", value_delimiter = ',')]
    pub contexts: Vec<String>,

    /// Every context of the kubeconfig
    #[arg(long, conflicts_with = "contexts")]
    pub all_contexts: bool,
}

/// kubectl's connection flags: kubectl does not hand its own to plugins, so they come after `kmm`.
#[derive(Debug, Args, Clone)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, merged, or ~/.kube/config)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (check, preflight and status: repeat it for several
    /// clusters)
    #[arg(long, value_name = "NAME")]
    pub context: Vec<String>,

    /// The kubeconfig cluster to use
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Username to impersonate
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,

    /// Group to impersonate (repeatable)
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_group: Vec<String>,

    /// Give up on each request after this long, retries included [default: no limit for the
    /// API server, 30s for registries]
    #[arg(long, value_name = "DURATION", default_value = "0", hide_default_value = true, value_parser = parse_timeout, allow_hyphen_values = true)]
    pub request_timeout: Timeout,

    /// Do not verify the API server's certificate (insecure)
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Print the object, send nothing
    Client,
    /// Send it with `dryRun=All` (validated and defaulted, not stored) and print the answer
    Server,
    /// Create for real (the default)
    None,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["release", "kernel"]).required(true))]
pub struct PreflightArgs {
    /// OpenShift version (4.19.0) or release pull spec: its driver-toolkit gives the kernel
    #[arg(long, value_name = "VERSION|PULLSPEC", conflicts_with = "kernel")]
    pub release: Option<String>,

    /// The target kernel, when you already know it (instead of --release)
    #[arg(long, value_name = "KVER")]
    pub kernel: Option<String>,

    /// Driver-toolkit image for in-cluster builds (DTK_AUTO), with --kernel
    #[arg(long, value_name = "IMG", conflicts_with = "release", value_parser = image_reference)]
    pub dtk_image: Option<String>,

    /// Check the real-time kernel of the release
    #[arg(long, conflicts_with = "kernel")]
    pub rt: bool,

    /// Push images that preflight builds and signs
    #[arg(long)]
    pub push_built_image: bool,

    /// Name of the preflight object (default: derived from the release or kernel)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The whole command's deadline, from the first request to the verdict: exit 4 when it
    /// passes before the object is created, 3 when Modules are still in progress, 1 when one
    /// already failed (0: none)
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Timeout,

    /// Create the object and exit without following it
    #[arg(long)]
    pub no_wait: bool,

    /// Only KMM's own preflight: do not check the Modules' images from here first
    #[arg(long)]
    pub no_client_check: bool,

    /// The client check also makes the kernel's own load decision for every module file
    /// (vermagic and symbol CRCs against the driver-toolkit's Module.symvers)
    #[arg(long, conflicts_with = "no_client_check")]
    pub deep: bool,

    /// Answer yes to questions (existing preflights still need --replace)
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// Delete existing preflight objects first, and wait until they are gone
    #[arg(long)]
    pub replace: bool,

    /// Delete the preflight object once it is complete
    #[arg(long)]
    pub cleanup: bool,

    /// `client`: print the object that would be created (YAML unless -o json|name), change
    /// nothing; `server`: the API server's answer to a dry-run create
    #[arg(long, value_enum, value_name = "STRATEGY", num_args = 0..=1, require_equals = true, default_missing_value = "client", default_value = "none")]
    pub dry_run: DryRun,

    /// Output: a live table (`wide`: with KMM's stage, the kernel and the image), one final
    /// JSON or YAML report, or the object's `name`
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: ReportFormat,

    /// Architecture: x86_64 (amd64), aarch64 (arm64), ppc64le, s390x (default: the cluster
    /// nodes'; a mixed cluster uses the multi payload)
    #[arg(long, value_enum, value_name = "ARCH", hide_possible_values = true)]
    pub arch: Option<Arch>,

    #[command(flatten)]
    pub release_repo: ReleaseRepoArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["release", "kernel", "updates", "cgu"]).required(true).multiple(true))]
pub struct CheckArgs {
    /// Only these Modules (by name; default: all)
    #[arg(value_name = "MODULE")]
    pub modules: Vec<String>,

    /// OpenShift version (4.19.0) or release pull spec: the kernels of its driver-toolkits
    /// (repeatable: one row per release)
    #[arg(long, value_name = "VERSION|PULLSPEC", conflicts_with = "kernel")]
    pub release: Vec<String>,

    /// Every update the cluster is offered (ClusterVersion availableUpdates and
    /// conditionalUpdates), one row per release
    #[arg(long, conflicts_with_all = ["kernel", "release"])]
    pub updates: bool,

    /// Also make the kernel's own load decision for every module file of a Ready Module:
    /// vermagic and every imported symbol's CRC against the driver-toolkit's Module.symvers
    /// (the release's DTK, or --dtk-image with --kernel; its layer holding Module.symvers is
    /// read once, then the cache answers)
    #[arg(long)]
    pub deep: bool,

    /// The nodes boot with Secure Boot: every module file's signature must verify against the
    /// Module's certSecret or a --trusted-cert, or the Module is Failed (implies --deep)
    #[arg(long, conflicts_with = "hub")]
    pub secure_boot: bool,

    /// A certificate the nodes trust (enrolled in MOK or db), PEM or DER (repeatable): module
    /// signatures are verified against it and the Module's certSecret (implies --deep)
    #[arg(long, value_name = "FILE", conflicts_with = "hub")]
    pub trusted_cert: Vec<std::path::PathBuf>,

    /// Load every module file of a Ready Module in the target kernel itself: a throw-away qemu
    /// VM boots the driver-toolkit's kernel image with only the Modules' files and their
    /// in-tree dependencies (implies --deep; needs qemu-system-<arch>, KVM when usable)
    #[arg(long, conflicts_with = "hub")]
    pub boot: bool,

    /// With --boot: the plugin's Linux binary to run as the VM's /init, for a kernel of another
    /// architecture than this machine's or from macOS and Windows (default: this binary)
    #[arg(long, value_name = "FILE", requires = "boot")]
    pub boot_init: Option<std::path::PathBuf>,

    /// With --kernel and --deep: the driver-toolkit image that carries those kernels' devel files
    #[arg(long, value_name = "IMAGE", requires = "kernel", value_parser = image_reference)]
    pub dtk_image: Option<String>,

    /// A kernel to check against, as `uname -r` prints it (repeatable; instead of --release)
    #[arg(long, value_name = "KVER")]
    pub kernel: Vec<String>,

    /// Check the release's real-time kernel for every Module (default: the kernel each
    /// Module's nodes boot)
    #[arg(long, conflicts_with = "kernel")]
    pub rt: bool,

    /// Only the Modules of this namespace (with -f: the namespace of objects that name none)
    #[arg(
        short = 'n',
        long,
        value_name = "NAMESPACE",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: Option<String>,

    /// Modules of every namespace (the default)
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Modules (and the Secrets and ConfigMaps they name) from files, a directory or `-`
    /// (stdin) instead of the cluster (repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", value_hint = ValueHint::AnyPath)]
    pub files: Vec<PathBuf>,

    /// The context is an ACM hub running KMM-hub: check every ManagedClusterModule for every
    /// ManagedCluster it selects, against the kernels that cluster will boot (read from the hub
    /// only: KMM's kernel claim, ACM's view of the offered updates)
    #[arg(long, conflicts_with_all = ["files", "kernel", "contexts", "all_contexts", "namespace"])]
    pub hub: bool,

    /// With --hub: the namespace KMM-hub runs in (its imageRepoSecrets, build and sign
    /// ConfigMaps and Secrets)
    #[arg(long, value_name = "NAMESPACE", requires = "hub", default_value = crate::cluster::hub::DEFAULT_HUB_NAMESPACE)]
    pub hub_namespace: String,

    /// With --hub: an image KMM-hub would still have to build or sign is Failed, not
    /// WillBuild/WillSign (KMM-hub builds only once a node of the cluster runs the new kernel)
    #[arg(long, requires = "hub")]
    pub images_must_exist: bool,

    /// With --hub: exactly the clusters TALM's ClusterGroupUpgrade NAMESPACE/NAME will upgrade,
    /// against the release its policies name, with the batch each cluster goes in
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "hub")]
    pub cgu: Option<String>,

    /// With --hub: print only the kmod images of the target kernels, one per line (for TALM's
    /// PreCachingConfig additionalImages)
    #[arg(long, requires = "hub")]
    pub precache_images: bool,

    /// Output: a table (`wide`: with each Module's image), or one JSON or YAML object
    #[arg(short = 'o', long, default_value = "table", value_parser = check_format())]
    pub output: ReportFormat,

    /// The whole command's deadline: exit 4 when it passes, or 1 when a Module had already
    /// failed (what was decided is still reported) (0: none)
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Timeout,

    /// Architecture of the nodes: x86_64 (amd64), aarch64 (arm64), ppc64le, s390x (default:
    /// from the kernel's name, else the cluster's nodes)
    #[arg(long, value_enum, value_name = "ARCH", hide_possible_values = true)]
    pub arch: Option<Arch>,

    #[command(flatten)]
    pub release_repo: ReleaseRepoArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A preflight's name (default: list them all)
    pub name: Option<String>,

    /// Follow it until it completes (without a name: each preflight in turn)
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// With -w: stop following after this long, all of them together, and exit 3 (0: never)
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Timeout,

    /// Output: a table (`wide`: more columns), JSON or YAML (a `List` of several), or `name`
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: ReportFormat,

    /// Add the client check of `kubectl kmm check` for each preflight's kernel to KMM's word,
    /// as `preflight` does (without it: KMM's word only)
    #[arg(long)]
    pub check: bool,

    /// With --check: also the kernel's own load decision for every module file (--deep of
    /// `kubectl kmm check`, against the preflight's driver-toolkit)
    #[arg(long, requires = "check")]
    pub deep: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub fleet: FleetArgs,
}

const DTK_HELP: &str = "\
Examples:
  # The DTK and kernel of OpenShift 4.19.0 for x86_64
  kubectl kmm dtk --release 4.19.0

  # For arm64, as JSON
  kubectl kmm dtk --release 4.19.0 --arch aarch64 -o json

  # A release by pull spec, from a mirror with its own CA
  kubectl kmm dtk --release mirror.example.com:8443/ocp/release@sha256:<digest> \\
      --registry-ca mirror-ca.pem --registry-config ~/pull-secret.json

Exit codes:
  0  the driver-toolkit and its kernel were read
  2  bad input: a version or pull spec that is malformed or not found (at any mirror), not a
     release payload, no driver-toolkit in it, a DTK without /etc/driver-toolkit-release.json
  4  environment: registry unreachable, unauthorized, TLS failure, too slow";

#[derive(Debug, Args)]
pub struct DtkArgs {
    /// OpenShift version (4.19.0, 4.20.0-rc.2) or release pull spec (by tag or digest)
    #[arg(long, value_name = "VERSION|PULLSPEC")]
    pub release: String,

    /// Architecture of the payload and driver-toolkit: x86_64 (amd64, the default), aarch64
    /// (arm64), ppc64le, s390x
    #[arg(long, value_enum, value_name = "ARCH", hide_possible_values = true)]
    pub arch: Option<Arch>,

    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,

    /// Give up on each registry request after this long, retries included [default: 30s]
    #[arg(long, value_name = "DURATION", default_value = "0", hide_default_value = true, value_parser = parse_timeout, allow_hyphen_values = true)]
    pub request_timeout: Timeout,

    #[command(flatten)]
    pub release_repo: ReleaseRepoArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ReleaseRepoArgs {
    /// Repository that versions are looked up in
    #[arg(
        long,
        env = "KMM_RELEASE_REPO",
        value_name = "REPO",
        default_value = crate::release::DEFAULT_RELEASE_REPO
    )]
    pub release_repo: String,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RegistryArgs {
    /// Registry auth file (default: REGISTRY_AUTH_FILE, then podman's and docker's auth files)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub registry_config: Option<PathBuf>,

    /// Allow unverified TLS, then plain HTTP, for this registry (repeatable); http://HOST[:PORT]
    /// goes straight to plain HTTP
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// Also trust the CA certificates in this PEM file (repeatable)
    #[arg(long = "registry-ca", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub registry_ca: Vec<PathBuf>,

    /// Neither read nor write the answer cache ($XDG_CACHE_HOME/kubectl-kmm)
    #[arg(long)]
    pub no_cache: bool,

    /// ImageDigestMirrorSets to apply (multi-document YAML, as oc takes it)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, conflicts_with = "icsp_file")]
    pub idms_file: Option<PathBuf>,

    /// An ImageContentSourcePolicy to apply (deprecated by IDMS; as oc takes it)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub icsp_file: Option<PathBuf>,
}

/// kubectl users write flags before the subcommand too (`kubectl kmm --context prod status`):
/// move what stands between the program name and the subcommand to just after the subcommand,
/// where clap knows it. Which flags take a value is read from the definitions above. A flag
/// the subcommand does not take is an error that says so (clap, seeing it after the
/// subcommand, would show a usage line of a command line the user never typed).
pub fn hoist_flags(args: Vec<String>) -> Result<Vec<String>, String> {
    use clap::CommandFactory;
    let command = Cli::command();
    let subcommands: Vec<String> = command
        .get_subcommands()
        .flat_map(|s| {
            std::iter::once(s.get_name().to_string()).chain(s.get_all_aliases().map(str::to_string))
        })
        .collect();
    let mut long_values = std::collections::HashSet::new();
    let mut short_values = std::collections::HashSet::new();
    for arg in command
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .chain(command.get_arguments())
    {
        if arg.get_action().takes_values() {
            if let Some(long) = arg.get_long() {
                long_values.insert(long.to_string());
            }
            if let Some(short) = arg.get_short() {
                short_values.insert(short);
            }
        }
    }
    let mut flags = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let token = &args[i];
        if subcommands.contains(token) {
            break;
        }
        if token == "--" || !token.starts_with('-') {
            return Ok(args); // not flags followed by a subcommand: leave it to clap
        }
        let takes_value = if let Some(long) = token.strip_prefix("--") {
            !long.contains('=') && long_values.contains(long)
        } else {
            let mut chars = token.chars().skip(1);
            let first = chars.next();
            chars.next().is_none() && first.is_some_and(|c| short_values.contains(&c))
        };
        flags.push(token.as_str());
        i += if takes_value { 2 } else { 1 };
    }
    if i >= args.len() || i == 1 {
        return Ok(args);
    }
    let name = &args[i];
    let takes = |cmd: &clap::Command, flag: &str| -> bool {
        let mut accepted = cmd.get_arguments().chain(command.get_arguments());
        match flag.strip_prefix("--") {
            Some(long) => {
                let long = long.split('=').next().unwrap_or_default();
                long == "help"
                    || accepted.any(|a| {
                        a.get_long() == Some(long)
                            || a.get_all_aliases().is_some_and(|al| al.contains(&long))
                    })
            }
            None => {
                let shorts: Vec<char> = flag.chars().skip(1).collect();
                let known: Vec<char> = accepted.filter_map(|a| a.get_short()).collect();
                shorts.iter().all(|c| *c == 'h' || known.contains(c))
            }
        }
    };
    if let Some(sub) = command.find_subcommand(name) {
        for flag in &flags {
            if !takes(sub, flag) {
                let shown = flag.split('=').next().unwrap_or_default();
                let others: Vec<&str> = command
                    .get_subcommands()
                    .filter(|s| takes(s, flag))
                    .map(|s| s.get_name())
                    .collect();
                let of = if others.is_empty() {
                    "it is not a flag of kubectl kmm".to_string()
                } else {
                    format!("it is a flag of {}", others.join(", "))
                };
                return Err(format!(
                    "{shown} does not apply to `kubectl kmm {}`: {of}",
                    sub.get_name()
                ));
            }
        }
    }
    let mut hoisted = vec![args[0].clone(), args[i].clone()];
    hoisted.extend_from_slice(&args[1..i]);
    hoisted.extend_from_slice(&args[i + 1..]);
    Ok(hoisted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn hoisted(line: &str) -> String {
        match hoist_flags(line.split(' ').map(String::from).collect()) {
            Ok(args) => args.join(" "),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn flags_before_the_subcommand_move_after_it() {
        assert_eq!(
            hoisted("kubectl-kmm --context prod status"),
            "kubectl-kmm status --context prod"
        );
        assert_eq!(
            hoisted("kubectl-kmm -v --kubeconfig k -o json status x -w"),
            "kubectl-kmm status -v --kubeconfig k -o json x -w"
        );
        // A flag's value that looks like a subcommand stays a value.
        assert_eq!(
            hoisted("kubectl-kmm --context status check --kernel k"),
            "kubectl-kmm check --context status --kernel k"
        );
        assert_eq!(
            hoisted("kubectl-kmm status --context x"),
            "kubectl-kmm status --context x"
        );
        assert_eq!(hoisted("kubectl-kmm --version"), "kubectl-kmm --version");
        assert_eq!(
            hoisted("kubectl-kmm --context=prod check"),
            "kubectl-kmm check --context=prod"
        );
        let parsed = Cli::try_parse_from(
            hoist_flags(
                "kubectl-kmm --context prod --request-timeout 5s status"
                    .split(' ')
                    .map(String::from)
                    .collect(),
            )
            .unwrap(),
        )
        .unwrap();
        // A flag the subcommand does not take is named, with the subcommands that do.
        assert_eq!(
            hoisted("kubectl-kmm --replace status"),
            "error: --replace does not apply to `kubectl kmm status`: it is a flag of preflight"
        );
        assert_eq!(
            hoisted("kubectl-kmm -v -o json status"),
            "kubectl-kmm status -v -o json"
        );
        let Command::Status(status) = parsed.command else {
            panic!()
        };
        assert_eq!(status.kube.context, ["prod"]);
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_timeout("0"), Ok(Timeout(None)));
        assert_eq!(
            parse_timeout("90"),
            Ok(Timeout(Some(Duration::from_secs(90))))
        );
        assert_eq!(
            parse_timeout("30m"),
            Ok(Timeout(Some(Duration::from_secs(1800))))
        );
        assert_eq!(
            parse_timeout("1h30m"),
            Ok(Timeout(Some(Duration::from_secs(5400))))
        );
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("-5s").is_err());
    }
}

//! A whole test world for `preflight`: a registry holding a release and its DTK, a test API
//! server with KMM's CRDs, nodes and Modules, the simulated operator, and a user whose
//! kubeconfig points at it all.

use serde_json::{Value, json};

use super::apiserver::{ApiServer, Kmm};
use super::fixtures::{
    self, NodeOsForm, ReleaseFixture, kernel_for, push_node_os, push_release, push_release_tagged,
};
use super::images::{Compression, Flavor, Image, Pusher};
use super::kmod::simple_image;
use super::operator::{Operator, OperatorConfig};
use super::registry::TestRegistry;
use super::{Context, Run};

pub const VERSION: &str = "4.19.0";
/// The kernel the cluster's nodes run before the upgrade (RHEL 9.4).
pub const OLD_KERNEL: &str = "5.14.0-427.50.1.el9_4.x86_64";

pub struct TestCluster {
    pub registry: TestRegistry,
    pub release: ReleaseFixture,
    pub api: ApiServer,
    pub operator: Option<Operator>,
    pub ctx: Context,
}

/// A Module that maps every kernel to `image` (a template), loading `module` (dirName default).
pub fn loading(image: &str, module: &str) -> Value {
    json!({
        "selector": {"node-role.kubernetes.io/worker": ""},
        "moduleLoader": {"container": {
            "modprobe": {"moduleName": module},
            "kernelMappings": [{"regexp": "^.+$", "containerImage": image}]
        }}
    })
}

/// A Module mapping every kernel to `image` (templated), optionally with a build section.
pub fn module_spec(image: &str, build: bool) -> Value {
    let mut container = json!({
        "modprobe": {"moduleName": "kmod", "dirName": "/opt"},
        "kernelMappings": [{"regexp": "^.+$", "containerImage": image}],
    });
    if build {
        container["build"] = json!({"dockerfileConfigMap": {"name": "kmod-dockerfile"}});
    }
    json!({"selector": {"node-role.kubernetes.io/worker": ""}, "moduleLoader": {"container": container}})
}

/// The image a `module_spec` image resolves to for `kernel` (KMM's KERNEL_FULL_VERSION, from
/// the normalised kernel: `+rt` becomes `_rt`).
pub fn resolved(image: &str, kernel: &str) -> String {
    image.replace("${KERNEL_FULL_VERSION}", &kernel.replace('+', "_"))
}

impl TestCluster {
    /// One amd64 node, release 4.19.0 in the registry, no Modules, the operator running.
    pub async fn start(kmm: Kmm) -> TestCluster {
        Self::start_with(kmm, TestRegistry::plain()).await
    }

    /// The same on `registry` (e.g. TLS with basic auth).
    pub async fn start_with(kmm: Kmm, registry: TestRegistry) -> TestCluster {
        Self::start_full(kmm, registry, None).await
    }

    /// The same with `dtk` as the release's driver-toolkit (its kernel: `kernel_for(VERSION)`).
    pub async fn start_with_dtk(kmm: Kmm, dtk: &Image) -> TestCluster {
        Self::start_full(kmm, TestRegistry::plain(), Some(dtk)).await
    }

    /// With a release whose node OS boots `node_kernel` while its driver-toolkit has
    /// `kernel_for(VERSION)`: the two disagree.
    pub async fn start_skewed(kmm: Kmm, node_kernel: &str) -> TestCluster {
        let dtk = fixtures::dtk_image(
            &kernel_for(VERSION, "amd64"),
            "amd64",
            Flavor::Docker,
            Compression::Gzip,
        );
        Self::start_inner(kmm, TestRegistry::plain(), Some(&dtk), Some(node_kernel)).await
    }

    /// With `dtk`, on `registry`.
    pub async fn start_full(kmm: Kmm, registry: TestRegistry, dtk: Option<&Image>) -> TestCluster {
        Self::start_inner(kmm, registry, dtk, None).await
    }

    async fn start_inner(
        kmm: Kmm,
        registry: TestRegistry,
        dtk: Option<&Image>,
        node_kernel: Option<&str>,
    ) -> TestCluster {
        let pusher = Pusher::new(&registry);
        let release = match dtk {
            None => push_release(&pusher, &registry.addr, VERSION, "amd64").await,
            Some(dtk) => {
                let tag = format!("{VERSION}-x86_64");
                let kernel = kernel_for(VERSION, "amd64");
                let os_kernel = node_kernel.unwrap_or(&kernel);
                let os = push_node_os(&pusher, os_kernel, "amd64", NodeOsForm::KernelLabel).await;
                let mut fixture = push_release_tagged(
                    &pusher,
                    &registry.addr,
                    VERSION,
                    dtk,
                    Some(&tag),
                    &[("rhel-coreos", &os.reference)],
                )
                .await;
                fixture.kernel = kernel;
                fixture
            }
        };
        let api = ApiServer::start(kmm).await;
        api.add_node("worker-0", "amd64");
        let mut ctx = Context::new();
        let kubeconfig = ctx.write(".kube/config", api.kubeconfig());
        ctx.env("KUBECONFIG", kubeconfig.display().to_string());
        ctx.env("KMM_RELEASE_REPO", format!("{}/ocp/release", registry.addr));
        let operator = (kmm != Kmm::None).then(|| {
            let mut config = OperatorConfig::new(kmm);
            config.releases.insert(
                release.release.reference.clone(),
                (
                    release.kernel.clone(),
                    Some(format!("{}+rt", release.kernel)),
                ),
            );
            Operator::start(&api, config)
        });
        TestCluster {
            registry,
            release,
            api,
            operator,
            ctx,
        }
    }

    /// The simulated KMM operator (every cluster with KMM has one).
    pub fn operator(&self) -> &Operator {
        self.operator
            .as_ref()
            .expect("a cluster with KMM has an operator")
    }

    pub fn kernel(&self) -> &str {
        &self.release.kernel
    }

    /// Add a Module whose image is in the test registry; `present` says whether it exists for
    /// the release's kernel and its RT kernel (a real kmod image, holding the module for that
    /// kernel, which the simulated operator knows as existing).
    pub async fn module(&self, namespace: &str, name: &str, present: bool, build: bool) {
        let image = format!(
            "{}/vendor/{name}:${{KERNEL_FULL_VERSION}}",
            self.registry.addr
        );
        if present {
            let pusher = Pusher::new(&self.registry);
            for kernel in [self.kernel().to_string(), format!("{}+rt", self.kernel())] {
                let tag = resolved(&image, &kernel);
                let tag = tag.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
                pusher
                    .push_image(
                        &format!("vendor/{name}"),
                        Some(tag),
                        &simple_image("kmod", &kernel),
                    )
                    .await;
                if let Some(op) = &self.operator {
                    op.configure(|o| {
                        o.images.insert(resolved(&image, &kernel));
                    });
                }
            }
        }
        self.api
            .add_module(namespace, name, module_spec(&image, build));
    }

    /// `<registry>/vendor/<name>:${KERNEL_FULL_VERSION}`, as a Module names its image.
    pub fn vendor_image(&self, name: &str) -> String {
        format!(
            "{}/vendor/{name}:${{KERNEL_FULL_VERSION}}",
            self.registry.addr
        )
    }

    /// Push `vendor/<name>` tagged for `kernel` holding a module built for `built_for`, and
    /// tell the operator that the image exists (and, when it is not built for `kernel`, that
    /// KMM ≤ 2.3 would not find the module in it).
    pub async fn push_vendor_image(&self, name: &str, kernel: &str, built_for: &str) {
        let image = resolved(&self.vendor_image(name), kernel);
        let tag = image
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        Pusher::new(&self.registry)
            .push_image(
                &format!("vendor/{name}"),
                Some(&tag),
                &simple_image("kmod", built_for),
            )
            .await;
        self.operator().configure(|o| {
            o.images.insert(image.clone());
            if built_for != kernel {
                o.without_module.insert(image.clone());
            }
        });
    }

    /// `preflight --release 4.19.0 --insecure-registry <registry> <extra…>`: the arguments.
    pub fn preflight_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "preflight",
            "--release",
            VERSION,
            "--insecure-registry",
            &self.registry.addr,
        ];
        args.extend_from_slice(extra);
        args
    }

    /// `kubectl kmm preflight --release 4.19.0 --insecure-registry <registry> <extra…>`.
    pub async fn preflight(&self, extra: &[&str]) -> Run {
        self.ctx.run(&self.preflight_args(extra)).await
    }

    /// `kubectl-kmm <args…> --insecure-registry <registry>`.
    pub async fn plugin(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--insecure-registry", &self.registry.addr]);
        self.ctx.run(&all).await
    }

    pub fn pvo(&self, name: &str) -> Option<Value> {
        self.api
            .get("kmm.sigs.x-k8s.io", "PreflightValidationOCP", "", name)
    }

    pub fn pv(&self, name: &str) -> Option<Value> {
        self.api
            .get("kmm.sigs.x-k8s.io", "PreflightValidation", "", name)
    }
}

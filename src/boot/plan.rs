//! What the host tells `/init` to do, and what `/init` answers on the console: one JSON line
//! per Module, between markers the host looks for among the kernel's own console output.

use serde::{Deserialize, Serialize};

/// Where the plan is in the initramfs.
pub const PLAN_PATH: &str = "/kmm/plan.json";
/// Printed by `/init` before its first load, with the guest's facts.
pub const START: &str = "KMM-BOOT-START ";
/// Printed by `/init` for each Module.
pub const RESULT: &str = "KMM-BOOT-RESULT ";
/// Printed by `/init` when every Module was tried.
pub const END: &str = "KMM-BOOT-END";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub modules: Vec<PlanModule>,
}

/// One Module: its files in the order they are loaded, then removed in reverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanModule {
    pub id: usize,
    pub files: Vec<PlanFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFile {
    /// In the initramfs.
    pub path: String,
    /// The module's name, for `delete_module`.
    pub name: String,
    /// `modprobe.parameters` for the Module's own module, empty otherwise.
    #[serde(default)]
    pub params: String,
    /// An in-tree module of the driver-toolkit rather than one of the Module's image.
    #[serde(default)]
    pub in_tree: bool,
}

/// What the guest says before it loads anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// `uname -r` in the VM: must be the kernel asked for.
    pub release: String,
    /// Seconds since the kernel started (`/proc/uptime`).
    pub uptime: f64,
}

/// One Module's loads, in order; the first that failed is the last one tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: usize,
    pub loads: Vec<Load>,
    /// Modules `delete_module` could not remove afterwards (they stay loaded for the next).
    #[serde(default)]
    pub left_loaded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub path: String,
    /// 0 when `finit_module` returned 0.
    pub errno: i32,
    /// The kernel's messages while it loaded the file (`/dev/kmsg`).
    pub messages: Vec<String>,
}

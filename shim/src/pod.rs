//! Pods as the kubelet's runtime (containerd's CRI) makes them: the
//! sandbox container (annotation `io.kubernetes.cri.container-type:
//! sandbox`, usually `pause`) boots the pod's VM; every later container of
//! the same `io.kubernetes.cri.sandbox-id` is created in that VM, by the
//! same shim (containerd runs one shim per pod: [`grouping`]).
//!
//! The VM is sized from the sandbox's spec when it boots ([`vm_size`]):
//! the annotations `io.vminitd.vm.cpus` and `io.vminitd.vm.memory-mib`
//! (pod annotations containerd passes on where its runtime's
//! `pod_annotations` lets them), else a base (1 vCPU, 256 MiB) plus the
//! limits of the sandbox's `linux.resources`.

use std::path::{Path, PathBuf};

use host_shim::runtime::PodDir;
use serde_json::Value;

/// The annotation naming what a CRI container is.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The annotation naming a CRI container's sandbox.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The annotation setting the VM's vCPUs.
pub const VM_CPUS: &str = "io.vminitd.vm.cpus";
/// The annotation setting the VM's memory, in MiB.
pub const VM_MEMORY: &str = "io.vminitd.vm.memory-mib";

/// The VM's vCPUs when nothing asks for more.
const BASE_CPUS: u32 = 1;
/// The VM's memory (MiB) before the containers' limits.
const BASE_MEMORY_MIB: u64 = 256;
/// The most vCPUs and memory (MiB) `vmshim runtime` gives a VM.
const MAX_CPUS: u32 = 64;
const MAX_MEMORY_MIB: u64 = 65536;

/// The directory of the pod, in the sandbox's bundle.
pub const POD_DIR: &str = "pod";

/// What a container is to its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not in a pod: a VM of its own.
    Alone,
    /// A pod's sandbox: the pod's VM.
    Sandbox,
    /// A container of the pod whose sandbox is this one.
    Member {
        /// The sandbox's id.
        sandbox: String,
    },
}

impl Role {
    /// The role the annotations of `bundle/config.json` give.
    pub fn of_bundle(bundle: &Path) -> Result<Role, String> {
        Ok(Role::of(&annotations(bundle)?))
    }

    fn of(annotations: &serde_json::Map<String, Value>) -> Role {
        let get = |key| annotations.get(key).and_then(Value::as_str).unwrap_or("");
        match (get(CONTAINER_TYPE), get(SANDBOX_ID)) {
            ("sandbox", _) => Role::Sandbox,
            ("container", sandbox) if !sandbox.is_empty() => Role::Member {
                sandbox: sandbox.to_owned(),
            },
            _ => Role::Alone,
        }
    }
}

/// The `annotations` of `bundle/config.json`.
fn annotations(bundle: &Path) -> Result<serde_json::Map<String, Value>, String> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let spec: Value = serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    Ok(spec
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default())
}

/// The shim a container of `bundle` belongs to: its pod's sandbox's, else
/// its own `id`.
pub fn grouping(bundle: &Path, id: &str) -> String {
    match annotations(bundle).map(|a| Role::of(&a)) {
        Ok(Role::Member { sandbox }) => sandbox,
        _ => id.to_owned(),
    }
}

/// The VM's vCPUs and memory (MiB) for the container of `bundle`.
pub fn vm_size(bundle: &Path) -> Result<(u32, u32), String> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let spec: Value = serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    size_of(&spec)
}

fn size_of(spec: &Value) -> Result<(u32, u32), String> {
    let annotation = |key: &str| {
        spec.pointer("/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    let number = |key: &str, max: u64| -> Result<Option<u64>, String> {
        match annotation(key) {
            None => Ok(None),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!("annotation {key}: {text:?} is not a number from 1 to {max}")),
            },
        }
    };
    let resources = spec.pointer("/linux/resources");
    let cpus = match number(VM_CPUS, MAX_CPUS as u64)? {
        Some(n) => n as u32,
        None => {
            let quota = resources
                .and_then(|r| r.pointer("/cpu/quota"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let period = resources
                .and_then(|r| r.pointer("/cpu/period"))
                .and_then(Value::as_u64)
                .unwrap_or(100_000)
                .max(1);
            match quota {
                q if q > 0 => (q as u64).div_ceil(period).clamp(BASE_CPUS as u64, MAX_CPUS as u64) as u32,
                _ => BASE_CPUS,
            }
        }
    };
    let memory = match number(VM_MEMORY, MAX_MEMORY_MIB)? {
        Some(n) => n,
        None => {
            let limit = resources
                .and_then(|r| r.pointer("/memory/limit"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let limit_mib = if limit > 0 { (limit as u64).div_ceil(1 << 20) } else { 0 };
            (BASE_MEMORY_MIB + limit_mib).min(MAX_MEMORY_MIB)
        }
    };
    // vmshim runtime takes 64 MiB at least.
    Ok((cpus, memory.max(64) as u32))
}

/// The pod, once its sandbox is created: what its members need.
#[derive(Debug, Clone)]
pub struct PodState {
    /// The sandbox's id.
    pub sandbox: String,
    /// The sandbox's bundle, whose runtime root holds the VM.
    pub bundle: PathBuf,
    /// The sandbox's pid on the host (its instance daemon).
    pub pid: u32,
    /// The pod's directory, shared with the VM.
    pub dir: PodDir,
    /// Where the guest sees it.
    pub guest_dir: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_annotations_of_the_kubelets_runtime_say_what_a_container_is() {
        let of = |a: Value| Role::of(a.as_object().unwrap());
        assert_eq!(
            of(json!({"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "p1"})),
            Role::Sandbox
        );
        assert_eq!(
            of(json!({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "p1"})),
            Role::Member { sandbox: "p1".into() }
        );
        assert_eq!(
            of(json!({"io.kubernetes.cri.container-type": "container"})),
            Role::Alone
        );
        assert_eq!(of(json!({})), Role::Alone);
    }

    #[test]
    fn the_vm_is_sized_by_annotations_else_a_base_and_the_limits() {
        assert_eq!(size_of(&json!({})).unwrap(), (1, 256));
        let limits = json!({"linux": {"resources": {
            "memory": {"limit": 512u64 << 20},
            "cpu": {"quota": 250000, "period": 100000}
        }}});
        assert_eq!(size_of(&limits).unwrap(), (3, 768));
        let asked = json!({"annotations": {VM_CPUS: "2", VM_MEMORY: "1024"}, "linux": {"resources": {
            "memory": {"limit": 512u64 << 20}
        }}});
        assert_eq!(size_of(&asked).unwrap(), (2, 1024));
        let err = size_of(&json!({"annotations": {VM_CPUS: "lots"}})).unwrap_err();
        assert!(err.contains(VM_CPUS) && err.contains("\"lots\""), "{err}");
        let err = size_of(&json!({"annotations": {VM_MEMORY: "0"}})).unwrap_err();
        assert!(err.contains(VM_MEMORY), "{err}");
    }
}

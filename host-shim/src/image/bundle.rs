//! OCI runtime bundles: `DIR/config.json` and the root directory it names,
//! translated once, whole, for vminitd's container engine.
//!
//! [`container_spec`] translates the spec into the agent's
//! [`agent_proto::ContainerSpec`] (see [`container`]'s docs for what is
//! carried and what is refused), for an agent on this host or in a VM
//! ([`RootPlacement`]). [`Bundle::read`] is that translation for a VM, with
//! the root directory the VM's root filesystem is made from: `vmshim
//! runtime` and `vmshim run --bundle` both run a bundle that way, so a
//! bundle one runs the other runs too. The bundle's `process` (and a
//! `process.json`, `vmshim runtime exec --process`) is read by one
//! translation, [`process`]'s.

mod container;
mod process;

use std::path::{Path, PathBuf};

use agent_proto::ContainerSpec;
use serde_json::Value;

use super::ImageError;
use crate::vm::virtiofs::SharedPath;
pub use container::{container_spec, resources_from_json, RootPlacement};
pub(crate) use process::{process_spec, unsupported_process_fields};

/// A bundle read for a container in a VM: its spec as the VM's agent takes
/// it ([`RootPlacement::Guest`]), its root directory on this host, and the
/// host paths its bind mounts take from the VM's share.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle's root directory (`root.path`, relative to the bundle or
    /// absolute), an absolute path: what the VM's root filesystem image is
    /// made from.
    pub rootfs: PathBuf,
    /// The container to create in the VM.
    pub spec: ContainerSpec,
    /// The host files and directories the VM shares (virtio-fs), in order:
    /// the spec's bind mount of the Nth is a bind from
    /// [`crate::vm::virtiofs::SharedPath::guest_path`]`(N)`.
    pub shares: Vec<SharedPath>,
}

impl Bundle {
    /// Reads `dir/config.json` for container `id` in a VM; refuses, naming
    /// every field, what the protocol cannot carry and what names the host
    /// beyond its files (namespaces joined by path).
    pub fn read(dir: &Path, id: &str) -> Result<Bundle, ImageError> {
        let (spec, rootfs, shares) = container::translate(dir, id, RootPlacement::Guest)?;
        Ok(Bundle { rootfs, spec, shares })
    }

    /// [`Bundle::read`] for a container of a pod, created in its sandbox's
    /// VM: namespaces joined by path are carried as they are (the pod's
    /// code maps those of the sandbox into the guest and refuses others).
    pub fn read_pod_member(dir: &Path, id: &str) -> Result<Bundle, ImageError> {
        let (spec, rootfs, shares) = container::translate_with(dir, id, RootPlacement::Guest, true)?;
        Ok(Bundle { rootfs, spec, shares })
    }
}

/// `dir/config.json`'s path and its JSON.
fn read_config(dir: &Path) -> Result<(PathBuf, Value), ImageError> {
    let path = dir.join("config.json");
    let text = std::fs::read(&path).map_err(|e| bad(&path, format!("cannot read: {e}")))?;
    let value = serde_json::from_slice(&text).map_err(|e| bad(&path, format!("not JSON: {e}")))?;
    Ok((path, value))
}

/// Reads `value` (found at `at` in the spec) as a `T`; a value of the
/// wrong type is named by its place: `process.user.uid: invalid type: map,
/// expected u32`.
fn typed<T: serde::de::DeserializeOwned>(value: Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let place = match (at, inner.as_str()) {
            (at, ".") => at.to_owned(),
            ("", inner) => inner.to_owned(),
            (at, inner) if inner.starts_with('[') => format!("{at}{inner}"),
            (at, inner) => format!("{at}.{inner}"),
        };
        let error = e.into_inner();
        if place.is_empty() {
            error.to_string()
        } else {
            format!("{place}: {error}")
        }
    })
}

/// A bundle that cannot be read, or that says something wrong.
fn bad(path: &Path, detail: String) -> ImageError {
    ImageError::BadBundle {
        path: path.to_path_buf(),
        detail,
    }
}

/// Pushes `PREFIX.KEY` for each field of `value` outside `allowed` that
/// asks for something.
fn only(value: &Value, prefix: &str, allowed: &[&str], out: &mut Vec<String>) {
    for (key, v) in value.as_object().into_iter().flatten() {
        if !allowed.contains(&key.as_str()) && asks(Some(v)) {
            out.push(format!("{prefix}.{key}"));
        }
    }
}

/// Whether a value asks for anything: not absent, null, false, {} or [].
fn asks(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// The items of an array value; none for anything else.
fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use agent_proto::GUEST_ROOTFS;
    use serde_json::json;

    #[test]
    fn a_bundle_for_a_vm_is_its_spec_and_its_root_on_this_host() {
        let t = TestDir::new("bundle-read");
        let spec = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
            "hostname": "box",
            "linux": {"maskedPaths": ["/proc/kcore"]}
        });
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        let b = Bundle::read(t.path(), "c1").unwrap();
        assert_eq!(b.rootfs, std::path::absolute(t.path()).unwrap().join("rootfs"));
        assert_eq!(b.spec, container_spec(t.path(), "c1", RootPlacement::Guest).unwrap());
        assert_eq!((b.spec.root.as_str(), b.spec.readonly_root), (GUEST_ROOTFS, true));
        assert_eq!(b.spec.masked_paths, ["/proc/kcore"]);
        // An absolute root stays where it is.
        let mut spec = spec;
        spec["root"]["path"] = json!("/srv/root");
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        assert_eq!(Bundle::read(t.path(), "c1").unwrap().rootfs, Path::new("/srv/root"));
        assert!(b.shares.is_empty());
        // A bind mount of a host path is a share of the VM.
        std::fs::create_dir(t.path().join("data")).unwrap();
        spec["mounts"] = json!([{"destination": "/data", "type": "bind", "source": "data", "options": ["bind"]}]);
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        let b = Bundle::read(t.path(), "c1").unwrap();
        assert_eq!(b.shares.len(), 1);
        assert_eq!(b.shares[0].source, std::path::absolute(t.path()).unwrap().join("data"));
        assert_eq!(b.spec.mounts[0].source.as_deref(), Some("/run/vminitd/shares/0"));
        // What a VM cannot carry is refused, as for the runtime.
        spec["linux"]["intelRdt"] = json!({"closID": "c"});
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        let err = Bundle::read(t.path(), "c1").unwrap_err().to_string();
        assert!(err.contains("linux.intelRdt"), "{err}");
    }
}

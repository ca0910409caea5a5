//! OCI runtime bundles: `DIR/config.json` and the root directory it names,
//! read two ways.
//!
//! [`container_spec`] translates the whole spec into the agent's
//! [`agent_proto::ContainerSpec`], for `vmshim runtime` (see
//! [`container`]'s docs for what is carried and what is refused).
//!
//! [`load_bundle`] (`vmshim run --bundle`) takes the root and the process
//! only, and runs it as a plain process in its root (mount namespace,
//! `pivot_root`) inside a kernel of its own, so some of what a spec asks
//! for is simply what the VM is. Exactly this is accepted:
//!
//! * `ociVersion` 1.x, `annotations` (informational), `hostname` (the VM's
//!   host name unless `--name` is given);
//! * `root.path` (relative to the bundle, or absolute), `root.readonly`
//!   false or absent (the guest puts a writable overlay over the root);
//! * `process.args`, `env`, `cwd`, `terminal`, `user.uid`, `user.gid`,
//!   `user.additionalGids`, `user.umask`, `capabilities`, `rlimits`,
//!   `noNewPrivileges` and `oomScoreAdj` (applied by the agent between fork
//!   and exec; unknown capability or rlimit names are refused there);
//! * `linux.seccomp`: `defaultAction`, `defaultErrnoRet`, `architectures`
//!   and `syscalls` (`names`, `action`, `errnoRet`, `args`), compiled by
//!   the agent (x86_64 syscalls only; unknown names, actions and
//!   comparisons are refused there); `flags` and `listenerPath` are not;
//! * `linux.namespaces` of types pid, network, ipc, uts, mount and cgroup,
//!   without `path`: the VM's own kernel isolates all of those from the host;
//! * `mounts` that are the defaults the guest provides: `/proc` (proc),
//!   `/sys` (sysfs), `/dev` (tmpfs: the guest's `/dev`), `/dev/pts` (devpts),
//!   `/dev/shm` (tmpfs); their options are not applied.
//!
//! Anything else that asks for something (a value other than null, false,
//! `{}` or `[]`) is refused with an error naming every such field:
//! AppArmor and SELinux labels, seccomp flags and listeners, resources, masked and read-only
//! paths, hooks, user namespaces and id mappings, sysctls, other mounts,
//! .... A stock `runc spec` asks for several of those (`root.readonly`,
//! masked paths, a device cgroup, `/dev/mqueue` and `/sys/fs/cgroup`
//! mounts), so `run --bundle` refuses it; `vmshim runtime` takes it.

mod container;

use std::path::{Path, PathBuf};

use agent_proto::{Capabilities, Rlimit, Seccomp, SeccompArg, SeccompRule, User};
use oci_spec::runtime::Spec;
use serde_json::Value;

use super::{ImageError, ProcessDefaults};
pub(crate) use container::PROCESS_FIELDS;
pub use container::{container_spec, resources_from_json, RootPlacement};

/// Namespaces the VM provides by being a VM.
const NAMESPACES: [&str; 6] = ["pid", "network", "ipc", "uts", "mount", "cgroup"];
/// The mounts the guest makes in every root: destination and type.
const MOUNTS: [(&str, &[&str]); 5] = [
    ("/proc", &["proc"]),
    ("/sys", &["sysfs"]),
    ("/dev", &["tmpfs", "devtmpfs"]),
    ("/dev/pts", &["devpts"]),
    ("/dev/shm", &["tmpfs"]),
];

/// A bundle, read and checked.
#[derive(Debug)]
pub struct Bundle {
    /// The root filesystem directory.
    pub rootfs: PathBuf,
    pub defaults: ProcessDefaults,
    pub hostname: Option<String>,
}

/// Reads `dir/config.json`; refuses a spec that asks for what the VM does
/// not honour, naming the fields.
pub fn load_bundle(dir: &Path) -> Result<Bundle, ImageError> {
    let (path, value) = read_config(dir)?;
    let unsupported = unsupported_fields(&value);
    if !unsupported.is_empty() {
        return Err(ImageError::UnsupportedSpec {
            path,
            fields: unsupported,
        });
    }
    let parsed = parse(&path, value)?;
    Ok(Bundle {
        rootfs: dir.join(
            parsed
                .spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default(),
        ),
        hostname: parsed.spec.hostname().clone().filter(|h| !h.is_empty()),
        defaults: parsed.defaults,
    })
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

fn bad(path: &Path, detail: String) -> ImageError {
    ImageError::BadBundle {
        path: path.to_path_buf(),
        detail,
    }
}

/// A spec read whole: the typed spec and its process, as the agent takes
/// it.
struct Parsed {
    spec: Spec,
    defaults: ProcessDefaults,
}

/// Parses `value` (read from `path`): the spec's version, root and process
/// checked, the process's attributes and seccomp profile read as written
/// (the agent checks the names).
fn parse(path: &Path, value: Value) -> Result<Parsed, ImageError> {
    let attributes = value
        .get("process")
        .map(ProcessAttributes::from_json)
        .transpose()
        .map_err(|e| bad(path, e))?
        .unwrap_or_default();
    let seccomp = value
        .get("linux")
        .and_then(|l| l.get("seccomp"))
        .filter(|s| !s.is_null())
        .map(seccomp_from_json)
        .transpose()
        .map_err(|e| bad(path, e))?;
    let spec: Spec = typed(value, "").map_err(|e| bad(path, format!("not a runtime spec: {e}")))?;
    if !spec.version().starts_with("1.") {
        return Err(bad(
            path,
            format!("ociVersion {:?}: only 1.x is supported", spec.version()),
        ));
    }
    if spec.root().is_none() {
        return Err(bad(path, "no root.path".into()));
    }
    let process = spec.process().as_ref().ok_or_else(|| bad(path, "no process".into()))?;
    let args = process.args().clone().unwrap_or_default();
    let cwd = process.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(bad(path, format!("process.cwd {cwd:?} is not an absolute path")));
    }
    let user = process.user();
    let defaults = ProcessDefaults {
        entrypoint: Vec::new(),
        cmd: args,
        env: process.env().clone().unwrap_or_default(),
        cwd: Some(cwd),
        user: Some(User {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        }),
        terminal: process.terminal().unwrap_or(false),
        umask: attributes.umask,
        rlimits: attributes.rlimits,
        no_new_privileges: attributes.no_new_privileges,
        capabilities: attributes.capabilities,
        oom_score_adj: attributes.oom_score_adj,
        seccomp,
    };
    Ok(Parsed { spec, defaults })
}

/// The attributes of `process` that the agent applies between fork and
/// exec, read from the JSON itself so that names reach the agent as
/// written (the agent checks them).
#[derive(Debug, Default)]
struct ProcessAttributes {
    umask: Option<u32>,
    rlimits: Vec<Rlimit>,
    no_new_privileges: bool,
    capabilities: Option<Capabilities>,
    oom_score_adj: Option<i32>,
}

impl ProcessAttributes {
    fn from_json(process: &Value) -> Result<ProcessAttributes, String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default)]
            user: Option<RawUser>,
            #[serde(default)]
            rlimits: Option<Vec<RawRlimit>>,
            #[serde(default)]
            no_new_privileges: Option<bool>,
            #[serde(default)]
            capabilities: Option<RawCapabilities>,
            #[serde(default)]
            oom_score_adj: Option<i32>,
        }
        #[derive(serde::Deserialize)]
        struct RawUser {
            #[serde(default)]
            umask: Option<u32>,
        }
        #[derive(serde::Deserialize)]
        struct RawRlimit {
            #[serde(rename = "type")]
            kind: String,
            soft: u64,
            hard: u64,
        }
        #[derive(serde::Deserialize)]
        struct RawCapabilities {
            bounding: Option<Vec<String>>,
            effective: Option<Vec<String>>,
            inheritable: Option<Vec<String>>,
            permitted: Option<Vec<String>>,
            ambient: Option<Vec<String>>,
        }
        let raw: Raw = typed(process.clone(), "process")?;
        Ok(ProcessAttributes {
            umask: raw.user.and_then(|u| u.umask),
            rlimits: raw
                .rlimits
                .unwrap_or_default()
                .into_iter()
                .map(|r| Rlimit {
                    kind: r.kind,
                    soft: r.soft,
                    hard: r.hard,
                })
                .collect(),
            no_new_privileges: raw.no_new_privileges.unwrap_or(false),
            capabilities: raw.capabilities.map(|c| Capabilities {
                bounding: c.bounding.unwrap_or_default(),
                effective: c.effective.unwrap_or_default(),
                inheritable: c.inheritable.unwrap_or_default(),
                permitted: c.permitted.unwrap_or_default(),
                ambient: c.ambient.unwrap_or_default(),
            }),
            oom_score_adj: raw.oom_score_adj,
        })
    }
}

/// `linux.seccomp` as the agent takes it; names are checked there.
fn seccomp_from_json(value: &Value) -> Result<Seccomp, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        default_action: String,
        #[serde(default)]
        default_errno_ret: Option<u32>,
        #[serde(default)]
        architectures: Option<Vec<String>>,
        #[serde(default)]
        syscalls: Option<Vec<RawRule>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawRule {
        names: Vec<String>,
        action: String,
        #[serde(default)]
        errno_ret: Option<u32>,
        #[serde(default)]
        args: Option<Vec<RawArg>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawArg {
        index: u32,
        value: u64,
        #[serde(default)]
        value_two: u64,
        op: String,
    }
    let raw: Raw = typed(value.clone(), "linux.seccomp")?;
    Ok(Seccomp {
        default_action: raw.default_action,
        default_errno_ret: raw.default_errno_ret,
        architectures: raw.architectures.unwrap_or_default(),
        syscalls: raw
            .syscalls
            .unwrap_or_default()
            .into_iter()
            .map(|r| SeccompRule {
                names: r.names,
                action: r.action,
                errno_ret: r.errno_ret,
                args: r
                    .args
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| SeccompArg {
                        index: a.index,
                        value: a.value,
                        value_two: a.value_two,
                        op: a.op,
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// Every field of `spec` that asks for what the VM does not honour, with
/// why, in document order.
fn unsupported_fields(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(top) = spec.as_object() else {
        return vec!["the spec is not a JSON object".into()];
    };
    for (key, value) in top {
        match key.as_str() {
            "ociVersion" | "annotations" | "hostname" => {}
            "root" => only(value, "root", &["path"], &mut out),
            "process" => {
                const PROCESS: [&str; 9] = [
                    "terminal",
                    "user",
                    "args",
                    "env",
                    "cwd",
                    "capabilities",
                    "rlimits",
                    "noNewPrivileges",
                    "oomScoreAdj",
                ];
                only(value, "process", &PROCESS, &mut out);
                if let Some(user) = value.get("user") {
                    only(
                        user,
                        "process.user",
                        &["uid", "gid", "additionalGids", "umask"],
                        &mut out,
                    );
                }
            }
            "linux" => {
                only(value, "linux", &["namespaces", "seccomp"], &mut out);
                if let Some(seccomp) = value.get("seccomp") {
                    only(
                        seccomp,
                        "linux.seccomp",
                        &["defaultAction", "defaultErrnoRet", "architectures", "syscalls"],
                        &mut out,
                    );
                }
                for (i, ns) in array(value.get("namespaces")).iter().enumerate() {
                    let kind = ns.get("type").and_then(Value::as_str).unwrap_or("");
                    if !NAMESPACES.contains(&kind) {
                        out.push(format!("linux.namespaces[{i}] ({kind:?}: not provided by the VM)"));
                    } else if asks(ns.get("path")) {
                        out.push(format!("linux.namespaces[{i}].path (joining a namespace)"));
                    }
                }
            }
            "mounts" => {
                for (i, m) in array(Some(value)).iter().enumerate() {
                    let dest = m.get("destination").and_then(Value::as_str).unwrap_or("");
                    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                    let default = MOUNTS.iter().any(|(d, types)| *d == dest && types.contains(&kind));
                    if !default {
                        out.push(format!("mounts[{i}] ({dest} type {kind:?}: only the default mounts)"));
                    }
                }
            }
            _ if asks(Some(value)) => out.push(key.clone()),
            _ => {}
        }
    }
    out
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

fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": false},
            "process": {
                "terminal": false,
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
                "args": ["sh", "-c", "id"],
                "env": ["PATH=/bin", "A=1"],
                "cwd": "/tmp",
                "noNewPrivileges": false
            },
            "hostname": "box",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}], "resources": {}}
        })
    }

    fn load(spec: &Value) -> Result<Bundle, ImageError> {
        let t = TestDir::new("bundle");
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        load_bundle(t.path())
    }

    #[test]
    fn a_minimal_spec_maps_onto_the_process() {
        let b = load(&minimal()).unwrap();
        assert!(b.rootfs.ends_with("rootfs"));
        assert_eq!(b.defaults.cmd, ["sh", "-c", "id"]);
        assert_eq!(b.defaults.cwd.as_deref(), Some("/tmp"));
        let user = b.defaults.user.unwrap();
        assert_eq!((user.uid, user.gid, user.additional_gids), (1000, 1000, vec![5]));
        assert_eq!(b.hostname.as_deref(), Some("box"));
        assert_eq!(b.defaults.capabilities, None);
        assert!(b.defaults.rlimits.is_empty() && !b.defaults.no_new_privileges);
    }

    #[test]
    fn process_attributes_map_onto_the_process() {
        let mut spec = minimal();
        spec["process"]["user"]["umask"] = json!(0o027);
        spec["process"]["noNewPrivileges"] = json!(true);
        spec["process"]["oomScoreAdj"] = json!(500);
        spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}]);
        spec["process"]["capabilities"] = json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_CHOWN"],
            "permitted": ["CAP_CHOWN"],
            "ambient": []
        });
        let d = load(&spec).unwrap().defaults;
        assert_eq!(d.umask, Some(0o027));
        assert!(d.no_new_privileges);
        assert_eq!(d.oom_score_adj, Some(500));
        assert_eq!(
            d.rlimits,
            [Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        let caps = d.capabilities.clone().unwrap();
        assert_eq!(caps.bounding, ["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!((caps.effective.len(), caps.inheritable.len()), (1, 0));
        // They reach the process spec under the user's flags.
        let p = d.under(agent_proto::ProcessSpec::default());
        assert_eq!(
            (p.umask, p.oom_score_adj, p.no_new_privileges),
            (Some(0o027), Some(500), true)
        );
        assert_eq!(p.capabilities, Some(caps));
        assert_eq!(p.rlimits.len(), 1);
    }

    #[test]
    fn seccomp_maps_onto_the_process() {
        let mut spec = minimal();
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        });
        let s = load(&spec).unwrap().defaults.seccomp.unwrap();
        assert_eq!(
            (s.default_action.as_str(), s.default_errno_ret),
            ("SCMP_ACT_ERRNO", Some(38))
        );
        assert_eq!(s.architectures.len(), 3);
        assert_eq!(s.syscalls.len(), 3);
        assert_eq!(s.syscalls[0].names, ["read", "write"]);
        assert_eq!(
            s.syscalls[1].args,
            [SeccompArg {
                index: 0,
                value: 8,
                value_two: 0,
                op: "SCMP_CMP_EQ".into()
            }]
        );
        assert_eq!(s.syscalls[2].errno_ret, Some(1));
        let p = load(&spec).unwrap().defaults.under(agent_proto::ProcessSpec::default());
        assert_eq!(p.seccomp, Some(Box::new(s)));
    }

    #[test]
    fn unsupported_fields_are_named() {
        let mut spec = minimal();
        spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/x"});
        spec["linux"]["namespaces"] = json!([{"type": "user"}, {"type": "network", "path": "/proc/1/ns/net"}]);
        spec["process"]["apparmorProfile"] = json!("docker-default");
        spec["root"]["readonly"] = json!(true);
        spec["mounts"] = json!([{"destination": "/data", "type": "bind", "source": "/srv"}]);
        spec["hooks"] = json!({"prestart": [{"path": "/bin/true"}]});
        let err = load(&spec).unwrap_err().to_string();
        for field in [
            "linux.seccomp.listenerPath",
            "linux.namespaces[0] (\"user\"",
            "linux.namespaces[1].path",
            "process.apparmorProfile",
            "root.readonly",
            "mounts[0] (/data",
            "hooks",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
    }
}

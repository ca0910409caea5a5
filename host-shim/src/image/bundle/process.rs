//! An OCI `process` as the agent's [`ProcessSpec`]: the one translation of
//! a process's fields, for a bundle's `config.json` (a container's process)
//! and for a `process.json` (a process that joins one). Names are passed on
//! as written (capabilities, rlimits, seccomp actions): the agent checks
//! them.

use agent_proto::{Capabilities, ProcessSpec, Rlimit, Seccomp, SeccompArg, SeccompRule, User, WindowSize};
use serde_json::Value;

use super::{asks, typed};

/// The fields of an OCI `process` the agent carries.
pub(crate) const PROCESS_FIELDS: [&str; 10] = [
    "terminal",
    "consoleSize",
    "user",
    "args",
    "env",
    "cwd",
    "capabilities",
    "rlimits",
    "noNewPrivileges",
    "oomScoreAdj",
];

/// The fields of an OCI `process.user` the agent carries.
pub(crate) const USER_FIELDS: [&str; 4] = ["uid", "gid", "additionalGids", "umask"];

/// The fields of an OCI `process` that are not the agent's to apply, and
/// are left out: `commandLine` is Windows' (runc ignores it too), and the
/// LSM labels are the host's policy, which podman and docker write where
/// the host has AppArmor or SELinux. A VM's kernel has neither, and the VM
/// is the boundary (gVisor and Kata Containers leave them out too); the
/// agent on this host refuses them ([`lsm_fields`]), as it cannot apply them.
pub(crate) const IGNORED_PROCESS_FIELDS: [&str; 3] = ["commandLine", "apparmorProfile", "selinuxLabel"];

/// The LSM labels of a `process`, which the agent never applies.
pub(crate) const LSM_FIELDS: [&str; 2] = ["apparmorProfile", "selinuxLabel"];

/// The fields of `process` (relative to it: `ioPriority`,
/// `user.username`... ) that ask for what the agent cannot carry, in document
/// order. `user.username` is Windows' and is left out, as runc leaves it.
pub(crate) fn unsupported_process_fields(process: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in process.as_object().into_iter().flatten() {
        let known = PROCESS_FIELDS.contains(&key.as_str()) || IGNORED_PROCESS_FIELDS.contains(&key.as_str());
        if !known && asks(Some(value)) {
            out.push(key.clone());
        }
    }
    if let Some(user) = process.get("user").and_then(Value::as_object) {
        for (key, value) in user {
            if !USER_FIELDS.contains(&key.as_str()) && key != "username" && asks(Some(value)) {
                out.push(format!("user.{key}"));
            }
        }
    }
    out
}

/// The LSM labels `process` asks for ([`LSM_FIELDS`]), relative to it.
pub(crate) fn lsm_fields(process: &Value) -> Vec<String> {
    LSM_FIELDS
        .iter()
        .filter(|f| asks(process.get(**f)))
        .map(|f| f.to_string())
        .collect()
}

/// `process` (found at `at` in its document: `process` in a
/// `config.json`, nothing in a `process.json`) as the agent takes it, every
/// field of [`PROCESS_FIELDS`] read; a value of the wrong type is named by
/// its place. What the document leaves out is empty, zero or false; the
/// caller checks what it requires (an absolute `cwd`, `args`).
pub(crate) fn process_spec(process: &Value, at: &str) -> Result<ProcessSpec, String> {
    let raw: RawProcess = typed(process.clone(), at)?;
    let user = raw.user.unwrap_or_default();
    let caps = raw.capabilities;
    Ok(ProcessSpec {
        args: raw.args.unwrap_or_default(),
        env: raw.env.unwrap_or_default(),
        cwd: Some(raw.cwd.unwrap_or_default()),
        user: Some(User {
            uid: user.uid.unwrap_or(0),
            gid: user.gid.unwrap_or(0),
            additional_gids: user.additional_gids.unwrap_or_default(),
        }),
        terminal: raw.terminal.unwrap_or(false),
        size: raw.console_size.map(|s| WindowSize {
            rows: s.height,
            cols: s.width,
        }),
        umask: user.umask,
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
        capabilities: caps.map(|c| Capabilities {
            bounding: c.bounding.unwrap_or_default(),
            effective: c.effective.unwrap_or_default(),
            inheritable: c.inheritable.unwrap_or_default(),
            permitted: c.permitted.unwrap_or_default(),
            ambient: c.ambient.unwrap_or_default(),
        }),
        oom_score_adj: raw.oom_score_adj,
        ..ProcessSpec::default()
    })
}

/// `linux.seccomp` as the agent takes it (the process's filter); names are
/// checked there. No `defaultAction` and no `syscalls` is no filter, as
/// runc reads it.
pub(crate) fn seccomp_spec(value: &Value) -> Result<Option<Seccomp>, String> {
    let raw: RawSeccomp = typed(value.clone(), "linux.seccomp")?;
    if raw.default_action.is_empty() && raw.syscalls.as_ref().is_none_or(Vec::is_empty) {
        return Ok(None);
    }
    Ok(Some(Seccomp {
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
    }))
}

/// An OCI `process`, the fields the agent carries. Every field may be
/// absent or null, as the spec's typed parse allows.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProcess {
    #[serde(default)]
    terminal: Option<bool>,
    #[serde(default)]
    console_size: Option<RawSize>,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    capabilities: Option<RawCapabilities>,
    #[serde(default)]
    rlimits: Option<Vec<RawRlimit>>,
    #[serde(default)]
    no_new_privileges: Option<bool>,
    #[serde(default)]
    oom_score_adj: Option<i32>,
}

/// `process.consoleSize`.
#[derive(serde::Deserialize)]
struct RawSize {
    height: u16,
    width: u16,
}

/// `process.user`.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    additional_gids: Option<Vec<u32>>,
    #[serde(default)]
    umask: Option<u32>,
}

/// One of `process.rlimits`.
#[derive(serde::Deserialize)]
struct RawRlimit {
    #[serde(rename = "type")]
    kind: String,
    soft: u64,
    hard: u64,
}

/// `process.capabilities`: each set as written.
#[derive(serde::Deserialize)]
struct RawCapabilities {
    #[serde(default)]
    bounding: Option<Vec<String>>,
    #[serde(default)]
    effective: Option<Vec<String>>,
    #[serde(default)]
    inheritable: Option<Vec<String>>,
    #[serde(default)]
    permitted: Option<Vec<String>>,
    #[serde(default)]
    ambient: Option<Vec<String>>,
}

/// `linux.seccomp`, the fields the agent carries.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSeccomp {
    #[serde(default)]
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    syscalls: Option<Vec<RawRule>>,
}

/// One of `linux.seccomp.syscalls`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<RawArg>>,
}

/// One of a rule's `args`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_carried_field_maps_onto_the_process() {
        let process = json!({
            "terminal": true,
            "consoleSize": {"height": 24, "width": 80},
            "user": {"uid": 1000, "gid": 1001, "additionalGids": [5], "umask": 23},
            "args": ["sh", "-c", "id"],
            "env": ["PATH=/bin", "A=1"],
            "cwd": "/tmp",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN"],
                "ambient": []
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}],
            "noNewPrivileges": true,
            "oomScoreAdj": 500
        });
        let p = process_spec(&process, "process").unwrap();
        assert_eq!(p.args, ["sh", "-c", "id"]);
        assert_eq!(p.env, ["PATH=/bin", "A=1"]);
        assert_eq!(p.cwd.as_deref(), Some("/tmp"));
        assert_eq!(
            p.user,
            Some(User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![5]
            })
        );
        assert_eq!((p.terminal, p.size), (true, Some(WindowSize { rows: 24, cols: 80 })));
        assert_eq!(
            (p.umask, p.no_new_privileges, p.oom_score_adj),
            (Some(23), true, Some(500))
        );
        assert_eq!(
            p.rlimits,
            [Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        let caps = p.capabilities.unwrap();
        assert_eq!(caps.bounding, ["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!((caps.effective.len(), caps.inheritable.len()), (1, 0));
        assert!(unsupported_process_fields(&process).is_empty());
        // Nulls are absences, as the spec's typed parse reads them.
        let p = process_spec(&json!({"args": ["true"], "env": null, "rlimits": null}), "").unwrap();
        assert_eq!((p.env.len(), p.rlimits.len(), p.capabilities), (0, 0, None));
    }

    #[test]
    fn what_is_not_carried_is_named_and_wrong_types_by_their_place() {
        let process = json!({
            "args": ["true"],
            "apparmorProfile": "docker-default",
            "selinuxLabel": null,
            "commandLine": "true.exe",
            "ioPriority": {"class": "IOPRIO_CLASS_IDLE"},
            "user": {"uid": 0, "gid": 0, "username": "root", "additionalGids": null}
        });
        assert_eq!(unsupported_process_fields(&process), ["ioPriority"]);
        assert_eq!(lsm_fields(&process), ["apparmorProfile"]);
        let err = process_spec(&json!({"user": {"uid": "root"}}), "process").unwrap_err();
        assert!(err.starts_with("process.user.uid: invalid type"), "{err}");
        let err = process_spec(&json!({"consoleSize": {"height": 70000, "width": 1}}), "").unwrap_err();
        assert!(err.starts_with("consoleSize.height: "), "{err}");
    }

    #[test]
    fn seccomp_maps_onto_the_process() {
        let s = seccomp_spec(&json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        }))
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.default_action.as_str(), s.default_errno_ret),
            ("SCMP_ACT_ERRNO", Some(38))
        );
        assert_eq!((s.architectures.len(), s.syscalls.len()), (3, 3));
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
        // No default action and no rules: no filter, as runc reads it.
        assert_eq!(seccomp_spec(&json!({"syscalls": []})), Ok(None));
        assert_eq!(seccomp_spec(&json!({"defaultAction": ""})), Ok(None));
        // Rules without a default action: the agent refuses the action "".
        let s = seccomp_spec(&json!({"syscalls": [{"action": "SCMP_ACT_ALLOW"}]}))
            .unwrap()
            .unwrap();
        assert_eq!((s.default_action.as_str(), s.syscalls[0].names.len()), ("", 0));
        let err = seccomp_spec(&json!({"defaultAction": 7})).unwrap_err();
        assert!(err.contains("defaultAction"), "{err}");
    }
}

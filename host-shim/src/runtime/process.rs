//! The process `exec` runs in a container, built as runc's `exec` builds
//! it: from the flags over the bundle's `process` (its env, cwd, user,
//! capabilities, rlimits, `noNewPrivileges`, ... with the flags' changes),
//! or from a `process.json` whose missing capabilities and rlimits are the
//! container's. The container's seccomp filter applies to it either way.

use std::path::Path;

use agent_proto::{Capabilities, ProcessSpec, User};
use serde_json::Value;

use crate::image::{process_spec, unsupported_process_fields};

/// `exec`'s flags that describe the process, as runc takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecFlags {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `--cwd`.
    pub cwd: Option<String>,
    /// `--env K=V`, each appended (an entry replaces the one of its key).
    pub env: Vec<String>,
    /// `--tty`: a terminal (none without it, whatever the bundle says).
    pub tty: bool,
    /// `--user UID[:GID]`; the bundle's group when no GID is given.
    pub user: Option<String>,
    /// `--additional-gids`, appended to the bundle's.
    pub additional_gids: Vec<i64>,
    /// `--no-new-privs`.
    pub no_new_privileges: Option<bool>,
    /// `--cap`: added to the bounding, effective, permitted and ambient sets.
    pub caps: Vec<String>,
}

/// `process` (the container's, from its bundle) changed by `flags`, as
/// runc's `getProcess` changes it.
pub fn from_flags(mut process: ProcessSpec, flags: &ExecFlags) -> Result<ProcessSpec, String> {
    if flags.args.is_empty() {
        return Err("process args cannot be empty".into());
    }
    process.args = flags.args.clone();
    if let Some(cwd) = flags.cwd.as_ref().filter(|c| !c.is_empty()) {
        process.cwd = Some(cwd.clone());
    }
    if !flags.caps.is_empty() {
        let caps = process.capabilities.get_or_insert_with(Capabilities::default);
        for cap in &flags.caps {
            for set in [
                &mut caps.bounding,
                &mut caps.effective,
                &mut caps.permitted,
                &mut caps.ambient,
            ] {
                set.push(cap.clone());
            }
        }
    }
    for entry in &flags.env {
        set_env(&mut process.env, entry);
    }
    process.terminal = flags.tty;
    if let Some(nnp) = flags.no_new_privileges {
        process.no_new_privileges = nnp;
    }
    if let Some(user) = flags.user.as_deref().filter(|u| !u.is_empty()) {
        let current = process.user.get_or_insert_with(User::default);
        let (uid, gid) = match user.split_once(':') {
            Some((uid, gid)) => (uid, Some(gid)),
            None => (user, None),
        };
        if let Some(gid) = gid {
            current.gid = gid
                .parse()
                .map_err(|e| format!("parsing {gid} as int for gid failed: {e}"))?;
        }
        current.uid = uid
            .parse()
            .map_err(|e| format!("parsing {uid} as int for uid failed: {e}"))?;
    }
    for &gid in &flags.additional_gids {
        let gid = u32::try_from(gid).map_err(|_| format!("additional-gids must be a positive number {gid}"))?;
        process.user.get_or_insert_with(User::default).additional_gids.push(gid);
    }
    validate(&process)?;
    Ok(process)
}

/// The process of the `process.json` at `path`, read as a bundle's
/// `process` is ([`crate::image`]'s one translation of a process); what it
/// leaves out of the capabilities, rlimits and seccomp filter is
/// `container`'s (the container's process), as libcontainer fills them in.
pub fn from_file(path: &Path, container: &ProcessSpec) -> Result<ProcessSpec, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let refused = unsupported_process_fields(&value);
    if !refused.is_empty() {
        return Err(format!(
            "{}: the VM's agent cannot carry {}",
            path.display(),
            refused.join(", ")
        ));
    }
    let mut process = process_spec(&value, "").map_err(|e| format!("{}: {e}", path.display()))?;
    if process.rlimits.is_empty() {
        process.rlimits = container.rlimits.clone();
    }
    process.capabilities = process.capabilities.or_else(|| container.capabilities.clone());
    process.seccomp = container.seccomp.clone();
    // The container's annotation decides, in the agent.
    process.allow_vsock = false;
    validate(&process)?;
    Ok(process)
}

/// runc's `validateProcessSpec`.
fn validate(process: &ProcessSpec) -> Result<(), String> {
    match process.cwd.as_deref() {
        None | Some("") => return Err("Cwd property must not be empty".into()),
        Some(cwd) if !cwd.starts_with('/') => return Err("Cwd must be an absolute path".into()),
        Some(_) => {}
    }
    if process.args.is_empty() {
        return Err("args must not be empty".into());
    }
    Ok(())
}

/// Sets `entry` (`K=V`) in `env`, replacing an entry of the same key.
fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let wanted = key(entry);
    env.retain(|e| key(e) != wanted);
    env.push(entry.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use agent_proto::{Rlimit, WindowSize};

    /// A container's process as a bundle would give it.
    fn container() -> ProcessSpec {
        ProcessSpec {
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            cwd: Some("/srv".into()),
            user: Some(User {
                uid: 5,
                gid: 6,
                additional_gids: vec![7],
            }),
            terminal: true,
            size: Some(WindowSize { rows: 24, cols: 80 }),
            umask: Some(0o22),
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 64,
                hard: 64,
            }],
            no_new_privileges: true,
            capabilities: Some(Capabilities {
                bounding: vec!["CAP_KILL".into()],
                ..Default::default()
            }),
            oom_score_adj: Some(10),
            seccomp: Some(Box::default()),
            ..Default::default()
        }
    }

    #[test]
    fn flags_change_the_containers_process_as_runc_does() {
        let flags = ExecFlags {
            args: vec!["env".into()],
            env: vec!["A=2".into(), "B=3".into()],
            ..Default::default()
        };
        let p = from_flags(container(), &flags).unwrap();
        assert_eq!(p.args, ["env"]);
        assert_eq!(p.env, ["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(p.cwd.as_deref(), Some("/srv"));
        assert!(!p.terminal, "no terminal without --tty");
        // The rest is the container's.
        let c = container();
        assert_eq!(
            (&p.user, &p.rlimits, &p.capabilities),
            (&c.user, &c.rlimits, &c.capabilities)
        );
        assert_eq!(
            (p.umask, p.no_new_privileges, p.seccomp.is_some()),
            (c.umask, true, true)
        );

        let flags = ExecFlags {
            args: vec!["id".into()],
            cwd: Some("/tmp".into()),
            tty: true,
            user: Some("1000".into()),
            additional_gids: vec![9],
            no_new_privileges: Some(false),
            caps: vec!["CAP_NET_RAW".into()],
            ..Default::default()
        };
        let p = from_flags(container(), &flags).unwrap();
        assert_eq!(
            (p.cwd.as_deref(), p.terminal, p.no_new_privileges),
            (Some("/tmp"), true, false)
        );
        assert_eq!(
            p.user,
            Some(User {
                uid: 1000,
                gid: 6,
                additional_gids: vec![7, 9]
            })
        );
        let caps = p.capabilities.unwrap();
        assert_eq!(caps.bounding, ["CAP_KILL", "CAP_NET_RAW"]);
        assert_eq!(
            (caps.effective.len(), caps.ambient.len(), caps.inheritable.len()),
            (1, 1, 0)
        );
        let p = from_flags(
            container(),
            &ExecFlags {
                args: vec!["id".into()],
                user: Some("1:2".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.user.map(|u| (u.uid, u.gid)), Some((1, 2)));
    }

    #[test]
    fn bad_flags_as_runc_words_them() {
        let with = |f: ExecFlags| from_flags(container(), &f).unwrap_err();
        assert_eq!(with(ExecFlags::default()), "process args cannot be empty");
        let args = vec!["true".into()];
        let err = with(ExecFlags {
            args: args.clone(),
            user: Some("root".into()),
            ..Default::default()
        });
        assert!(err.starts_with("parsing root as int for uid failed"), "{err}");
        let err = with(ExecFlags {
            args: args.clone(),
            additional_gids: vec![-1],
            ..Default::default()
        });
        assert_eq!(err, "additional-gids must be a positive number -1");
        let err = with(ExecFlags {
            args,
            cwd: Some("rel".into()),
            ..Default::default()
        });
        assert_eq!(err, "Cwd must be an absolute path");
    }

    #[test]
    fn a_process_file_with_the_containers_defaults() {
        let t = TestDir::new("exec-process");
        let path = t.path().join("process.json");
        let write = |v: Value| std::fs::write(&path, v.to_string()).unwrap();
        write(serde_json::json!({
            "terminal": true,
            "consoleSize": {"height": 10, "width": 20},
            "user": {"uid": 3, "gid": 4, "umask": 63},
            "args": ["sh", "-c", "id"],
            "env": ["X=1"],
            "cwd": "/",
            "noNewPrivileges": true
        }));
        let p = from_file(&path, &container()).unwrap();
        assert_eq!((p.args.len(), p.env.as_slice()), (3, &["X=1".to_owned()][..]));
        assert_eq!((p.terminal, p.size), (true, Some(WindowSize { rows: 10, cols: 20 })));
        assert_eq!((p.umask, p.no_new_privileges, p.oom_score_adj), (Some(63), true, None));
        assert_eq!(p.user.map(|u| (u.uid, u.gid)), Some((3, 4)));
        // Left out: the container's capabilities, rlimits and seccomp.
        let c = container();
        assert_eq!((&p.capabilities, &p.rlimits), (&c.capabilities, &c.rlimits));
        assert!(p.seccomp.is_some());

        write(serde_json::json!({"args": ["true"], "cwd": ""}));
        assert_eq!(from_file(&path, &c).unwrap_err(), "Cwd property must not be empty");
        // The LSM labels (the guest kernel has neither AppArmor nor
        // SELinux) and Windows' user name are left out, as runc leaves them
        // where the host has no such LSM; what the agent cannot carry is
        // refused by name.
        write(serde_json::json!({"args": ["true"], "cwd": "/", "apparmorProfile": "x", "user": {"username": "u"}}));
        assert_eq!(from_file(&path, &c).unwrap().args, ["true"]);
        write(serde_json::json!({"args": ["true"], "cwd": "/", "ioPriority": {"class": "IOPRIO_CLASS_IDLE"}}));
        let err = from_file(&path, &c).unwrap_err();
        assert!(err.ends_with("the VM's agent cannot carry ioPriority"), "{err}");
        assert!(from_file(&t.path().join("none.json"), &c)
            .unwrap_err()
            .contains("none.json"));
    }
}

//! A [`ContainerSpec`] checked and turned into what the forked child needs:
//! mount flags parsed, paths made relative to the root, device numbers
//! encoded. Every refusal names the spec field.

use std::collections::BTreeMap;
use std::ffi::{c_ulong, CString};
use std::path::Path;

use agent_proto::{ContainerSpec, Device, Mount, VSOCK_ANNOTATION};

use crate::child::namespaces::{Kind, NamespaceError, NsPlan};
use crate::child::setup::{DeviceStep, MountStep, SetupPlan, TargetKind};
use crate::child::sysctl::{NewNamespaces, SysctlError, SysctlPlan};

/// Why a container spec is refused, naming the spec's field.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The container id has characters or a length runc refuses.
    #[error("container id {id:?} is invalid: 1 to 64 of A-Z a-z 0-9 _ . -, not starting with . or -")]
    BadId {
        /// As given.
        id: String,
    },
    /// `root.path` is relative.
    #[error("root.path {root:?} is not an absolute path")]
    BadRoot {
        /// As given.
        root: String,
    },
    /// `root.path` is not a directory.
    #[error("root.path {root:?} is not a directory the agent can see")]
    MissingRoot {
        /// As given.
        root: String,
    },
    /// The container's process names a root of its own.
    #[error("process.root must be absent in a container: its root is root.path")]
    ProcessRoot,
    /// A string of the spec has a NUL byte.
    #[error("{field} {value:?} contains a NUL byte")]
    Nul {
        /// The OCI field.
        field: String,
        /// Its value.
        value: String,
    },
    /// A mount option mount(8) does not know.
    #[error("mounts[{index}] ({destination}): unknown option {option:?}")]
    MountOption {
        /// The mount's index in `mounts`.
        index: usize,
        /// Its destination.
        destination: String,
        /// The option.
        option: String,
    },
    /// A mount's destination is relative.
    #[error("mounts[{index}]: destination {destination:?} is not an absolute path")]
    MountDestination {
        /// The mount's index in `mounts`.
        index: usize,
        /// Its destination.
        destination: String,
    },
    /// A bind mount's source is not there.
    #[error("mounts[{index}] ({destination}): a bind mount needs a source the agent can see: {source_path:?}: {why}")]
    BindSource {
        /// The mount's index in `mounts`.
        index: usize,
        /// Its destination.
        destination: String,
        /// Its source.
        source_path: String,
        /// Why it cannot be seen.
        why: String,
    },
    /// `linux.rootfsPropagation` is not a propagation.
    #[error("linux.rootfsPropagation {value:?} is not one of private, rprivate, slave, rslave, shared, rshared, unbindable, runbindable")]
    RootPropagation {
        /// As given.
        value: String,
    },
    /// A device of `linux.devices` cannot be made.
    #[error("linux.devices[{index}] ({path}): {why}")]
    Device {
        /// Its index in `linux.devices`.
        index: usize,
        /// Its path.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A path that must be absolute is not.
    #[error("{field} {path:?} is not an absolute path")]
    NotAbsolute {
        /// The OCI field.
        field: String,
        /// Its value.
        path: String,
    },
    /// The vsock annotation is neither `allow` nor `deny`.
    #[error(
        "annotations[\"{}\"]: expected \"allow\" or \"deny\", got {value:?}",
        VSOCK_ANNOTATION
    )]
    VsockAnnotation {
        /// As given.
        value: String,
    },
    /// `linux.namespaces` or the id mappings are refused.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// `linux.sysctl` is refused.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
}

/// Mount options that set or clear a flag, as mount(8) and runc know them.
const FLAGS: &[(&str, bool, c_ulong)] = &[
    ("ro", false, libc::MS_RDONLY),
    ("rw", true, libc::MS_RDONLY),
    ("nosuid", false, libc::MS_NOSUID),
    ("suid", true, libc::MS_NOSUID),
    ("nodev", false, libc::MS_NODEV),
    ("dev", true, libc::MS_NODEV),
    ("noexec", false, libc::MS_NOEXEC),
    ("exec", true, libc::MS_NOEXEC),
    ("sync", false, libc::MS_SYNCHRONOUS),
    ("async", true, libc::MS_SYNCHRONOUS),
    ("dirsync", false, libc::MS_DIRSYNC),
    ("mand", false, libc::MS_MANDLOCK),
    ("nomand", true, libc::MS_MANDLOCK),
    ("noatime", false, libc::MS_NOATIME),
    ("atime", true, libc::MS_NOATIME),
    ("nodiratime", false, libc::MS_NODIRATIME),
    ("diratime", true, libc::MS_NODIRATIME),
    ("relatime", false, libc::MS_RELATIME),
    ("norelatime", true, libc::MS_RELATIME),
    ("strictatime", false, libc::MS_STRICTATIME),
    ("nostrictatime", true, libc::MS_STRICTATIME),
    ("silent", false, libc::MS_SILENT),
    ("loud", true, libc::MS_SILENT),
    ("remount", false, libc::MS_REMOUNT),
];

/// Propagation options.
const PROPAGATION: &[(&str, c_ulong)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | libc::MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | libc::MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | libc::MS_REC),
];

/// The default devices of every container (runc's), before the spec's.
const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("dev/null", 1, 3),
    ("dev/zero", 1, 5),
    ("dev/full", 1, 7),
    ("dev/random", 1, 8),
    ("dev/urandom", 1, 9),
    ("dev/tty", 5, 0),
];

/// Whether a container's processes may open vsock sockets: its spec says
/// so with [`VSOCK_ANNOTATION`] `= allow` (`deny`, the default, or
/// nothing: they may not).
pub fn vsock_allowed(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(VSOCK_ANNOTATION).map(String::as_str) == Some("allow")
}

/// Refuses a vsock annotation that is neither `allow` nor `deny`.
pub fn check_vsock_annotation(annotations: &BTreeMap<String, String>) -> Result<(), PlanError> {
    match annotations.get(VSOCK_ANNOTATION).map(String::as_str) {
        None | Some("allow" | "deny") => Ok(()),
        Some(other) => Err(PlanError::VsockAnnotation {
            value: other.to_owned(),
        }),
    }
}

/// Checks a container id.
pub fn check_id(id: &str) -> Result<(), PlanError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PlanError::BadId { id: id.to_owned() })
    }
}

fn cstring(field: impl Into<String>, value: &str) -> Result<CString, PlanError> {
    CString::new(value).map_err(|_| PlanError::Nul {
        field: field.into(),
        value: value.to_owned(),
    })
}

/// `/a/b` → `a/b`.
fn relative(field: &str, path: &str) -> Result<CString, PlanError> {
    if !path.starts_with('/') {
        return Err(PlanError::NotAbsolute {
            field: field.to_owned(),
            path: path.to_owned(),
        });
    }
    cstring(field, path.trim_start_matches('/').trim_end_matches('/'))
}

/// The setup plan of `spec`, whose namespaces are `ns`.
pub fn setup_plan(spec: &ContainerSpec, ns: &NsPlan) -> Result<SetupPlan, PlanError> {
    check_id(&spec.id)?;
    if !spec.root.starts_with('/') {
        return Err(PlanError::BadRoot {
            root: spec.root.clone(),
        });
    }
    if !Path::new(&spec.root).is_dir() {
        return Err(PlanError::MissingRoot {
            root: spec.root.clone(),
        });
    }
    if spec.process.root.is_some() {
        return Err(PlanError::ProcessRoot);
    }
    let root_propagation = match spec.rootfs_propagation.as_deref() {
        None | Some("") => libc::MS_SLAVE | libc::MS_REC,
        Some(value) => PROPAGATION
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, flags)| *flags)
            .ok_or_else(|| PlanError::RootPropagation {
                value: value.to_owned(),
            })?,
    };
    let mut mounts = spec
        .mounts
        .iter()
        .enumerate()
        .map(|(index, m)| mount_step(index, m))
        .collect::<Result<Vec<_>, _>>()?;
    // In a user namespace without a cgroup namespace of its own, the
    // kernel refuses a cgroup2 mount: bind the agent's, as runc does
    // (rootless specs ask for exactly this).
    if ns.new_user() && !ns.owns(Kind::Cgroup) {
        for m in mounts.iter_mut().filter(|m| m.fstype.as_c_str() == c"cgroup2") {
            let rest = m.flags & !libc::MS_REMOUNT;
            m.source = c"/sys/fs/cgroup".to_owned();
            m.fstype = CString::default();
            m.flags = libc::MS_BIND | libc::MS_REC;
            m.data = CString::default();
            m.remount_flags = (rest != 0).then_some(libc::MS_REMOUNT | libc::MS_BIND | rest);
        }
    }
    let new_user = ns.new_user();
    let mut devices: Vec<DeviceStep> = Vec::new();
    for (path, major, minor) in DEFAULT_DEVICES {
        if spec.devices.iter().any(|d| d.path.trim_start_matches('/') == path) {
            continue;
        }
        devices.push(DeviceStep {
            path: cstring("device", path)?,
            mode: libc::S_IFCHR | 0o666,
            dev: libc::makedev(major, minor),
            uid: 0,
            gid: 0,
            bind_from: new_user.then(|| cstring("device", &format!("/{path}"))).transpose()?,
        });
    }
    for (index, d) in spec.devices.iter().enumerate() {
        devices.push(device_step(index, d, new_user)?);
    }
    let mut symlinks = vec![
        (c"/proc/self/fd".to_owned(), c"dev/fd".to_owned()),
        (c"/proc/self/fd/0".to_owned(), c"dev/stdin".to_owned()),
        (c"/proc/self/fd/1".to_owned(), c"dev/stdout".to_owned()),
        (c"/proc/self/fd/2".to_owned(), c"dev/stderr".to_owned()),
    ];
    // As runc: only where the kernel has it.
    if Path::new("/proc/kcore").exists() {
        symlinks.push((c"/proc/kcore".to_owned(), c"dev/core".to_owned()));
    }
    let devpts = spec
        .mounts
        .iter()
        .any(|m| m.destination.trim_end_matches('/') == "/dev/pts" && m.kind.as_deref() == Some("devpts"));
    if devpts {
        symlinks.push((c"pts/ptmx".to_owned(), c"dev/ptmx".to_owned()));
    }
    let masked = spec
        .masked_paths
        .iter()
        .map(|p| relative("linux.maskedPaths", p))
        .collect::<Result<Vec<_>, _>>()?;
    let readonly = spec
        .readonly_paths
        .iter()
        .map(|p| relative("linux.readonlyPaths", p))
        .collect::<Result<Vec<_>, _>>()?;
    let names = NewNamespaces {
        ipc: ns.owns(Kind::Ipc),
        net: ns.owns(Kind::Network),
        uts: ns.owns(Kind::Uts),
    };
    for (field, value) in [("hostname", &spec.hostname), ("domainname", &spec.domainname)] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) && !names.uts {
            return Err(NamespaceError::NeedsUts { field }.into());
        }
    }
    let sysctl = SysctlPlan::new(&spec.sysctl, names)?;
    Ok(SetupPlan {
        // The VM's root carries the agent's own /proc, /sys and /dev (for
        // plain processes): a container takes the root alone. Any other
        // root is bound with what is mounted under it, as runc does. In a
        // new user namespace the agent's mounts are locked together and a
        // bind without them is refused: there they stay, under the spec's.
        recursive_root: spec.root != agent_proto::GUEST_ROOTFS || ns.new_user(),
        root: cstring("root.path", &spec.root)?,
        root_propagation,
        mounts,
        devices,
        symlinks,
        masked,
        readonly,
        readonly_root: spec.readonly_root,
        // Known once the terminal is open.
        console: None,
        hostname: spec.hostname.as_deref().map(|h| cstring("hostname", h)).transpose()?,
        domainname: spec
            .domainname
            .as_deref()
            .map(|h| cstring("domainname", h))
            .transpose()?,
        sysctl,
    })
}

/// Makes, in the root filesystem itself, the destinations of the mounts
/// that do not lie under an earlier mount, following symbolic links the way
/// they resolve inside the root (as runc's `SecureJoin` + `MkdirAll`): a
/// link that dangles there (`/var/run -> /run` without `/run`) then leads to
/// directories made inside the root, where the child's in-root lookup finds
/// them. Destinations under an earlier mount (a tmpfs at `/dev`, ...) are
/// made by the child once that mount exists. Failures are left for the
/// child, which names the mount.
pub fn make_destinations(root: &Path, plan: &SetupPlan) {
    let mut earlier: Vec<&[u8]> = Vec::new();
    for m in &plan.mounts {
        let target = m.target.to_bytes();
        let under = earlier
            .iter()
            .any(|e| e.is_empty() || (target.starts_with(e) && target.get(e.len()) == Some(&b'/')));
        earlier.push(target);
        if under {
            continue;
        }
        let Ok(target) = std::str::from_utf8(target) else {
            continue;
        };
        let path = join_in_root(root, target);
        let made = match m.kind {
            TargetKind::Directory => std::fs::create_dir_all(&path),
            TargetKind::File => path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map(drop)
            }),
        };
        if let Err(e) = made {
            debug!("cannot make {} in the root: {e}", path.display());
        }
    }
}

/// `root` joined with `path`, every symbolic link on the way resolved as if
/// `root` were `/` (`..` and absolute targets stay inside it); components
/// that do not exist are kept as they are.
fn join_in_root(root: &Path, path: &str) -> std::path::PathBuf {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let here: std::path::PathBuf = root.join(resolved.join("/")).join(&part);
        match std::fs::read_link(&here) {
            Ok(target) if links < 255 => {
                links += 1;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_owned));
            }
            _ => resolved.push(part),
        }
    }
    root.join(resolved.join("/"))
}

/// Parses one mount.
fn mount_step(index: usize, m: &Mount) -> Result<MountStep, PlanError> {
    if !m.destination.starts_with('/') {
        return Err(PlanError::MountDestination {
            index,
            destination: m.destination.clone(),
        });
    }
    let field = format!("mounts[{index}]");
    let mut flags: c_ulong = 0;
    let mut propagation: c_ulong = 0;
    let mut bind = m.kind.as_deref() == Some("bind");
    let mut recursive = false;
    let mut data: Vec<&str> = Vec::new();
    for option in &m.options {
        let option = option.as_str();
        if let Some((_, clear, flag)) = FLAGS.iter().find(|(name, _, _)| *name == option) {
            if *clear {
                flags &= !flag;
            } else {
                flags |= flag;
            }
        } else if let Some((_, flag)) = PROPAGATION.iter().find(|(name, _)| *name == option) {
            propagation = *flag;
        } else if option == "bind" {
            bind = true;
        } else if option == "rbind" {
            bind = true;
            recursive = true;
        } else if matches!(option, "tmpcopyup" | "idmap" | "ridmap")
            || option.starts_with("rro")
            || option.starts_with("rrw")
            || option.starts_with("rno")
            || option.starts_with("ratime")
            || option.starts_with("rrel")
            || option.starts_with("rstrict")
            || option.starts_with("rdiratime")
        {
            return Err(PlanError::MountOption {
                index,
                destination: m.destination.clone(),
                option: option.to_owned(),
            });
        } else {
            data.push(option);
        }
    }
    let source = m.source.clone().unwrap_or_default();
    let mut kind = TargetKind::Directory;
    let (fstype, first_flags, remount_flags) = if bind {
        let meta = std::fs::metadata(&source).map_err(|e| PlanError::BindSource {
            index,
            destination: m.destination.clone(),
            source_path: source.clone(),
            why: e.to_string(),
        })?;
        if !meta.is_dir() {
            kind = TargetKind::File;
        }
        let mut first = libc::MS_BIND;
        if recursive {
            first |= libc::MS_REC;
        }
        // The first bind takes no other flags: they are set by a remount.
        let rest = flags & !libc::MS_REMOUNT;
        let remount = (rest != 0).then_some(libc::MS_REMOUNT | libc::MS_BIND | rest);
        (String::new(), first, remount)
    } else {
        // `cgroup` asks for the cgroup filesystem: cgroup v2 is the one
        // the agent has.
        let fstype = match m.kind.as_deref() {
            Some("cgroup") | Some("cgroup2") => "cgroup2".to_owned(),
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => {
                return Err(PlanError::MountOption {
                    index,
                    destination: m.destination.clone(),
                    option: "(no type and no bind option)".to_owned(),
                })
            }
        };
        (fstype, flags, None)
    };
    let source = if source.is_empty() { fstype.clone() } else { source };
    Ok(MountStep {
        target: relative(&format!("{field}.destination"), &m.destination)?,
        kind,
        source: cstring(format!("{field}.source"), &source)?,
        fstype: cstring(format!("{field}.type"), &fstype)?,
        flags: first_flags,
        data: cstring(format!("{field}.options"), &data.join(","))?,
        remount_flags,
        propagation: (propagation != 0).then_some(propagation),
    })
}

/// One of the spec's devices.
fn device_step(index: usize, d: &Device, new_user: bool) -> Result<DeviceStep, PlanError> {
    let bad = |why: &str| PlanError::Device {
        index,
        path: d.path.clone(),
        why: why.to_owned(),
    };
    let kind = match d.kind.as_str() {
        "c" | "u" => libc::S_IFCHR,
        "b" => libc::S_IFBLK,
        "p" => libc::S_IFIFO,
        other => return Err(bad(&format!("type {other:?} is not c, u, b or p"))),
    };
    let (Ok(major), Ok(minor)) = (u32::try_from(d.major), u32::try_from(d.minor)) else {
        return Err(bad("major and minor must be 0 or more"));
    };
    let mode = d.file_mode.unwrap_or(0o666);
    if mode > 0o7777 {
        return Err(bad(&format!("fileMode {mode:#o} has bits beyond the permissions")));
    }
    Ok(DeviceStep {
        path: relative(&format!("linux.devices[{index}].path"), &d.path)?,
        mode: kind | mode,
        dev: libc::makedev(major, minor),
        uid: d.uid.unwrap_or(0),
        gid: d.gid.unwrap_or(0),
        bind_from: new_user
            .then(|| cstring(format!("linux.devices[{index}].path"), &d.path))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(dest: &str, kind: &str, options: &[&str]) -> Mount {
        Mount {
            destination: dest.into(),
            kind: Some(kind.into()),
            source: Some(kind.into()),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ids() {
        for ok in ["a", "web-1", "A.b_c", &"x".repeat(64)] {
            check_id(ok).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mount_options_become_flags_and_data() {
        let m = mount("/dev", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]);
        let step = mount_step(0, &m).unwrap();
        assert_eq!(step.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(step.data.as_c_str(), c"mode=755,size=65536k");
        assert_eq!(step.target.as_c_str(), c"dev");
        assert_eq!(step.fstype.as_c_str(), c"tmpfs");

        let m = mount("/sys/fs/cgroup", "cgroup", &["nosuid", "ro", "rw", "ro", "rprivate"]);
        let step = mount_step(0, &m).unwrap();
        assert_eq!(step.fstype.as_c_str(), c"cgroup2");
        assert_eq!(step.flags, libc::MS_NOSUID | libc::MS_RDONLY);
        assert_eq!(step.propagation, Some(libc::MS_PRIVATE | libc::MS_REC));

        let mut b = mount("/etc/hostname", "bind", &["rbind", "ro"]);
        b.source = Some("/proc/version".into());
        let step = mount_step(3, &b).unwrap();
        assert_eq!(step.flags, libc::MS_BIND | libc::MS_REC);
        assert_eq!(
            step.remount_flags,
            Some(libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY)
        );
        assert_eq!(step.kind, TargetKind::File);

        let e = mount_step(2, &mount("/x", "tmpfs", &["tmpcopyup"])).unwrap_err();
        assert_eq!(e.to_string(), "mounts[2] (/x): unknown option \"tmpcopyup\"");
        let mut b = mount("/x", "bind", &["bind"]);
        b.source = Some("/nonexistent-source".into());
        let e = mount_step(1, &b).unwrap_err();
        assert!(
            e.to_string().starts_with("mounts[1] (/x): a bind mount needs a source"),
            "{e}"
        );
        let e = mount_step(0, &mount("x", "tmpfs", &[])).unwrap_err();
        assert!(matches!(e, PlanError::MountDestination { .. }));
    }

    #[test]
    fn paths_join_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("vminitd-join-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/missing/dir", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(join_in_root(&root, "abs/x"), root.join("real/x"));
        assert_eq!(join_in_root(&root, "up/etc"), root.join("etc"));
        assert_eq!(join_in_root(&root, "../../../etc/passwd"), root.join("etc/passwd"));
        assert_eq!(join_in_root(&root, "dangling/a"), root.join("missing/dir/a"));
        assert_eq!(join_in_root(&root, "loop/a"), root.join("loop/a"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_checked() {
        let d = Device {
            path: "/dev/fuse".into(),
            kind: "c".into(),
            major: 10,
            minor: 229,
            file_mode: Some(0o600),
            uid: Some(5),
            gid: None,
        };
        let step = device_step(0, &d, false).unwrap();
        assert_eq!(step.mode, libc::S_IFCHR | 0o600);
        assert_eq!(step.dev, libc::makedev(10, 229));
        assert_eq!((step.uid, step.gid), (5, 0));
        assert!(step.bind_from.is_none());
        assert_eq!(
            device_step(0, &d, true).unwrap().bind_from.as_deref(),
            Some(c"/dev/fuse")
        );
        let e = device_step(
            1,
            &Device {
                kind: "x".into(),
                ..d.clone()
            },
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.devices[1] (/dev/fuse): type \"x\" is not c, u, b or p"
        );
        let e = device_step(1, &Device { major: -1, ..d }, false).unwrap_err();
        assert!(e.to_string().contains("major and minor"));
    }
}

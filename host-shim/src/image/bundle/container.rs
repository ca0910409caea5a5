//! A bundle's whole `config.json` as the agent's [`ContainerSpec`], the way
//! runc's `specconv` makes its libcontainer config.
//!
//! Carried: `process` (every field of [`super::process`]'s list, and
//! `linux.seccomp` as its filter), `hostname`, `domainname`, `root.readonly`, `mounts`
//! (bind mounts normalised to type `bind`, a relative bind source taken
//! from the bundle, as runc does), `hooks` (`prestart` runs where the spec
//! runs it, first among the `createRuntime` hooks, as in runc; with
//! [`RootPlacement::Guest`] only `startContainer`, which runs inside the
//! container: the others are programs of the host, which the host runs
//! around the agent's operations, as `vmshim runtime` does),
//! `annotations`, and `linux.namespaces` (with `path`), `uidMappings`,
//! `gidMappings`, `rootfsPropagation`, `maskedPaths`, `readonlyPaths`,
//! `sysctl`, `cgroupsPath`, `devices`, `seccomp` and `resources`
//! (`memory` limit, reservation and swap; `cpu` shares, quota, period,
//! cpus and mems; `pids`; `blockIO` weight, device weights and throttles;
//! `hugepageLimits`; `devices`; `unified`), converted to cgroup v2 by the
//! agent as runc converts them.
//!
//! The device allow-list is runc's: the spec's `resources.devices`, then
//! runc's built-in rules appended ([`DEFAULT_DEVICE_RULES`]: mknod of any
//! device; null, random, full, tty, zero, urandom; `/dev/pts/*`, ptmx;
//! tun), less those whose device node the spec's `linux.devices` lists
//! again.
//!
//! Left out, as runc 1.1 leaves them out on cgroup v2 (its `fs2` driver
//! has nothing for them): the cgroup v1 fields `memory.kernel`,
//! `kernelTCP`, `swappiness`, `disableOOMKiller` and `useHierarchy`,
//! `cpu.realtimeRuntime` and `realtimePeriod`, `blockIO.leafWeight` (and
//! each `weightDevice`'s), and `network` (`net_cls`, `net_prio`); the
//! other platforms' sections (`solaris`, `windows`, `zos`), and the
//! Windows-only `process.commandLine` and `user.username`; the seccomp
//! listener (`listenerPath`, `listenerMetadata`), which only a
//! `SCMP_ACT_NOTIFY` rule would use (the agent refuses those). With
//! [`RootPlacement::Guest`] also the LSM labels (`process.apparmorProfile`
//! and `selinuxLabel`, `linux.mountLabel`): they are the host's policy,
//! and the guest kernel has neither AppArmor nor SELinux; the agent on this
//! host refuses them, as it cannot apply them.
//!
//! Refused, each named: whatever the protocol cannot carry and the spec
//! asks for, runc refusing it too on a cgroup v2 host or in such a guest
//! (seccomp `flags`, `intelRdt`, the `time` namespace, RDMA resources),
//! or not knowing it, as runc 1.1 knows no field of runtime-spec 1.1 and
//! later, which runc 1.2 applies (`personality`, `timeOffsets`,
//! `netDevices`, `memoryPolicy`, `process.ioPriority`, `scheduler` and
//! `execCPUAffinity`, `cpu.idle` and `burst`,
//! `memory.checkBeforeUpdate`, id-mapped mounts, ...); and the `vm`
//! section, which asks a VM runtime for a hypervisor, kernel or image of
//! its own. With [`RootPlacement::Guest`] also what
//! names the host, which a VM cannot reach: namespaces joined by path, but
//! the network namespace (that one is the VM's network, [`crate::netns`]),
//! and bind mounts of host paths that are neither a directory nor a
//! regular file (sockets, FIFOs, devices). Bind mounts of host files and
//! directories become the VM's virtio-fs share ([`share_host_binds`]).

use std::path::{Component, Path, PathBuf};

use agent_proto::{
    BlockIo, ContainerSpec, CpuResources, Device, DeviceRule, Hook, Hooks, HugepageLimit, IdMapping, MemoryResources,
    Mount, Namespace, ProcessSpec, Resources, ThrottleDevice, WeightDevice, GUEST_ROOTFS,
};
use oci_spec::runtime::{Linux, LinuxNamespaceType, LinuxResources, LinuxThrottleDevice, Spec};
use serde_json::Value;

use super::process::{lsm_fields, process_spec, seccomp_spec, unsupported_process_fields};
use super::{array, asks, bad, only, read_config, typed, ImageError};
use crate::vm::virtiofs::SharedPath;

/// Where the agent that runs the container is, which decides how the
/// bundle's host paths reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootPlacement {
    /// On this host (vminitd as PID 1 of a namespace): the root is the
    /// bundle's root directory as an absolute host path, bind sources are
    /// host paths.
    Host,
    /// In a VM: the root is [`GUEST_ROOTFS`] (the bundle's root directory
    /// packed into the VM's root filesystem image); host paths cannot
    /// reach it.
    Guest,
}

/// One rule of [`DEFAULT_DEVICE_RULES`]: the device node it is for (none
/// for the rules that cover a class of devices), type, major, minor (-1:
/// any), access.
type DefaultRule = (Option<&'static str>, &'static str, i64, i64, &'static str);

/// runc's built-in device rules (`specconv.AllowedDevices`, runc 1.1 and
/// 1.2.4+), appended after the spec's own, in runc's order.
pub const DEFAULT_DEVICE_RULES: [DefaultRule; 11] = [
    (None, "c", -1, -1, "m"),
    (None, "b", -1, -1, "m"),
    (Some("/dev/null"), "c", 1, 3, "rwm"),
    (Some("/dev/random"), "c", 1, 8, "rwm"),
    (Some("/dev/full"), "c", 1, 7, "rwm"),
    (Some("/dev/tty"), "c", 5, 0, "rwm"),
    (Some("/dev/zero"), "c", 1, 5, "rwm"),
    (Some("/dev/urandom"), "c", 1, 9, "rwm"),
    (None, "c", 136, -1, "rwm"),
    (None, "c", 5, 2, "rwm"),
    (None, "c", 10, 200, "rwm"),
];

/// Namespace types the protocol carries, by their OCI names.
const NAMESPACES: [&str; 7] = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup"];

/// Bind sources that are the guest kernel's own filesystems, not the
/// host's.
const GUEST_KERNEL_PATHS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Reads `dir/config.json` and translates it into the container `id`'s
/// spec; refuses, naming every field, what the protocol cannot carry and
/// (with [`RootPlacement::Guest`]) what would need the host's files.
pub fn container_spec(dir: &Path, id: &str, placement: RootPlacement) -> Result<ContainerSpec, ImageError> {
    translate(dir, id, placement).map(|(spec, _, _)| spec)
}

/// [`container_spec`], the bundle's root directory on this host (an
/// absolute path), which is the spec's root with [`RootPlacement::Host`],
/// and with [`RootPlacement::Guest`] the host paths the VM must share for
/// the spec's bind mounts, which take them from the share.
pub(super) fn translate(
    dir: &Path,
    id: &str,
    placement: RootPlacement,
) -> Result<(ContainerSpec, PathBuf, Vec<SharedPath>), ImageError> {
    translate_with(dir, id, placement, false)
}

/// [`translate`]; with `namespace_paths`, namespaces joined by path are
/// carried as they are, for the caller to map into the guest (a pod's
/// containers join their sandbox's, see [`crate::runtime::pod`]).
pub(super) fn translate_with(
    dir: &Path,
    id: &str,
    placement: RootPlacement,
    namespace_paths: bool,
) -> Result<(ContainerSpec, PathBuf, Vec<SharedPath>), ImageError> {
    let (path, value) = read_config(dir)?;
    let bundle = std::path::absolute(dir).map_err(|e| bad(&path, format!("cannot resolve the bundle: {e}")))?;
    let mut unsupported = unsupported_fields(&value);
    if placement == RootPlacement::Host {
        unsupported.extend(lsm_labels(&value));
    }
    if placement == RootPlacement::Guest && !namespace_paths {
        unsupported.extend(host_references(&value));
    }
    if !unsupported.is_empty() {
        return Err(ImageError::UnsupportedSpec {
            path,
            fields: unsupported,
        });
    }
    let Parsed { spec, process } = parse(&path, value)?;
    let root_path = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_default();
    let host_root = bundle.join(root_path);
    let root = match placement {
        RootPlacement::Host => path_string(&host_root),
        RootPlacement::Guest => GUEST_ROOTFS.to_owned(),
    };
    let linux = spec.linux().clone().unwrap_or_else(empty_linux);
    let devices: Vec<Device> = linux
        .devices()
        .iter()
        .flatten()
        .map(|d| Device {
            path: path_string(d.path()),
            kind: d.typ().as_str().to_owned(),
            major: d.major(),
            minor: d.minor(),
            file_mode: d.file_mode(),
            uid: d.uid(),
            gid: d.gid(),
        })
        .collect();
    let mut resources = linux.resources().as_ref().map(resources).unwrap_or_default();
    resources.devices.extend(default_device_rules(&devices));
    let mut mounts: Vec<Mount> = spec.mounts().iter().flatten().map(|m| mount(m, &bundle)).collect();
    let shares = match placement {
        RootPlacement::Host => Vec::new(),
        RootPlacement::Guest => share_host_binds(&mut mounts).map_err(|e| bad(&path, e))?,
    };
    let spec = ContainerSpec {
        id: id.to_owned(),
        bundle: path_string(&bundle),
        root,
        readonly_root: spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false),
        process,
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|d| !d.is_empty()),
        namespaces: linux
            .namespaces()
            .iter()
            .flatten()
            .map(|ns| Namespace {
                kind: namespace_name(ns.typ()).to_owned(),
                path: ns.path().as_deref().map(path_string),
            })
            .collect(),
        uid_mappings: id_mappings(linux.uid_mappings()),
        gid_mappings: id_mappings(linux.gid_mappings()),
        mounts,
        rootfs_propagation: linux.rootfs_propagation().clone().filter(|p| !p.is_empty()),
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        sysctl: linux.sysctl().clone().unwrap_or_default().into_iter().collect(),
        cgroups_path: linux.cgroups_path().as_deref().map(path_string),
        resources: Some(resources),
        devices,
        hooks: match (hooks(&spec).map_err(|e| bad(&path, e))?, placement) {
            (all, RootPlacement::Host) => all,
            // The host runs the others.
            (all, RootPlacement::Guest) => Hooks {
                start_container: all.start_container,
                ..Hooks::default()
            },
        },
        annotations: spec.annotations().clone().unwrap_or_default().into_iter().collect(),
    };
    Ok((spec, host_root, shares))
}

/// A spec read whole: the typed spec, and its process as the agent takes
/// it.
struct Parsed {
    spec: Spec,
    process: ProcessSpec,
}

/// Parses `value` (read from `path`): the spec's version, root and process
/// checked, the process (with `linux.seccomp` as its filter) translated.
fn parse(path: &Path, value: Value) -> Result<Parsed, ImageError> {
    let mut process = match value.get("process") {
        Some(p) => process_spec(p, "process").map_err(|e| bad(path, e))?,
        None => ProcessSpec::default(),
    };
    process.seccomp = value
        .get("linux")
        .and_then(|l| l.get("seccomp"))
        .filter(|s| !s.is_null())
        .map(seccomp_spec)
        .transpose()
        .map_err(|e| bad(path, e))?
        .flatten()
        .map(Box::new);
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
    let typed_process = spec.process().as_ref().ok_or_else(|| bad(path, "no process".into()))?;
    let cwd = typed_process.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(bad(path, format!("process.cwd {cwd:?} is not an absolute path")));
    }
    Ok(Parsed { spec, process })
}

/// An empty `linux` section, for a spec without one (oci-spec's
/// `Default` is runc's default spec instead).
fn empty_linux() -> Linux {
    serde_json::from_value(serde_json::json!({})).expect("an empty linux section deserializes")
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn namespace_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

fn id_mappings(maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>) -> Vec<IdMapping> {
    maps.iter()
        .flatten()
        .map(|m| IdMapping {
            container_id: m.container_id(),
            host_id: m.host_id(),
            size: m.size(),
        })
        .collect()
}

/// Whether mount options make it a bind mount.
fn is_bind(options: &[String]) -> bool {
    options.iter().any(|o| o == "bind" || o == "rbind")
}

/// One mount; a bind mount's type is `bind` and its relative source is
/// the bundle's (as runc makes them).
fn mount(m: &oci_spec::runtime::Mount, bundle: &Path) -> Mount {
    let options = m.options().clone().unwrap_or_default();
    let bind = is_bind(&options);
    let source = m.source().as_ref().map(|s| match bind && s.is_relative() {
        true => path_string(&bundle.join(s)),
        false => path_string(s),
    });
    Mount {
        destination: path_string(m.destination()),
        kind: if bind { Some("bind".to_owned()) } else { m.typ().clone() },
        source,
        options,
    }
}

/// An OCI `linux.resources` document (as `runc update -r` reads it) as
/// the agent's [`Resources`]; `what` names it in errors.
pub fn resources_from_json(json: &[u8], what: &Path) -> Result<Resources, ImageError> {
    let r: LinuxResources = serde_json::from_slice(json).map_err(|e| ImageError::BadBundle {
        path: what.to_owned(),
        detail: format!("not an OCI linux.resources document: {e}"),
    })?;
    Ok(resources(&r))
}

fn resources(r: &LinuxResources) -> Resources {
    let throttles = |list: &Option<Vec<LinuxThrottleDevice>>| -> Vec<ThrottleDevice> {
        list.iter()
            .flatten()
            .map(|t| ThrottleDevice {
                major: t.major(),
                minor: t.minor(),
                rate: t.rate(),
            })
            .collect()
    };
    Resources {
        memory: r.memory().as_ref().map(|m| MemoryResources {
            limit: m.limit(),
            reservation: m.reservation(),
            swap: m.swap(),
        }),
        cpu: r.cpu().as_ref().map(|c| CpuResources {
            shares: c.shares(),
            quota: c.quota(),
            period: c.period(),
            cpus: c.cpus().clone(),
            mems: c.mems().clone(),
        }),
        pids_limit: r.pids().as_ref().map(|p| p.limit()),
        block_io: r.block_io().as_ref().map(|b| BlockIo {
            weight: b.weight(),
            weight_device: b
                .weight_device()
                .iter()
                .flatten()
                .map(|d| WeightDevice {
                    major: d.major(),
                    minor: d.minor(),
                    weight: d.weight(),
                })
                .collect(),
            throttle_read_bps_device: throttles(b.throttle_read_bps_device()),
            throttle_write_bps_device: throttles(b.throttle_write_bps_device()),
            throttle_read_iops_device: throttles(b.throttle_read_iops_device()),
            throttle_write_iops_device: throttles(b.throttle_write_iops_device()),
        }),
        hugepage_limits: r
            .hugepage_limits()
            .iter()
            .flatten()
            .map(|h| HugepageLimit {
                page_size: h.page_size().clone(),
                limit: h.limit(),
            })
            .collect(),
        devices: r
            .devices()
            .iter()
            .flatten()
            .map(|d| DeviceRule {
                allow: d.allow(),
                kind: d.typ().map(|t| t.as_str().to_owned()),
                major: d.major(),
                minor: d.minor(),
                access: d.access().clone(),
            })
            .collect(),
        unified: r.unified().clone().unwrap_or_default().into_iter().collect(),
    }
}

/// runc's built-in rules, less those for a device node `devices` lists
/// again (the spec's node takes priority, as in runc).
fn default_device_rules(devices: &[Device]) -> Vec<DeviceRule> {
    DEFAULT_DEVICE_RULES
        .iter()
        .filter(|(node, ..)| node.is_none_or(|n| !devices.iter().any(|d| d.path == n)))
        .map(|&(_, kind, major, minor, access)| DeviceRule {
            allow: true,
            kind: Some(kind.to_owned()),
            major: Some(major),
            minor: Some(minor),
            access: Some(access.to_owned()),
        })
        .collect()
}

/// The spec's hooks; `prestart` ones run first at `createRuntime`, as runc
/// runs them.
fn hooks(spec: &Spec) -> Result<Hooks, String> {
    let Some(h) = spec.hooks() else {
        return Ok(Hooks::default());
    };
    let list = |name: &str, hooks: &Option<Vec<oci_spec::runtime::Hook>>| -> Result<Vec<Hook>, String> {
        hooks
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, hook)| {
                let timeout = hook
                    .timeout()
                    .map(|t| u32::try_from(t).ok().filter(|&t| t > 0))
                    .map(|t| {
                        t.ok_or(format!(
                            "hooks.{name}[{i}].timeout must be a positive number of seconds"
                        ))
                    })
                    .transpose()?;
                Ok(Hook {
                    path: path_string(hook.path()),
                    args: hook.args().clone().unwrap_or_default(),
                    env: hook.env().clone().unwrap_or_default(),
                    timeout,
                })
            })
            .collect()
    };
    let mut create_runtime = list("prestart", h.prestart())?;
    create_runtime.extend(list("createRuntime", h.create_runtime())?);
    Ok(Hooks {
        create_runtime,
        create_container: list("createContainer", h.create_container())?,
        start_container: list("startContainer", h.start_container())?,
        poststart: list("poststart", h.poststart())?,
        poststop: list("poststop", h.poststop())?,
    })
}

/// Every field of `spec` that asks for what the protocol cannot carry, in
/// document order.
fn unsupported_fields(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(top) = spec.as_object() else {
        return vec!["the spec is not a JSON object".into()];
    };
    for (key, value) in top {
        match key.as_str() {
            "ociVersion" | "annotations" | "hostname" | "domainname" => {}
            "root" => only(value, "root", &["path", "readonly"], &mut out),
            "process" => out.extend(
                unsupported_process_fields(value)
                    .into_iter()
                    .map(|field| format!("process.{field}")),
            ),
            "mounts" => {
                for (i, m) in array(Some(value)).iter().enumerate() {
                    only(
                        m,
                        &format!("mounts[{i}]"),
                        &["destination", "type", "source", "options"],
                        &mut out,
                    );
                }
            }
            "hooks" => {
                const HOOKS: [&str; 6] = [
                    "prestart",
                    "createRuntime",
                    "createContainer",
                    "startContainer",
                    "poststart",
                    "poststop",
                ];
                only(value, "hooks", &HOOKS, &mut out);
            }
            "linux" => linux_unsupported(value, &mut out),
            // Other platforms' sections: runc on Linux reads none of them.
            "solaris" | "windows" | "zos" => {}
            _ if asks(Some(value)) => out.push(key.clone()),
            _ => {}
        }
    }
    out
}

fn linux_unsupported(linux: &Value, out: &mut Vec<String>) {
    const LINUX: [&str; 12] = [
        "namespaces",
        "uidMappings",
        "gidMappings",
        "sysctl",
        "resources",
        "cgroupsPath",
        "devices",
        "rootfsPropagation",
        "maskedPaths",
        "readonlyPaths",
        "seccomp",
        // The host's SELinux: see lsm_labels.
        "mountLabel",
    ];
    only(linux, "linux", &LINUX, out);
    if let Some(seccomp) = linux.get("seccomp") {
        // The listener only serves SCMP_ACT_NOTIFY rules, which the agent
        // refuses; runc ignores it without them.
        let carried = [
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "syscalls",
            "listenerPath",
            "listenerMetadata",
        ];
        only(seccomp, "linux.seccomp", &carried, out);
    }
    for (i, ns) in array(linux.get("namespaces")).iter().enumerate() {
        // A type that is not a string is the typed parse's to name.
        let Some(kind) = ns.get("type").and_then(Value::as_str) else {
            continue;
        };
        if !NAMESPACES.contains(&kind) {
            out.push(format!("linux.namespaces[{i}] ({kind:?})"));
        }
    }
    let Some(r) = linux.get("resources") else {
        return;
    };
    // `network` is cgroup v1's net_cls and net_prio: runc's fs2 leaves it out.
    let carried = [
        "devices",
        "memory",
        "cpu",
        "pids",
        "blockIO",
        "hugepageLimits",
        "unified",
        "network",
    ];
    only(r, "linux.resources", &carried, out);
    // Each section's carried fields, then the cgroup v1 fields runc's fs2
    // leaves out.
    let sections: [(&str, &[&str]); 4] = [
        (
            "memory",
            &[
                "limit",
                "reservation",
                "swap",
                "kernel",
                "kernelTCP",
                "swappiness",
                "disableOOMKiller",
                "useHierarchy",
            ],
        ),
        (
            "cpu",
            &[
                "shares",
                "quota",
                "period",
                "cpus",
                "mems",
                "realtimeRuntime",
                "realtimePeriod",
            ],
        ),
        ("pids", &["limit"]),
        (
            "blockIO",
            &[
                "weight",
                "weightDevice",
                "throttleReadBpsDevice",
                "throttleWriteBpsDevice",
                "throttleReadIOPSDevice",
                "throttleWriteIOPSDevice",
                "leafWeight",
            ],
        ),
    ];
    for (name, fields) in sections {
        if let Some(section) = r.get(name) {
            only(section, &format!("linux.resources.{name}"), fields, out);
        }
    }
}

/// The LSM labels `spec` asks for (`process.apparmorProfile` and
/// `selinuxLabel`, `linux.mountLabel`): the agent on this host cannot
/// apply them, and refuses them, as runc does where the host has neither
/// LSM. (In a VM they are left out: see the module's documentation.)
fn lsm_labels(spec: &Value) -> Vec<String> {
    let mut out: Vec<String> = spec
        .get("process")
        .map(lsm_fields)
        .unwrap_or_default()
        .into_iter()
        .map(|f| format!("process.{f}"))
        .collect();
    if asks(spec.pointer("/linux/mountLabel")) {
        out.push("linux.mountLabel".into());
    }
    out
}

/// Every field of `spec` that names something of the host, which a VM
/// cannot reach, with why. (Bind mounts of host paths reach it: see
/// [`share_host_binds`]. So does a network namespace by path, carried as it
/// is: it is the VM's network, which `vmshim runtime` joins to it, and the
/// container joins the VM's in the guest; see [`crate::netns`].)
fn host_references(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (i, ns) in array(spec.pointer("/linux/namespaces")).iter().enumerate() {
        let network = ns.get("type").and_then(Value::as_str) == Some("network");
        if let Some(path) = ns
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty() && !network)
        {
            out.push(format!(
                "linux.namespaces[{i}].path ({path:?}: a namespace of the host cannot be joined from a VM)"
            ));
        }
    }
    out
}

/// The bind mounts of host paths among `mounts` (the guest kernel's own
/// `/proc`, `/sys` and `/dev` are the guest's), for a container in a VM:
/// each source becomes a share of the VM, in order, and its mount a bind
/// from where the guest sees that share (`GUEST_SHARES/N`), with the
/// spec's options (`ro`, `rbind`, propagation). A share is read-only where
/// the mount is, and recursive where it is an `rbind`. A source that is not
/// there, or is not a directory or a regular file, is an error naming the
/// mount.
fn share_host_binds(mounts: &mut [Mount]) -> Result<Vec<SharedPath>, String> {
    let mut shares = Vec::new();
    for (i, m) in mounts.iter_mut().enumerate() {
        // A bind mount by its type or by its options (`"type": "none"`
        // with `rbind`, as runc's rootless spec writes `/sys`).
        let bind = m.kind.as_deref() == Some("bind") || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if !bind {
            continue;
        }
        let source = match m.source.as_deref() {
            Some(source) if !source.is_empty() => source,
            _ => return Err(format!("mounts[{i}] (a bind mount): it has no source")),
        };
        if is_guest_kernel_path(source) {
            continue;
        }
        match std::fs::metadata(source) {
            Ok(meta) if meta.is_dir() || meta.is_file() => {}
            Ok(_) => {
                return Err(format!(
                    "mounts[{i}] (a bind mount of {source:?}): only a directory or a regular file can reach a VM"
                ))
            }
            Err(e) => return Err(format!("mounts[{i}] (a bind mount of {source:?}): {e}")),
        }
        // The last of ro and rw wins, as in mount(8).
        let readonly = m
            .options
            .iter()
            .rev()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro");
        let recursive = m.options.iter().any(|o| o == "rbind");
        shares.push(SharedPath {
            source: PathBuf::from(source),
            readonly,
            recursive,
            guest_bind: None,
        });
        m.source = Some(SharedPath::guest_path(shares.len() - 1));
    }
    Ok(shares)
}

/// Whether `source` is `/proc`, `/sys` or `/dev` or below, with no `..`.
fn is_guest_kernel_path(source: &str) -> bool {
    let path = PathBuf::from(source);
    if path.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    GUEST_KERNEL_PATHS.iter().any(|p| path.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use agent_proto::WindowSize;
    use serde_json::json;

    fn translate(spec: &Value, placement: RootPlacement) -> Result<ContainerSpec, ImageError> {
        let t = TestDir::new("container-spec");
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        container_spec(t.path(), "c1", placement)
    }

    /// `runc spec` (with `extra` flags) in a fresh bundle directory.
    fn runc_spec(extra: &[&str]) -> (TestDir, Value) {
        let t = TestDir::new("runc-spec");
        let out = std::process::Command::new("runc")
            .arg("spec")
            .args(extra)
            .current_dir(t.path())
            .output()
            .expect("run runc spec (scripts/setup.sh installs runc)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let spec = serde_json::from_slice(&std::fs::read(t.path().join("config.json")).unwrap()).unwrap();
        (t, spec)
    }

    fn rule(allow: bool, kind: &str, major: i64, minor: i64, access: &str) -> DeviceRule {
        DeviceRule {
            allow,
            kind: Some(kind.to_owned()),
            major: Some(major),
            minor: Some(minor),
            access: Some(access.to_owned()),
        }
    }

    #[test]
    fn a_stock_runc_spec_translates_for_a_vm_and_for_the_host() {
        let (t, _) = runc_spec(&[]);
        let c = container_spec(t.path(), "c1", RootPlacement::Guest).unwrap();
        assert_eq!(
            (c.id.as_str(), c.root.as_str(), c.readonly_root),
            ("c1", GUEST_ROOTFS, true)
        );
        assert_eq!(c.bundle, t.path().to_string_lossy());
        assert_eq!(
            (c.process.args.as_slice(), c.process.terminal),
            (&["sh".to_owned()][..], true)
        );
        assert_eq!(c.process.cwd.as_deref(), Some("/"));
        assert!(c.process.no_new_privileges);
        assert_eq!(c.process.capabilities.as_ref().unwrap().bounding.len(), 3);
        assert_eq!(c.hostname.as_deref(), Some("runc"));
        let kinds: Vec<&str> = c.namespaces.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, ["pid", "network", "ipc", "uts", "mount"]);
        let dests: Vec<&str> = c.mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(c.mounts[4].kind.as_deref(), Some("mqueue"));
        assert_eq!(c.mounts[4].options, ["nosuid", "noexec", "nodev"]);
        assert_eq!(c.masked_paths.len(), 10);
        assert_eq!(c.readonly_paths.len(), 5);
        // The spec's deny-all, then runc's built-in allow-list.
        let devices = c.resources.unwrap().devices;
        assert_eq!(
            devices[0],
            DeviceRule {
                allow: false,
                access: Some("rwm".into()),
                ..Default::default()
            }
        );
        assert_eq!(devices.len(), 1 + DEFAULT_DEVICE_RULES.len());
        assert_eq!(devices[1], rule(true, "c", -1, -1, "m"));
        assert_eq!(devices[3], rule(true, "c", 1, 3, "rwm"));
        assert_eq!(devices[11], rule(true, "c", 10, 200, "rwm"));

        let host = container_spec(t.path(), "c1", RootPlacement::Host).unwrap();
        assert_eq!(host.root, t.path().join("rootfs").to_string_lossy());
        assert_eq!(
            ContainerSpec {
                root: c.root.clone(),
                ..host
            },
            ContainerSpec {
                resources: Some(Resources {
                    devices,
                    ..Default::default()
                }),
                ..c
            }
        );
    }

    #[test]
    fn a_stock_rootless_runc_spec_translates() {
        let (t, _) = runc_spec(&["--rootless"]);
        for placement in [RootPlacement::Guest, RootPlacement::Host] {
            let c = container_spec(t.path(), "r", placement).unwrap();
            let user = IdMapping {
                container_id: 0,
                host_id: 0,
                size: 1,
            };
            assert_eq!(
                (c.uid_mappings.as_slice(), c.gid_mappings.as_slice()),
                (&[user][..], &[user][..])
            );
            assert!(c.namespaces.iter().any(|n| n.kind == "user"));
            // /sys is bound from the agent's own /sys: the guest kernel's in a VM.
            let sys = c.mounts.iter().find(|m| m.destination == "/sys").unwrap();
            assert_eq!(
                (sys.kind.as_deref(), sys.source.as_deref()),
                (Some("bind"), Some("/sys"))
            );
            // No resources in the spec: runc's allow-list alone.
            assert_eq!(c.resources.unwrap().devices.len(), DEFAULT_DEVICE_RULES.len());
        }
    }

    fn full() -> Value {
        json!({
            "ociVersion": "1.1.0",
            "root": {"path": "root", "readonly": false},
            "process": {
                "terminal": true,
                "consoleSize": {"height": 24, "width": 80},
                "user": {"uid": 1, "gid": 2, "umask": 18},
                "args": ["/bin/app", "-x"],
                "env": ["A=1"],
                "cwd": "/srv",
                "oomScoreAdj": 100
            },
            "hostname": "h",
            "domainname": "d",
            "annotations": {"org.example": "yes"},
            "mounts": [
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]},
                {"destination": "/data", "type": "none", "source": "data", "options": ["rbind", "ro"]}
            ],
            "hooks": {
                "prestart": [{"path": "/bin/pre"}],
                "createRuntime": [{"path": "/bin/cr", "args": ["cr", "1"], "env": ["E=1"], "timeout": 5}],
                "createContainer": [{"path": "/bin/cc"}],
                "startContainer": [{"path": "/bin/sc"}],
                "poststart": [{"path": "/bin/ps"}],
                "poststop": [{"path": "/bin/pst"}]
            },
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/7/ns/net"}, {"type": "user"}],
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}],
                "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 5}],
                "sysctl": {"net.ipv4.ip_forward": "1"},
                "cgroupsPath": "/box/c1",
                "rootfsPropagation": "rprivate",
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "devices": [
                    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
                    {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0}
                ],
                "resources": {
                    "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}],
                    "memory": {"limit": 1048576, "reservation": 524288, "swap": 2097152},
                    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
                    "pids": {"limit": 32},
                    "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
                    "unified": {"memory.high": "1000000"}
                }
            }
        })
    }

    #[test]
    fn every_carried_field_maps() {
        let t = TestDir::new("container-full");
        std::fs::write(t.path().join("config.json"), full().to_string()).unwrap();
        let c = container_spec(t.path(), "c1", RootPlacement::Host).unwrap();
        let bundle = t.path().to_string_lossy().into_owned();
        assert_eq!(c.root, format!("{bundle}/root"));
        assert!(!c.readonly_root);
        let p = &c.process;
        assert_eq!(
            (p.args.as_slice(), p.env.as_slice()),
            (&["/bin/app".to_owned(), "-x".into()][..], &["A=1".to_owned()][..])
        );
        assert_eq!(
            (p.cwd.as_deref(), p.umask, p.oom_score_adj),
            (Some("/srv"), Some(18), Some(100))
        );
        assert_eq!(p.size, Some(WindowSize { rows: 24, cols: 80 }));
        assert_eq!((c.hostname.as_deref(), c.domainname.as_deref()), (Some("h"), Some("d")));
        assert_eq!(c.annotations["org.example"], "yes");
        assert_eq!(c.mounts[0].options, ["nosuid", "size=1m"]);
        // A bind mount: type bind, its relative source the bundle's.
        assert_eq!(
            c.mounts[1],
            Mount {
                destination: "/data".into(),
                kind: Some("bind".into()),
                source: Some(format!("{bundle}/data")),
                options: vec!["rbind".into(), "ro".into()],
            }
        );
        let hook = |path: &str| Hook {
            path: path.into(),
            ..Default::default()
        };
        let cr = Hook {
            path: "/bin/cr".into(),
            args: vec!["cr".into(), "1".into()],
            env: vec!["E=1".into()],
            timeout: Some(5),
        };
        assert_eq!(
            c.hooks,
            Hooks {
                create_runtime: vec![hook("/bin/pre"), cr],
                create_container: vec![hook("/bin/cc")],
                start_container: vec![hook("/bin/sc")],
                poststart: vec![hook("/bin/ps")],
                poststop: vec![hook("/bin/pst")],
            }
        );
        assert_eq!(c.namespaces[1].path.as_deref(), Some("/proc/7/ns/net"));
        assert_eq!(c.namespaces[2].kind, "user");
        assert_eq!(
            c.uid_mappings[0],
            IdMapping {
                container_id: 0,
                host_id: 1000,
                size: 10
            }
        );
        assert_eq!(c.gid_mappings[0].size, 5);
        assert_eq!(c.sysctl["net.ipv4.ip_forward"], "1");
        assert_eq!(c.cgroups_path.as_deref(), Some("/box/c1"));
        assert_eq!(c.rootfs_propagation.as_deref(), Some("rprivate"));
        assert_eq!(
            (c.masked_paths.as_slice(), c.readonly_paths.as_slice()),
            (&["/proc/kcore".to_owned()][..], &["/proc/sys".to_owned()][..])
        );
        assert_eq!(
            c.devices[1],
            Device {
                path: "/dev/fuse".into(),
                kind: "c".into(),
                major: 10,
                minor: 229,
                file_mode: Some(0o666),
                uid: Some(0),
                gid: Some(0),
            }
        );
        let r = c.resources.unwrap();
        assert_eq!(
            r.memory,
            Some(MemoryResources {
                limit: Some(1048576),
                reservation: Some(524288),
                swap: Some(2097152)
            })
        );
        let cpu = r.cpu.unwrap();
        assert_eq!(
            (cpu.shares, cpu.quota, cpu.period, cpu.cpus.as_deref()),
            (Some(512), Some(50000), Some(100000), Some("0"))
        );
        assert_eq!(r.pids_limit, Some(32));
        let io = r.block_io.unwrap();
        assert_eq!(
            (io.weight, io.throttle_read_bps_device.as_slice()),
            (
                Some(500),
                &[ThrottleDevice {
                    major: 8,
                    minor: 0,
                    rate: 1000
                }][..]
            )
        );
        assert_eq!(r.unified["memory.high"], "1000000");
        // The spec's rules, then runc's, less /dev/null's: the spec lists that node.
        assert_eq!(r.devices.len(), 2 + DEFAULT_DEVICE_RULES.len() - 1);
        assert_eq!(r.devices[1], rule(true, "c", 10, 229, "rw"));
        assert!(!r.devices.contains(&rule(true, "c", 1, 3, "rwm")));
        assert_eq!(
            r.devices[2..4],
            [rule(true, "c", -1, -1, "m"), rule(true, "b", -1, -1, "m")]
        );
    }

    #[test]
    fn what_the_protocol_cannot_carry_is_named() {
        let mut spec = full();
        spec["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE"});
        spec["process"]["scheduler"] = json!({"policy": "SCHED_OTHER"});
        spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]});
        spec["linux"]["intelRdt"] = json!({"closID": "x"});
        spec["linux"]["personality"] = json!({"domain": "LINUX32"});
        spec["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 1}});
        spec["linux"]["namespaces"] = json!([{"type": "time"}]);
        spec["linux"]["resources"]["rdma"] = json!({"mlx5_1": {"hcaHandles": 3}});
        spec["linux"]["resources"]["cpu"]["idle"] = json!(1);
        spec["linux"]["resources"]["memory"]["checkBeforeUpdate"] = json!(true);
        spec["mounts"][0]["uidMappings"] = json!([{"containerID": 0, "hostID": 1, "size": 1}]);
        spec["vm"] = json!({"kernel": {"path": "/boot/vmlinuz"}});
        // Asking for nothing is no ask.
        spec["linux"]["resources"]["memory"]["swappiness"] = json!(null);
        spec["process"]["user"]["username"] = json!("app");
        for placement in [RootPlacement::Host, RootPlacement::Guest] {
            let err = translate(&spec, placement).unwrap_err().to_string();
            for field in [
                "process.ioPriority",
                "process.scheduler",
                "linux.seccomp.flags",
                "linux.intelRdt",
                "linux.personality",
                "linux.timeOffsets",
                "linux.namespaces[0] (\"time\")",
                "linux.resources.rdma",
                "linux.resources.cpu.idle",
                "linux.resources.memory.checkBeforeUpdate",
                "mounts[0].uidMappings",
                "vm",
            ] {
                assert!(err.contains(field), "{field} missing from: {err}");
            }
            for fine in ["swappiness", "username", "hooks"] {
                assert!(!err.contains(fine), "{fine}: {err}");
            }
        }
    }

    /// What runc 1.1 leaves out on a cgroup v2 host, and what podman and
    /// docker write that is not the agent's to apply, is left out here too.
    #[test]
    fn what_runc_leaves_out_on_cgroup_v2_is_left_out() {
        let mut spec = full();
        // No host paths: the spec must translate for a VM too.
        spec["mounts"] = json!([]);
        let r = &mut spec["linux"]["resources"];
        r["memory"]["kernel"] = json!(1 << 20);
        r["memory"]["kernelTCP"] = json!(1 << 20);
        r["memory"]["swappiness"] = json!(60);
        r["memory"]["disableOOMKiller"] = json!(true);
        r["memory"]["useHierarchy"] = json!(true);
        r["cpu"]["realtimeRuntime"] = json!(950000);
        r["cpu"]["realtimePeriod"] = json!(1000000);
        r["blockIO"]["leafWeight"] = json!(300);
        r["network"] = json!({"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]});
        spec["process"]["commandLine"] = json!("app.exe -x");
        spec["process"]["user"]["username"] = json!("app");
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/seccomp-agent.sock",
            "listenerMetadata": "x"
        });
        spec["solaris"] = json!({"milestone": "x"});
        spec["windows"] = json!({"layerFolders": ["C:\\l"]});
        spec["zos"] = json!({"devices": []});
        let lsm = |spec: &mut Value| {
            spec["process"]["apparmorProfile"] = json!("docker-default");
            spec["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0:c1,c2");
            spec["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0:c1,c2");
        };
        let mut plain = full();
        plain["mounts"] = json!([]);
        let plain = translate(&plain, RootPlacement::Host).unwrap();
        let c = translate(&spec, RootPlacement::Host).unwrap();
        assert_eq!(c.resources, plain.resources);
        assert_eq!(c.process.seccomp.as_ref().unwrap().default_action, "SCMP_ACT_ALLOW");
        // In a VM the LSM labels are the host's: left out.
        lsm(&mut spec);
        let vm = translate(&spec, RootPlacement::Guest).unwrap();
        assert_eq!(vm.resources, plain.resources);
        assert_eq!(vm.process.args, plain.process.args);
        // The agent on this host cannot apply them: refused, as runc
        // refuses them where the host has neither LSM.
        let err = translate(&spec, RootPlacement::Host).unwrap_err().to_string();
        for field in ["process.apparmorProfile", "process.selinuxLabel", "linux.mountLabel"] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
        assert!(!err.contains("swappiness") && !err.contains("network"), "{err}");
    }

    #[test]
    fn device_weights_and_hugepage_limits_are_carried() {
        let mut spec = full();
        spec["mounts"] = json!([]);
        let r = &mut spec["linux"]["resources"];
        r["blockIO"]["weightDevice"] = json!([
            {"major": 8, "minor": 0, "weight": 500, "leafWeight": 300},
            {"major": 8, "minor": 16, "leafWeight": 300}
        ]);
        r["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 209715200}]);
        let r = translate(&spec, RootPlacement::Guest).unwrap().resources.unwrap();
        assert_eq!(
            r.block_io.unwrap().weight_device,
            [
                WeightDevice {
                    major: 8,
                    minor: 0,
                    weight: Some(500)
                },
                WeightDevice {
                    major: 8,
                    minor: 16,
                    weight: None
                }
            ]
        );
        assert_eq!(
            r.hugepage_limits,
            [HugepageLimit {
                page_size: "2MB".into(),
                limit: 209715200
            }]
        );
    }

    #[test]
    fn a_vm_shares_the_host_paths_of_bind_mounts() {
        let t = TestDir::new("container-shares");
        std::fs::create_dir(t.path().join("data")).unwrap();
        let file = t.path().join("hosts");
        std::fs::write(&file, "127.0.0.1 localhost\n").unwrap();
        let mut spec = full();
        spec["mounts"] = json!([
            {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro", "rprivate"]},
            {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "none", "source": file, "options": ["bind", "ro", "rw"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
        ]);
        spec["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network"}]);
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        let (c, _, shares) = super::translate(t.path(), "c1", RootPlacement::Guest).unwrap();
        let bundle = std::path::absolute(t.path()).unwrap();
        assert_eq!(
            shares,
            [
                SharedPath {
                    source: bundle.join("data"),
                    readonly: true,
                    recursive: true,
                    guest_bind: None
                },
                SharedPath {
                    source: file.clone(),
                    readonly: false,
                    recursive: false,
                    guest_bind: None
                }
            ]
        );
        // Each host bind takes its share; the guest's own /sys stays, and
        // the options are the spec's.
        let sources: Vec<_> = c.mounts.iter().map(|m| m.source.as_deref().unwrap()).collect();
        assert_eq!(
            sources,
            ["/run/vminitd/shares/0", "/sys", "/run/vminitd/shares/1", "tmpfs"]
        );
        assert_eq!(c.mounts[0].options, ["rbind", "ro", "rprivate"]);
        assert_eq!(c.mounts[2].kind.as_deref(), Some("bind"));
        // On the host, the same spec binds the host paths themselves.
        let (h, _, none) = super::translate(t.path(), "c1", RootPlacement::Host).unwrap();
        assert!(none.is_empty());
        assert_eq!(
            h.mounts[0].source.as_deref(),
            Some(path_string(&bundle.join("data")).as_str())
        );
        // A source that is not there, or cannot be bound, is named.
        spec["mounts"][2]["source"] = json!("/nonexistent/secret");
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        let err = super::translate(t.path(), "c1", RootPlacement::Guest)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mounts[2] (a bind mount of \"/nonexistent/secret\")"),
            "{err}"
        );
        assert!(err.contains("No such file"), "{err}");
        let socket = t.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        spec["mounts"][2]["source"] = json!(socket);
        std::fs::write(t.path().join("config.json"), spec.to_string()).unwrap();
        let err = super::translate(t.path(), "c1", RootPlacement::Guest)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mounts[2]") && err.contains("only a directory or a regular file"),
            "{err}"
        );
    }

    #[test]
    fn a_bind_by_its_options_is_shared_and_one_without_a_source_refused() {
        let (_t, mut spec) = runc_spec(&[]);
        let host = TestDir::new("bind-by-options");
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "none", "source": host.path(), "options": ["rbind", "ro"]
        }));
        let c = translate(&spec, RootPlacement::Guest).unwrap();
        let data = c.mounts.iter().find(|m| m.destination == "/data").unwrap();
        assert_eq!(data.source.as_deref(), Some(SharedPath::guest_path(0).as_str()));
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/x", "options": ["bind"]}));
        let err = translate(&spec, RootPlacement::Guest).unwrap_err().to_string();
        assert!(err.contains("a bind mount): it has no source"), "{err}");
    }

    #[test]
    fn a_vm_joins_no_host_namespace_but_the_network_one() {
        let mut spec = full();
        spec["mounts"] = json!([{"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind"]}]);
        // The network namespace by path is the VM's network: carried as it
        // is, for the runtime to join the VM to.
        let c = translate(&spec, RootPlacement::Guest).unwrap();
        assert_eq!(c.namespaces[1].path.as_deref(), Some("/proc/7/ns/net"));
        // Any other kind by path cannot be joined from a VM.
        spec["linux"]["namespaces"] = json!([
            {"type": "pid"},
            {"type": "ipc", "path": "/proc/7/ns/ipc"},
            {"type": "network", "path": "/run/netns/n"}
        ]);
        let err = translate(&spec, RootPlacement::Guest).unwrap_err().to_string();
        assert!(err.contains("linux.namespaces[1].path (\"/proc/7/ns/ipc\""), "{err}");
        assert!(!err.contains("namespaces[2]"), "{err}");
        assert!(!err.contains("mounts[") && !err.contains("hooks"), "{err}");
        // A new network namespace is fine in a VM too; the agent gets only
        // the hooks that run in the container, the host runs the others.
        spec["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network"}]);
        let c = translate(&spec, RootPlacement::Guest).unwrap();
        assert_eq!(c.root, GUEST_ROOTFS);
        assert_eq!(
            c.hooks,
            Hooks {
                start_container: vec![Hook {
                    path: "/bin/sc".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }
        );
    }

    #[test]
    fn bad_values_are_errors_that_say_where() {
        let mut spec = full();
        spec["hooks"]["poststop"][0]["timeout"] = json!(0);
        let err = translate(&spec, RootPlacement::Host).unwrap_err().to_string();
        assert!(err.contains("hooks.poststop[0].timeout"), "{err}");
        let mut spec = full();
        spec["process"]["consoleSize"] = json!({"height": -1, "width": 80});
        let err = translate(&spec, RootPlacement::Host).unwrap_err().to_string();
        assert!(err.contains("process.consoleSize"), "{err}");
        let mut spec = full();
        spec.as_object_mut().unwrap().remove("process");
        assert!(translate(&spec, RootPlacement::Host)
            .unwrap_err()
            .to_string()
            .contains("no process"));
    }
}

//! Pods: one VM, many containers. The pod's sandbox is a container of
//! this runtime like any other (its VM booted by [`Runtime::create`]),
//! whose VM also shares the pod's directory ([`PodDir`]); every later
//! container of the pod ([`PodMember`]) is created by the agent of that
//! VM, its root and the host paths it binds reaching the guest through
//! that directory.
//!
//! The pod's directory is a shared mount on the host (bound onto itself),
//! shared with the VM recursively: the daemon that serves the share sees
//! the host's mounts below it as they come and go, so a member's root (the
//! root directory containerd mounted for it) bound at `DIR/ID/rootfs` on
//! the host is `GUEST/ID/rootfs` in the guest, and its Nth host bind mount
//! `GUEST/ID/mounts/N`. That bind is read-only: the guest can write in a
//! member's root and read-write binds, never in the directories around
//! them, so nothing it does can turn a path the host mounts on or removes
//! into a link to elsewhere. The host makes and removes those directories
//! through a descriptor of the directory opened before the bind, on the
//! writable mount below it. A member joins the VM's network, and its
//! sandbox's namespaces where its spec names the sandbox's (the
//! `/proc/PID/ns/...` of the sandbox's pid, as the kubelet's runtime
//! writes them): in the guest, those of the sandbox's process. Any other
//! namespace path is refused by name.
//!
//! A member's process is the container's: its stdio is relayed as an
//! exec'd process's is ([`super::exec`]), and it ends when the member is
//! deleted, or with the VM.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agent_proto::{ContainerStatus, ExitStatus, ProcessId, ProcessSpec};
use tokio::task::JoinHandle;

use super::exec::{attach, exec_with, ExecParts};
use super::{agent_err, connect, console, process, Exec, ExecProcess, ExecStdio, Runtime, RuntimeError};
use crate::client::{AgentAddr, Client};
use crate::image::Bundle;
use crate::vm::virtiofs::SharedPath;

/// The kinds of namespace a member may join by its sandbox's path, by
/// their OCI names and their names under `/proc/PID/ns`.
const SANDBOX_NAMESPACES: [(&str, &str); 4] = [("ipc", "ipc"), ("uts", "uts"), ("pid", "pid"), ("cgroup", "cgroup")];

/// A pod's directory on the host, shared with its VM.
#[derive(Debug, Clone)]
pub struct PodDir {
    host: PathBuf,
    /// The directory below its read-only bind, where the host writes.
    writer: Option<Arc<OwnedFd>>,
}

impl PodDir {
    /// Makes the pod's directory at `path` (0700, new) and binds it onto
    /// itself, read-only, as a shared mount, so that what is mounted below
    /// it later reaches the VM's share.
    pub fn create(path: &Path) -> Result<PodDir, RuntimeError> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(super::io_err("make the pod directory", path))?;
        let writer = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map(OwnedFd::from);
        let made = writer.and_then(|writer| {
            mount(path, path, libc::MS_BIND)?;
            mount_flags(path, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY)?;
            mount_flags(path, libc::MS_SHARED)?;
            Ok(writer)
        });
        match made {
            Ok(writer) => Ok(PodDir {
                host: path.to_owned(),
                writer: Some(Arc::new(writer)),
            }),
            Err(source) => {
                let _ = unmount(path);
                let _ = fs::remove_dir(path);
                Err(RuntimeError::Io {
                    what: "make a shared mount of the pod directory",
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }

    /// The pod's directory at `path`, made by [`PodDir::create`] (to share
    /// or remove it).
    pub fn at(path: &Path) -> PodDir {
        PodDir {
            host: path.to_owned(),
            writer: None,
        }
    }

    /// Where the host writes `rel` (relative to the pod's directory): on
    /// the writable mount below the bind.
    fn writable(&self, rel: &Path) -> io::Result<PathBuf> {
        let writer = self.writer.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the pod directory was not made by this process",
            )
        })?;
        Ok(PathBuf::from(format!("/proc/self/fd/{}", writer.as_raw_fd())).join(rel))
    }

    /// Its path on the host.
    pub fn path(&self) -> &Path {
        &self.host
    }

    /// The share that gives it to the VM.
    pub fn share(&self) -> SharedPath {
        SharedPath {
            source: self.host.clone(),
            readonly: false,
            recursive: true,
            guest_bind: None,
        }
    }

    /// Unmounts it with whatever is still mounted below it and removes it.
    /// Only directories, and the empty files that were mount points, are
    /// removed: nothing a mount had brought is touched; what is left is an
    /// error naming the directory.
    pub fn remove(&self) -> Result<(), String> {
        // MNT_DETACH takes what is mounted below it along.
        let _ = unmount(&self.host);
        match remove_mount_points(&self.host) {
            true => Ok(()),
            false => Err(format!(
                "{}: left in place, something in it is not an empty mount point",
                self.host.display()
            )),
        }
    }
}

/// A container of a pod, created in its sandbox's VM.
pub struct PodMember {
    id: String,
    endpoint: AgentAddr,
    client: Client,
    process: ProcessId,
    /// The process of its spec, the base of an exec's.
    spec_process: ProcessSpec,
    /// `DIR/ID` on the host, where its root and binds are mounted.
    dir: PathBuf,
    /// The pod's directory.
    pod: PodDir,
    stdin: Mutex<Option<JoinHandle<()>>>,
    outputs: Mutex<Vec<JoinHandle<()>>>,
    console: Option<OwnedFd>,
}

impl std::fmt::Debug for PodMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodMember")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Where a pod's members are: the sandbox container, its host pid (whose
/// `/proc/PID/ns/...` the members' specs name), the pod's directory and
/// where the guest sees it.
#[derive(Debug, Clone)]
pub struct Pod<'a> {
    /// The sandbox, a container of the runtime.
    pub sandbox: &'a str,
    /// The sandbox's pid on the host.
    pub sandbox_pid: u32,
    /// The pod's directory.
    pub dir: &'a PodDir,
    /// Where the guest sees the pod's directory.
    pub guest_dir: String,
}

impl Pod<'_> {
    /// The guest path of the pod directory shared as share `index`.
    pub fn guest_dir(index: usize) -> String {
        SharedPath::guest_path(index)
    }
}

impl Runtime {
    /// The agent of container `id`'s VM.
    pub async fn agent(&self, id: &str) -> Result<AgentAddr, RuntimeError> {
        let live = self.live(id).await?;
        live.endpoint
            .ok_or_else(|| RuntimeError::NotRunning { id: id.to_owned() })
    }

    /// Creates container `id` of `bundle` in the VM of `pod`'s sandbox, its
    /// process waiting for [`PodMember::start`], its stdio relayed to
    /// `stdio`. On failure nothing of it is left.
    pub async fn create_member(
        &self,
        pod: &Pod<'_>,
        id: &str,
        bundle: &Path,
        stdio: ExecStdio,
    ) -> Result<PodMember, RuntimeError> {
        super::check_id(id)?;
        let Bundle {
            mut spec,
            rootfs,
            shares,
        } = Bundle::read_pod_member(bundle, id)?;
        let endpoint = self.agent(pod.sandbox).await?;
        let client = connect(&endpoint, id).await?;
        let sandbox_guest_pid = match client.container_state(pod.sandbox).await {
            Ok(info) => info.pid.ok_or_else(|| RuntimeError::NotRunning {
                id: pod.sandbox.to_owned(),
            })?,
            Err(e) => return Err(agent_err(pod.sandbox, e)),
        };
        let create_failed = |detail: String| RuntimeError::CreateFailed {
            id: id.to_owned(),
            detail,
        };
        map_namespaces(&mut spec.namespaces, pod.sandbox_pid, sandbox_guest_pid).map_err(create_failed)?;
        let dir = pod.dir.path().join(id);
        let made_dir = pod
            .dir
            .writable(Path::new(id))
            .and_then(|writable| fs::DirBuilder::new().mode(0o700).create(writable));
        made_dir.map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => RuntimeError::Exists { id: id.to_owned() },
            _ => RuntimeError::Io {
                what: "make the directory in the pod of",
                path: dir.clone(),
                source: e,
            },
        })?;
        let guest = format!("{}/{id}", pod.guest_dir);
        let made = async {
            bind_into(pod.dir, &rootfs, &Path::new(id).join("rootfs"), true, false)
                .map_err(|e| create_failed(format!("bind its root {} into the pod: {e}", rootfs.display())))?;
            spec.root = format!("{guest}/rootfs");
            for (i, share) in shares.iter().enumerate() {
                let target = Path::new(id).join("mounts").join(i.to_string());
                bind_into(pod.dir, &share.source, &target, share.recursive, share.readonly)
                    .map_err(|e| create_failed(format!("bind {} into the pod: {e}", share.source.display())))?;
                let from = SharedPath::guest_path(i);
                for m in spec.mounts.iter_mut().filter(|m| m.source.as_deref() == Some(&from)) {
                    m.source = Some(format!("{guest}/mounts/{i}"));
                }
            }
            let terminal = spec.process.terminal;
            let size = spec.process.size;
            let spec_process = spec.process.clone();
            let created = client.create_container(spec).await.map_err(|e| agent_err(id, e))?;
            let exec = match attach(client, id, created.process, terminal, size, stdio).await {
                Ok(exec) => exec,
                Err(e) => {
                    // The client went into the attach; a new one deletes.
                    if let Ok(c) = connect(&endpoint, id).await {
                        let _ = c.delete_container(id, true).await;
                        c.close().await;
                    }
                    return Err(e);
                }
            };
            Ok::<_, RuntimeError>((exec, spec_process))
        }
        .await;
        let (exec, spec_process) = match made {
            Ok(made) => made,
            Err(e) => {
                unbind_member(pod.dir, id);
                return Err(e);
            }
        };
        let ExecParts {
            client,
            process,
            stdin,
            outputs,
            console,
        } = exec.into_parts();
        Ok(PodMember {
            id: id.to_owned(),
            endpoint,
            client,
            process,
            spec_process,
            dir,
            pod: pod.dir.clone(),
            stdin: Mutex::new(stdin),
            outputs: Mutex::new(outputs),
            console,
        })
    }
}

impl PodMember {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Starts the container's process; returns its pid in the guest.
    pub async fn start(&self) -> Result<i32, RuntimeError> {
        self.client
            .start_container(&self.id)
            .await
            .map_err(|e| agent_err(&self.id, e))
    }

    /// Waits until the container's process has ended and its output has
    /// been relayed; returns how it ended. Meanwhile a terminal's window
    /// size is followed.
    pub async fn wait(&self) -> Result<ExitStatus, RuntimeError> {
        let follow_size = async {
            match &self.console {
                Some(slave) => console::follow_size(&self.client, self.process, slave.as_fd()).await,
                None => std::future::pending().await,
            }
        };
        let status = tokio::select! {
            status = self.client.wait(self.process) => status.map_err(|e| agent_err(&self.id, e))?,
            () = follow_size => unreachable!("following the window size never ends"),
        };
        let outputs = std::mem::take(&mut *self.outputs.lock().unwrap_or_else(|e| e.into_inner()));
        let drained = async {
            for relay in outputs {
                let _ = relay.await;
            }
        };
        let _ = tokio::time::timeout(super::exec::DRAIN_GRACE, drained).await;
        if let Some(stdin) = self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take() {
            stdin.abort();
        }
        Ok(status)
    }

    /// Its status, as the agent has it.
    pub async fn status(&self) -> Result<ContainerStatus, RuntimeError> {
        let info = self
            .client
            .container_state(&self.id)
            .await
            .map_err(|e| agent_err(&self.id, e))?;
        Ok(info.status)
    }

    /// Sends `signal` to its process, or with `all` to every process of
    /// its cgroup.
    pub async fn kill(&self, signal: i32, all: bool) -> Result<(), RuntimeError> {
        match self.status().await? {
            ContainerStatus::Stopped => Err(RuntimeError::NotRunning { id: self.id.clone() }),
            _ => self
                .client
                .kill_container(&self.id, signal, all)
                .await
                .map_err(|e| agent_err(&self.id, e)),
        }
    }

    /// Freezes or thaws it.
    pub async fn set_paused(&self, paused: bool) -> Result<(), RuntimeError> {
        let done = match paused {
            true => self.client.pause_container(&self.id).await,
            false => self.client.resume_container(&self.id).await,
        };
        done.map_err(|e| agent_err(&self.id, e))
    }

    /// Sets its cgroup's limits.
    pub async fn update(&self, resources: agent_proto::Resources) -> Result<(), RuntimeError> {
        self.client
            .update_container(&self.id, resources)
            .await
            .map_err(|e| agent_err(&self.id, e))
    }

    /// The figures of its cgroup in the VM (see [`Runtime::stats`]); a
    /// stopped member keeps them until it is deleted.
    pub async fn stats(&self) -> Result<agent_proto::ContainerStats, RuntimeError> {
        self.client
            .container_stats(&self.id)
            .await
            .map_err(|e| agent_err(&self.id, e))
    }

    /// The process `exec` would run in it: `how` over its spec's process.
    pub fn exec_process(&self, how: &ExecProcess) -> Result<ProcessSpec, RuntimeError> {
        let built = match how {
            ExecProcess::Flags(flags) => process::from_flags(self.spec_process.clone(), flags),
            ExecProcess::File(path) => process::from_file(path, &self.spec_process),
        };
        built.map_err(|detail| RuntimeError::BadProcess { detail })
    }

    /// Starts `process` in it, its stdio relayed to `stdio`.
    pub async fn exec(&self, process: ProcessSpec, stdio: ExecStdio) -> Result<Exec, RuntimeError> {
        let client = connect(&self.endpoint, &self.id).await?;
        exec_with(client, &self.id, process, stdio).await
    }

    /// Deletes it from the VM (its processes killed first) and takes its
    /// root and binds out of the pod's directory.
    pub async fn delete(&self) -> Result<(), RuntimeError> {
        let deleted = match self.client.delete_container(&self.id, true).await {
            Ok(()) => Ok(()),
            Err(e) => match agent_err(&self.id, e) {
                RuntimeError::NotExist { .. } => Ok(()),
                e => Err(e),
            },
        };
        if let Some(stdin) = self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take() {
            stdin.abort();
        }
        unbind_member(&self.pod, &self.id);
        deleted
    }
}

/// Maps `namespaces` of a member into the guest: the network namespace is
/// the VM's; one joined by the path of the sandbox's (`/proc/HOST/ns/..`)
/// is the sandbox process's in the guest (`/proc/GUEST/ns/..`). Any other
/// path is refused, naming it.
fn map_namespaces(namespaces: &mut [agent_proto::Namespace], host: u32, guest: i32) -> Result<(), String> {
    for (i, ns) in namespaces.iter_mut().enumerate() {
        let Some(path) = ns.path.clone().filter(|p| !p.is_empty()) else {
            continue;
        };
        if ns.kind == "network" {
            ns.path = Some(crate::netns::GUEST_NETWORK_NAMESPACE.to_owned());
            continue;
        }
        let Some(&(_, proc_name)) = SANDBOX_NAMESPACES.iter().find(|(kind, _)| *kind == ns.kind) else {
            return Err(format!(
                "linux.namespaces[{i}].path ({path:?}): a {} namespace cannot be joined by path in a pod",
                ns.kind
            ));
        };
        if path != format!("/proc/{host}/ns/{proc_name}") {
            return Err(format!(
                "linux.namespaces[{i}].path ({path:?}): only the sandbox's (/proc/{host}/ns/{proc_name}) can be joined in its VM"
            ));
        }
        ns.path = Some(format!("/proc/{guest}/ns/{proc_name}"));
    }
    Ok(())
}

/// Binds `source` (a directory or a file) at `rel` in the pod's
/// directory, made for it, with what is mounted below it when
/// `recursive`, read-only when `readonly`.
fn bind_into(pod: &PodDir, source: &Path, rel: &Path, recursive: bool, readonly: bool) -> io::Result<()> {
    let meta = fs::metadata(source)?;
    let made = pod.writable(rel)?;
    if let Some(parent) = made.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    if meta.is_dir() {
        fs::DirBuilder::new().mode(0o700).create(&made)?;
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&made)?;
    }
    // Mounted on the shared bind, so that the share sees it.
    let target = pod.path().join(rel);
    let rec = if recursive { libc::MS_REC } else { 0 };
    mount(source, &target, libc::MS_BIND | rec)?;
    if readonly {
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        if let Err(e) = mount_flags(&target, flags) {
            let _ = unmount(&target);
            return Err(e);
        }
    }
    Ok(())
}

/// Unmounts member `id`'s root and binds (`DIR/ID/rootfs`,
/// `DIR/ID/mounts/N`) and removes their mount points and `DIR/ID`.
fn unbind_member(pod: &PodDir, id: &str) {
    let dir = pod.path().join(id);
    let _ = unmount(&dir.join("rootfs"));
    if let Ok(entries) = fs::read_dir(dir.join("mounts")) {
        for entry in entries.flatten() {
            let _ = unmount(&entry.path());
        }
    }
    if let Ok(writable) = pod.writable(Path::new(id)) {
        let _ = remove_mount_points(&writable);
    }
}

/// Removes `dir`'s tree where it is only directories and empty files (the
/// mount points left once unmounted); leaves anything else (a mount still
/// there shows its contents) and says whether all went.
fn remove_mount_points(dir: &Path) -> bool {
    fn remove(path: &Path) -> bool {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return true;
        };
        if meta.is_file() && meta.len() == 0 {
            return fs::remove_file(path).is_ok();
        }
        if !meta.is_dir() {
            return false;
        }
        let mut all = true;
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                all &= remove(&entry.path());
            }
        }
        all && fs::remove_dir(path).is_ok()
    }
    remove(dir)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
}

/// mount(2) of `source` on `target` with `flags` (no type, no data).
fn mount(source: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let (source, target) = (c_path(source)?, c_path(target)?);
    // SAFETY: NUL-terminated paths that outlive the call; no type or data.
    let done = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// mount(2) changing `target`'s flags or propagation.
fn mount_flags(target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: a NUL-terminated path that outlives the call; the rest null.
    let done = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Lazily unmounts `target` with everything below it.
fn unmount(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    match unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::{Namespace, GUEST_SHARES};

    fn ns(kind: &str, path: Option<&str>) -> Namespace {
        Namespace {
            kind: kind.into(),
            path: path.map(Into::into),
        }
    }

    #[test]
    fn a_members_namespaces_are_its_sandboxs_in_the_guest() {
        let mut spec = vec![
            ns("network", Some("/proc/4242/ns/net")),
            ns("ipc", Some("/proc/4242/ns/ipc")),
            ns("uts", Some("/proc/4242/ns/uts")),
            ns("pid", Some("/proc/4242/ns/pid")),
            ns("mount", None),
        ];
        map_namespaces(&mut spec, 4242, 17).unwrap();
        let paths: Vec<_> = spec.iter().map(|n| n.path.as_deref()).collect();
        assert_eq!(
            paths,
            [
                Some("/proc/1/ns/net"),
                Some("/proc/17/ns/ipc"),
                Some("/proc/17/ns/uts"),
                Some("/proc/17/ns/pid"),
                None
            ]
        );
    }

    #[test]
    fn namespaces_of_anything_but_the_sandbox_are_refused_by_name() {
        let mut other = vec![ns("ipc", Some("/proc/1/ns/ipc"))];
        let err = map_namespaces(&mut other, 4242, 17).unwrap_err();
        assert!(err.contains("linux.namespaces[0].path (\"/proc/1/ns/ipc\")"), "{err}");
        assert!(err.contains("/proc/4242/ns/ipc"), "{err}");
        let mut user = vec![ns("mount", None), ns("user", Some("/proc/4242/ns/user"))];
        let err = map_namespaces(&mut user, 4242, 17).unwrap_err();
        assert!(
            err.contains("linux.namespaces[1].path") && err.contains("user"),
            "{err}"
        );
        let mut sideways = vec![ns("uts", Some("/proc/4242/ns/../../1/ns/uts"))];
        assert!(map_namespaces(&mut sideways, 4242, 17).is_err());
    }

    #[test]
    fn the_guest_sees_the_pod_directory_where_its_share_is() {
        assert_eq!(Pod::guest_dir(2), format!("{GUEST_SHARES}/2"));
    }
}

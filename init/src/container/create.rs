//! A container's creation, in one step as runc creates one: its spec is
//! checked (`plan.rs`), its cgroup made, its process cloned into its new
//! namespaces; the agent writes its id maps, then the process sets up its
//! filesystem (`child::setup`), with a pause before `pivot_root` for the
//! creation hooks, reports that it is ready and waits, before exec, for
//! the start. Its stdio exists from the clone on (pipes or a terminal):
//! the host attaches to them between create and start, as to any created
//! process.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use agent_proto::{ContainerCreated, ContainerSpec, ContainerStatus, ProcessSpec, GUEST_ROOTFS};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::cgroup::{Cgroup, CgroupError};
use super::error::{ContainerError, SetupError};
use super::hooks;
use super::plan;
use super::table::{self, Container, ContainerTable};
use crate::child::command::Command;
use crate::child::failure::{ChildFailure, ExecError, Step};
use crate::child::namespaces::{self, NsPlan};
use crate::child::setup::SetupPlan;
use crate::child::spawn;
use crate::child::ContainerChild;
use crate::process::reaper::RawStatus;
use crate::process::{self, Forked, Processes, Reaper, Stdio};
use crate::sys::{fdio, in_root};

/// `Op::CreateContainer`.
pub(super) async fn create(
    processes: &Processes,
    containers: &ContainerTable,
    spec: ContainerSpec,
) -> Result<ContainerCreated, ContainerError> {
    plan::check_id(&spec.id)?;
    let id = spec.id.clone();
    let _reservation = containers.reserve(&id)?;
    if spec.root == GUEST_ROOTFS {
        process::wait_ready(processes.rootfs())
            .await
            .map_err(|source| ContainerError::NoRootfs { id: id.clone(), source })?;
    }
    // 1. The spec, checked and prepared: nothing exists yet.
    let ns =
        NsPlan::for_create(&spec.namespaces, &spec.uid_mappings, &spec.gid_mappings).map_err(plan::PlanError::from)?;
    let mut setup = plan::setup_plan(&spec, &ns)?;
    if let Some(resources) = &spec.resources {
        Cgroup::validate(resources).map_err(|source| ContainerError::Resources { source })?;
    }
    plan::check_vsock_annotation(&spec.annotations)?;
    let mut process_spec = spec.process.clone();
    process_spec.allow_vsock |= plan::vsock_allowed(&spec.annotations);
    default_home(&mut process_spec, Path::new(&spec.root));
    process_spec.root = Some(spec.root.clone());
    let command = Command::from_spec(process_spec)?;
    let program = command
        .resolve_program()
        .map_err(|source| ContainerError::ProgramNotFound { id: id.clone(), source })?;
    // 2. Its cgroup.
    let cgroup_path = spec.cgroups_path.clone().unwrap_or_else(|| format!("vminitd/{id}"));
    let mut cgroup = match Cgroup::create(&cgroup_path, spec.resources.as_ref()) {
        Ok(cgroup) => Some(cgroup),
        Err(CgroupError::NoCgroup2) if spec.resources.is_none() && spec.cgroups_path.is_none() => {
            warn!("container {id}: no cgroup2 filesystem: the container gets no cgroup of its own");
            None
        }
        Err(
            source @ (CgroupError::ControllerMissing { .. } | CgroupError::BadPath { .. } | CgroupError::Exists { .. }),
        ) => return Err(ContainerError::Resources { source }),
        Err(source) => return Err(ContainerError::Cgroup { id, source }),
    };
    // 3. Its process, set up and waiting for the start.
    let (pumps_tx, pumps_rx) = oneshot::channel();
    plan::make_destinations(Path::new(&spec.root), &setup);
    let creation = Creation {
        id: &id,
        spec: &spec,
        ns: &ns,
        cgroup: cgroup.as_ref(),
        reaper: processes.reaper(),
    };
    let result = fork_container(&creation, command, program, &mut setup, pumps_tx).await;
    let (forked, exited) = match result {
        Ok(forked) => forked,
        Err(e) => {
            if let Some(cgroup) = &cgroup {
                remove_cgroup(&id, cgroup);
            }
            return Err(e);
        }
    };
    let pid = forked.pid;
    // 4. The device allow-list, now that the setup has made the nodes.
    if let (Some(cgroup), Some(resources)) = (cgroup.as_mut(), spec.resources.as_ref()) {
        if let Err(source) = cgroup.restrict_devices(&resources.devices) {
            abandon(processes.reaper(), pid);
            remove_cgroup(&id, cgroup);
            return Err(ContainerError::Cgroup { id, source });
        }
    }
    let process = processes.insert_forked(forked, exited, pumps_rx);
    let container = Arc::new(Container {
        id: id.clone(),
        bundle: spec.bundle.clone(),
        annotations: spec.annotations.clone(),
        created_unix_ns: table::now_unix_ns(),
        process: process.clone(),
        pid,
        cgroup,
        hooks: spec.hooks.clone(),
        started: AtomicBool::new(false),
        paused: AtomicBool::new(false),
    });
    containers.insert(container);
    debug!("container {id}: created, pid {pid}");
    Ok(ContainerCreated {
        process: process.id,
        pid,
    })
}

/// `HOME`, when the environment has none, as runc sets it: the home of
/// the process's uid in the root's `/etc/passwd` (read inside the root),
/// else `/`.
pub(super) fn default_home(spec: &mut ProcessSpec, root: &Path) {
    if spec.env.iter().any(|e| e.starts_with("HOME=")) {
        return;
    }
    let uid = spec.user.as_ref().map_or(0, |u| u.uid);
    // The lookup gives an O_PATH descriptor: read through its /proc link.
    let home = in_root::open_in_root(root, "/etc/passwd")
        .ok()
        .and_then(|fd| std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok())
        .and_then(|text| home_of(&text, uid))
        .unwrap_or_else(|| "/".to_owned());
    spec.env.push(format!("HOME={home}"));
}

/// The home directory of `uid` in `/etc/passwd` text.
fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_owned())
    })
}

/// What a creation is about, for [`fork_container`].
struct Creation<'a> {
    id: &'a str,
    spec: &'a ContainerSpec,
    ns: &'a NsPlan,
    cgroup: Option<&'a Cgroup>,
    reaper: &'a Reaper,
}

/// Kills a process of ours that never became a container (the reaper
/// collects it).
fn abandon(reaper: &Reaper, pid: libc::pid_t) {
    let _ = reaper.kill(pid, libc::SIGKILL);
}

/// Clones the container's process and waits until it is set up, running
/// the `createRuntime` and `createContainer` hooks while it waits before
/// `pivot_root`.
async fn fork_container(
    creation: &Creation<'_>,
    command: Command,
    program: CString,
    setup: &mut SetupPlan,
    pumps: oneshot::Sender<Vec<JoinHandle<()>>>,
) -> Result<(Forked, oneshot::Receiver<RawStatus>), ContainerError> {
    let Creation {
        id,
        spec,
        ns,
        cgroup,
        reaper,
    } = *creation;
    let owned_id = || id.to_owned();
    let creation_hooks = &spec.hooks;
    let pause_before_pivot = !creation_hooks.create_runtime.is_empty() || !creation_hooks.create_container.is_empty();
    let stdio = Stdio::for_container(&command).map_err(|source| ContainerError::Stdio { id: owned_id(), source })?;
    if command.terminal {
        let slave = std::fs::read_link(format!("/proc/self/fd/{}", stdio.child.fds[0]))
            .map_err(|source| ContainerError::Terminal { id: owned_id(), source })?;
        setup.console = Some(
            CString::new(slave.into_os_string().into_encoded_bytes())
                .map_err(|_| ContainerError::TerminalNul { id: owned_id() })?,
        );
    }
    let setup = &*setup;
    let (gate_read, gate_write) = fdio::pipe().map_err(|source| ContainerError::Gate { id: owned_id(), source })?;
    let cgroup_dir = match cgroup {
        Some(cgroup) => Some(
            cgroup
                .open_dir()
                .map_err(|source| ContainerError::Cgroup { id: owned_id(), source })?,
        ),
        None => None,
    };
    let child = ContainerChild {
        ns,
        setup: Some(setup),
        gate: Some(gate_read.as_raw_fd()),
        pause_before_pivot,
        cgroup: cgroup_dir.as_ref().map(|fd| fd.as_raw_fd()),
    };
    let (pid, status_pipe, exited) = reaper
        .spawn(|| spawn::fork_exec(&command, &program, &stdio.child, Some(&child)))
        .map_err(|source| ContainerError::Spawn { id: owned_id(), source })?;
    drop(gate_read);
    let (child_ends, ends) = stdio.agent_ends();
    drop(child_ends);
    drop(cgroup_dir);
    let wake = || {
        // SAFETY: a one-byte write from a valid buffer to our pipe.
        if unsafe { libc::write(gate_write.as_raw_fd(), b"g".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // The agent's part: the id maps; then the child goes on.
    let prepared = match &ns.id_maps {
        Some(maps) => {
            namespaces::write_id_maps(pid, maps).map_err(|source| ContainerError::IdMaps { id: owned_id(), source })
        }
        None => Ok(()),
    }
    .and_then(|()| wake().map_err(|source| ContainerError::Wake { id: owned_id(), source }));
    if let Err(e) = prepared {
        abandon(reaper, pid);
        return Err(e);
    }
    loop {
        let failure = match spawn::exec_outcome(pid, &status_pipe).await {
            Ok(Some(f)) if f.step == Some(Step::Ready) => break,
            Ok(Some(f)) if f.step == Some(Step::Mounted) => {
                // The creation hooks, the container's mounts made and its
                // root not yet pivoted to (as runc runs them).
                let state = table::oci_state(id, ContainerStatus::Creating, pid, &spec.bundle, &spec.annotations);
                let within = hooks::InContainer {
                    pid,
                    cgroup,
                    mount: true,
                };
                let ran = async {
                    let (runtime, container) = (&creation_hooks.create_runtime, &creation_hooks.create_container);
                    hooks::run_all(reaper, runtime, "createRuntime", &state, None).await?;
                    hooks::run_all(reaper, container, "createContainer", &state, Some(within)).await?;
                    wake().map_err(SetupError::Wake)
                }
                .await;
                match ran {
                    Ok(()) => continue,
                    Err(e) => e,
                }
            }
            Ok(Some(f)) => SetupError::Child(ExecError {
                failure: f,
                description: describe_failure(&f, &command, &program, setup),
            }),
            Ok(None) => SetupError::Ended,
            Err(e) => SetupError::Status(e),
        };
        abandon(reaper, pid);
        return Err(ContainerError::SetupFailed {
            id: owned_id(),
            source: failure,
        });
    }
    Ok((
        Forked {
            command,
            program,
            streams: [None, None, None],
            pid,
            stdio: ends,
            status_pipe,
            gate: gate_write,
            pumps,
        },
        exited,
    ))
}

/// What failed in the child, naming the spec's value where the step is
/// one of the setup's.
fn describe_failure(failure: &ChildFailure, command: &Command, program: &CString, plan: &SetupPlan) -> String {
    use crate::child::setup::SetupStep as S;
    let err = std::io::Error::from_raw_os_error(failure.errno);
    let step = match failure.step {
        Some(Step::Setup) => S::from_code(failure.detail),
        _ => return failure.describe(command, program),
    };
    let mount = |i: u32| {
        plan.mounts
            .get(i as usize)
            .map(|m| format!("/{}", m.target.to_string_lossy()))
            .unwrap_or_default()
    };
    let listed = |list: &[CString], i: u32| {
        list.get(i as usize)
            .map(|p| format!("/{}", p.to_string_lossy()))
            .unwrap_or_default()
    };
    match step {
        Some(S::Propagation) => format!("cannot set the propagation of / (linux.rootfsPropagation): {err}"),
        Some(S::BindRoot) | Some(S::OpenRoot) => {
            format!("cannot bind the root {:?} onto itself: {err}", plan.root)
        }
        Some(S::MountTarget(i)) => format!(
            "mounts[{i}]: cannot create the destination {} inside the root: {err}",
            mount(i)
        ),
        Some(S::Mount(i)) => {
            let m = &plan.mounts[i as usize];
            format!(
                "mounts[{i}]: cannot mount {:?} ({}) on {}: {err}",
                m.source,
                if m.fstype.is_empty() {
                    "bind".into()
                } else {
                    m.fstype.to_string_lossy()
                },
                mount(i)
            )
        }
        Some(S::MountRemount(i)) => format!("mounts[{i}]: cannot apply the options to {}: {err}", mount(i)),
        Some(S::MountPropagation(i)) => format!("mounts[{i}]: cannot set the propagation of {}: {err}", mount(i)),
        Some(S::Device(i)) => format!(
            "cannot create the device {}: {err}",
            plan.devices
                .get(i as usize)
                .map(|d| format!("/{}", d.path.to_string_lossy()))
                .unwrap_or_default()
        ),
        Some(S::Symlink(i)) => format!(
            "cannot create the link {}: {err}",
            plan.symlinks
                .get(i as usize)
                .map(|(_, l)| format!("/{}", l.to_string_lossy()))
                .unwrap_or_default()
        ),
        Some(S::Console) => format!("cannot bind the terminal onto /dev/console: {err}"),
        Some(S::Pivot) => format!("cannot pivot_root into {:?}: {err}", plan.root),
        Some(S::MaskPath(i)) => format!("linux.maskedPaths[{i}] {}: {err}", listed(&plan.masked, i)),
        Some(S::ReadonlyPath(i)) => format!("linux.readonlyPaths[{i}] {}: {err}", listed(&plan.readonly, i)),
        Some(S::ReadonlyRoot) => format!("cannot make the root read-only (root.readonly): {err}"),
        Some(S::Hostname) => format!("cannot set the hostname: {err}"),
        Some(S::Domainname) => format!("cannot set the domainname: {err}"),
        Some(S::Sysctl(i)) => format!("linux.sysctl {:?}: {err}", plan.sysctl.key(i as usize)),
        None => format!("the container's setup failed: {err}"),
    }
}

/// Removes a cgroup, logging what it could not.
pub(super) fn remove_cgroup(id: &str, cgroup: &Cgroup) {
    if let Err(e) = cgroup.remove() {
        warn!("container {id}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n# comment\nwww:x:33:33::/var/www:/bin/false\nbad:line\n";
        assert_eq!(home_of(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_of(passwd, 1000), None);
        let mut spec = ProcessSpec {
            env: vec!["HOME=/mine".into()],
            ..Default::default()
        };
        default_home(&mut spec, Path::new("/nonexistent"));
        assert_eq!(spec.env, ["HOME=/mine"]);
        spec.env.clear();
        default_home(&mut spec, Path::new("/nonexistent"));
        assert_eq!(spec.env, ["HOME=/"]);
    }
}

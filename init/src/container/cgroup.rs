//! One cgroup v2 directory per container: created under the cgroup2
//! mount, given the OCI `linux.resources` limits, joined by the
//! container's processes, removed when the container is deleted.
//!
//! [`Cgroup::validate`] checks the resources without touching the system
//! (a bad spec is refused before anything exists); [`Cgroup::create`]
//! then, in order:
//!
//! 1. finds the cgroup2 mount (`/sys/fs/cgroup` in the VM,
//!    `/sys/fs/cgroup/unified` on a hybrid host);
//! 2. checks that it offers every controller the resources need;
//! 3. creates the directory and its missing parents (in a VM below the
//!    workloads' cgroup, `guest::protect`);
//! 4. enables every controller the root offers in each ancestor's
//!    `cgroup.subtree_control`, as runc's cgroup v2 driver does, so that
//!    the container's cgroup has every interface file (`pids.max`,
//!    `memory.max`, ...) whether its spec limits it or not: best effort,
//!    as there, but for the controllers the limits need;
//! 5. writes the limits (`limits.rs`);
//! 6. attaches the device filter (`devices.rs`).
//!
//! A container's processes are born in it (`clone3` with
//! `CLONE_INTO_CGROUP` on [`Cgroup::open_dir`]); [`Cgroup::stats`] reads
//! its figures (`stats.rs`); [`Cgroup::remove`] kills what is left and
//! removes the directory.

mod devices;
mod error;
mod limits;
mod stats;

use std::io::{ErrorKind, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_proto::{ContainerStats, DeviceRule, Resources};

pub use self::error::CgroupError;
use self::limits::{IfMissing, Setting};

/// How long [`Cgroup::remove`] waits for killed processes to leave.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(1);

/// A container's cgroup: a directory under the cgroup2 mount.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    /// The parents [`Cgroup::create`] made, deepest first: removed with the
    /// cgroup once empty.
    made_parents: Vec<PathBuf>,
    /// The device filter's program; attached, it lives on without this fd.
    _device_filter: Option<OwnedFd>,
}

impl Cgroup {
    /// Checks `resources` without touching the system: values and their
    /// ranges, device rules, `unified` keys.
    pub fn validate(resources: &Resources) -> Result<(), CgroupError> {
        limits::settings(resources)?;
        devices::validate(&resources.devices)
    }

    /// Creates the cgroup `relative` (OCI `cgroupsPath`; a leading `/` is
    /// still under the cgroup2 mount) with `resources`, but for the device
    /// allow-list ([`Cgroup::restrict_devices`]). On failure, removes the
    /// directories it made.
    pub fn create(relative: &str, resources: Option<&Resources>) -> Result<Cgroup, CgroupError> {
        let empty = Resources::default();
        let resources = resources.unwrap_or(&empty);
        let settings = limits::settings(resources)?;
        devices::validate(&resources.devices)?;
        let components = components(relative)?;
        let root = cgroup2_root()?;
        let controllers = check_controllers(&root, &needed_controllers(&settings))?;
        let mut cgroup = make_directories(&base_of(&root), &components)?;
        match cgroup.configure(&root, &controllers, &settings) {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                cgroup.discard();
                Err(e)
            }
        }
    }

    /// The cgroup's directory.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the kernel to freeze (or thaw) every process of the cgroup
    /// and its sub-cgroups (`cgroup.freeze`); done once [`Cgroup::frozen`]
    /// says so.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let file = self.path.join("cgroup.freeze");
        let value = if frozen { "1" } else { "0" };
        write_file(&file, value).map_err(|source| CgroupError::Write {
            file,
            value: value.to_owned(),
            source,
        })
    }

    /// Whether the cgroup is frozen, from `cgroup.events`.
    pub fn frozen(&self) -> Result<bool, CgroupError> {
        let file = self.path.join("cgroup.events");
        let text = std::fs::read_to_string(&file).map_err(|source| CgroupError::Read { file, source })?;
        Ok(text.lines().any(|l| l == "frozen 1"))
    }

    /// The cgroup's directory, open, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn open_dir(&self) -> Result<OwnedFd, CgroupError> {
        let file = std::fs::File::open(&self.path).map_err(|source| CgroupError::Open {
            path: self.path.clone(),
            source,
        })?;
        Ok(OwnedFd::from(file))
    }

    /// Moves process `pid` into the cgroup.
    #[cfg(test)]
    pub fn add(&self, pid: libc::pid_t) -> Result<(), CgroupError> {
        let file = self.path().join("cgroup.procs");
        write_file(&file, &pid.to_string()).map_err(|source| CgroupError::Write {
            file,
            value: pid.to_string(),
            source,
        })
    }

    /// The cgroup's figures: CPU, memory, memory events, tasks and I/O,
    /// each absent where the cgroup has no file for it.
    pub fn stats(&self) -> Result<ContainerStats, CgroupError> {
        stats::read(&self.path)
    }

    /// The processes in the cgroup (not in its sub-cgroups).
    pub fn pids(&self) -> Result<Vec<libc::pid_t>, CgroupError> {
        read_pids(&self.path)
    }

    /// SIGKILLs every process of the cgroup and its sub-cgroups at once
    /// (`cgroup.kill`): one that forks meanwhile cannot escape. Where the
    /// kernel has no `cgroup.kill`, one by one.
    pub fn kill_all(&self) {
        kill_tree(&self.path);
    }

    /// Sends `signal` to every process of the cgroup and its sub-cgroups.
    /// The caller freezes the cgroup first, so that none forks meanwhile.
    pub fn signal_all(&self, signal: i32) -> Result<(), CgroupError> {
        signal_tree(&self.path, signal)
    }

    /// Removes the cgroup, and the sub-cgroups its processes made: kills
    /// the processes left (`cgroup.kill`, or SIGKILL one by one where the
    /// kernel has none) and waits up to a second for them to go. Then the
    /// parents it made, while they are empty. Never anything above.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        while let Err(source) = remove_tree(&self.path) {
            if source.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
                return Err(CgroupError::Remove {
                    path: self.path.clone(),
                    pids: self.pids().unwrap_or_default(),
                    source,
                });
            }
            kill_tree(&self.path);
            std::thread::sleep(Duration::from_millis(10));
        }
        for parent in &self.made_parents {
            // Busy: another container's cgroup is in it.
            if std::fs::remove_dir(parent).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Steps 4 to 6 of [`Cgroup::create`].
    fn configure(
        &mut self,
        root: &Path,
        controllers: &[(&'static str, String)],
        settings: &[Setting],
    ) -> Result<(), CgroupError> {
        enable_offered(root, &self.path);
        enable_controllers(root, &self.path, controllers)?;
        for setting in settings {
            self.apply(setting)?;
        }
        Ok(())
    }

    /// Applies new limits to the cgroup of a running container (runc's
    /// `update`): the controllers they need enabled, then each file
    /// written. The device allow-list cannot be changed this way.
    pub fn update(&self, resources: &Resources) -> Result<(), CgroupError> {
        if !resources.devices.is_empty() {
            return Err(CgroupError::InvalidValue {
                field: "linux.resources.devices".into(),
                why: "the device allow-list of a running container cannot be changed".into(),
            });
        }
        let settings = limits::settings(resources)?;
        let root = cgroup2_root()?;
        let controllers = check_controllers(&root, &needed_controllers(&settings))?;
        enable_controllers(&root, &self.path, &controllers)?;
        settings.iter().try_for_each(|setting| self.apply(setting))
    }

    /// Attaches the device allow-list (OCI `linux.resources.devices`) as an
    /// eBPF program. Called once the container's setup has made its device
    /// nodes (the filter would refuse their `mknod`), as runc sets it once
    /// its init reports ready. No rules: nothing attached.
    pub fn restrict_devices(&mut self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        if rules.is_empty() {
            return Ok(());
        }
        let program = devices::program(rules)?;
        let dir = std::fs::File::open(&self.path).map_err(|source| CgroupError::Open {
            path: self.path.clone(),
            source,
        })?;
        let program = devices::load(&program)?;
        devices::attach(&program, dir.as_fd(), &self.path)?;
        self._device_filter = Some(program);
        Ok(())
    }

    fn apply(&self, setting: &Setting) -> Result<(), CgroupError> {
        let file = self.path.join(&setting.file);
        let source = match write_file(&file, &setting.value) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if source.kind() != ErrorKind::NotFound {
            return Err(CgroupError::Apply {
                field: setting.field.clone(),
                file,
                value: setting.value.clone(),
                source,
            });
        }
        match &setting.if_missing {
            IfMissing::Fail => Err(CgroupError::Unsupported {
                field: setting.field.clone(),
                file,
            }),
            IfMissing::Skip => Ok(()),
            IfMissing::Instead { file, value } => self.apply(&Setting {
                field: setting.field.clone(),
                file: file.clone(),
                value: value.clone(),
                if_missing: IfMissing::Fail,
            }),
        }
    }

    /// Removes what [`Cgroup::create`] made, after a failure: no process
    /// has joined yet.
    fn discard(&self) {
        let _ = std::fs::remove_dir(&self.path);
        for parent in &self.made_parents {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Where containers' cgroups are made under the cgroup2 mount `root`: in a
/// VM the workloads' cgroup (`guest::protect`, recorded in
/// `child::defaults`), else `root` itself.
fn base_of(root: &Path) -> PathBuf {
    crate::child::defaults::workloads_dir().map_or_else(|| root.to_owned(), Path::to_owned)
}

/// The cgroup2 mount point: the first cgroup2 mount of
/// `/proc/self/mountinfo`.
fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let file = PathBuf::from("/proc/self/mountinfo");
    let text = std::fs::read_to_string(&file).map_err(|source| CgroupError::Read { file, source })?;
    find_cgroup2(&text).ok_or(CgroupError::NoCgroup2)
}

fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    let line = mountinfo.lines().find(|line| {
        let fstype = line.split_once(" - ").and_then(|(_, rest)| rest.split(' ').next());
        fstype == Some("cgroup2")
    })?;
    crate::sys::procfs::mountinfo_mount_points(line).pop()
}

/// The directory names of `cgroupsPath`, under the cgroup2 root: `..`
/// and NUL refused, empty and `.` components skipped.
fn components(relative: &str) -> Result<Vec<&str>, CgroupError> {
    let bad = |why| CgroupError::BadPath {
        path: relative.to_owned(),
        why,
    };
    if relative.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let parts: Vec<&str> = relative.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.contains(&"..") {
        return Err(bad("goes up with \"..\""));
    }
    if parts.is_empty() {
        return Err(bad("names the cgroup2 root itself"));
    }
    Ok(parts)
}

/// Each controller the settings need, with the first field needing it,
/// and whether it must be there: a controller that only settings skipped
/// where their file is missing need (per-device BFQ weights, no swap
/// limit) may be absent, as their files are then.
fn needed_controllers(settings: &[Setting]) -> Vec<(&'static str, String, bool)> {
    let mut needed: Vec<(&'static str, String, bool)> = Vec::new();
    for setting in settings {
        let Some(controller) = setting.controller() else {
            continue;
        };
        let required = setting.if_missing != IfMissing::Skip;
        match needed.iter_mut().find(|(c, ..)| *c == controller) {
            None => needed.push((controller, setting.field.clone(), required)),
            Some(known) if required && !known.2 => *known = (controller, setting.field.clone(), true),
            Some(_) => {}
        }
    }
    needed
}

/// The controllers of `needed` to enable: every one that must be there,
/// which the cgroup2 root must offer, and the others that it offers.
fn check_controllers(
    root: &Path,
    needed: &[(&'static str, String, bool)],
) -> Result<Vec<(&'static str, String)>, CgroupError> {
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let file = root.join("cgroup.controllers");
    let offered = std::fs::read_to_string(&file).map_err(|source| CgroupError::Read { file, source })?;
    let mut enable = Vec::new();
    for (controller, field, required) in needed {
        if offered.split_whitespace().any(|c| c == *controller) {
            enable.push((*controller, field.clone()));
        } else if *required {
            return Err(CgroupError::ControllerMissing {
                controller,
                field: field.clone(),
                root: root.to_owned(),
            });
        }
    }
    Ok(enable)
}

/// Makes the parents that are missing and the cgroup itself, which must
/// not exist yet.
fn make_directories(root: &Path, components: &[&str]) -> Result<Cgroup, CgroupError> {
    let mut made_parents = Vec::new();
    let mut path = root.to_owned();
    let Some((leaf, parents)) = components.split_last() else {
        return Err(CgroupError::BadPath {
            path: String::new(),
            why: "names the cgroup2 root itself",
        });
    };
    let undo = |made: &[PathBuf]| {
        for dir in made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    };
    for parent in parents {
        path.push(parent);
        match std::fs::create_dir(&path) {
            Ok(()) => made_parents.push(path.clone()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => {
                undo(&made_parents);
                return Err(CgroupError::Create { path, source });
            }
        }
    }
    path.push(leaf);
    let mut created = std::fs::create_dir(&path);
    if matches!(&created, Err(e) if e.kind() == ErrorKind::AlreadyExists) {
        // Left by an agent that is gone (nothing runs in it: rmdir
        // refuses a populated cgroup): made anew. One in use stays.
        if std::fs::remove_dir(&path).is_ok() {
            created = std::fs::create_dir(&path);
        }
    }
    if let Err(source) = created {
        undo(&made_parents);
        return Err(match source.kind() {
            ErrorKind::AlreadyExists => CgroupError::Exists { path },
            _ => CgroupError::Create { path, source },
        });
    }
    made_parents.reverse();
    Ok(Cgroup {
        path,
        made_parents,
        _device_filter: None,
    })
}

/// The root and each directory between it and `leaf`, top down: those
/// whose `cgroup.subtree_control` gives `leaf` its controllers.
fn ancestors<'a>(root: &Path, leaf: &'a Path) -> Vec<&'a Path> {
    let Some(parent) = leaf.parent() else {
        return Vec::new();
    };
    let mut dirs: Vec<&Path> = parent.ancestors().take_while(|d| d.starts_with(root)).collect();
    dirs.reverse();
    dirs
}

/// Enables every controller the cgroup2 `root` offers in the
/// `cgroup.subtree_control` of the root and of each directory between it
/// and `leaf`, as runc's cgroup v2 driver does (`CreateCgroupPath`): all
/// those missing in one write, and where that fails, each in a write of
/// its own, failures left out (a realtime thread keeps `cpu` out of a
/// cgroup, a threaded one the domain controllers). The controllers the
/// spec's limits need are enabled after, their failures named
/// ([`enable_controllers`]).
fn enable_offered(root: &Path, leaf: &Path) {
    let Ok(offered) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        return;
    };
    for dir in ancestors(root, leaf) {
        let file = dir.join("cgroup.subtree_control");
        let Ok(enabled) = std::fs::read_to_string(&file) else {
            return;
        };
        let missing: Vec<String> = offered
            .split_whitespace()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() || write_file(&file, &missing.join(" ")).is_ok() {
            continue;
        }
        for one in &missing {
            let _ = write_file(&file, one);
        }
    }
}

/// Enables the controllers in the `cgroup.subtree_control` of the root and
/// of each directory between it and `leaf`, where they are not yet.
fn enable_controllers(root: &Path, leaf: &Path, needed: &[(&'static str, String)]) -> Result<(), CgroupError> {
    if needed.is_empty() {
        return Ok(());
    }
    for dir in ancestors(root, leaf) {
        let file = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&file).map_err(|source| CgroupError::Read {
            file: file.clone(),
            source,
        })?;
        for (controller, _) in needed {
            if enabled.split_whitespace().any(|c| c == *controller) {
                continue;
            }
            let value = format!("+{controller}");
            write_file(&file, &value).map_err(|source| CgroupError::Write {
                file: file.clone(),
                value,
                source,
            })?;
        }
    }
    Ok(())
}

/// Writes `value` in one `write`, as cgroup files want.
fn write_file(file: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(file)?;
    f.write_all(value.as_bytes())
}

fn read_pids(dir: &Path) -> Result<Vec<libc::pid_t>, CgroupError> {
    let file = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&file).map_err(|source| CgroupError::Read { file, source })?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Removes `dir` and the cgroups below it, deepest first; gone already
/// is done.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let gone = |e: std::io::Error| match e.kind() {
        ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return gone(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir).or_else(gone)
}

/// Kills every process of `dir` and below: `cgroup.kill` (Linux 5.14),
/// which also catches those forking meanwhile, else SIGKILL one by one.
fn kill_tree(dir: &Path) {
    if write_file(&dir.join("cgroup.kill"), "1").is_err() {
        kill_each(dir);
    }
}

/// Sends `signal` to every process of `dir` and below.
fn signal_tree(dir: &Path, signal: i32) -> Result<(), CgroupError> {
    for pid in read_pids(dir)? {
        // SAFETY: kill with a pid and a signal number.
        unsafe { libc::kill(pid, signal) };
    }
    let entries = std::fs::read_dir(dir).map_err(|source| CgroupError::Read {
        file: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            signal_tree(&entry.path(), signal)?;
        }
    }
    Ok(())
}

/// SIGKILLs every process of `dir` and below, one by one.
fn kill_each(dir: &Path) {
    for pid in read_pids(dir).unwrap_or_default() {
        // SAFETY: kill with a pid and a signal number.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            kill_each(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use agent_proto::MemoryResources;

    /// Removes the test's cgroup even when an assertion fails first.
    struct Cleanup(Option<Cgroup>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(cgroup) = self.0.take() {
                if let Err(e) = cgroup.remove() {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }

    /// A cgroup name no other test (or test run) uses.
    fn unique(name: &str) -> String {
        format!("vminitd-test-{}-{name}", std::process::id())
    }

    /// A forked child's way into a cgroup without allocating: open its
    /// `cgroup.procs`, write `0`, close.
    ///
    /// # Safety
    /// Raw syscalls only, no allocation: fit for a forked child.
    unsafe fn join_from_child(procs: &std::ffi::CStr) -> Result<(), ()> {
        // SAFETY: open, write and close on a valid C string and buffer.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(());
            }
        }
        Ok(())
    }

    /// A forked child that waits to be killed; reaped by [`Child::drop`].
    struct Child(libc::pid_t);

    impl Child {
        fn sleeping() -> Child {
            // SAFETY: the child only calls pause and _exit.
            match unsafe { libc::fork() } {
                0 => loop {
                    // SAFETY: async-signal-safe calls in the forked child.
                    unsafe { libc::pause() };
                },
                pid => {
                    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
                    Child(pid)
                }
            }
        }

        /// Waits for the child; its exit code, or 128 + signal.
        fn wait(&mut self) -> i32 {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let rc = unsafe { libc::waitpid(self.0, &mut status, 0) };
            assert_eq!(rc, self.0, "waitpid: {}", std::io::Error::last_os_error());
            self.0 = 0;
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            }
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            if self.0 > 0 {
                // SAFETY: kill and waitpid on our own child.
                unsafe {
                    libc::kill(self.0, libc::SIGKILL);
                    libc::waitpid(self.0, std::ptr::null_mut(), 0);
                }
            }
        }
    }

    #[test]
    fn cgroups_path_stays_under_the_root() {
        assert_eq!(components("vminitd/abc").unwrap(), ["vminitd", "abc"]);
        assert_eq!(components("/a//b/./c/").unwrap(), ["a", "b", "c"]);
        let e = components("/a/../../etc").unwrap_err();
        assert_eq!(e.to_string(), "cgroupsPath \"/a/../../etc\": goes up with \"..\"");
        assert!(matches!(components("a\0b"), Err(CgroupError::BadPath { .. })));
        assert!(matches!(components("/./"), Err(CgroupError::BadPath { .. })));
    }

    #[test]
    fn the_first_cgroup2_mount_is_the_root() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:38 / /mnt/other\\040cg rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(find_cgroup2(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let vm = "25 1 0:24 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_cgroup2(vm), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_cgroup2("22 1 0:21 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn validation_names_the_field() {
        let r = Resources {
            pids_limit: Some(10),
            devices: vec![DeviceRule {
                allow: true,
                kind: Some("q".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = Cgroup::validate(&r).unwrap_err();
        assert_eq!(e.to_string(), "linux.resources.devices[0].type: \"q\" is not a, b or c");
        // Invalid values are refused by create before anything is made.
        let name = unique("invalid");
        assert!(matches!(
            Cgroup::create(&name, Some(&r)),
            Err(CgroupError::InvalidValue { .. })
        ));
        assert!(!Path::new("/sys/fs/cgroup/unified").join(&name).exists());
        assert!(Cgroup::validate(&Resources::default()).is_ok());
    }

    #[test]
    fn a_cgroup_holds_a_process_and_is_removed_with_it() {
        let name = format!("{}/box", unique("procs"));
        let cgroup = Cleanup(Some(Cgroup::create(&name, None).expect("create")));
        let cg = cgroup.0.as_ref().unwrap();
        let root = cgroup2_root().unwrap();
        assert_eq!(cg.path(), root.join(&name));
        assert!(cg.path().is_dir());
        // An empty one (left by an agent that is gone) is made anew.
        drop(Cgroup::create(&name, None).expect("an empty cgroup is taken over"));
        assert!(cg.path().is_dir());
        let mut child = Child::sleeping();
        cg.add(child.0).expect("add");
        assert_eq!(cg.pids().unwrap(), [child.0]);
        // One in use is not.
        assert_eq!(
            Cgroup::create(&name, None).unwrap_err().to_string(),
            format!("the cgroup {} already exists", cg.path().display())
        );
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.0)).unwrap();
        assert!(own.contains(&format!("0::/{name}\n")), "{own}");
        // Still in it: remove kills it first.
        let cgroup = cgroup.0.as_ref().unwrap();
        cgroup.remove().expect("remove");
        assert_eq!(child.wait(), 128 + libc::SIGKILL);
        assert!(!root.join(&name).exists());
        // The parent it made goes with it.
        assert!(!root.join(unique("procs")).exists());
        cgroup.remove().expect("removing twice");
    }

    #[test]
    fn processes_in_sub_cgroups_are_killed_one_by_one_without_cgroup_kill() {
        let cgroup = Cleanup(Some(Cgroup::create(&unique("kill"), None).expect("create")));
        let cg = cgroup.0.as_ref().unwrap();
        // A sub-cgroup, as a container with its own cgroup namespace may
        // make.
        let inner = cg.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let mut child = Child::sleeping();
        write_file(&inner.join("cgroup.procs"), &child.0.to_string()).unwrap();
        assert_eq!(read_pids(&inner).unwrap(), [child.0]);
        assert!(cg.pids().unwrap().is_empty());
        kill_each(cg.path());
        assert_eq!(child.wait(), 128 + libc::SIGKILL);
        cg.remove().expect("remove");
        assert!(!cg.path().exists());
    }

    #[test]
    fn limits_need_their_controllers() {
        let root = cgroup2_root().unwrap();
        let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
        if offered.split_whitespace().any(|c| c == "memory") {
            eprintln!("skipped: cgroup2 at {} offers the memory controller", root.display());
            return;
        }
        let name = unique("memory");
        let r = Resources {
            memory: Some(MemoryResources {
                limit: Some(64 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = Cgroup::create(&name, Some(&r)).unwrap_err();
        assert!(
            matches!(&e, CgroupError::ControllerMissing { controller: "memory", field, .. }
                if field.starts_with("linux.resources.memory")),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "linux.resources.memory.limit needs the memory controller, which cgroup2 at {} does not offer",
                root.display()
            )
        );
        assert!(!root.join(&name).exists());
    }

    /// Per-device BFQ weights are dropped where the kernel cannot take
    /// them, as runc drops them; hugepage limits need the hugetlb
    /// controller, as runc fails to write them without it.
    #[test]
    fn device_weights_may_go_hugepage_limits_may_not() {
        let root = cgroup2_root().unwrap();
        let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
        let has = |c: &str| offered.split_whitespace().any(|o| o == c);
        let name = unique("weights");
        let weights = Resources {
            block_io: Some(agent_proto::BlockIo {
                weight_device: vec![agent_proto::WeightDevice {
                    major: 8,
                    minor: 0,
                    weight: Some(300),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        if !has("io") {
            let cgroup = Cgroup::create(&name, Some(&weights)).unwrap();
            assert!(!cgroup.path().join("io.bfq.weight").exists());
            cgroup.remove().unwrap();
        }
        if has("hugetlb") {
            eprintln!("skipped: cgroup2 at {} offers the hugetlb controller", root.display());
            return;
        }
        let huge = Resources {
            hugepage_limits: vec![agent_proto::HugepageLimit {
                page_size: "2MB".into(),
                limit: 1 << 21,
            }],
            ..Default::default()
        };
        let e = Cgroup::create(&name, Some(&huge)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "linux.resources.hugepageLimits[0] needs the hugetlb controller, which cgroup2 at {} does not offer",
                root.display()
            )
        );
        assert!(!root.join(&name).exists());
    }

    #[test]
    fn a_failed_create_leaves_nothing_behind() {
        let root = cgroup2_root().unwrap();
        let parent = unique("failed");
        let r = Resources {
            unified: [("cgroup.vminitd_no_such_file".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let e = Cgroup::create(&format!("{parent}/box"), Some(&r)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "linux.resources.unified[\"cgroup.vminitd_no_such_file\"] needs {}, which this kernel does not offer",
                root.join(&parent).join("box/cgroup.vminitd_no_such_file").display()
            )
        );
        assert!(!root.join(&parent).exists());
    }

    /// runc's way down to a container's cgroup: each ancestor's
    /// `cgroup.subtree_control` is written every controller the root
    /// offers that it lacks, in one write (here over plain files, which
    /// keep the last write).
    #[test]
    fn every_offered_controller_is_enabled_on_the_way_down() {
        let dir = std::env::temp_dir().join(unique("offered"));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("workloads/pod")).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();
        std::fs::write(root.join("workloads/cgroup.subtree_control"), "").unwrap();
        std::fs::write(
            root.join("workloads/pod/cgroup.subtree_control"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        enable_offered(&root, &root.join("workloads/pod/box"));
        let written = |d: &str| std::fs::read_to_string(root.join(d).join("cgroup.subtree_control")).unwrap();
        assert_eq!(written(""), "+cpuset +cpu +io +pids");
        assert_eq!(written("workloads"), "+cpuset +cpu +io +memory +pids");
        // Nothing missing: nothing written.
        assert_eq!(written("workloads/pod"), "cpuset cpu io memory pids\n");
        // A root that offers nothing (a hybrid host's) is left alone.
        std::fs::write(root.join("cgroup.controllers"), "\n").unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        enable_offered(&root, &root.join("workloads/pod/box"));
        assert_eq!(written(""), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Undoes the test's `+hugetlb` in the root's `cgroup.subtree_control`.
    struct RestoreRoot(PathBuf);

    impl Drop for RestoreRoot {
        fn drop(&mut self) {
            let _ = write_file(&self.0.join("cgroup.subtree_control"), "-hugetlb");
        }
    }

    #[test]
    fn controllers_are_enabled_down_to_the_cgroup() {
        // The only controller a hybrid host's cgroup2 may offer is hugetlb.
        let root = cgroup2_root().unwrap();
        let offered = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
        let file = "hugetlb.2MB.max";
        if !offered.split_whitespace().any(|c| c == "hugetlb")
            || !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists()
        {
            eprintln!(
                "skipped: cgroup2 at {} offers no hugetlb controller with 2 MB pages",
                root.display()
            );
            return;
        }
        let subtree = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap();
        let _restore = (!subtree.split_whitespace().any(|c| c == "hugetlb")).then(|| RestoreRoot(root.clone()));
        let name = format!("{}/box", unique("hugetlb"));
        let r = Resources {
            unified: [(file.to_string(), "4194304".to_string())].into(),
            ..Default::default()
        };
        let cgroup = Cleanup(Some(Cgroup::create(&name, Some(&r)).expect("create")));
        let cg = cgroup.0.as_ref().unwrap();
        let parent = cg.path().parent().unwrap();
        let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap();
        assert_eq!(enabled.trim(), "hugetlb");
        assert_eq!(std::fs::read_to_string(cg.path().join(file)).unwrap(), "4194304\n");
    }

    #[test]
    fn the_device_filter_denies_what_the_rules_deny() {
        let rule = |allow, kind: &str, major, minor, access: &str| DeviceRule {
            allow,
            kind: Some(kind.into()),
            major: Some(major),
            minor: Some(minor),
            access: Some(access.into()),
        };
        let resources = Resources {
            devices: vec![
                rule(false, "a", -1, -1, "rwm"),
                rule(true, "c", 1, 5, "rwm"),
                rule(true, "c", 1, 3, "rwm"),
                rule(false, "c", 1, 3, "r"),
            ],
            ..Default::default()
        };
        let mut cgroup = Cleanup(Some(
            Cgroup::create(&unique("devices"), Some(&resources)).expect("create"),
        ));
        if let Err(e) = cgroup.0.as_mut().unwrap().restrict_devices(&resources.devices) {
            panic!("the kernel refused the device filter: {e}");
        }
        let cg = cgroup.0.as_ref().unwrap();
        let procs = std::ffi::CString::new(cg.path().join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        // The child joins, then tries: /dev/null for reading (bit 0 of
        // its exit code when refused), /dev/null for writing (bit 1 when
        // allowed), /dev/zero for reading (bit 2 when allowed).
        // SAFETY: the child makes raw syscalls only, then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: raw syscalls in the forked child.
            unsafe {
                if join_from_child(&procs).is_err() {
                    libc::_exit(100);
                }
                let try_open = |path: &std::ffi::CStr, flags| {
                    let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::close(fd);
                        return Ok(());
                    }
                    Err(*libc::__errno_location())
                };
                let mut code = 0;
                if try_open(c"/dev/null", libc::O_RDONLY) == Err(libc::EPERM) {
                    code |= 1;
                }
                if try_open(c"/dev/null", libc::O_WRONLY).is_ok() {
                    code |= 2;
                }
                if try_open(c"/dev/zero", libc::O_RDONLY).is_ok() {
                    code |= 4;
                }
                libc::_exit(code);
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        let code = Child(pid).wait();
        assert_ne!(code, 100, "the child could not join {}", cg.path().display());
        assert_eq!(code & 1, 1, "/dev/null could be opened for reading");
        assert_eq!(code & 2, 2, "/dev/null could not be opened for writing");
        assert_eq!(code & 4, 4, "/dev/zero could not be opened for reading");
        assert_eq!(code, 7);
    }
}

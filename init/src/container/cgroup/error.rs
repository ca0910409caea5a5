//! What went wrong with a container's cgroup.

use std::path::PathBuf;

/// What went wrong with a container's cgroup, naming the file, path or
/// OCI field involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// There is no cgroup v2 hierarchy to make the cgroup in.
    #[error("no cgroup2 filesystem is mounted")]
    NoCgroup2,
    /// A value of `linux.resources` is out of range or malformed.
    #[error("{field}: {why}")]
    InvalidValue {
        /// The OCI field.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// `cgroupsPath` cannot be a cgroup below the agent's.
    #[error("cgroupsPath {path:?}: {why}")]
    BadPath {
        /// As given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The hierarchy lacks a controller the resources need.
    #[error("{field} needs the {controller} controller, which cgroup2 at {} does not offer", .root.display())]
    ControllerMissing {
        /// The controller (`memory`, `pids`, ...).
        controller: &'static str,
        /// The OCI field that needs it.
        field: String,
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// The cgroup is there already (another container's).
    #[error("the cgroup {} already exists", .path.display())]
    Exists {
        /// Its directory.
        path: PathBuf,
    },
    /// The cgroup's directory could not be made.
    #[error("cannot create the cgroup {}: {source}", .path.display())]
    Create {
        /// Its directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cgroup's directory could not be opened.
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        /// Its directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A cgroup file could not be read.
    #[error("cannot read {}: {source}", .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A cgroup file could not be written.
    #[error("cannot write {value:?} to {}: {source}", .file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        source: std::io::Error,
    },
    /// A limit of `linux.resources` could not be written.
    #[error("{field}: cannot write {value:?} to {}: {source}", .file.display())]
    Apply {
        /// The OCI field.
        field: String,
        /// The cgroup file.
        file: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel has no file for a limit the spec sets.
    #[error("{field} needs {}, which this kernel does not offer", .file.display())]
    Unsupported {
        /// The OCI field.
        field: String,
        /// The missing cgroup file.
        file: PathBuf,
    },
    /// The kernel refused the device filter's BPF program.
    #[error("cannot load the device filter (linux.resources.devices): {source}{}", verifier_log(.log))]
    DeviceFilterLoad {
        /// Why.
        source: std::io::Error,
        /// The verifier's log.
        log: String,
    },
    /// The device filter could not be attached to the cgroup.
    #[error("cannot attach the device filter (linux.resources.devices) to {}: {source}", .path.display())]
    DeviceFilterAttach {
        /// The cgroup's directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cgroup could not be removed.
    #[error("cannot remove the cgroup {} (processes {pids:?} remain): {source}", .path.display())]
    Remove {
        /// Its directory.
        path: PathBuf,
        /// The processes still in it.
        pids: Vec<libc::pid_t>,
        /// Why.
        source: std::io::Error,
    },
}

/// The end of the verifier's log, where it says what it refused.
fn verifier_log(log: &str) -> String {
    if log.is_empty() {
        return String::new();
    }
    // Statistics ("processed 12 insns ...") close the log; the reason
    // comes before them.
    let statistics = ["processed ", "verification time", "stack depth"];
    let reason = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !statistics.iter().any(|s| l.starts_with(s)));
    let mut tail: Vec<&str> = reason.rev().take(3).collect();
    tail.reverse();
    format!(" (verifier: {})", tail.join(" / "))
}

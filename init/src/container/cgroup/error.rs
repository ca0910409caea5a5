//! What went wrong with a container's cgroup.

use std::path::PathBuf;

/// What went wrong with a container's cgroup, naming the file, path or
/// OCI field involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted")]
    NoCgroup2,
    #[error("{field}: {why}")]
    InvalidValue { field: String, why: String },
    #[error("cgroupsPath {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{field} needs the {controller} controller, which cgroup2 at {} does not offer", .root.display())]
    ControllerMissing {
        controller: &'static str,
        field: String,
        root: PathBuf,
    },
    #[error("the cgroup {} already exists", .path.display())]
    Exists { path: PathBuf },
    #[error("cannot create the cgroup {}: {source}", .path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot open {}: {source}", .path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", .file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("cannot write {value:?} to {}: {source}", .file.display())]
    Write {
        file: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("{field}: cannot write {value:?} to {}: {source}", .file.display())]
    Apply {
        field: String,
        file: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("{field} needs {}, which this kernel does not offer", .file.display())]
    Unsupported { field: String, file: PathBuf },
    #[error("cannot load the device filter (linux.resources.devices): {source}{}", verifier_log(.log))]
    DeviceFilterLoad { source: std::io::Error, log: String },
    #[error("cannot attach the device filter (linux.resources.devices) to {}: {source}", .path.display())]
    DeviceFilterAttach { path: PathBuf, source: std::io::Error },
    #[error("cannot remove the cgroup {} (processes {pids:?} remain): {source}", .path.display())]
    Remove {
        path: PathBuf,
        pids: Vec<libc::pid_t>,
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

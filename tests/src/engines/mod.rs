//! Real container engines driving `vminitd-runtime`: a podman and a dockerd
//! of each test's own (storage, run directories, network configuration and
//! daemon in a scratch directory), the busybox image they load from an
//! archive the tests write (no registry), and what a test checks on the
//! host around them (published ports, terminals, what is left behind).
//!
//! Each engine runs the same commands with runc or with vminitd, so that a
//! test compares the two on the same image.

mod host;
mod image;
mod podman;

pub mod docker;

use std::path::{Path, PathBuf};

pub use docker::Docker;
pub use host::{free_port, http_get, on_terminal, processes, sweep, Leftovers, Subnet, TerminalRun};
pub use image::{write_image_archive, write_oci_archive, IMAGE, INDEX_HTML, PAUSE_IMAGE};
pub use podman::Podman;

/// Which OCI runtime an engine hands its containers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// runc, the reference the engines ship with.
    Runc,
    /// `vminitd-runtime`: each container in a micro-VM.
    Vminitd,
}

/// The name `make install` gives vmshim's OCI runtime entry point.
pub const RUNTIME_ENTRY: &str = "vminitd-runtime";

/// `dir/vminitd-runtime`: a link to the vmshim under test, as `make
/// install` makes one to the installed vmshim (vmshim under that name is
/// `vmshim runtime`); it finds the kernel and initramfs in the source
/// tree's `build/`.
pub fn runtime_entry(dir: &Path) -> PathBuf {
    let link = dir.join(RUNTIME_ENTRY);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(crate::vmshim_bin(), &link).expect("link vminitd-runtime to vmshim");
    }
    link
}

/// Whether `program` is on `PATH` (the engines come from `make setup`).
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// A command's output as text, for assertions and their messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's status, stdout and stderr in one line, for a failed
/// assertion's message.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "{}; stdout: {:?}; stderr: {:?}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// What the smoke tests need of an engine, podman's or docker's: the same
/// commands (`run`, `ps`, `logs`, `exec`, `stop`, `wait`, `rm`, `volume`,
/// `inspect`) with the same flags.
pub trait Engine {
    /// Starts one whose containers run under `runtime`, with the test's
    /// image loaded.
    fn start(runtime: Runtime) -> Self;
    /// The engine's command (`podman`, `docker`) with its environment.
    fn command(&self) -> std::process::Command;
    /// `ENGINE ARGS`, stdin from /dev/null, output captured.
    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the engine's command")
    }
    /// `ENGINE ARGS`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{}", describe(&out));
        text(&out.stdout)
    }
    /// `inspect --format FORMAT NAME`, trimmed.
    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name]).trim().to_owned()
    }
    /// `run ARGS` with the runtime named on the command line, as the
    /// README shows it: `podman --runtime NAME run ARGS`, `docker run
    /// --runtime NAME ARGS`.
    fn run_naming_the_runtime(&self, args: &[&str]) -> std::process::Output;
    /// The runtime's name for `--runtime`.
    fn runtime_name(&self) -> &'static str;
    /// The runtime its containers run under.
    fn runtime(&self) -> Runtime;
    /// Its scratch directory.
    fn path(&self) -> &Path;
    /// Makes a network, named BASE or after it, whose containers find
    /// each other by name; returns its name and its subnet's address
    /// prefix (`10.123.N.`).
    fn network(&mut self, base: &str) -> (String, String);
    /// Records container NAME's network namespace, which `finish` checks
    /// is gone (where it is not below the scratch directory already).
    fn track_netns(&self, name: &str) {
        let _ = name;
    }
    /// Removes what it made and checks that nothing is left on the host.
    fn finish(self);
}

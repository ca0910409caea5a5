//! Shared by the integration tests: temporary directories and the system
//! `cpio`, which the archives are checked against.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory, removed with its contents when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("initramfs-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether the system `cpio` can be run; prints why a test is skipped if not.
pub fn have_cpio(test: &str) -> bool {
    let found = Command::new("cpio")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("note: {test} skipped: no `cpio` on PATH (Debian: apt-get install cpio)");
    }
    found
}

/// Runs `cpio ARGS` in `dir` with `archive` on its standard input.
pub fn cpio(dir: &Path, args: &[&str], archive: &[u8]) -> Output {
    let mut child = Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cpio");
    child.stdin.take().unwrap().write_all(archive).expect("feed cpio");
    let output = child.wait_with_output().expect("wait for cpio");
    assert!(
        output.status.success(),
        "cpio {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Extracts `archive` into `dir` with `cpio -idm --quiet`, leaving out the
/// members that match any of `skip` (`cpio -f`); cpio must not complain
/// about anything.
pub fn extract(dir: &Path, archive: &[u8], skip: &[&str]) {
    let mut args = vec!["-idm", "--quiet"];
    if !skip.is_empty() {
        args.push("-f");
        args.extend(skip);
    }
    let output = cpio(dir, &args, archive);
    assert!(
        output.stderr.is_empty(),
        "cpio -i: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The names `cpio -t` lists, in order.
pub fn list(archive: &[u8]) -> Vec<String> {
    let output = cpio(Path::new("."), &["-t", "--quiet"], archive);
    String::from_utf8(output.stdout)
        .expect("UTF-8 listing")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether this process may make device nodes and give files away.
pub fn is_root(scratch: &Path) -> bool {
    let probe = scratch.join(".uid-probe");
    fs::write(&probe, b"").expect("write probe");
    let uid = fs::metadata(&probe).expect("stat probe").uid();
    fs::remove_file(&probe).expect("remove probe");
    uid == 0
}

/// The permission bits of `path` (not following a symlink).
pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Linux's major and minor of a device number (glibc's `gnu_dev_major/minor`).
pub fn major_minor(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

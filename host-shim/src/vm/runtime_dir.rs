//! A per-VM directory for sockets and logs, removed when the VM ends.
//!
//! Directories are named `<pid>-<random>` under a base directory that is
//! ours alone ([`base_dir`]): `$XDG_RUNTIME_DIR/vmshim` where the session
//! has one of ours, `/run/vmshim` for root, else `$TMPDIR/vmshim-<uid>`.
//! The base is made 0700, or checked before use: one that is a link, is
//! another user's, or that others may write to is refused, naming it (a
//! local user who made `/tmp/vmshim-0` first could otherwise plant links
//! where root writes its logs). Each VM's directory is made 0700 with
//! `mkdir`, which fails if the name exists, and every file in it is created
//! relative to its descriptor, `O_EXCL | O_NOFOLLOW`, 0600.
//!
//! A vmshim killed with SIGKILL cannot remove its own directory, so each
//! new one sweeps the directories of processes that no longer exist.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::console::ConsoleCapture;
use super::VmError;
use crate::private::{ensure_private_dir, PrivateDir, PrivateError};

/// One VM's runtime directory (`PID-RANDOM`, 0700): its sockets and its
/// console log; removed when dropped.
pub struct RuntimeDir {
    dir: PrivateDir,
    /// The guest console's reader, stopped before the directory goes.
    console: OnceLock<ConsoleCapture>,
}

impl RuntimeDir {
    /// A new directory under [`base_dir`].
    pub fn create() -> Result<RuntimeDir, VmError> {
        let base = base_dir();
        let base = match ensure_private_dir(&base) {
            Ok(dir) => dir,
            // /run cannot be written here (read-only, missing, not ours
            // to write): the temporary directory instead. A /run/vmshim
            // that is there and unsafe is refused, never stepped around.
            Err(PrivateError::Io { .. }) if base == Path::new(ROOT_BASE) => ensure_private_dir(&tmp_base())?,
            Err(e) => return Err(e.into()),
        };
        RuntimeDir::create_in(&base)
    }

    /// A new directory in `base`, a private directory.
    pub fn create_in(base: &PrivateDir) -> Result<RuntimeDir, VmError> {
        sweep_stale(base.path());
        let name = format!("{}-{:08x}", std::process::id(), super::vsock::random_u32());
        Ok(RuntimeDir {
            dir: base.create_dir(&name)?,
            console: OnceLock::new(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates file `name` in the directory: 0600, never through a link,
    /// failing if anything has the name.
    pub fn create_file(&self, name: &str) -> Result<std::fs::File, VmError> {
        Ok(self.dir.create_file(name)?)
    }

    /// Starts capturing the guest console into `console.log` (capped and
    /// rotated, see [`crate::private::log`]); returns that log's path and
    /// the socket QEMU is to send the serial console to.
    /// Once per directory.
    pub fn capture_console(&self) -> Result<(PathBuf, PathBuf), VmError> {
        if let Some(capture) = self.console.get() {
            return Ok((capture.log().to_owned(), capture.socket().to_owned()));
        }
        let capture = ConsoleCapture::start(&self.dir).map_err(|source| VmError::Io {
            what: "capture the console in",
            path: self.dir.path().to_owned(),
            source,
        })?;
        let paths = (capture.log().to_owned(), capture.socket().to_owned());
        let _ = self.console.set(capture);
        Ok(paths)
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        // The console's last bytes are written before its log goes.
        drop(self.console.take());
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

/// Root's base when it has no runtime directory of its session.
const ROOT_BASE: &str = "/run/vmshim";

/// Where VMs' runtime directories go: `$XDG_RUNTIME_DIR/vmshim` when that
/// is set to an absolute directory of ours, `/run/vmshim` for root, else
/// `$TMPDIR/vmshim-<uid>`.
pub fn base_dir() -> PathBuf {
    choose_base(
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        crate::private::euid(),
        tmp_base(),
    )
}

fn tmp_base() -> PathBuf {
    std::env::temp_dir().join(format!("vmshim-{}", crate::private::euid()))
}

fn choose_base(xdg_runtime_dir: Option<PathBuf>, euid: u32, tmp: PathBuf) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ours = |dir: &Path| {
        dir.is_absolute()
            && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == euid && m.mode() & 0o022 == 0)
    };
    match xdg_runtime_dir {
        Some(dir) if ours(&dir) => dir.join("vmshim"),
        _ if euid == 0 => PathBuf::from(ROOT_BASE),
        _ => tmp,
    }
}

impl From<PrivateError> for VmError {
    fn from(e: PrivateError) -> VmError {
        match e {
            PrivateError::Io { what, path, source } => VmError::Io { what, path, source },
            PrivateError::Unsafe { path, detail } => VmError::Io {
                what: "refusing to use",
                path,
                source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, detail),
            },
        }
    }
}

/// Removes the directories of vmshim processes that are gone.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::private::tests::{may_chown, mode, under_umask_0};
    use crate::test_dir::TestDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_base_is_the_sessions_roots_or_a_temporary_one() {
        let t = TestDir::new("runtime-base");
        let tmp = PathBuf::from("/tmp/vmshim-1000");
        let me = crate::private::euid();
        let xdg = t.path().join("xdg");
        std::fs::create_dir(&xdg).unwrap();
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(choose_base(Some(xdg.clone()), me, tmp.clone()), xdg.join("vmshim"));
        // Not ours, not absolute, not there, or open to others: not used.
        assert_eq!(choose_base(Some(xdg.clone()), 1000 + me, tmp.clone()), tmp);
        assert_eq!(choose_base(Some("run/user".into()), 1000, tmp.clone()), tmp);
        assert_eq!(choose_base(Some(t.path().join("none")), 1000, tmp.clone()), tmp);
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o777)).unwrap();
        let fallback = if me == 0 {
            PathBuf::from("/run/vmshim")
        } else {
            tmp.clone()
        };
        assert_eq!(choose_base(Some(xdg), me, tmp.clone()), fallback);
        assert_eq!(choose_base(None, 0, tmp.clone()), PathBuf::from("/run/vmshim"));
        assert_eq!(choose_base(None, 1000, tmp.clone()), tmp);
    }

    #[test]
    fn vm_directories_are_private_under_umask_0() {
        if !under_umask_0("vm::runtime_dir::tests::vm_directories_are_private_under_umask_0") {
            return;
        }
        let t = TestDir::new("runtime-umask");
        // (Made 0777 under umask 0: a base in it would be refused.)
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = ensure_private_dir(&t.path().join("vmshim-0")).unwrap();
        let dir = RuntimeDir::create_in(&base).unwrap();
        assert_eq!(mode(base.path()), 0o700);
        assert_eq!(mode(dir.path()), 0o700);
        drop(dir.create_file("qemu.log").unwrap());
        assert_eq!(mode(&dir.path().join("qemu.log")), 0o600);
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists(), "removed with the VM");
    }

    #[test]
    fn a_hostile_base_is_refused_and_planted_logs_are_not_followed() {
        let t = TestDir::new("runtime-hostile");
        // Made by someone else first, open to all: refused, nothing made in it.
        let base = t.path().join("vmshim-0");
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = VmError::from(ensure_private_dir(&base).unwrap_err()).to_string();
        assert_eq!(
            err,
            format!(
                "refusing to use {}: has mode 0777: others may write to it",
                base.display()
            )
        );
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
        // A link to a directory of the attacker's.
        let link = t.path().join("vmshim-1");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        let err = VmError::from(ensure_private_dir(&link).unwrap_err()).to_string();
        assert!(err.ends_with("is a symbolic link"), "{err}");
        if may_chown() {
            std::os::unix::fs::chown(&base, Some(65534), Some(65534)).unwrap();
            std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
            let err = VmError::from(ensure_private_dir(&base).unwrap_err()).to_string();
            assert!(
                err.ends_with(&format!("is owned by uid 65534, not {}", crate::private::euid())),
                "{err}"
            );
        }
        // A log name taken by a link in a VM's directory is never followed.
        let base = ensure_private_dir(&t.path().join("ours")).unwrap();
        let dir = RuntimeDir::create_in(&base).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("qemu.log")).unwrap();
        assert!(dir.create_file("qemu.log").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_console_capture_writes_a_capped_private_log() {
        let t = TestDir::new("runtime-console");
        let base = ensure_private_dir(&t.path().join("base")).unwrap();
        let dir = RuntimeDir::create_in(&base).unwrap();
        let (log, socket) = dir.capture_console().unwrap();
        assert_eq!(log, dir.path().join("console.log"));
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(&socket), 0o600);
        let mut qemu = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        std::io::Write::write_all(&mut qemu, b"Linux version 6.1\r\nvminitd: ready\r\n").unwrap();
        drop(qemu);
        // tail waits for the capture to have written what was sent.
        assert_eq!(super::super::console::tail(&log, 1), "vminitd: ready");
        drop(dir);
        assert!(!log.exists());
    }
}

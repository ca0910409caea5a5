//! A per-VM directory for sockets and logs, removed when the VM ends.
//!
//! Directories are named `<pid>-<random>` under `$TMPDIR/vmshim-<uid>`. A
//! vmshim killed with SIGKILL cannot remove its own, so each new one sweeps
//! the directories of processes that no longer exist.

use std::path::{Path, PathBuf};

use super::VmError;

pub struct RuntimeDir(PathBuf);

impl RuntimeDir {
    pub fn create() -> Result<RuntimeDir, VmError> {
        // SAFETY: getuid has no preconditions.
        let base = std::env::temp_dir().join(format!("vmshim-{}", unsafe { libc::getuid() }));
        std::fs::create_dir_all(&base).map_err(|source| VmError::Io {
            what: "create",
            path: base.clone(),
            source,
        })?;
        sweep_stale(&base);
        let dir = base.join(format!("{}-{:08x}", std::process::id(), super::vsock::random_u32()));
        std::fs::create_dir(&dir).map_err(|source| VmError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(RuntimeDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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

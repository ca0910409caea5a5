//! Where `vmshim run` finds the guest kernel, the initramfs and the default
//! root filesystem.
//!
//! The build directory is `$VMSHIM_BUILD_DIR`, else the `build/` directory of
//! the source tree vmshim was built in (found by walking up from the
//! executable), else `./build`. `make run` fills it: `vmlinux`,
//! `initramfs.cpio`, and the busybox root filesystem tree; ext4 images are
//! cached under `build/cache/`, named by the content of their tree.

use std::path::{Path, PathBuf};

use crate::rootfs::{self, RootfsError};

/// Why an asset is missing.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The kernel or initramfs is not where it was looked for.
    #[error("no guest {what} at {}: build it with `make run` (or pass --{flag})", path.display())]
    Missing {
        /// `kernel` or `initramfs`.
        what: &'static str,
        /// The flag that names another (`kernel`, `initramfs`).
        flag: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `--rootfs` names something that is not a directory.
    #[error("--rootfs {}: not a directory", path.display())]
    NotADirectory {
        /// As given.
        path: PathBuf,
    },
    /// The root filesystem's image could not be made.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
}

/// The build directory.
pub fn build_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMSHIM_BUILD_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("build/vmlinux").is_file() || dir.join("Cargo.toml").is_file() && dir.join("kernel").is_dir() {
                return dir.join("build");
            }
        }
    }
    PathBuf::from("build")
}

/// `given`, or `build/NAME`; either way it must exist.
pub fn find(given: Option<&Path>, name: &str, what: &'static str, flag: &'static str) -> Result<PathBuf, AssetError> {
    let path = given.map(Path::to_path_buf).unwrap_or_else(|| build_dir().join(name));
    if path.is_file() {
        Ok(path)
    } else {
        Err(AssetError::Missing { what, flag, path })
    }
}

/// The guest kernel.
pub fn kernel(given: Option<&Path>) -> Result<PathBuf, AssetError> {
    find(given, "vmlinux", "kernel", "kernel")
}

/// The initramfs with vminitd as /init.
pub fn initramfs(given: Option<&Path>) -> Result<PathBuf, AssetError> {
    find(given, "initramfs.cpio", "initramfs", "initramfs")
}

/// A read-only ext4 image of `tree` (cached), or of the default busybox root
/// filesystem when `tree` is `None` (built on first use).
pub fn rootfs_image(tree: Option<&Path>) -> Result<PathBuf, AssetError> {
    let build = build_dir();
    let cache = build.join("cache");
    let tree = match tree {
        Some(t) if t.is_dir() => t.to_path_buf(),
        Some(t) => return Err(AssetError::NotADirectory { path: t.to_path_buf() }),
        None => {
            let dest = build.join("rootfs-busybox");
            rootfs::busybox_tree(Path::new("/bin/busybox"), &dest)?;
            dest
        }
    };
    Ok(rootfs::ext4_image(&tree, &cache)?)
}

//! Where vmshim finds the guest kernel and the initramfs, and where it keeps
//! what it builds (the default root filesystem, cached ext4 images).
//!
//! The kernel and the initramfs are looked for in `$VMSHIM_BUILD_DIR` when
//! it is set; else, for an installed vmshim (`make install`: the program in
//! `PREFIX/bin`), in `PREFIX/share/vminitd`; else in the build directory.
//!
//! The build directory is `$VMSHIM_BUILD_DIR`, else the `build/` directory
//! of the source tree vmshim was built in (found by walking up from the
//! executable); an installed vmshim, which has no source tree, keeps what it
//! builds in a cache of its user's (`$XDG_CACHE_HOME/vminitd`, else
//! `~/.cache/vminitd`; `/var/cache/vminitd` for root), else `./build`. `make
//! run` fills the source tree's: `vmlinux`, `initramfs.cpio`, and the
//! busybox root filesystem tree; ext4 images are cached under `cache/`,
//! named by the content of their tree.

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

/// Where `make install` puts the kernel and the initramfs, below its
/// prefix.
pub const INSTALLED_ASSETS: &str = "share/vminitd";

/// The build directory: where vmshim keeps what it builds.
pub fn build_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMSHIM_BUILD_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().ok();
    if let Some(tree) = exe.as_deref().and_then(source_tree) {
        return tree.join("build");
    }
    if exe.as_deref().and_then(installed_assets).is_some() {
        if let Some(cache) = user_cache_dir() {
            return cache;
        }
    }
    PathBuf::from("build")
}

/// Where the kernel and the initramfs are looked for: `$VMSHIM_BUILD_DIR`,
/// else an installed vmshim's `PREFIX/share/vminitd`, else the build
/// directory.
pub fn asset_dir() -> PathBuf {
    if std::env::var_os("VMSHIM_BUILD_DIR").is_none() {
        if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(installed_assets) {
            return dir;
        }
    }
    build_dir()
}

/// The source tree `exe` was built in: the first directory above it that
/// holds `build/vmlinux`, or the workspace's `Cargo.toml` and `kernel/`.
fn source_tree(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .find(|dir| {
            dir.join("build/vmlinux").is_file() || dir.join("Cargo.toml").is_file() && dir.join("kernel").is_dir()
        })
        .map(Path::to_path_buf)
}

/// `PREFIX/share/vminitd` for an `exe` installed as `PREFIX/bin/NAME`, when
/// that directory holds a kernel.
fn installed_assets(exe: &Path) -> Option<PathBuf> {
    let bin = exe.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let dir = bin.parent()?.join(INSTALLED_ASSETS);
    dir.join("vmlinux").is_file().then_some(dir)
}

/// An installed vmshim's build directory: `/var/cache/vminitd` for root,
/// else `$XDG_CACHE_HOME/vminitd`, else `$HOME/.cache/vminitd`.
fn user_cache_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/cache/vminitd"));
    }
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| std::env::var_os("HOME").and_then(absolute).map(|h| h.join(".cache")))
        .map(|base| base.join("vminitd"))
}

/// `given`, or `NAME` in the [`asset_dir`]; either way it must exist.
pub fn find(given: Option<&Path>, name: &str, what: &'static str, flag: &'static str) -> Result<PathBuf, AssetError> {
    let path = given.map(Path::to_path_buf).unwrap_or_else(|| asset_dir().join(name));
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
/// filesystem when `tree` is `None` (built on first use). The tree's digest
/// is remembered by its entries' status, so that the next run with the same
/// tree reads none of its files.
pub fn rootfs_image(tree: Option<&Path>) -> Result<PathBuf, AssetError> {
    let build = build_dir();
    let cache = build.join("cache");
    let tree = match tree {
        Some(t) => checked_tree(t)?,
        None => {
            let dest = build.join("rootfs-busybox");
            rootfs::busybox_tree_cached(Path::new("/bin/busybox"), &dest, &cache)?;
            dest
        }
    };
    Ok(rootfs::ext4_image_remembered(&tree, &cache)?)
}

/// A read-only ext4 image of a container bundle's root (cached by content).
/// Its digest is not remembered: an engine's bundle root is a new overlay
/// mount for each container, another path on another device, whose memo
/// would never serve and would only pile up in the cache.
pub fn bundle_rootfs_image(tree: &Path) -> Result<PathBuf, AssetError> {
    Ok(rootfs::ext4_image(&checked_tree(tree)?, &build_dir().join("cache"))?)
}

fn checked_tree(tree: &Path) -> Result<PathBuf, AssetError> {
    match tree.is_dir() {
        true => Ok(tree.to_path_buf()),
        false => Err(AssetError::NotADirectory {
            path: tree.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_program_finds_its_assets_under_its_prefix() {
        let prefix = crate::test_dir::TestDir::new("assets-prefix");
        let bin = prefix.path().join("bin");
        let share = prefix.path().join(INSTALLED_ASSETS);
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&share).unwrap();
        let exe = bin.join("vmshim");
        // Not installed until the kernel is there.
        assert_eq!(installed_assets(&exe), None);
        std::fs::write(share.join("vmlinux"), b"kernel").unwrap();
        assert_eq!(installed_assets(&exe), Some(share.clone()));
        // A program elsewhere than PREFIX/bin is not an installed one.
        assert_eq!(installed_assets(&prefix.path().join("vmshim")), None);
        assert_eq!(installed_assets(&share.join("vmshim")), None);
    }

    #[test]
    fn a_program_in_the_source_tree_finds_its_build_directory() {
        let tree = crate::test_dir::TestDir::new("assets-tree");
        std::fs::create_dir_all(tree.path().join("kernel")).unwrap();
        std::fs::create_dir_all(tree.path().join("target/release")).unwrap();
        std::fs::write(tree.path().join("Cargo.toml"), b"[workspace]").unwrap();
        let exe = tree.path().join("target/release/vmshim");
        assert_eq!(source_tree(&exe).as_deref(), Some(tree.path()));
        assert_eq!(source_tree(Path::new("/vmshim")), None);
    }
}

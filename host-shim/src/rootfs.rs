//! Root filesystems for the guest: directory trees, and the read-only ext4
//! images the guest gets them as (virtio-blk, with a writable overlay on top
//! in the guest).
//!
//! * [`busybox_tree`]: a small root filesystem made of a static busybox.
//! * [`ext4_image`]: a read-only ext4 image of any tree, cached by content;
//!   [`ext4_image_remembered`] also remembers the tree's digest by its
//!   entries' status, for a tree that comes back at the same path.
//! * [`tree_digest`]: the content hash that names those images.
//!
//! Both builders write under a temporary name beside their result and rename
//! it into place, so concurrent vmshim processes never see half a tree or
//! half an image, and a build that dies leaves nothing that looks finished.
//! The cache directory the images (and unpacked OCI images) live in is ours
//! and 0700, the images in it 0600, whatever the umask.

mod busybox;
mod cache;
mod digest;
mod ext4;
mod memo;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{SystemTime, UNIX_EPOCH};

pub use busybox::{busybox_tree, busybox_tree_cached};
pub(crate) use cache::private_dir;
#[cfg(test)]
pub(crate) use cache::Umask;
pub use digest::{tree_digest, TreeDigest};
pub use ext4::{ext4_image, ext4_image_remembered};

/// Why a root filesystem tree or image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// No static busybox to make the default tree of.
    #[error("no busybox at {}: install busybox-static (a static busybox is needed in the guest)", path.display())]
    BusyboxMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// busybox would not list its applets, whose links the tree holds.
    #[error("{} --list-full: {detail}", busybox.display())]
    BusyboxApplets {
        /// The busybox binary.
        busybox: PathBuf,
        /// How it failed.
        detail: String,
    },
    /// A file of the tree, the image or the cache could not be made.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The tree could not be read, to hash it or to size its image.
    #[error("reading the tree at {}: {source}", path.display())]
    Walk {
        /// Where in the tree.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// `mkfs.ext4` could not be run.
    #[error("cannot run {program}: {source} (install e2fsprogs)")]
    MkfsMissing {
        /// The program.
        program: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// `mkfs.ext4` ran and failed.
    #[error("mkfs.ext4 for {} failed ({status}): {stderr}", image.display())]
    Mkfs {
        /// The image it was making.
        image: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// A closure that wraps an I/O error with what was being done, and where.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A name beside `dest` for building it: hidden, unique to this process and
/// moment, so concurrent builders never share one.
fn temp_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dest.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from their 64 hex digits, as [`hex`] writes them.
fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

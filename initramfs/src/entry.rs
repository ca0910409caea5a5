//! One member of an archive as the caller describes it: a path, what kind of
//! file it is, its permission bits and its owner. Nothing is checked or read
//! here; [`crate::Archive`] does that when it writes.

use std::path::PathBuf;

use crate::error::Error;
use crate::newc::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};
use crate::path::{display, PATH_MAX};

/// Permission bits a symlink is stored with; Linux ignores them.
const SYMLINK_MODE: u32 = 0o777;

/// The permission bits an entry's mode may carry: rwx for all three classes
/// plus setuid, setgid and sticky.
const PERMISSION_BITS: u32 = 0o7777;

/// One file, directory, symlink or device node to put in an archive.
///
/// Paths are guest paths (`/dev/console`); the leading `/` is optional.
/// Modes are permission bits only (`0o755`, `0o1777`): the file type comes
/// from the constructor. Entries are owned by root (0:0) unless
/// [`Entry::owner`] says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path as the caller gave it, normalized only when written.
    pub(crate) path: String,
    pub(crate) kind: Kind,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// What an entry is, with whatever that kind of file carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File(Contents),
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Contents {
    Bytes(Vec<u8>),
    /// Read (and measured) when the archive is written, not before.
    HostFile(PathBuf),
}

impl Entry {
    fn new(path: impl Into<String>, kind: Kind, mode: u32) -> Self {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A directory.
    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        Self::new(path, Kind::Dir, mode)
    }

    /// A regular file holding `contents`.
    pub fn file(path: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self::new(path, Kind::File(Contents::Bytes(contents.into())), mode)
    }

    /// A regular file holding the bytes of `host_path`, read when the archive
    /// is written. Only the contents are taken from the host file: mode,
    /// owner and time come from the entry and the archive.
    pub fn file_from_path(path: impl Into<String>, host_path: impl Into<PathBuf>, mode: u32) -> Self {
        let contents = Contents::HostFile(host_path.into());
        Self::new(path, Kind::File(contents), mode)
    }

    /// A symbolic link to `target`, stored as given (absolute targets are
    /// resolved in the guest, not on the host).
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        let target = target.into();
        Self::new(path, Kind::Symlink { target }, SYMLINK_MODE)
    }

    /// A character device node, such as `/dev/console` (5, 1).
    pub fn char_device(path: impl Into<String>, mode: u32, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::CharDevice { major, minor }, mode)
    }

    /// A block device node.
    pub fn block_device(path: impl Into<String>, mode: u32, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::BlockDevice { major, minor }, mode)
    }

    /// Sets the owner; the default is root (0:0).
    #[must_use]
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// The path as it was given.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }

    /// The file type bits of `c_mode`.
    pub(crate) fn file_type(&self) -> u32 {
        match self.kind {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink { .. } => S_IFLNK,
            Kind::CharDevice { .. } => S_IFCHR,
            Kind::BlockDevice { .. } => S_IFBLK,
        }
    }

    /// Checks what can be checked without the rest of the archive or the
    /// host: the mode and a symlink's target. `name` is the normalized path.
    pub(crate) fn validate(&self, name: &str) -> Result<(), Error> {
        if self.mode & !PERMISSION_BITS != 0 {
            return Err(Error::InvalidMode {
                path: display(name),
                mode: self.mode,
            });
        }
        if let Kind::Symlink { target } = &self.kind {
            if target.is_empty() || target.contains('\0') || target.len() + 1 > PATH_MAX {
                return Err(Error::InvalidSymlinkTarget {
                    path: display(name),
                    target: target.clone(),
                });
            }
        }
        Ok(())
    }
}

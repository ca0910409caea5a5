//! What can go wrong while building or writing an archive. Every variant
//! names the archive path (as the absolute guest path, e.g. `/dev/console`)
//! or the host file it is about.

use std::io;
use std::path::PathBuf;

use crate::path::PathProblem;

/// Why an archive could not be built or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path given for an entry cannot be stored (see [`PathProblem`]).
    #[error("invalid archive path {path:?}: {problem}")]
    InvalidPath {
        /// The entry's path in the archive, as the caller gave it.
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },

    /// Two entries were given for the same path.
    #[error("archive path {path} is given more than once")]
    DuplicatePath {
        /// The entry's path in the archive (`/dev/console`).
        path: String,
    },

    /// An entry's mode has bits beyond the permission bits (`0o7777`); the
    /// file type comes from the kind of entry, not from the mode.
    #[error("invalid mode {mode:#o} for {path}: only permission bits (at most 0o7777) may be given")]
    InvalidMode {
        /// The entry's path in the archive (`/dev/console`).
        path: String,
        /// The mode as given.
        mode: u32,
    },

    /// A symlink target is empty, has a NUL, or is longer than the kernel
    /// accepts.
    #[error("invalid target {target:?} for symlink {path}: it must be 1 to 4095 bytes without NUL")]
    InvalidSymlinkTarget {
        /// The symlink's path in the archive.
        path: String,
        /// The target as given.
        target: String,
    },

    /// An entry lies under another entry that is not a directory.
    #[error("cannot add {path}: its parent {parent} is not a directory")]
    ParentNotDirectory {
        /// The entry's path in the archive (`/dev/console`).
        path: String,
        /// The ancestor that was given as a file, symlink or device.
        parent: String,
    },

    /// The host file behind an entry cannot be inspected or read.
    #[error("cannot read {} for {path}", host_path.display())]
    ReadSource {
        /// The entry's path in the archive (`/dev/console`).
        path: String,
        /// The host file it comes from.
        host_path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },

    /// The host file behind an entry is a directory, device or the like.
    #[error("{} for {path} is not a regular file", host_path.display())]
    NotRegularFile {
        /// The entry's path in the archive (`/dev/console`).
        path: String,
        /// The host path that is not a regular file.
        host_path: PathBuf,
    },

    /// The host file behind an entry grew or shrank between being measured
    /// and being copied: the archive would not match its header.
    #[error("{} for {path} changed size while it was being archived", host_path.display())]
    SourceChanged {
        /// The entry's path in the archive (`/dev/console`).
        path: String,
        /// The host file that changed.
        host_path: PathBuf,
    },

    /// `newc` stores sizes in 32 bits.
    #[error("{path} is {size} bytes; newc members are limited to 4 GiB - 1")]
    TooLarge {
        /// The entry's path in the archive (`/dev/console`).
        path: String,
        /// Its size in bytes.
        size: u64,
    },

    /// Writing a member to the output failed.
    #[error("cannot write archive member {path}")]
    Write {
        /// The member being written (`TRAILER!!!` for the end).
        path: String,
        /// What the output said.
        #[source]
        source: io::Error,
    },

    /// Flushing the output after the last member failed.
    #[error("cannot flush the archive")]
    Flush(#[source] io::Error),

    /// `SOURCE_DATE_EPOCH` is set but is not a time `newc` can store.
    #[error("invalid SOURCE_DATE_EPOCH {value:?}: expected whole seconds since 1970, from 0 to 4294967295")]
    InvalidSourceDateEpoch {
        /// The variable's value, as it was set.
        value: String,
    },

    /// The output path has no file name (`/`, `..`).
    #[error("invalid output path {}: it must name a file", path.display())]
    InvalidOutputPath {
        /// The output path as given.
        path: PathBuf,
    },

    /// The directory for the output cannot be created.
    #[error("cannot create directory {}", dir.display())]
    CreateDir {
        /// The directory the output goes in, made with its missing ancestors.
        dir: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },

    /// The temporary file beside the output cannot be created.
    #[error("cannot create temporary file {}", path.display())]
    CreateTemp {
        /// The temporary file's path.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },

    /// The finished temporary file cannot be synced or renamed into place.
    #[error("cannot save {}", path.display())]
    Persist {
        /// The output path.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

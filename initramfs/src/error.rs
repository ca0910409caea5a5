//! What can go wrong while building or writing an archive. Every variant
//! names the archive path (as the absolute guest path, e.g. `/dev/console`)
//! or the host file it is about.

use std::io;
use std::path::PathBuf;

use crate::path::PathProblem;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path given for an entry cannot be stored (see [`PathProblem`]).
    #[error("invalid archive path {path:?}: {problem}")]
    InvalidPath { path: String, problem: PathProblem },

    /// Two entries were given for the same path.
    #[error("archive path {path} is given more than once")]
    DuplicatePath { path: String },

    /// An entry's mode has bits beyond the permission bits (`0o7777`); the
    /// file type comes from the kind of entry, not from the mode.
    #[error("invalid mode {mode:#o} for {path}: only permission bits (at most 0o7777) may be given")]
    InvalidMode { path: String, mode: u32 },

    /// A symlink target is empty, has a NUL, or is longer than the kernel
    /// accepts.
    #[error("invalid target {target:?} for symlink {path}: it must be 1 to 4095 bytes without NUL")]
    InvalidSymlinkTarget { path: String, target: String },

    /// An entry lies under another entry that is not a directory.
    #[error("cannot add {path}: its parent {parent} is not a directory")]
    ParentNotDirectory { path: String, parent: String },

    /// The host file behind an entry cannot be inspected or read.
    #[error("cannot read {} for {path}", host_path.display())]
    ReadSource {
        path: String,
        host_path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The host file behind an entry is a directory, device or the like.
    #[error("{} for {path} is not a regular file", host_path.display())]
    NotRegularFile { path: String, host_path: PathBuf },

    /// The host file behind an entry grew or shrank between being measured
    /// and being copied: the archive would not match its header.
    #[error("{} for {path} changed size while it was being archived", host_path.display())]
    SourceChanged { path: String, host_path: PathBuf },

    /// `newc` stores sizes in 32 bits.
    #[error("{path} is {size} bytes; newc members are limited to 4 GiB - 1")]
    TooLarge { path: String, size: u64 },

    /// Writing a member to the output failed.
    #[error("cannot write archive member {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },

    /// Flushing the output after the last member failed.
    #[error("cannot flush the archive")]
    Flush(#[source] io::Error),

    /// `SOURCE_DATE_EPOCH` is set but is not a time `newc` can store.
    #[error("invalid SOURCE_DATE_EPOCH {value:?}: expected whole seconds since 1970, from 0 to 4294967295")]
    InvalidSourceDateEpoch { value: String },

    /// The output path has no file name (`/`, `..`).
    #[error("invalid output path {}: it must name a file", path.display())]
    InvalidOutputPath { path: PathBuf },

    /// The directory for the output cannot be created.
    #[error("cannot create directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The temporary file beside the output cannot be created.
    #[error("cannot create temporary file {}", path.display())]
    CreateTemp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The finished temporary file cannot be synced or renamed into place.
    #[error("cannot save {}", path.display())]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

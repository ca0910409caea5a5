//! A deterministic writer of `newc` cpio archives, the format of Linux
//! initramfs images, and the layout of the vminitd guest's initramfs.
//!
//! No external `cpio` is involved: [`Archive`] collects directories, regular
//! files (from bytes or from a host file), symlinks and device nodes, and
//! [`Archive::write_to`] writes them. The same entries always give the same
//! bytes — sorted by path, parents first (added automatically when not
//! given), inodes numbered in that order, one fixed mtime, root-owned unless
//! told otherwise — so an initramfs can be content-addressed and cached.
//!
//! ```no_run
//! use initramfs::{layout, source_date_epoch};
//!
//! let mut archive = layout::guest_archive("target/x86_64-unknown-linux-musl/release/vminitd");
//! archive.file("/etc/hostname", "guest\n", 0o644);
//! if let Some(mtime) = source_date_epoch()? {
//!     archive.mtime(mtime);
//! }
//! archive.write_to_path("build/initramfs.cpio")?;
//! # Ok::<(), initramfs::Error>(())
//! ```
//!
//! The `mkinitramfs` binary is a thin CLI over this library.

mod archive;
mod entry;
mod epoch;
mod error;
mod host_file;
pub mod layout;
mod newc;
mod output;
mod path;

#[cfg(test)]
mod testutil;

pub use archive::{Archive, Written, IMPLICIT_DIR_MODE};
pub use entry::Entry;
pub use epoch::{source_date_epoch, SOURCE_DATE_EPOCH};
pub use error::Error;
pub use path::{PathProblem, PATH_MAX};

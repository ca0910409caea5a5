//! Applying one layer (a tar archive, maybe gzipped) onto a directory:
//! regular files, directories, symbolic and hard links with their modes and
//! owners, and the OCI whiteouts (`.wh.NAME` removes NAME of the layers
//! below, `.wh..wh..opq` empties a directory of what the layers below put
//! there).
//!
//! Nothing is read, written or changed outside the root. An entry with a
//! `..` component or an absolute path, or one whose parent directories
//! pass through a symbolic link, is refused with an error that names it.
//! Beyond those checks, every operation goes through a descriptor of its
//! parent directory opened inside the tree, one component at a time,
//! never following a link ([`tree`]): creating, removing and linking by
//! name relative to it, owners with `fchownat(AT_SYMLINK_NOFOLLOW)` or
//! `fchown`, modes with `fchmod` on the file or directory just opened. So
//! a link that a later entry puts where an earlier one was (`x/` then
//! `x -> /etc/shadow`) is never followed: a directory's mode, set after the
//! whole layer so that a read-only directory still takes its entries, is
//! set on the directory that entry made, or not at all if it is gone.
//! Symbolic links are created as they are and never followed.
//!
//! An image's layers share [`Limits`] on the bytes they decompress to and
//! the entries they hold: a gzip bomb is refused at the limit.
//!
//! Device nodes and FIFOs are not created (the guest has its own `/dev`);
//! they are returned as [`Skipped`].

mod limits;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
mod tree;

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use limits::{size, Exceeded};
pub use limits::{Budget, Limits};
use tree::Dir;

/// The whiteout prefix, and the opaque-directory marker.
const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The longest entry name or link target taken (Linux's `PATH_MAX`); it
/// also bounds how deep a tree can be.
const MAX_NAME: usize = 4096;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// The compression of a layer media type; `None` for what vmshim
    /// cannot read (zstd, foreign types).
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The archive could not be read (cut short, a bad header, bad gzip).
    #[error("reading the archive: {0}")]
    Read(io::Error),
    /// An entry that would write outside the tree, or through a link.
    #[error("entry {entry:?} {reason}: refused, nothing written for it")]
    Unsafe {
        /// The entry's path in the archive.
        entry: String,
        /// What makes it unsafe (`climbs out of the tree`, ...).
        reason: String,
    },
    /// An entry whose file could not be made in the tree.
    #[error("entry {entry:?}: {op} {}: {source}", path.display())]
    Io {
        /// The entry's path in the archive.
        entry: String,
        /// What was being done (`create`, `write`, `link`, ...).
        op: &'static str,
        /// The file in the tree.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The tree the layer goes onto could not be opened.
    #[error("opening the tree {}: {source}", path.display())]
    Root {
        /// The tree.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The image unpacks to more bytes than its [`Limits`] allow.
    #[error("unpacks to more than {} ({limit} bytes, the limit for one image): refused", size(*limit))]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The image holds more entries than its [`Limits`] allow.
    #[error("holds more than {limit} entries (the limit for one image): refused")]
    TooManyEntries {
        /// The limit, in entries.
        limit: u64,
    },
}

impl From<Exceeded> for LayerError {
    fn from(e: Exceeded) -> LayerError {
        match e {
            Exceeded::Bytes(limit) => LayerError::TooLarge { limit },
            Exceeded::Entries(limit) => LayerError::TooManyEntries { limit },
        }
    }
}

/// An entry that was not created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry's path in the archive.
    pub entry: String,
    /// What it is: `character device`, `block device` or `FIFO`.
    pub kind: &'static str,
}

/// Applies the layer `reader` holds onto `root`, counting what it unpacks
/// against `budget`; returns what it skipped.
pub fn apply_layer(
    reader: impl Read,
    compression: Compression,
    root: &Path,
    budget: &Budget,
) -> Result<Vec<Skipped>, LayerError> {
    let tree = Dir::open_root(root).map_err(|source| LayerError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        // Several gzip members (pigz, concatenated streams) are one stream.
        Compression::Gzip => Box::new(MultiGzDecoder::new(reader)),
    };
    let end = Rc::new(Cell::new(None));
    let mut archive = tar::Archive::new(Unterminated {
        inner: budget.meter(reader),
        offset: 0,
        end: end.clone(),
        pad: 0,
    });
    let mut layer = Layer {
        path: root,
        tree,
        // SAFETY: geteuid has no preconditions and cannot fail.
        owners: unsafe { libc::geteuid() } == 0,
        written: HashSet::new(),
        dir_modes: HashMap::new(),
        skipped: Vec::new(),
    };
    let applied = layer.apply_all(&mut archive, &end, budget);
    // A refused read surfaces as whatever error the reader was in: name
    // the limit instead.
    if let Some(exceeded) = budget.exhausted() {
        return Err(exceeded.into());
    }
    applied?;
    // Last, so that a read-only directory still took its entries.
    layer.set_dir_modes()?;
    Ok(layer.skipped)
}

/// A tar stream that may end without its last padding and end-of-archive
/// blocks (umoci 0.4's `insert` writes such layers): at the real end it
/// adds zeros to the next 512-byte block and two zero blocks more, and
/// records where the real end was.
struct Unterminated<R> {
    inner: R,
    offset: u64,
    end: Rc<Cell<Option<u64>>>,
    /// Zeros still to add after the real end.
    pad: u64,
}

impl<R: Read> Read for Unterminated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.end.get().is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.offset += n as u64;
                return Ok(n);
            }
            self.end.set(Some(self.offset));
            self.pad = (512 - self.offset % 512) % 512 + 1024;
        }
        let n = buf.len().min(self.pad as usize);
        buf[..n].fill(0);
        self.pad -= n as u64;
        Ok(n)
    }
}

/// A directory entry's mode, set after the layer on the directory it made.
struct DirMode {
    mode: u32,
    dev: u64,
    ino: u64,
}

struct Layer<'a> {
    /// The root, for messages.
    path: &'a Path,
    /// The root, for everything else.
    tree: Dir,
    /// Whether owners can be set (running as root).
    owners: bool,
    /// The paths this layer wrote: whiteouts never remove them.
    written: HashSet<PathBuf>,
    /// Directory modes by path; a later entry of a name replaces an
    /// earlier one's.
    dir_modes: HashMap<PathBuf, DirMode>,
    skipped: Vec<Skipped>,
}

impl Layer<'_> {
    fn apply_all<R: Read>(
        &mut self,
        archive: &mut tar::Archive<R>,
        end: &Cell<Option<u64>>,
        budget: &Budget,
    ) -> Result<(), LayerError> {
        for entry in archive.entries().map_err(LayerError::Read)? {
            let mut entry = entry.map_err(LayerError::Read)?;
            budget.entry()?;
            self.apply(&mut entry)?;
            // The zeros Unterminated adds may end the archive, never stand
            // in for a file's data.
            let data_end = entry.raw_file_position() + entry.size();
            if end.get().is_some_and(|end| data_end > end) {
                let shown = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
                return Err(LayerError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the archive ends inside the data of {shown:?}"),
                )));
            }
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), LayerError> {
        let name = entry.path().map_err(LayerError::Read)?.into_owned();
        let shown = name.display().to_string();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        if name.as_os_str().len() > MAX_NAME {
            let reason = format!("has a name of {} bytes, over {MAX_NAME}", name.as_os_str().len());
            return Err(unsafe_entry(&shown, reason));
        }
        let Some(rel) = inside(&name).map_err(|reason| unsafe_entry(&shown, reason))? else {
            return Ok(()); // The root itself: its mode and owner stay.
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let base = rel.file_name().unwrap_or_default().to_owned();
        if let Some(hidden) = base.as_bytes().strip_prefix(WHITEOUT) {
            return self.whiteout(&parent_rel, &base, OsStr::from_bytes(hidden), &shown);
        }
        let parent = self.parent(&parent_rel, &shown)?;

        let header = entry.header();
        let mode = header.mode().map_err(LayerError::Read)? & 0o7777;
        let uid = header.uid().map_err(LayerError::Read)?;
        let gid = header.gid().map_err(LayerError::Read)?;
        let owner = match self.owners {
            true => Some((id(uid, &shown)?, id(gid, &shown)?)),
            false => None,
        };
        let at = self.path.join(&rel);
        let io = |op: &'static str| {
            let (entry, path) = (shown.clone(), at.clone());
            move |source| LayerError::Io {
                entry,
                op,
                path,
                source,
            }
        };
        match kind {
            EntryType::Directory => {
                match parent.stat(&base).map_err(io("inspecting"))? {
                    Some(st) if st.is_dir() => {}
                    Some(_) => {
                        parent.remove(&base).map_err(io("removing"))?;
                        parent.mkdir(&base, 0o700).map_err(io("creating"))?;
                    }
                    None => parent.mkdir(&base, 0o700).map_err(io("creating"))?,
                }
                let dir = parent.open_dir(&base).map_err(io("opening"))?;
                if let Some((uid, gid)) = owner {
                    dir.chown_self(uid, gid).map_err(io("changing the owner of"))?;
                }
                let st = dir.fstat().map_err(io("inspecting"))?;
                let queued = DirMode {
                    mode,
                    dev: st.dev,
                    ino: st.ino,
                };
                self.dir_modes.insert(rel.clone(), queued);
            }
            EntryType::Regular | EntryType::Continuous => {
                parent.remove(&base).map_err(io("removing"))?;
                let mut file = parent.create_file(&base, 0o600).map_err(io("creating"))?;
                io::copy(entry, &mut file).map_err(io("writing"))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io("changing the owner of"))?;
                }
                // After the owner: chown clears set-user-ID bits.
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(io("setting the mode of"))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| unsafe_entry(&shown, "is a symbolic link without a target".into()))?;
                parent.remove(&base).map_err(io("removing"))?;
                parent
                    .symlink(&target, &base)
                    .map_err(io("creating the symbolic link"))?;
                if let Some((uid, gid)) = owner {
                    parent.chown(&base, uid, gid).map_err(io("changing the owner of"))?;
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| unsafe_entry(&shown, "is a hard link without a target".into()))?;
                if target.as_os_str().len() > MAX_NAME {
                    return Err(unsafe_entry(&shown, format!("links to a path over {MAX_NAME} bytes")));
                }
                let target = inside(&target)
                    .map_err(|reason| unsafe_entry(&shown, format!("links to a path that {reason}")))?
                    .ok_or_else(|| unsafe_entry(&shown, "is a hard link to the root".into()))?;
                let from = self.path.join(&target);
                let missing = || LayerError::Io {
                    entry: shown.clone(),
                    op: "hard-linking",
                    path: from.clone(),
                    source: io::ErrorKind::NotFound.into(),
                };
                let target_dir = self
                    .walk(target.parent().unwrap_or(Path::new("")), &shown, false)?
                    .ok_or_else(missing)?;
                let target_name = target.file_name().unwrap_or_default();
                parent.remove(&base).map_err(io("removing"))?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symbolic
                // link links the link itself.
                parent
                    .hard_link(&target_dir, target_name, &base)
                    .map_err(|source| LayerError::Io {
                        entry: shown.clone(),
                        op: "hard-linking",
                        path: from.clone(),
                        source,
                    })?;
                self.written.insert(rel);
                return Ok(()); // The inode's owner and mode are the target's.
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.skipped.push(Skipped {
                    entry: shown,
                    kind: match kind {
                        EntryType::Char => "character device",
                        EntryType::Block => "block device",
                        _ => "FIFO",
                    },
                });
                return Ok(());
            }
            _ => {
                self.skipped.push(Skipped {
                    entry: shown,
                    kind: "entry of an unknown type",
                });
                return Ok(());
            }
        }
        self.written.insert(rel);
        Ok(())
    }

    /// `.wh.HIDDEN` in `dir`: removes HIDDEN of the layers below, or with
    /// the opaque marker everything of theirs in `dir`.
    fn whiteout(&self, dir: &Path, base: &OsStr, hidden: &OsStr, shown: &str) -> Result<(), LayerError> {
        let hidden_bytes = hidden.as_bytes();
        if base.as_bytes() != OPAQUE && (hidden_bytes.starts_with(WHITEOUT) || hidden_bytes.is_empty()) {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk, ...), not a whiteout.
        }
        if base.as_bytes() != OPAQUE && (hidden_bytes == b"." || hidden_bytes == b"..") {
            return Err(unsafe_entry(
                shown,
                format!("whites out {hidden:?}, which is not a name"),
            ));
        }
        // Nothing below to remove where the directory is missing.
        let Some(parent) = self.walk(dir, shown, false)? else {
            return Ok(());
        };
        if base.as_bytes() == OPAQUE {
            let names = parent.names().map_err(|source| LayerError::Io {
                entry: shown.to_owned(),
                op: "listing",
                path: self.path.join(dir),
                source,
            })?;
            for child in names {
                if !self.written.contains(&dir.join(&child)) {
                    self.remove(&parent, &dir.join(&child), shown)?;
                }
            }
            return Ok(());
        }
        let target = dir.join(hidden);
        if !self.written.contains(&target) {
            self.remove(&parent, &target, shown)?;
        }
        Ok(())
    }

    /// Removes `rel`, whose parent is `parent`.
    fn remove(&self, parent: &Dir, rel: &Path, shown: &str) -> Result<(), LayerError> {
        parent
            .remove(rel.file_name().unwrap_or_default())
            .map_err(|source| LayerError::Io {
                entry: shown.to_owned(),
                op: "removing",
                path: self.path.join(rel),
                source,
            })
    }

    /// The directory `rel`, made where it is missing.
    fn parent(&self, rel: &Path, shown: &str) -> Result<Dir, LayerError> {
        self.walk(rel, shown, true)?.ok_or_else(|| LayerError::Io {
            entry: shown.to_owned(),
            op: "creating",
            path: self.path.join(rel),
            source: io::ErrorKind::NotFound.into(),
        })
    }

    /// The directory `rel` (relative, normal components only), reached
    /// one component at a time without following links; missing ones are
    /// made (mode 0755) when `create`, else the answer is `None`. A link
    /// or a non-directory on the way is refused, naming the entry.
    fn walk(&self, rel: &Path, shown: &str, create: bool) -> Result<Option<Dir>, LayerError> {
        let mut dir = self.tree.try_clone().map_err(|source| LayerError::Root {
            path: self.path.to_path_buf(),
            source,
        })?;
        let mut at = PathBuf::new();
        for part in rel.components() {
            let name = part.as_os_str();
            at.push(name);
            let io = |op: &'static str| {
                let path = self.path.join(&at);
                move |source| LayerError::Io {
                    entry: shown.to_owned(),
                    op,
                    path,
                    source,
                }
            };
            dir = match dir.open_dir(name) {
                Ok(next) => next,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    dir.mkdir(name, 0o755).map_err(io("creating"))?;
                    let made = dir.open_dir(name).map_err(io("opening"))?;
                    // The umask has no say in the guest's directories.
                    made.chmod_self(0o755).map_err(io("setting the mode of"))?;
                    made
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    let link = dir.stat(name).ok().flatten().is_some_and(|s| s.is_symlink());
                    let reason = match link {
                        true => format!(
                            "goes through {:?}, a symbolic link: writing through it could leave the root",
                            at.display().to_string()
                        ),
                        false => format!("has {:?}, not a directory, as a parent", at.display().to_string()),
                    };
                    return Err(unsafe_entry(shown, reason));
                }
                Err(e) => return Err(io("opening")(e)),
            };
        }
        Ok(Some(dir))
    }

    /// Sets each directory entry's mode on the directory it made, deepest
    /// first (a parent's mode may close it); one that a later entry
    /// replaced or removed, or that is no longer reached without a link,
    /// is left alone.
    fn set_dir_modes(&self) -> Result<(), LayerError> {
        let mut queued: Vec<_> = self.dir_modes.iter().collect();
        queued.sort_by_key(|(rel, _)| Reverse(rel.components().count()));
        for (rel, queued) in queued {
            let io = |op: &'static str| {
                let path = self.path.join(rel);
                move |source| LayerError::Io {
                    entry: rel.display().to_string(),
                    op,
                    path,
                    source,
                }
            };
            let dir = match self.walk(rel, &rel.display().to_string(), false) {
                Ok(Some(dir)) => dir,
                Ok(None) | Err(LayerError::Unsafe { .. }) => continue,
                Err(e) => return Err(e),
            };
            let st = dir.fstat().map_err(io("inspecting"))?;
            if (st.dev, st.ino) == (queued.dev, queued.ino) {
                dir.chmod_self(queued.mode).map_err(io("setting the mode of"))?;
            }
        }
        Ok(())
    }
}

/// `path` as a relative path inside the root (`None` for the root itself),
/// or why it is not one.
fn inside(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut rel = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a '..' component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path".into()),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

fn unsafe_entry(shown: &str, reason: String) -> LayerError {
    LayerError::Unsafe {
        entry: shown.to_owned(),
        reason,
    }
}

fn id(value: u64, shown: &str) -> Result<u32, LayerError> {
    u32::try_from(value).map_err(|_| unsafe_entry(shown, format!("has owner id {value}, over 32 bits")))
}

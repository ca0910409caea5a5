//! Applying one layer (a tar archive, maybe gzipped) onto a directory:
//! regular files, directories, symbolic and hard links with their modes and
//! owners, and the OCI whiteouts (`.wh.NAME` removes NAME of the layers
//! below, `.wh..wh..opq` empties a directory of what the layers below put
//! there).
//!
//! Nothing is written outside the root: an entry with a `..` component or
//! an absolute path, or one whose parent directories pass through a
//! symbolic link, is refused with an error that names it. Symbolic links
//! are created as they are and never followed while extracting. Checking
//! the parents by path is sound because the tree is private to this
//! extraction: a fresh temporary directory that nothing else writes in.
//!
//! Device nodes and FIFOs are not created (the guest has its own `/dev`);
//! they are returned as [`Skipped`].

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use tar::EntryType;

/// The whiteout prefix, and the opaque-directory marker.
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

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
    #[error("reading the archive: {0}")]
    Read(io::Error),
    #[error("entry {entry:?} {reason}: refused, nothing written for it")]
    Unsafe { entry: String, reason: String },
    #[error("entry {entry:?}: {op} {}: {source}", path.display())]
    Io {
        entry: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// An entry that was not created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub entry: String,
    pub kind: &'static str,
}

/// Applies the layer `reader` holds onto `root`; returns what it skipped.
pub fn apply_layer(reader: impl Read, compression: Compression, root: &Path) -> Result<Vec<Skipped>, LayerError> {
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        // Several gzip members (pigz, concatenated streams) are one stream.
        Compression::Gzip => Box::new(MultiGzDecoder::new(reader)),
    };
    let end = Rc::new(Cell::new(None));
    let mut archive = tar::Archive::new(Unterminated {
        inner: reader,
        offset: 0,
        end: end.clone(),
        pad: 0,
    });
    let mut layer = Layer {
        root,
        // SAFETY: geteuid has no preconditions and cannot fail.
        owners: unsafe { libc::geteuid() } == 0,
        written: HashSet::new(),
        dir_modes: Vec::new(),
        skipped: Vec::new(),
    };
    for entry in archive.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        layer.apply(&mut entry)?;
        // The zeros Unterminated adds may end the archive, never stand in
        // for a file's data.
        let data_end = entry.raw_file_position() + entry.size();
        if end.get().is_some_and(|end| data_end > end) {
            let shown = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
            return Err(LayerError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside the data of {shown:?}"),
            )));
        }
    }
    // Last, so that a read-only directory still took its entries.
    for (path, mode) in layer.dir_modes.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(|source| LayerError::Io {
            entry: path.display().to_string(),
            op: "setting the mode of",
            path: path.clone(),
            source,
        })?;
    }
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

struct Layer<'a> {
    root: &'a Path,
    /// Whether owners can be set (running as root).
    owners: bool,
    /// The paths this layer wrote: whiteouts never remove them.
    written: HashSet<PathBuf>,
    dir_modes: Vec<(PathBuf, u32)>,
    skipped: Vec<Skipped>,
}

impl Layer<'_> {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), LayerError> {
        let name = entry.path().map_err(LayerError::Read)?.into_owned();
        let shown = name.display().to_string();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let Some(rel) = inside(&name).map_err(|reason| unsafe_entry(&shown, reason))? else {
            return Ok(()); // The root itself: its mode and owner stay.
        };
        self.parents(&rel, &shown)?;
        let base = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = base.strip_prefix(WHITEOUT) {
            let dir = rel.parent().unwrap_or(Path::new(""));
            if base == OPAQUE {
                return self.make_opaque(dir, &shown);
            }
            if hidden.starts_with(WHITEOUT) || hidden.is_empty() {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk, ...), not a whiteout.
            }
            let target = dir.join(hidden);
            if !self.written.contains(&target) {
                remove_any(&self.root.join(&target), &shown)?;
            }
            return Ok(());
        }

        let dest = self.root.join(&rel);
        let header = entry.header();
        let mode = header.mode().map_err(LayerError::Read)? & 0o7777;
        let uid = header.uid().map_err(LayerError::Read)?;
        let gid = header.gid().map_err(LayerError::Read)?;
        let io = |op, path: &Path| {
            let entry = shown.clone();
            let path = path.to_path_buf();
            move |source| LayerError::Io {
                entry,
                op,
                path,
                source,
            }
        };
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&dest, &shown)?;
                        fs::create_dir(&dest).map_err(io("creating", &dest))?;
                    }
                    Err(_) => fs::create_dir(&dest).map_err(io("creating", &dest))?,
                }
                self.dir_modes.push((dest.clone(), mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_any(&dest, &shown)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .map_err(io("creating", &dest))?;
                io::copy(entry, &mut file).map_err(io("writing", &dest))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| unsafe_entry(&shown, "is a symbolic link without a target".into()))?;
                remove_any(&dest, &shown)?;
                symlink(&target, &dest).map_err(io("creating the symbolic link", &dest))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| unsafe_entry(&shown, "is a hard link without a target".into()))?;
                let target = inside(&target)
                    .map_err(|reason| unsafe_entry(&shown, format!("links to a path that {reason}")))?
                    .ok_or_else(|| unsafe_entry(&shown, "is a hard link to the root".into()))?;
                self.parents(&target, &shown)?;
                let source = self.root.join(&target);
                remove_any(&dest, &shown)?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symbolic
                // link links the link itself.
                fs::hard_link(&source, &dest).map_err(io("hard-linking", &source))?;
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
        if self.owners {
            let (uid, gid) = (id(uid, &shown)?, id(gid, &shown)?);
            lchown(&dest, Some(uid), Some(gid)).map_err(io("changing the owner of", &dest))?;
        }
        if kind != EntryType::Symlink && kind != EntryType::Directory {
            // After the owner: chown clears set-user-ID bits.
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(io("setting the mode of", &dest))?;
        }
        self.written.insert(rel);
        Ok(())
    }

    /// Checks that every parent of `rel` is a real directory inside the
    /// root (creating missing ones), never a symbolic link.
    fn parents(&self, rel: &Path, shown: &str) -> Result<(), LayerError> {
        let mut dir = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for part in parent.components() {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    let at = dir.strip_prefix(self.root).unwrap_or(&dir).display().to_string();
                    return Err(unsafe_entry(
                        shown,
                        format!("goes through {at:?}, a symbolic link: writing through it could leave the root"),
                    ));
                }
                Ok(_) => {
                    let at = dir.strip_prefix(self.root).unwrap_or(&dir).display().to_string();
                    return Err(unsafe_entry(shown, format!("has {at:?}, not a directory, as a parent")));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(|source| LayerError::Io {
                        entry: shown.to_owned(),
                        op: "creating",
                        path: dir.clone(),
                        source,
                    })?;
                }
                Err(source) => {
                    return Err(LayerError::Io {
                        entry: shown.to_owned(),
                        op: "inspecting",
                        path: dir,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Removes what the layers below put in `dir` (relative).
    fn make_opaque(&self, dir: &Path, shown: &str) -> Result<(), LayerError> {
        let path = self.root.join(dir);
        let children = fs::read_dir(&path).map_err(|source| LayerError::Io {
            entry: shown.to_owned(),
            op: "listing",
            path: path.clone(),
            source,
        })?;
        for child in children {
            let child = child.map_err(LayerError::Read)?;
            if !self.written.contains(&dir.join(child.file_name())) {
                remove_any(&child.path(), shown)?;
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

/// Removes whatever is at `path` (a directory with its contents; a
/// symbolic link itself, never what it points to); nothing there is fine.
fn remove_any(path: &Path, shown: &str) -> Result<(), LayerError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|source| LayerError::Io {
        entry: shown.to_owned(),
        op: "removing",
        path: path.to_path_buf(),
        source,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    /// A tar of (name, kind, data-or-link-target); names are written raw,
    /// unchecked, as a hostile layer would.
    fn tar(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_mode(if *kind == EntryType::Directory { 0o755 } else { 0o644 });
            let body: &[u8] = match kind {
                EntryType::Symlink | EntryType::Link => {
                    h.set_link_name(data).unwrap();
                    b""
                }
                _ => data.as_bytes(),
            };
            h.set_size(body.len() as u64);
            h.set_cksum();
            b.append(&h, body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn apply(root: &Path, entries: &[(&str, EntryType, &str)]) -> Result<Vec<Skipped>, LayerError> {
        apply_layer(&tar(entries)[..], Compression::None, root)
    }

    fn listing(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    walk(root, &p, out);
                }
            }
        }
        walk(root, root, &mut out);
        out.sort();
        out
    }

    use EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    #[test]
    fn whiteouts_remove_lower_entries_and_opaque_dirs_keep_only_the_upper() {
        let t = TestDir::new("layer-whiteout");
        let root = t.path();
        apply(
            root,
            &[
                ("etc/", D, ""),
                ("etc/gone", F, "lower"),
                ("etc/kept", F, "lower"),
                ("data/", D, ""),
                ("data/old", F, "lower"),
                ("data/sub/", D, ""),
                ("data/sub/deep", F, "lower"),
                ("tree/", D, ""),
                ("tree/x", F, "lower"),
            ],
        )
        .unwrap();
        apply(
            root,
            &[
                ("etc/.wh.gone", F, ""),
                ("data/new", F, "upper"),
                ("data/.wh..wh..opq", F, ""),
                ("./.wh.tree", F, ""),
                ("etc/.wh.never-existed", F, ""),
            ],
        )
        .unwrap();
        assert_eq!(
            listing(root),
            ["data", "data/new", "etc", "etc/kept"].map(String::from).to_vec()
        );
        assert_eq!(fs::read_to_string(root.join("data/new")).unwrap(), "upper");
    }

    #[test]
    fn files_links_modes_and_replacements() {
        let t = TestDir::new("layer-kinds");
        let root = t.path();
        apply(
            root,
            &[
                ("bin/busybox", F, "BB"),
                ("bin/sh", H, "bin/busybox"),
                ("bin/ls", S, "busybox"),
                ("abs", S, "/etc/passwd"),
                ("x", D, ""),
            ],
        )
        .unwrap();
        assert_eq!(fs::read_to_string(root.join("bin/sh")).unwrap(), "BB");
        assert_eq!(fs::read_link(root.join("bin/ls")).unwrap(), Path::new("busybox"));
        assert_eq!(fs::read_link(root.join("abs")).unwrap(), Path::new("/etc/passwd"));
        assert_eq!(
            fs::metadata(root.join("bin/busybox")).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        // A directory replaced by a file, a file by a symbolic link.
        apply(root, &[("x", F, "now a file"), ("bin/busybox", S, "elsewhere")]).unwrap();
        assert_eq!(fs::read_to_string(root.join("x")).unwrap(), "now a file");
        assert!(root.join("bin/busybox").is_symlink());
    }

    #[test]
    fn hostile_entries_are_refused_and_write_nothing_outside() {
        let t = TestDir::new("layer-hostile");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let cases: [&[(&str, EntryType, &str)]; 5] = [
            &[("../escape", F, "x")],
            &[("/abs", F, "x")],
            &[("a/../../escape", F, "x")],
            &[("evil", S, outside.to_str().unwrap()), ("evil/planted", F, "x")],
            &[("up", S, "../outside"), ("link", H, "up/../../outside/y")],
        ];
        for entries in cases {
            let err = apply(&root, entries).unwrap_err();
            assert!(matches!(err, LayerError::Unsafe { .. }), "{entries:?}: {err}");
            let shown = entries.last().unwrap().0;
            assert!(err.to_string().contains(shown), "{err}");
        }
        assert_eq!(listing(&outside), Vec::<String>::new());
        assert!(!t.path().join("escape").exists());
        // A whiteout through a planted link removes nothing outside.
        fs::write(outside.join("precious"), "p").unwrap();
        let err = apply(&root, &[("evil/.wh.precious", F, "")]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(outside.join("precious").exists());
    }

    #[test]
    fn archives_without_end_blocks_are_read_but_never_padded_into_data() {
        let t = TestDir::new("layer-unterminated");
        let full = tar(&[("a", F, "upper\n")]);
        // Header and data only, as umoci 0.4 insert writes them.
        apply_layer(&full[..512 + 6], Compression::None, t.path()).unwrap();
        assert_eq!(fs::read_to_string(t.path().join("a")).unwrap(), "upper\n");
        let err = apply_layer(&full[..512 + 3], Compression::None, t.path()).unwrap_err();
        assert!(err.to_string().contains("ends inside the data"), "{err}");
    }

    #[test]
    fn devices_are_skipped() {
        let t = TestDir::new("layer-dev");
        let skipped = apply(t.path(), &[("dev/null", EntryType::Char, "")]).unwrap();
        assert_eq!(skipped[0].kind, "character device");
        assert!(!t.path().join("dev/null").exists());
    }
}

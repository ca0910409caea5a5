//! The content hash of a directory tree: what names its ext4 image.
//!
//! SHA-256 over the tree walked in byte order of names, without following
//! symlinks. Each entry contributes its path relative to the root, its type,
//! permission bits, owner and group, its extended attributes (all that
//! `llistxattr` lists, `security.capability` among them, in byte order of
//! names, with their values), and then its contents: a regular file's
//! bytes, a symlink's target, a device's number. A name of an inode already
//! seen in the walk (a hard link) contributes that first name instead of
//! the contents, so two names of one inode and two equal files differ.
//! Every variable-length field is length-prefixed, so two different trees
//! never hash the same stream. That is everything `mkfs.ext4 -d` carries
//! into an image, except timestamps: those are left out on purpose, so
//! that the same content unpacked twice is one image.
//!
//! The same walk counts what an image of the tree needs (inodes, blocks).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::RootfsError;

/// Names the hashing scheme; changing what is hashed means changing this.
const DOMAIN: &[u8] = b"vmshim rootfs tree v2\0";
/// The image block size the counts are made for.
pub(super) const BLOCK: u64 = 4096;

/// A tree's content hash and the size of its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDigest {
    /// The SHA-256 of every entry (path, metadata, content), walked in
    /// order; the module docs say what is hashed.
    pub sha256: [u8; 32],
    /// Files, directories, symlinks and special files, the root included.
    pub entries: u64,
    /// 4 KiB blocks of file data, directories and long symlinks.
    pub blocks: u64,
}

impl TreeDigest {
    /// As a memo holds it (`memo.rs`): the hex digest, entries, blocks.
    pub(super) fn to_memo(&self) -> String {
        format!("{} {} {}", super::hex(&self.sha256), self.entries, self.blocks)
    }

    /// Read back from [`TreeDigest::to_memo`]'s form.
    pub(super) fn from_memo(text: &str) -> Option<TreeDigest> {
        let mut words = text.split(' ');
        let (sha, entries, blocks) = (words.next()?, words.next()?, words.next()?);
        if words.next().is_some() {
            return None;
        }
        Some(TreeDigest {
            sha256: super::unhex(sha)?,
            entries: entries.parse().ok()?,
            blocks: blocks.parse().ok()?,
        })
    }
}

/// Hashes and measures the tree at `root`.
pub fn tree_digest(root: &Path) -> Result<TreeDigest, RootfsError> {
    let mut walk = Walk {
        hasher: Sha256::new(),
        entries: 0,
        blocks: 0,
        buf: vec![0; 1 << 16],
        inodes: HashMap::new(),
    };
    walk.hasher.update(DOMAIN);
    walk.entry(root, Path::new(""))?;
    Ok(TreeDigest {
        sha256: walk.hasher.finalize().into(),
        entries: walk.entries,
        blocks: walk.blocks,
    })
}

/// SHA-256 of one file's contents.
pub(super) fn file_sha256(path: &Path) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

struct Walk {
    hasher: Sha256,
    entries: u64,
    blocks: u64,
    buf: Vec<u8>,
    /// The first name seen of each inode with more than one link.
    inodes: HashMap<(u64, u64), PathBuf>,
}

impl Walk {
    fn entry(&mut self, path: &Path, rel: &Path) -> Result<(), RootfsError> {
        let walk_err = |source| RootfsError::Walk {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::symlink_metadata(path).map_err(walk_err)?;
        let ft = meta.file_type();
        let tag = match () {
            _ if ft.is_dir() => b'd',
            _ if ft.is_file() => b'f',
            _ if ft.is_symlink() => b'l',
            _ if ft.is_char_device() => b'c',
            _ if ft.is_block_device() => b'b',
            _ if ft.is_fifo() => b'p',
            _ => b's',
        };
        self.bytes(rel.as_os_str().as_bytes());
        self.hasher.update([tag]);
        self.hasher.update((meta.mode() & 0o7777).to_le_bytes());
        self.hasher.update(meta.uid().to_le_bytes());
        self.hasher.update(meta.gid().to_le_bytes());
        let xattrs = xattrs(path).map_err(walk_err)?;
        self.hasher.update((xattrs.len() as u64).to_le_bytes());
        for (name, value) in &xattrs {
            self.bytes(name);
            self.bytes(value);
        }
        self.entries += 1;
        if tag != b'd' && meta.nlink() > 1 {
            match self.inodes.get(&(meta.dev(), meta.ino())) {
                Some(first) => {
                    let first = first.as_os_str().as_bytes().to_vec();
                    self.hasher.update([1]);
                    self.bytes(&first);
                    return Ok(());
                }
                None => {
                    self.inodes.insert((meta.dev(), meta.ino()), rel.to_path_buf());
                }
            }
        }
        if tag != b'd' {
            self.hasher.update([0]);
        }
        match tag {
            b'd' => {
                let mut children = Vec::new();
                for child in fs::read_dir(path).map_err(walk_err)? {
                    children.push(child.map_err(walk_err)?.file_name());
                }
                children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                self.hasher.update((children.len() as u64).to_le_bytes());
                // Directory entries: 8 bytes plus the name, 4-byte aligned.
                let dir_bytes: u64 = children.iter().map(|c| (8 + c.len() as u64 + 3) & !3).sum::<u64>() + 24;
                self.blocks += dir_bytes.div_ceil(BLOCK);
                for child in children {
                    self.entry(&path.join(&child), &rel.join(&child))?;
                }
            }
            b'f' => self.contents(path, meta.len()).map_err(walk_err)?,
            b'l' => {
                let target = fs::read_link(path).map_err(walk_err)?;
                self.bytes(target.as_os_str().as_bytes());
                // Targets up to 59 bytes live in the inode itself.
                if target.as_os_str().len() >= 60 {
                    self.blocks += 1;
                }
            }
            b'c' | b'b' => self.hasher.update(meta.rdev().to_le_bytes()),
            _ => {}
        }
        Ok(())
    }

    /// The length, then the bytes.
    fn bytes(&mut self, b: &[u8]) {
        self.hasher.update((b.len() as u64).to_le_bytes());
        self.hasher.update(b);
    }

    /// A regular file: its length, then exactly that many bytes.
    fn contents(&mut self, path: &Path, len: u64) -> io::Result<()> {
        self.hasher.update(len.to_le_bytes());
        self.blocks += len.div_ceil(BLOCK);
        let mut file = File::open(path)?.take(len);
        let mut seen = 0;
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.hasher.update(&self.buf[..n]);
            seen += n as u64;
        }
        if seen != len {
            return Err(io::Error::other(format!(
                "changed while being read ({seen} of {len} bytes)"
            )));
        }
        Ok(())
    }
}

/// The extended attributes of `path` itself (not a link's target), sorted
/// by name; none where the file system has none.
fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))?;
    // SAFETY: `c` is NUL-terminated; the buffer pointer and length given
    // describe a writable buffer (or none, to ask for the size).
    let names = read_sized(|buf| unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) });
    let names = match names {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(Vec::new()),
        other => other?,
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::other("an attribute name with a NUL byte"))?;
        // SAFETY: as above, with `cname` NUL-terminated too.
        let value = read_sized(|buf| unsafe {
            libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        });
        match value {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed between the list and the read: not there.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Runs a call that fills `buf` and returns its length (or, with an empty
/// buffer, the length it needs), growing the buffer while it is too small.
fn read_sized(mut call: impl FnMut(&mut [u8]) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let need = call(&mut []);
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; need as usize];
        let got = call(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
        // Grew between the two calls: ask again.
    }
}

/// Sets the extended attribute `name` of `path` itself.
#[cfg(test)]
pub(super) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and `value` is readable for
    // its length during the call.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/a"), "alpha").unwrap();
        fs::write(root.join("b"), vec![7u8; 10_000]).unwrap();
        symlink("/etc/a", root.join("link")).unwrap();
    }

    #[test]
    fn the_digest_follows_content_mode_and_links_not_location() {
        let (one, two) = (TestDir::new("digest1"), TestDir::new("digest2"));
        sample(one.path());
        sample(two.path());
        let d = tree_digest(one.path()).unwrap();
        assert_eq!(d, tree_digest(two.path()).unwrap());
        assert_eq!(d.entries, 5);
        assert!(d.blocks >= 1 + 3 + 2, "{d:?}");

        fs::write(two.path().join("etc/a"), "alphb").unwrap();
        let changed = tree_digest(two.path()).unwrap();
        assert_ne!(changed.sha256, d.sha256);
        fs::write(two.path().join("etc/a"), "alpha").unwrap();
        assert_eq!(tree_digest(two.path()).unwrap().sha256, d.sha256);

        fs::set_permissions(two.path().join("b"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(tree_digest(two.path()).unwrap().sha256, d.sha256);

        fs::remove_file(one.path().join("link")).unwrap();
        symlink("/etc/b", one.path().join("link")).unwrap();
        assert_ne!(tree_digest(one.path()).unwrap().sha256, d.sha256);
    }

    #[test]
    fn moving_bytes_between_name_and_content_changes_the_digest() {
        let (one, two) = (TestDir::new("digest3"), TestDir::new("digest4"));
        fs::write(one.path().join("ab"), "c").unwrap();
        fs::write(two.path().join("a"), "bc").unwrap();
        assert_ne!(
            tree_digest(one.path()).unwrap().sha256,
            tree_digest(two.path()).unwrap().sha256
        );
    }

    #[test]
    fn extended_attributes_are_part_of_the_digest() {
        let (one, two) = (TestDir::new("digest-xa1"), TestDir::new("digest-xa2"));
        sample(one.path());
        sample(two.path());
        let d = tree_digest(one.path()).unwrap().sha256;
        set_xattr(&two.path().join("etc/a"), "user.note", b"x").unwrap();
        let with_note = tree_digest(two.path()).unwrap().sha256;
        assert_ne!(with_note, d);
        set_xattr(&two.path().join("etc/a"), "user.note", b"y").unwrap();
        assert_ne!(tree_digest(two.path()).unwrap().sha256, with_note);
        set_xattr(&one.path().join("etc/a"), "user.note", b"y").unwrap();
        assert_eq!(
            tree_digest(one.path()).unwrap().sha256,
            tree_digest(two.path()).unwrap().sha256
        );

        // A file capability (cap_net_raw+ep, VFS_CAP_REVISION_2), which
        // only a privileged process may set.
        let cap = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        match set_xattr(&two.path().join("b"), "security.capability", &cap) {
            Ok(()) => assert_ne!(
                tree_digest(two.path()).unwrap().sha256,
                tree_digest(one.path()).unwrap().sha256
            ),
            Err(e) => eprintln!("security.capability not tried: {e}"),
        }
    }

    #[test]
    fn two_names_of_one_inode_differ_from_two_equal_files() {
        let (one, two) = (TestDir::new("digest-hl1"), TestDir::new("digest-hl2"));
        for t in [&one, &two] {
            fs::write(t.path().join("a"), "same").unwrap();
        }
        fs::write(one.path().join("b"), "same").unwrap();
        fs::hard_link(two.path().join("a"), two.path().join("b")).unwrap();
        let (copies, linked) = (tree_digest(one.path()).unwrap(), tree_digest(two.path()).unwrap());
        assert_ne!(copies.sha256, linked.sha256);
        assert!(linked.blocks < copies.blocks, "{linked:?} {copies:?}");
        // Which names share an inode is what counts, not the inode.
        let three = TestDir::new("digest-hl3");
        fs::write(three.path().join("a"), "same").unwrap();
        fs::hard_link(three.path().join("a"), three.path().join("b")).unwrap();
        assert_eq!(tree_digest(three.path()).unwrap(), linked);
    }

    #[test]
    fn a_missing_tree_is_a_walk_error_naming_it() {
        let dir = TestDir::new("digest5");
        let missing = dir.path().join("nope");
        let err = tree_digest(&missing).unwrap_err();
        assert!(
            matches!(&err, RootfsError::Walk { path, .. } if *path == missing),
            "{err}"
        );
    }
}

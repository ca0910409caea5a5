//! The content hash of a directory tree: what names its ext4 image.
//!
//! SHA-256 over the tree walked in byte order of names, without following
//! symlinks. Each entry contributes its path relative to the root, its type,
//! permission bits, owner and group, and then its contents: a regular file's
//! bytes, a symlink's target, a device's number. Every variable-length field
//! is length-prefixed, so two different trees never hash the same stream.
//! Timestamps, extended attributes and hard-link identity are not part of it.
//!
//! The same walk counts what an image of the tree needs (inodes, blocks).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::RootfsError;

/// Names the hashing scheme; changing what is hashed means changing this.
const DOMAIN: &[u8] = b"vmshim rootfs tree v1\0";
/// The image block size the counts are made for.
pub(super) const BLOCK: u64 = 4096;

/// A tree's content hash and the size of its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDigest {
    pub sha256: [u8; 32],
    /// Files, directories, symlinks and special files, the root included.
    pub entries: u64,
    /// 4 KiB blocks of file data, directories and long symlinks.
    pub blocks: u64,
}

/// Hashes and measures the tree at `root`.
pub fn tree_digest(root: &Path) -> Result<TreeDigest, RootfsError> {
    let mut walk = Walk {
        hasher: Sha256::new(),
        entries: 0,
        blocks: 0,
        buf: vec![0; 1 << 16],
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
        self.entries += 1;
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

//! Digests remembered by the status of what they hash: a tree (or a file)
//! whose every entry shows the same device, inode, size, owner, mode and
//! modification and change times as when it was hashed is not read again.
//!
//! A run of `vmshim run` would otherwise hash the default root's busybox
//! twice (about 4 MiB) and walk every entry's extended attributes and link
//! target before its VM can start. The change time (`ctime`) moves with
//! every write, `chmod`, `chown`, rename and extended attribute, and only
//! the kernel sets it, so an entry whose status is unchanged has unchanged
//! contents. As with git's index, an entry changed within [`RACY`] of the
//! moment it was hashed could change again within the same clock tick
//! unseen: such a digest is not remembered.
//!
//! A memo is a small text file: the signature (SHA-256 of every entry's
//! status, walked in byte order of names, links not followed) and the
//! value. It lives in the private cache directory of what it describes,
//! named after the hashed path, and is replaced whole (written beside it,
//! then renamed).

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::cache::FILE_MODE;
use super::{hex, temp_sibling};

/// How recent a change may be for its digest still to be remembered.
pub(super) const RACY: Duration = Duration::from_secs(2);

/// Names the format: a memo of another version is not recalled.
const HEADER: &str = "vmshim digest memo v1";

/// The status of what was hashed, as one hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signature {
    sha256: [u8; 32],
    /// The latest modification or change time of an entry, in ns since
    /// the epoch.
    newest_ns: i128,
}

impl Signature {
    /// The status of the tree at `root`, every entry of it, links not
    /// followed.
    pub(super) fn of_tree(root: &Path) -> io::Result<Signature> {
        let mut walk = StatusWalk::default();
        walk.entry(root, Path::new(""))?;
        Ok(walk.finish())
    }

    /// The status of the file at `path` (a link followed, as opening it does).
    pub(super) fn of_file(path: &Path) -> io::Result<Signature> {
        let mut walk = StatusWalk::default();
        walk.status(Path::new(""), &fs::metadata(path)?);
        Ok(walk.finish())
    }
}

#[derive(Default)]
struct StatusWalk {
    hasher: Sha256,
    newest_ns: i128,
}

impl StatusWalk {
    fn entry(&mut self, path: &Path, rel: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        self.status(rel, &meta);
        if meta.is_dir() {
            let mut children = fs::read_dir(path)?
                .map(|child| child.map(|c| c.file_name()))
                .collect::<io::Result<Vec<_>>>()?;
            children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for child in children {
                self.entry(&path.join(&child), &rel.join(&child))?;
            }
        }
        Ok(())
    }

    fn status(&mut self, rel: &Path, meta: &fs::Metadata) {
        let name = rel.as_os_str().as_bytes();
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name);
        for field in [
            meta.dev(),
            meta.ino(),
            meta.mode() as u64,
            meta.uid() as u64,
            meta.gid() as u64,
            meta.nlink(),
            meta.size(),
            meta.rdev(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            self.hasher.update(field.to_le_bytes());
        }
        let ns = |secs: i64, nsecs: i64| secs as i128 * 1_000_000_000 + nsecs as i128;
        self.newest_ns = self
            .newest_ns
            .max(ns(meta.mtime(), meta.mtime_nsec()))
            .max(ns(meta.ctime(), meta.ctime_nsec()));
    }

    fn finish(self) -> Signature {
        Signature {
            sha256: self.hasher.finalize().into(),
            newest_ns: self.newest_ns,
        }
    }
}

/// The memo of one hashed path.
pub(super) struct Memo {
    file: PathBuf,
}

impl Memo {
    /// The memo, in `dir`, of what `kind` of digest of `path` was made.
    pub(super) fn new(dir: &Path, kind: &str, path: &Path) -> Memo {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut name = Sha256::new();
        name.update(kind.as_bytes());
        name.update([0]);
        name.update(path.as_os_str().as_bytes());
        Memo {
            file: dir.join(format!("memo-{kind}-{}", &hex(&name.finalize())[..32])),
        }
    }

    /// The value remembered for `signature`, if this memo holds it.
    pub(super) fn recall(&self, signature: &Signature) -> Option<String> {
        let text = fs::read_to_string(&self.file).ok()?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) || lines.next() != Some(hex(&signature.sha256).as_str()) {
            return None;
        }
        lines.next().map(str::to_owned)
    }

    /// Remembers `value` for `signature`, unless what it describes changed
    /// within [`RACY`] of `now`. Best effort: a memo that cannot be written
    /// only costs the next run a hash.
    pub(super) fn store(&self, signature: &Signature, value: &str, now: SystemTime) {
        let now_ns = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        if now_ns - signature.newest_ns < RACY.as_nanos() as i128 {
            return;
        }
        let tmp = temp_sibling(&self.file);
        let text = format!("{HEADER}\n{}\n{value}\n", hex(&signature.sha256));
        // 0600 whatever the umask, as everything in the cache.
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, &self.file));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::test_dir::TestDir;

    fn later() -> SystemTime {
        SystemTime::now() + RACY * 2
    }

    #[test]
    fn a_memo_is_recalled_only_for_the_status_it_was_stored_with() {
        let dir = TestDir::new("memo-recall");
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("sub/file"), b"one").unwrap();
        let memo = Memo::new(dir.path(), "tree", &tree);
        let before = Signature::of_tree(&tree).unwrap();
        assert_eq!(memo.recall(&before), None);
        memo.store(&before, "value one", later());
        assert_eq!(memo.recall(&before).as_deref(), Some("value one"));
        assert_eq!(Signature::of_tree(&tree).unwrap(), before, "nothing changed");

        // Same size, same modification time put back: the change time tells.
        let file = tree.join("sub/file");
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        fs::write(&file, b"two").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let after = Signature::of_tree(&tree).unwrap();
        assert_ne!(after, before);
        assert_eq!(memo.recall(&after), None);

        // A new entry, a mode, a link's target: each is another signature.
        memo.store(&after, "value two", later());
        fs::write(tree.join("new"), b"").unwrap();
        let added = Signature::of_tree(&tree).unwrap();
        assert_ne!(added, after);
        std::os::unix::fs::symlink("a", tree.join("link")).unwrap();
        let linked = Signature::of_tree(&tree).unwrap();
        fs::remove_file(tree.join("link")).unwrap();
        std::os::unix::fs::symlink("b", tree.join("link")).unwrap();
        assert_ne!(Signature::of_tree(&tree).unwrap(), linked);
    }

    #[test]
    fn a_memo_is_its_owners_alone_whatever_the_umask() {
        let _umask = crate::rootfs::Umask::set(0);
        let dir = TestDir::new("memo-mode");
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let memo = Memo::new(dir.path(), "file", &file);
        memo.store(&Signature::of_file(&file).unwrap(), "value", later());
        assert_eq!(fs::metadata(&memo.file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_recent_change_is_not_remembered() {
        let dir = TestDir::new("memo-racy");
        let file = dir.path().join("file");
        fs::write(&file, b"fresh").unwrap();
        let memo = Memo::new(dir.path(), "file", &file);
        let signature = Signature::of_file(&file).unwrap();
        memo.store(&signature, "value", SystemTime::now());
        assert_eq!(memo.recall(&signature), None, "changed within {RACY:?}");
        memo.store(&signature, "value", later());
        assert_eq!(memo.recall(&signature).as_deref(), Some("value"));
    }

    #[test]
    fn memos_of_two_paths_or_two_kinds_are_apart() {
        let dir = TestDir::new("memo-names");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        assert_ne!(
            Memo::new(dir.path(), "tree", &a).file,
            Memo::new(dir.path(), "tree", &b).file
        );
        assert_ne!(
            Memo::new(dir.path(), "tree", &a).file,
            Memo::new(dir.path(), "file", &a).file
        );
    }
}

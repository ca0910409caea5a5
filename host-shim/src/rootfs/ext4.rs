//! Read-only ext4 images of directory trees, made by `mkfs.ext4 -d` and
//! cached by the content of the tree.
//!
//! The image of a tree is `CACHE/rootfs-<the 64 hex digits of its
//! digest>.ext4`: mkfs carries every file's bytes, mode, owner, extended
//! attributes and hard links into the image, and the digest covers all of
//! them. An image there is complete by construction: mkfs writes a
//! temporary name and the result is renamed into place. The cache
//! directory is 0700 and the images 0600, whatever the umask: an image
//! holds its tree's `/etc/shadow`, readable with `debugfs`. Images are reproducible: the same
//! tree gives the same bytes (UUID and directory hash seed derived from the
//! digest, timestamps from `E2FSPROGS_FAKE_TIME`, which e2fsprogs honours),
//! as long as the files' own timestamps, which mkfs copies, are unchanged.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{private_file, FILE_MODE};
use super::digest::{tree_digest, TreeDigest, BLOCK};
use super::memo::{Memo, Signature};
use super::{hex, io_err, private_dir, temp_sibling, RootfsError};

/// The timestamp mkfs gives what it creates itself (superblock, root,
/// lost+found): 2020-01-01T00:00:00Z.
const FAKE_TIME: u64 = 1_577_836_800;
/// The smallest image made.
const MIN_SIZE: u64 = 8 << 20;
/// Bytes per inode on disk.
const INODE_SIZE: u64 = 256;
/// Tries, doubling the size each time mkfs runs out of room.
const ATTEMPTS: u32 = 5;

/// Returns a read-only ext4 image of `tree` in `cache_dir`, making it unless
/// an image of the same content is already there.
pub fn ext4_image(tree: &Path, cache_dir: &Path) -> Result<PathBuf, RootfsError> {
    private_dir(cache_dir).map_err(io_err("making private", cache_dir))?;
    let tree = resolved(tree)?;
    image_of(&tree, tree_digest(&tree)?, cache_dir)
}

/// [`ext4_image`], with the tree's digest remembered in `cache_dir` by its
/// entries' status (`memo.rs`): a tree found unchanged is not read again.
/// For trees that come back at the same path, one memo each.
pub fn ext4_image_remembered(tree: &Path, cache_dir: &Path) -> Result<PathBuf, RootfsError> {
    private_dir(cache_dir).map_err(io_err("making private", cache_dir))?;
    let tree = resolved(tree)?;
    image_of(&tree, remembered_digest(&tree, cache_dir)?, cache_dir)
}

/// The tree's own directory where `tree` is a link to it: the walk does
/// not follow links, and mkfs does, so the digest must be of what mkfs
/// reads (a root given as a link would otherwise be named by the link's
/// target text, and keep its first image whatever changed behind it).
fn resolved(tree: &Path) -> Result<PathBuf, RootfsError> {
    fs::canonicalize(tree).map_err(|source| RootfsError::Walk {
        path: tree.to_path_buf(),
        source,
    })
}

/// The image of `tree`, whose digest is `digest`, made unless it is there.
fn image_of(tree: &Path, digest: TreeDigest, cache_dir: &Path) -> Result<PathBuf, RootfsError> {
    let image = cache_dir.join(format!("rootfs-{}.ext4", hex(&digest.sha256)));
    if image.is_file() {
        // One made before images were private is narrowed.
        private_file(&image).map_err(io_err("making private", &image))?;
        return Ok(image);
    }
    let tmp = temp_sibling(&image);
    let result = make(tree, &digest.sha256, &tmp, sizing(&digest))
        .and_then(|()| fs::rename(&tmp, &image).map_err(io_err("renaming", &image)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| image)
}

/// The digest of `tree`, taken from its memo in `cache_dir` where no entry's
/// status changed since it was hashed (see `memo.rs`), else hashed and
/// remembered.
fn remembered_digest(tree: &Path, cache_dir: &Path) -> Result<TreeDigest, RootfsError> {
    // A tree that cannot be walked is hashed anyway: the hash's walk names
    // the entry that failed.
    let Ok(signature) = Signature::of_tree(tree) else {
        return tree_digest(tree);
    };
    let memo = Memo::new(cache_dir, "tree", tree);
    if let Some(digest) = memo.recall(&signature).and_then(|v| TreeDigest::from_memo(&v)) {
        return Ok(digest);
    }
    let digest = tree_digest(tree)?;
    memo.store(&signature, &digest.to_memo(), std::time::SystemTime::now());
    Ok(digest)
}

/// Runs mkfs with `size` bytes and `inodes` inodes, and again with twice
/// as many while it says it ran out.
fn make(tree: &Path, sha256: &[u8; 32], image: &Path, (mut size, mut inodes): (u64, u64)) -> Result<(), RootfsError> {
    let mkfs = find_program("mkfs.ext4");
    let fs_uuid = uuid(&sha256[..16]);
    let hash_seed = uuid(&sha256[16..]);
    for attempt in 1..=ATTEMPTS {
        // A fresh file each time: mkfs leaves alone what it does not write.
        // Made here, 0600 whatever the umask: mkfs opens it as it is.
        match fs::remove_file(image) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("removing", image)(e)),
            _ => {}
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(image)
            .and_then(|f| f.set_permissions(Permissions::from_mode(FILE_MODE)))
            .map_err(io_err("creating", image))?;
        let (block, inode_size, inode_count) = (BLOCK.to_string(), INODE_SIZE.to_string(), inodes.to_string());
        let extended = format!("root_owner=0:0,hash_seed={hash_seed},lazy_itable_init=0,nodiscard");
        let out = Command::new(&mkfs)
            .args(["-q", "-F", "-T", "default", "-L", "rootfs", "-m", "0"])
            .args(["-b", &block, "-I", &inode_size, "-N", &inode_count])
            .args(["-U", &fs_uuid, "-E", &extended])
            // Never written: no journal, no room to grow.
            .args(["-O", "^has_journal,^resize_inode"])
            .arg("-d")
            .arg(tree)
            .arg(image)
            .arg(format!("{}k", size / 1024))
            // e2fsprogs 1.47.0 reads only the first; the second is the
            // reproducible-builds convention, for releases that follow it.
            .env("E2FSPROGS_FAKE_TIME", FAKE_TIME.to_string())
            .env("SOURCE_DATE_EPOCH", FAKE_TIME.to_string())
            .output()
            .map_err(|source| RootfsError::MkfsMissing {
                program: mkfs.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if attempt == ATTEMPTS || !out_of_room(&stderr) {
            return Err(RootfsError::Mkfs {
                image: image.to_path_buf(),
                status: out.status,
                stderr,
            });
        }
        size *= 2;
        inodes *= 2;
    }
    unreachable!("the last attempt returns")
}

/// The image size and inode count for a tree: its blocks and inode tables,
/// plus a fifth for the file system's own metadata, at least [`MIN_SIZE`].
fn sizing(d: &TreeDigest) -> (u64, u64) {
    // Reserved inodes (11) and lost+found, then some slack.
    let inodes = d.entries + d.entries / 8 + 64;
    let bytes = d.blocks * BLOCK + inodes * INODE_SIZE;
    let size = (bytes + bytes / 5).max(MIN_SIZE).next_multiple_of(1 << 20);
    (size, inodes)
}

/// Whether mkfs failed for want of blocks or inodes.
fn out_of_room(stderr: &str) -> bool {
    ["Could not allocate", "No space left", "Not enough space", "too small"]
        .iter()
        .any(|s| stderr.contains(s))
}

/// A version-8 (custom) UUID made of 16 bytes of the digest.
fn uuid(bytes: &[u8]) -> String {
    let mut b: [u8; 16] = bytes.try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `name` on PATH, else in the sbin directories that a non-root PATH
/// often lacks; else `name`, for the spawn error to report.
fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::busybox_tree;
    use crate::test_dir::TestDir;
    use std::process::Output;
    use std::time::{Instant, SystemTime};

    use super::super::memo::RACY;

    fn have(tool: &str) -> bool {
        let ok = find_program(tool).is_absolute();
        if !ok {
            eprintln!("skipped: no {tool} (install e2fsprogs)");
        }
        ok
    }

    fn run(tool: &str, args: &[&str], image: &Path) -> Output {
        Command::new(find_program(tool)).args(args).arg(image).output().unwrap()
    }

    /// A scratch directory holding [`small_tree`] at `t`, and an empty
    /// cache; none where mkfs.ext4 is missing.
    fn scratch_with_small_tree(tag: &str) -> Option<(TestDir, TestDir, PathBuf)> {
        if !have("mkfs.ext4") {
            return None;
        }
        let (dir, cache) = (TestDir::new(tag), TestDir::new(&format!("{tag}cache")));
        let tree = dir.path().join("t");
        small_tree(&tree);
        Some((dir, cache, tree))
    }

    /// A small tree: a few files, a symlink, an empty directory.
    fn small_tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("bin/tool"), vec![0x5a; 100_000]).unwrap();
        fs::write(root.join("etc/hostname"), "guest\n").unwrap();
        std::os::unix::fs::symlink("/bin/tool", root.join("bin/alias")).unwrap();
    }

    #[test]
    fn a_remembered_digest_serves_until_the_tree_changes() {
        let Some((_dir, cache, tree)) = scratch_with_small_tree("ext4memo") else {
            return;
        };
        let image = ext4_image_remembered(&tree, cache.path()).unwrap();
        // The tree was just made: its digest is remembered only as if
        // hashed later (memo.rs, RACY).
        let memo = Memo::new(cache.path(), "tree", &tree);
        let signature = Signature::of_tree(&tree).unwrap();
        let digest = tree_digest(&tree).unwrap();
        memo.store(&signature, &digest.to_memo(), SystemTime::now() + RACY * 2);
        assert_eq!(memo.recall(&signature), Some(digest.to_memo()));
        assert_eq!(ext4_image_remembered(&tree, cache.path()).unwrap(), image);

        // One byte of one file changes, at the same size: another image,
        // named by the new content.
        fs::write(tree.join("etc/hostname"), "gueST\n").unwrap();
        let changed = ext4_image_remembered(&tree, cache.path()).unwrap();
        assert_ne!(changed, image);
        let name = format!("rootfs-{}.ext4", hex(&tree_digest(&tree).unwrap().sha256));
        assert_eq!(changed.file_name().unwrap().to_str().unwrap(), name);
    }

    #[test]
    fn a_root_given_as_a_link_is_imaged_by_what_it_points_to() {
        let Some((dir, cache, tree)) = scratch_with_small_tree("ext4link") else {
            return;
        };
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("t", &link).unwrap();
        let image = ext4_image(&link, cache.path()).unwrap();
        assert_eq!(image, ext4_image(&tree, cache.path()).unwrap());
        fs::write(tree.join("etc/hostname"), "gueST\n").unwrap();
        for make in [ext4_image, ext4_image_remembered] {
            let changed = make(&link, cache.path()).unwrap();
            assert_ne!(changed, image, "the content behind the link changed");
            assert_eq!(changed, ext4_image(&tree, cache.path()).unwrap());
        }
    }

    #[test]
    fn images_are_cached_by_content_and_fsck_clean() {
        let Some((_dir, cache, tree)) = scratch_with_small_tree("ext4tree") else {
            return;
        };
        let started = Instant::now();
        let image = ext4_image(&tree, cache.path()).unwrap();
        let made = started.elapsed();
        let name = image.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("rootfs-") && name.ends_with(".ext4") && name.len() == 7 + 64 + 5,
            "{name}"
        );
        assert_eq!(fs::metadata(&image).unwrap().len(), MIN_SIZE);
        let made_at = fs::metadata(&image).unwrap().modified().unwrap();

        let started = Instant::now();
        assert_eq!(ext4_image(&tree, cache.path()).unwrap(), image);
        eprintln!("made in {made:?}, found in {:?}", started.elapsed());
        assert_eq!(
            fs::metadata(&image).unwrap().modified().unwrap(),
            made_at,
            "mkfs ran again"
        );
        assert_eq!(
            fs::read_dir(cache.path()).unwrap().count(),
            1,
            "a temporary was left behind"
        );

        if have("e2fsck") {
            let fsck = run("e2fsck", &["-fn"], &image);
            assert!(
                fsck.status.success(),
                "e2fsck: {}",
                String::from_utf8_lossy(&fsck.stdout)
            );
        }
        if have("debugfs") {
            let cat = run("debugfs", &["-R", "cat /etc/hostname"], &image);
            assert_eq!(String::from_utf8_lossy(&cat.stdout), "guest\n");
            let stat = run("debugfs", &["-R", "stat /bin/alias"], &image);
            assert!(String::from_utf8_lossy(&stat.stdout).contains("Fast link dest: \"/bin/tool\""));
        }

        fs::write(tree.join("etc/hostname"), "other\n").unwrap();
        let changed = ext4_image(&tree, cache.path()).unwrap();
        assert_ne!(changed, image);
        assert!(changed.is_file() && image.is_file());
    }

    #[test]
    fn images_are_0600_in_a_0700_cache_whatever_the_umask() {
        if !have("mkfs.ext4") {
            return;
        }
        let _umask = crate::rootfs::Umask::set(0o022);
        let (dir, scratch) = (TestDir::new("ext4private"), TestDir::new("ext4privc"));
        small_tree(dir.path());
        let cache = scratch.path().join("build/cache");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let image = ext4_image(dir.path(), &cache).unwrap();
        assert_eq!((mode(&cache), mode(&image)), (0o700, 0o600));
        // As an earlier vmshim left them: narrowed when next used.
        fs::set_permissions(&cache, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&image, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(ext4_image(dir.path(), &cache).unwrap(), image);
        assert_eq!((mode(&cache), mode(&image)), (0o700, 0o600));
    }

    /// What the digest must cover because it reaches the guest: mkfs
    /// keeps two names of one inode one inode, and extended attributes.
    #[test]
    fn mkfs_carries_hard_links_and_xattrs() {
        if !have("mkfs.ext4") || !have("debugfs") {
            return;
        }
        let (dir, cache) = (TestDir::new("ext4links"), TestDir::new("ext4linksc"));
        small_tree(dir.path());
        fs::hard_link(dir.path().join("etc/hostname"), dir.path().join("etc/again")).unwrap();
        super::super::digest::set_xattr(&dir.path().join("bin/tool"), "user.vmshim", b"kept").unwrap();
        let image = ext4_image(dir.path(), cache.path()).unwrap();
        let stat = run("debugfs", &["-R", "stat /etc/again"], &image);
        assert!(String::from_utf8_lossy(&stat.stdout).contains("Links: 2"));
        let ea = run("debugfs", &["-R", "ea_list /bin/tool"], &image);
        let ea = String::from_utf8_lossy(&ea.stdout);
        assert!(ea.contains("user.vmshim") && ea.contains("kept"), "{ea}");
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes() {
        if !have("mkfs.ext4") {
            return;
        }
        let (dir, cache1, cache2) = (
            TestDir::new("ext4repro"),
            TestDir::new("ext4c1"),
            TestDir::new("ext4c2"),
        );
        small_tree(dir.path());
        let one = ext4_image(dir.path(), cache1.path()).unwrap();
        let two = ext4_image(dir.path(), cache2.path()).unwrap();
        assert_eq!(one.file_name(), two.file_name());
        assert!(fs::read(&one).unwrap() == fs::read(&two).unwrap(), "images differ");
    }

    #[test]
    fn a_tree_larger_than_the_floor_fits() {
        if !have("mkfs.ext4") {
            return;
        }
        let (dir, cache) = (TestDir::new("ext4big"), TestDir::new("ext4bigc"));
        // 3000 small files and 12 MiB of data: past the 8 MiB floor, and
        // many inodes.
        for i in 0..3000 {
            fs::write(dir.path().join(format!("f{i:04}")), format!("{i}")).unwrap();
        }
        fs::write(dir.path().join("big"), vec![1u8; 12 << 20]).unwrap();
        let image = ext4_image(dir.path(), cache.path()).unwrap();
        assert!(fs::metadata(&image).unwrap().len() > 12 << 20);
        if have("e2fsck") {
            let fsck = run("e2fsck", &["-fn"], &image);
            assert!(
                fsck.status.success(),
                "e2fsck: {}",
                String::from_utf8_lossy(&fsck.stdout)
            );
        }
    }

    #[test]
    fn mkfs_gets_more_room_when_it_runs_out() {
        if !have("mkfs.ext4") {
            return;
        }
        let dir = TestDir::new("ext4retry");
        let tree = dir.path().join("t");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("big"), vec![1u8; 3 << 20]).unwrap();
        for i in 0..100 {
            fs::write(tree.join(format!("f{i}")), "x").unwrap();
        }
        // 1 MiB and 16 inodes: too few blocks, then too few inodes.
        let image = dir.path().join("img");
        make(&tree, &[0; 32], &image, (1 << 20, 16)).unwrap();
        assert!(fs::metadata(&image).unwrap().len() >= 4 << 20);

        let err = make(&tree, &[0; 32], &image, (64 << 10, 16)).unwrap_err();
        assert!(
            matches!(&err, RootfsError::Mkfs { stderr, .. } if stderr.contains("Could not allocate")),
            "{err}"
        );
    }

    #[test]
    fn the_busybox_tree_makes_an_image() {
        if !have("mkfs.ext4") || !Path::new("/bin/busybox").is_file() {
            return;
        }
        let (dir, cache) = (TestDir::new("ext4bb"), TestDir::new("ext4bbc"));
        let tree = dir.path().join("rootfs");
        busybox_tree(Path::new("/bin/busybox"), &tree).unwrap();
        let image = ext4_image(&tree, cache.path()).unwrap();
        if have("debugfs") {
            let ls = run("debugfs", &["-R", "ls -l /bin"], &image);
            let ls = String::from_utf8_lossy(&ls.stdout);
            assert!(ls.contains(" busybox") && ls.contains(" sh"), "{ls}");
        }
    }

    #[test]
    fn sizing_has_a_floor_and_grows_with_the_tree() {
        let small = TreeDigest {
            sha256: [0; 32],
            entries: 10,
            blocks: 10,
        };
        assert_eq!(sizing(&small), (MIN_SIZE, 10 + 1 + 64));
        let big = TreeDigest {
            sha256: [0; 32],
            entries: 10_000,
            blocks: 50_000,
        };
        let (size, inodes) = sizing(&big);
        assert!(size >= 50_000 * BLOCK + inodes * INODE_SIZE && size % (1 << 20) == 0);
    }

    #[test]
    fn uuids_are_well_formed() {
        let u = uuid(&[0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-8fff-bfff-ffffffffffff");
    }
}

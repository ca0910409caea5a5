//! A minimal root filesystem made of one static busybox (Debian's
//! busybox-static): the binary, a symlink per applet, the directories a root
//! needs and the few files in /etc that programs look for.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};
use std::process::Command;

use super::memo::{Memo, Signature};
use super::{digest, hex, io_err, temp_sibling, unhex, RootfsError};

/// Where the tree records what it was built from. Its presence with the
/// right contents means the tree is complete: it is written last, and the
/// tree is renamed into place only after.
const STAMP: &str = "etc/vmshim-rootfs";
/// Bump when the layout below changes, so that old trees are rebuilt.
const LAYOUT: u32 = 1;

/// The directories, in creation order, and their modes.
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("etc", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("mnt", 0o755),
];

const FILES: &[(&str, &str)] = &[
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    ("etc/resolv.conf", ""),
];

/// Builds the busybox root filesystem at `dest` from the static `busybox`,
/// unless `dest` already holds a complete tree built from the same binary.
/// An outdated tree at `dest` is swapped for the new one atomically.
pub fn busybox_tree(busybox: &Path, dest: &Path) -> Result<(), RootfsError> {
    make_tree(busybox, dest, None)
}

/// [`busybox_tree`], with the binary's hash remembered in the private
/// `cache_dir` while its status is unchanged (`memo.rs`): a run that finds
/// the tree complete then reads nothing of busybox.
pub fn busybox_tree_cached(busybox: &Path, dest: &Path, cache_dir: &Path) -> Result<(), RootfsError> {
    make_tree(busybox, dest, Some(cache_dir))
}

fn make_tree(busybox: &Path, dest: &Path, cache_dir: Option<&Path>) -> Result<(), RootfsError> {
    let sha = busybox_sha256(busybox, cache_dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => RootfsError::BusyboxMissing {
            path: busybox.to_path_buf(),
        },
        _ => RootfsError::Io {
            op: "reading",
            path: busybox.to_path_buf(),
            source,
        },
    })?;
    let stamp = format!(
        "vmshim busybox root filesystem, layout {LAYOUT}\nbusybox sha256 {}\n",
        hex(&sha)
    );
    if is_complete(dest, &stamp) {
        return Ok(());
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    let tmp = temp_sibling(dest);
    let result = build(busybox, &tmp, &stamp).and_then(|()| install(&tmp, dest, &stamp));
    // After a failure: the partial tree. After an exchange: the old tree.
    if fs::symlink_metadata(&tmp).is_ok() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// The SHA-256 of `busybox`, from its memo in `cache_dir` if there is one
/// for its present status.
fn busybox_sha256(busybox: &Path, cache_dir: Option<&Path>) -> io::Result<[u8; 32]> {
    let Some(cache_dir) = cache_dir else {
        return digest::file_sha256(busybox);
    };
    let signature = Signature::of_file(busybox)?;
    let memo = Memo::new(cache_dir, "busybox", busybox);
    if let Some(sha) = memo.recall(&signature).as_deref().and_then(unhex) {
        return Ok(sha);
    }
    let sha = digest::file_sha256(busybox)?;
    memo.store(&signature, &hex(&sha), std::time::SystemTime::now());
    Ok(sha)
}

fn is_complete(tree: &Path, stamp: &str) -> bool {
    fs::read_to_string(tree.join(STAMP)).is_ok_and(|s| s == stamp)
}

/// Lays out the whole tree at `root`, the stamp last.
fn build(busybox: &Path, root: &Path, stamp: &str) -> Result<(), RootfsError> {
    mkdir(root, 0o755)?;
    for (dir, mode) in DIRS {
        mkdir(&root.join(dir), *mode)?;
    }
    let target = root.join("bin/busybox");
    fs::copy(busybox, &target).map_err(io_err("copying busybox to", &target))?;
    chmod(&target, 0o755)?;
    for applet in applets(busybox)? {
        let link = root.join(&applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        match symlink("/bin/busybox", &link) {
            // busybox lists a few applets twice.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other.map_err(io_err("linking", &link))?,
        }
    }
    for (name, contents) in FILES.iter().chain([&(STAMP, stamp)]) {
        let path = root.join(name);
        fs::write(&path, contents).map_err(io_err("writing", &path))?;
        chmod(&path, 0o644)?;
    }
    Ok(())
}

/// The applets' paths relative to the root (`bin/sh`, `usr/bin/env`...),
/// from `busybox --list-full`; busybox itself and the top-level `linuxrc`
/// left out.
fn applets(busybox: &Path) -> Result<Vec<String>, RootfsError> {
    let failed = |detail: String| RootfsError::BusyboxApplets {
        busybox: busybox.to_path_buf(),
        detail,
    };
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let list = String::from_utf8(out.stdout).map_err(|_| failed("output is not UTF-8".into()))?;
    let mut applets = Vec::new();
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new(line);
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(failed(format!("applet at an unsafe path {line:?}")));
        }
        if path.components().count() < 2 || line == "bin/busybox" {
            continue;
        }
        applets.push(line.to_string());
    }
    if applets.is_empty() {
        return Err(failed("no applets listed".into()));
    }
    Ok(applets)
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::create_dir(path).map_err(io_err("creating", path))?;
    chmod(path, mode)
}

/// Sets the mode exactly, whatever the umask.
fn chmod(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("setting the mode of", path))
}

/// Moves the finished tree `tmp` to `dest`. When `dest` exists, the two are
/// exchanged in one step (the old tree is left at `tmp`), unless a
/// concurrent builder has just put a complete tree there.
fn install(tmp: &Path, dest: &Path, stamp: &str) -> Result<(), RootfsError> {
    match fs::rename(tmp, dest) {
        Ok(()) => return Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EEXIST | libc::ENOTEMPTY | libc::ENOTDIR | libc::EISDIR)
            ) => {}
        Err(e) => return Err(io_err("renaming into place", dest)(e)),
    }
    if is_complete(dest, stamp) {
        return Ok(());
    }
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|e| io_err("naming", dest)(e.into()));
    let (from, to) = (c(tmp)?, c(dest)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let ret = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if ret != 0 {
        return Err(io_err("swapping into place", dest)(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::MetadataExt;

    const BUSYBOX: &str = "/bin/busybox";

    fn have_busybox() -> bool {
        let ok = Path::new(BUSYBOX).is_file();
        if !ok {
            eprintln!("skipped: no {BUSYBOX} (install busybox-static)");
        }
        ok
    }

    #[test]
    fn the_tree_is_a_root_filesystem() {
        if !have_busybox() {
            return;
        }
        let dir = TestDir::new("bbtree");
        let root = dir.path().join("rootfs");
        busybox_tree(Path::new(BUSYBOX), &root).unwrap();

        assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
        assert_eq!(
            fs::read_link(root.join("usr/bin/env")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert!(fs::symlink_metadata(root.join("bin/busybox")).unwrap().is_file());
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"), "{passwd}");
        assert!(passwd.contains("nobody:x:65534:65534:"));
        assert!(fs::read_to_string(root.join("etc/group")).unwrap().contains("tty:x:5:"));
        assert_eq!(fs::read(root.join("etc/resolv.conf")).unwrap(), b"");
        assert!(!root.join("linuxrc").exists());
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("var/tmp"), 0o1777);
        assert_eq!(mode("root"), 0o700);
        for d in ["dev", "proc", "sys", "run", "home", "mnt"] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        // Nothing left beside it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["rootfs"]);
    }

    #[test]
    fn a_complete_tree_is_kept_and_an_outdated_one_replaced() {
        if !have_busybox() {
            return;
        }
        let dir = TestDir::new("bbkeep");
        let root = dir.path().join("rootfs");
        busybox_tree(Path::new(BUSYBOX), &root).unwrap();
        let marker = root.join("home/marker");
        fs::write(&marker, "x").unwrap();
        busybox_tree(Path::new(BUSYBOX), &root).unwrap();
        assert!(marker.exists(), "a complete tree was rebuilt");

        fs::write(root.join(STAMP), "stale").unwrap();
        busybox_tree(Path::new(BUSYBOX), &root).unwrap();
        assert!(!marker.exists(), "an outdated tree was kept");
        assert!(root.join("bin/sh").is_symlink());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the old tree was left behind"
        );
    }

    #[test]
    fn the_cached_tree_takes_busyboxs_hash_from_its_memo() {
        if !have_busybox() {
            return;
        }
        let dir = TestDir::new("bbmemo");
        let (root, cache) = (dir.path().join("rootfs"), dir.path().join("cache"));
        fs::create_dir(&cache).unwrap();
        busybox_tree_cached(Path::new(BUSYBOX), &root, &cache).unwrap();
        let sha = hex(&digest::file_sha256(Path::new(BUSYBOX)).unwrap());
        let memos: Vec<_> = fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(memos.len(), 1, "{memos:?}");
        let memo = fs::read_to_string(&memos[0]).unwrap();
        assert!(memo.ends_with(&format!("\n{sha}\n")), "{memo}");
        assert!(fs::read_to_string(root.join(STAMP)).unwrap().contains(&sha));

        // What the memo says is what the next run goes by: another hash
        // there makes the tree outdated, and it is rebuilt with that stamp.
        let other = "ab".repeat(32);
        fs::write(&memos[0], memo.replace(&sha, &other)).unwrap();
        busybox_tree_cached(Path::new(BUSYBOX), &root, &cache).unwrap();
        assert!(fs::read_to_string(root.join(STAMP)).unwrap().contains(&other));
    }

    #[test]
    fn a_missing_busybox_says_what_to_install() {
        let dir = TestDir::new("bbmissing");
        let err = busybox_tree(&dir.path().join("no-busybox"), &dir.path().join("rootfs")).unwrap_err();
        assert!(matches!(err, RootfsError::BusyboxMissing { .. }), "{err}");
        assert!(err.to_string().contains("busybox-static"), "{err}");
    }
}

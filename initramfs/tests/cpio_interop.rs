//! The archives round-trip through GNU cpio: `cpio -t` lists what was
//! written, and `cpio -idm` recreates the files, modes, symlinks, owners,
//! times and device nodes.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{extract, have_cpio, is_root, list, major_minor, mode_of, TempDir};
use initramfs::{Archive, Entry};

const MTIME: u32 = 1_700_000_000;

/// An archive with one of everything; device nodes and owners only where
/// the test may create them.
fn sample(host: &TempDir, as_root: bool) -> Vec<u8> {
    let init = host.write("vminitd", b"\x7fELF\x02\x01\x01 not really\n");
    let mut archive = Archive::new();
    archive
        .mtime(MTIME)
        .file_from_path("/init", &init, 0o755)
        .dir("/tmp", 0o1777)
        .dir("/root", 0o700)
        .dir("/proc", 0o555)
        .file("/etc/hostname", "guest\n", 0o644)
        .file("/etc/shadow", "root:*:1::::::\n", 0o600)
        .file("/usr/lib/empty", "", 0o444)
        .file("/usr/bin/su", "suid", 0o4755)
        .symlink("/sbin/init", "/init")
        .symlink("/usr/bin/sh", "../lib/empty");
    if as_root {
        archive
            .char_device("/dev/console", 0o600, 5, 1)
            .char_device("/dev/null", 0o666, 1, 3)
            .block_device("/dev/vda", 0o660, 254, 0)
            .add(Entry::file("/home/user/notes", "mine\n", 0o640).owner(1000, 100));
    }
    let mut bytes = Vec::new();
    archive.write_to(&mut bytes).expect("archive writes");
    bytes
}

#[test]
fn cpio_lists_every_member_in_order() {
    if !have_cpio("cpio_lists_every_member_in_order") {
        return;
    }
    let host = TempDir::new("list");
    let names = list(&sample(&host, true));
    assert_eq!(
        names,
        [
            "dev",
            "dev/console",
            "dev/null",
            "dev/vda",
            "etc",
            "etc/hostname",
            "etc/shadow",
            "home",
            "home/user",
            "home/user/notes",
            "init",
            "proc",
            "root",
            "sbin",
            "sbin/init",
            "tmp",
            "usr",
            "usr/bin",
            "usr/bin/sh",
            "usr/bin/su",
            "usr/lib",
            "usr/lib/empty",
        ]
    );
}

#[test]
fn cpio_extracts_files_modes_and_symlinks() {
    if !have_cpio("cpio_extracts_files_modes_and_symlinks") {
        return;
    }
    let host = TempDir::new("host");
    let out = TempDir::new("extract");
    let root = out.path();
    let as_root = is_root(root);
    if !as_root {
        eprintln!("note: not root: device nodes and owners are left out of the extraction test");
    }
    extract(root, &sample(&host, as_root), &[]);

    // Regular files: contents and permission bits, setuid included.
    let at = |p: &str| root.join(p);
    assert_eq!(fs::read(at("init")).unwrap(), b"\x7fELF\x02\x01\x01 not really\n");
    assert_eq!(fs::read_to_string(at("etc/hostname")).unwrap(), "guest\n");
    assert_eq!(fs::read(at("usr/lib/empty")).unwrap(), b"");
    for (path, mode) in [
        ("init", 0o755),
        ("etc/hostname", 0o644),
        ("etc/shadow", 0o600),
        ("usr/lib/empty", 0o444),
        ("usr/bin/su", 0o4755),
    ] {
        assert!(fs::symlink_metadata(at(path)).unwrap().is_file(), "{path}");
        assert_eq!(mode_of(&at(path)), mode, "mode of {path}");
    }

    // Directories, given and implicit.
    for (path, mode) in [
        ("tmp", 0o1777),
        ("root", 0o700),
        ("proc", 0o555),
        ("etc", 0o755),
        ("usr/bin", 0o755),
    ] {
        assert!(fs::symlink_metadata(at(path)).unwrap().is_dir(), "{path}");
        assert_eq!(mode_of(&at(path)), mode, "mode of {path}");
    }

    // Symlinks keep their targets exactly, absolute or relative.
    assert_eq!(fs::read_link(at("sbin/init")).unwrap(), Path::new("/init"));
    assert_eq!(fs::read_link(at("usr/bin/sh")).unwrap(), Path::new("../lib/empty"));

    // `-m` restores the archive's one mtime on files.
    assert_eq!(fs::metadata(at("etc/hostname")).unwrap().mtime(), i64::from(MTIME));

    if as_root {
        for (path, char_device, mode, numbers) in [
            ("dev/console", true, 0o600, (5, 1)),
            ("dev/null", true, 0o666, (1, 3)),
            ("dev/vda", false, 0o660, (254, 0)),
        ] {
            let metadata = fs::symlink_metadata(at(path)).unwrap();
            let file_type = metadata.file_type();
            if char_device {
                assert!(file_type.is_char_device(), "{path} is a char device");
            } else {
                assert!(file_type.is_block_device(), "{path} is a block device");
            }
            assert_eq!(mode_of(&at(path)), mode, "mode of {path}");
            assert_eq!(major_minor(metadata.rdev()), numbers, "{path}");
        }
        let notes = fs::metadata(at("home/user/notes")).unwrap();
        assert_eq!((notes.uid(), notes.gid()), (1000, 100));
        assert_eq!(mode_of(&at("home/user/notes")), 0o640);
        let home = fs::metadata(at("home")).unwrap();
        assert_eq!((home.uid(), home.gid()), (0, 0));
    }
}

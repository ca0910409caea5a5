//! The applier's unit tests: what each kind of entry makes, and what a
//! hostile layer cannot do.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use super::*;
use crate::test_dir::TestDir;

/// One entry of a hand-made layer: name and kind, mode, and file data or
/// link target. Names are written raw, unchecked, as a hostile layer would.
#[derive(Debug, Clone)]
pub(super) struct Raw {
    pub name: String,
    pub kind: EntryType,
    pub mode: u32,
    /// Owner and group.
    pub owner: u64,
    pub data: String,
}

/// A tar of `entries`.
pub(super) fn tar_of(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for Raw {
        name,
        kind,
        mode,
        owner,
        data,
    } in entries
    {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_old_mut().name;
        let len = name.len().min(raw.len());
        raw[..len].copy_from_slice(&name.as_bytes()[..len]);
        h.set_entry_type(*kind);
        h.set_uid(*owner);
        h.set_gid(*owner);
        h.set_mtime(0);
        h.set_mode(*mode);
        let body: &[u8] = match kind {
            EntryType::Symlink | EntryType::Link => {
                let link = &mut h.as_old_mut().linkname;
                let len = data.len().min(link.len());
                link[..len].copy_from_slice(&data.as_bytes()[..len]);
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

/// A tar of (name, kind, data-or-link-target), directories 0755 and the
/// rest 0644.
fn tar(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
    let raw: Vec<Raw> = entries
        .iter()
        .map(|(name, kind, data)| Raw {
            name: name.to_string(),
            kind: *kind,
            mode: if *kind == EntryType::Directory { 0o755 } else { 0o644 },
            owner: 0,
            data: data.to_string(),
        })
        .collect();
    tar_of(&raw)
}

fn apply(root: &Path, entries: &[(&str, EntryType, &str)]) -> Result<Vec<Skipped>, LayerError> {
    apply_layer(&tar(entries)[..], Compression::None, root, &Budget::default())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
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

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
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
            ("nowhere/.wh.x", F, ""),
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
    assert_eq!(mode(&root.join("bin/busybox")), 0o644);
    // Parents no entry named are 0755, whatever the umask.
    assert_eq!(mode(&root.join("bin")), 0o755);
    // A directory replaced by a file, a file by a symbolic link.
    apply(root, &[("x", F, "now a file"), ("bin/busybox", S, "elsewhere")]).unwrap();
    assert_eq!(fs::read_to_string(root.join("x")).unwrap(), "now a file");
    assert!(root.join("bin/busybox").is_symlink());
}

#[test]
fn modes_are_the_entries_own_setuid_included() {
    let t = TestDir::new("layer-modes");
    let raw = |name: &str, kind, mode| Raw {
        name: name.into(),
        kind,
        mode,
        owner: 0,
        data: String::new(),
    };
    let layer = tar_of(&[
        raw("ro/", D, 0o555),
        raw("ro/file", F, 0o4755),
        raw("twice/", D, 0o700),
        raw("twice/", D, 0o751),
    ]);
    apply_layer(&layer[..], Compression::None, t.path(), &Budget::default()).unwrap();
    assert_eq!(mode(&t.path().join("ro")), 0o555);
    assert_eq!(mode(&t.path().join("ro/file")), 0o4755);
    // The later entry of a name wins.
    assert_eq!(mode(&t.path().join("twice")), 0o751);
}

/// A directory entry, then a link of the same name to a host file: the
/// directory's mode, set after the layer, must not reach the host file.
#[test]
fn a_directory_replaced_by_a_link_never_passes_its_mode_on() {
    let t = TestDir::new("layer-dir-then-link");
    let (root, outside) = (t.path().join("root"), t.path().join("outside"));
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    let secret = outside.join("shadow");
    fs::write(&secret, "secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    let raw = |name: &str, kind, mode, data: &str| Raw {
        name: name.into(),
        kind,
        mode,
        owner: 0,
        data: data.into(),
    };
    let layer = tar_of(&[
        raw("x/", D, 0o6777, ""),
        raw("x", S, 0o777, secret.to_str().unwrap()),
        raw("y/", D, 0o6777, ""),
        raw("y", S, 0o777, "../outside"),
        raw("z/", D, 0o6777, ""),
        raw("z/w/", D, 0o6777, ""),
        raw("z", S, 0o777, outside.to_str().unwrap()),
    ]);
    apply_layer(&layer[..], Compression::None, &root, &Budget::default()).unwrap();
    assert_eq!(mode(&secret), 0o600, "the host file's mode changed");
    assert_eq!(mode(&outside), 0o700, "the host directory's mode changed");
    assert_eq!(fs::read_link(root.join("x")).unwrap(), secret);
    assert_eq!(fs::read_link(root.join("y")).unwrap(), Path::new("../outside"));
    assert_eq!(listing(&outside), ["shadow"]);
}

#[test]
fn hostile_entries_are_refused_and_write_nothing_outside() {
    let t = TestDir::new("layer-hostile");
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    let out = outside.to_str().unwrap();
    let cases: [&[(&str, EntryType, &str)]; 8] = [
        &[("../escape", F, "x")],
        &[("/abs", F, "x")],
        &[("a/../../escape", F, "x")],
        &[("evil", S, out), ("evil/planted", F, "x")],
        &[("up", S, "../outside"), ("link", H, "up/../../outside/y")],
        &[("deep/er/", D, ""), ("deep/er", S, out), ("deep/er/planted", F, "x")],
        &[("dir", S, out), ("dir/sub/", D, "")],
        &[("file", F, "x"), ("file/under", F, "x")],
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

/// Hard links name something inside the tree, reached without a link, or
/// nothing: never a host file.
#[test]
fn hard_links_never_reach_outside() {
    let t = TestDir::new("layer-hardlinks");
    let (root, outside) = (t.path().join("root"), t.path().join("outside"));
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    fs::write(&secret, "s").unwrap();
    let (out, sec) = (outside.to_str().unwrap(), secret.to_str().unwrap());
    let refused: [&[(&str, EntryType, &str)]; 4] = [
        &[("h", H, "../outside/secret")],
        &[("h", H, sec)],
        &[("lnk", S, out), ("h", H, "lnk/secret")],
        &[("up", S, ".."), ("h", H, "up/outside/secret")],
    ];
    for entries in refused {
        let err = apply(&root, entries).unwrap_err();
        assert!(matches!(err, LayerError::Unsafe { .. }), "{entries:?}: {err}");
    }
    // A hard link to a link to a host file is that link again: a link.
    apply(&root, &[("s", S, sec), ("h", H, "s")]).unwrap();
    assert_eq!(fs::read_link(root.join("h")).unwrap(), secret);
    let err = apply(&root, &[("h2", H, "nothing/here")]).unwrap_err();
    assert!(matches!(err, LayerError::Io { .. }), "{err}");
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1, "a host file got a new name");
    assert_eq!(fs::read_to_string(&secret).unwrap(), "s");
}

/// `.wh..` and `.wh...` name the directory itself and its parent: a
/// whiteout of those would remove the tree, or what holds it.
#[test]
fn whiteouts_of_dot_and_dot_dot_are_refused() {
    let t = TestDir::new("layer-wh-dotdot");
    let root = t.path().join("root");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("sub/kept"), "k").unwrap();
    fs::write(t.path().join("beside"), "b").unwrap();
    for name in [".wh...", "sub/.wh...", "sub/.wh.."] {
        let err = apply(&root, &[(name, F, "")]).unwrap_err();
        assert!(matches!(err, LayerError::Unsafe { .. }), "{name}: {err}");
    }
    assert!(t.path().join("beside").exists());
    assert_eq!(listing(&root), ["sub", "sub/kept"]);
}

#[test]
fn archives_without_end_blocks_are_read_but_never_padded_into_data() {
    let t = TestDir::new("layer-unterminated");
    let full = tar(&[("a", F, "upper\n")]);
    let budget = Budget::default();
    // Header and data only, as umoci 0.4 insert writes them.
    apply_layer(&full[..512 + 6], Compression::None, t.path(), &budget).unwrap();
    assert_eq!(fs::read_to_string(t.path().join("a")).unwrap(), "upper\n");
    let err = apply_layer(&full[..512 + 3], Compression::None, t.path(), &budget).unwrap_err();
    assert!(err.to_string().contains("ends inside the data"), "{err}");
}

#[test]
fn devices_are_skipped() {
    let t = TestDir::new("layer-dev");
    let skipped = apply(t.path(), &[("dev/null", EntryType::Char, "")]).unwrap();
    assert_eq!(skipped[0].kind, "character device");
    assert!(!t.path().join("dev/null").exists());
}

/// 4 MiB of zeros gzip to about 4 KiB: with a 1 MiB limit the layer is
/// refused, naming the limit, before the file grows past it.
#[test]
fn a_gzip_bomb_is_refused_at_the_byte_limit() {
    let t = TestDir::new("layer-bomb");
    let zeros = "\0".repeat(4 << 20);
    let bomb = gzip(&tar(&[("zeros", F, &zeros)]));
    assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
    let budget = Budget::new(Limits {
        bytes: 1 << 20,
        entries: 10,
    });
    let err = apply_layer(&bomb[..], Compression::Gzip, t.path(), &budget).unwrap_err();
    assert!(
        matches!(err, LayerError::TooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("1 MiB"), "{err}");
    assert!(fs::metadata(t.path().join("zeros")).unwrap().len() <= 1 << 20);
}

/// The limits hold for the image: what earlier layers used counts.
#[test]
fn the_limits_are_shared_by_an_images_layers() {
    let t = TestDir::new("layer-limits");
    let budget = Budget::new(Limits {
        bytes: 1 << 20,
        entries: 3,
    });
    let half = "x".repeat(400 << 10);
    let layer = tar(&[("a", F, &half)]);
    apply_layer(&layer[..], Compression::None, t.path(), &budget).unwrap();
    apply_layer(&layer[..], Compression::None, t.path(), &budget).unwrap();
    let err = apply_layer(&layer[..], Compression::None, t.path(), &budget).unwrap_err();
    assert!(matches!(err, LayerError::TooLarge { .. }), "{err}");

    let budget = Budget::new(Limits {
        bytes: 1 << 20,
        entries: 3,
    });
    let many = tar(&[("a", F, ""), ("b", F, ""), ("c", F, ""), ("d", F, "")]);
    let err = apply_layer(&many[..], Compression::None, t.path(), &budget).unwrap_err();
    assert!(matches!(err, LayerError::TooManyEntries { limit: 3 }), "{err}");
    assert!(err.to_string().contains("3 entries"), "{err}");
}

#[test]
fn names_past_path_max_are_refused() {
    let t = TestDir::new("layer-long");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(F);
    let long = "a/".repeat(3000) + "f";
    b.append_data(&mut h, &long, &b""[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let err = apply_layer(&layer[..], Compression::None, t.path(), &Budget::default()).unwrap_err();
    assert!(matches!(err, LayerError::Unsafe { .. }), "{err}");
    assert!(listing(t.path()).is_empty());
}

//! A property of the applier, over random layers: whatever entries they
//! hold (files, directories, symbolic links with absolute, relative and
//! `..` targets, hard links, whiteouts, repeated names, `..` in names),
//! applying them changes nothing outside the tree, and never panics
//! (errors are fine).
//!
//! Outside is a sentinel directory beside the tree, with files, a
//! directory and a link of known contents and modes; every entry of it,
//! itself and the directory holding both are compared before and after,
//! down to their change times, so a chmod or chown to the same value
//! shows too. Links in the layers point into the sentinel or the tree,
//! never at the host's own files (`../..` from the top would be `/tmp`):
//! an applier that follows one damages only the test's own directory.
//! `PROPTEST_CASES` sets the number of cases.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;

use super::tests::{tar_of, Raw};
use super::*;
use crate::test_dir::TestDir;

/// Where the sentinel's absolute path goes in a link target.
const SENTINEL: &str = "{S}";

/// Mostly a few short names, so that entries meet: the same name again,
/// a name under another, a whiteout of another.
fn name() -> impl Strategy<Value = String> {
    let part = prop::sample::select(vec![
        "a",
        "b",
        "s",
        ".wh.a",
        ".wh.s",
        ".wh..wh..opq",
        ".wh..",
        ".wh...",
        "..",
        ".",
    ]);
    let lead = prop::sample::select(vec!["", "", "./", "/"]);
    let trail = prop::sample::select(vec!["", "", "/"]);
    let any = (lead, prop::collection::vec(part, 1..=3), trail)
        .prop_map(|(lead, parts, trail)| format!("{lead}{}{trail}", parts.join("/")));
    let short = prop::sample::select(vec!["a", "b", "a/b", "a/s", "s"]).prop_map(String::from);
    prop_oneof![2 => short, 1 => any]
}

fn link_target() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "..",
        "../sentinel",
        "../sentinel/f",
        "../sentinel/d",
        "{S}",
        "{S}/f",
        "{S}/d",
        "{S}/l",
        ".",
        "",
    ])
    .prop_map(String::from);
    prop_oneof![3 => fixed, 1 => name()]
}

fn entry() -> impl Strategy<Value = Raw> {
    let kind = prop::sample::select(vec![
        EntryType::Directory,
        EntryType::Regular,
        EntryType::Symlink,
        EntryType::Link,
    ]);
    let owner = prop::sample::select(vec![0u64, 1000, 65534]);
    (
        name(),
        kind,
        0u32..0o10000,
        owner,
        link_target(),
        prop::sample::select(vec!["", "x", "data"]),
    )
        .prop_map(|(name, kind, mode, owner, target, data)| Raw {
            name,
            kind,
            mode,
            owner,
            data: match kind {
                EntryType::Symlink | EntryType::Link => target,
                _ => data.to_owned(),
            },
        })
}

/// Every entry under `path` (itself included), with what a write, a
/// chmod, a chown or a new name would change.
fn snapshot(path: &Path, out: &mut Vec<String>) {
    let m = fs::symlink_metadata(path).unwrap();
    let content = if m.is_file() {
        fs::read_to_string(path).unwrap()
    } else if m.is_symlink() {
        fs::read_link(path).unwrap().display().to_string()
    } else {
        String::new()
    };
    out.push(format!(
        "{} {:o} {}:{} n{} m{}.{} c{}.{} {content:?}",
        path.display(),
        m.mode(),
        m.uid(),
        m.gid(),
        m.nlink(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ));
    if m.is_dir() {
        let mut children: Vec<_> = fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        children.sort();
        for child in children {
            snapshot(&child, out);
        }
    }
}

fn sentinel(dir: &Path) {
    fs::create_dir_all(dir.join("d")).unwrap();
    for (name, mode) in [("f", 0o600), ("g", 0o644), ("d/h", 0o640)] {
        fs::write(dir.join(name), name).unwrap();
        fs::set_permissions(dir.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(dir.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("f", dir.join("l")).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn prop_a_layer_changes_nothing_outside_its_tree(
        layers in prop::collection::vec(prop::collection::vec(entry(), 1..=10), 1..=3),
    ) {
        let t = TestDir::new("layer-prop");
        let (tree, outside) = (t.path().join("tree"), t.path().join("sentinel"));
        fs::create_dir(&tree).unwrap();
        sentinel(&outside);
        let mut before = Vec::new();
        snapshot(&outside, &mut before);
        let beside_before: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        let t_before = fs::metadata(t.path()).unwrap().mtime_nsec();

        let budget = Budget::default();
        for layer in &layers {
            let layer: Vec<Raw> = layer
                .iter()
                .map(|e| Raw {
                    data: e.data.replace(SENTINEL, outside.to_str().unwrap()),
                    ..e.clone()
                })
                .collect();
            let _ = apply_layer(&tar_of(&layer)[..], Compression::None, &tree, &budget);
        }

        let mut after = Vec::new();
        snapshot(&outside, &mut after);
        prop_assert_eq!(before, after);
        let beside_after: Vec<_> = fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(beside_before, beside_after);
        prop_assert_eq!(t_before, fs::metadata(t.path()).unwrap().mtime_nsec());
    }
}

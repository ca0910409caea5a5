//! The archive writer against arbitrary entries: paths with every kind of
//! odd component, modes with type bits, symlink targets empty or too long,
//! duplicates spelled differently, entries under files, contents of any
//! size. Whatever it is given, the writer either refuses the first bad
//! entry with the error that names it, writing nothing, or writes an
//! archive that a strict newc reader (here) and GNU cpio read back as
//! exactly the entries given, plus the parent directories it adds.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{cpio, extract, have_cpio, is_root, major_minor, mode_of, TempDir};
use initramfs::{Archive, Entry, Error, PathProblem, IMPLICIT_DIR_MODE, PATH_MAX};
use proptest::prelude::*;

const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;

// ---------------------------------------------------------------------------
// A strict newc reader
// ---------------------------------------------------------------------------

/// One member as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    name: String,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// Reads a whole newc archive, refusing anything `gen_init_cpio` would not
/// write: a bad magic or digit, a name without its one NUL, padding that
/// is not NUL, a non-zero check or device, a member after the trailer, or
/// bytes after it.
fn read_newc(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let mut members = Vec::new();
    let mut at = 0;
    loop {
        let header = bytes.get(at..at + 110).ok_or(format!("header at {at} cut short"))?;
        if &header[..6] != b"070701" {
            return Err(format!("bad magic at {at}"));
        }
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let digits = &header[6 + 8 * i..14 + 8 * i];
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return Err(format!("field {i} at {at} is not hex"));
            }
            *field = u32::from_str_radix(std::str::from_utf8(digits).unwrap(), 16).unwrap();
        }
        let [ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rmajor, rminor, namesize, check] = fields;
        if check != 0 || devmajor != 0 || devminor != 0 {
            return Err(format!("check or device set at {at}"));
        }
        let namesize = namesize as usize;
        let name = bytes.get(at + 110..at + 110 + namesize).ok_or("name cut short")?;
        match name.split_last() {
            Some((0, name)) if !name.contains(&0) => {}
            _ => return Err(format!("name at {at} is not one NUL-terminated string")),
        }
        let name = String::from_utf8(name[..namesize - 1].to_vec()).map_err(|_| "name is not UTF-8")?;
        let data_at = (at + 110 + namesize).next_multiple_of(4);
        let padding = bytes
            .get(at + 110 + namesize..data_at)
            .ok_or("name padding cut short")?;
        let end = data_at + filesize as usize;
        let data = bytes
            .get(data_at..end)
            .ok_or(format!("data of {name:?} cut short"))?
            .to_vec();
        let next = end.next_multiple_of(4);
        let tail = bytes.get(end..next).ok_or("data padding cut short")?;
        if padding.iter().chain(tail).any(|&b| b != 0) {
            return Err(format!("padding of {name:?} is not NUL"));
        }
        at = next;
        if name == TRAILER {
            if at != bytes.len() {
                return Err(format!("{} bytes after the trailer", bytes.len() - at));
            }
            if fields[..11] != [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0] {
                return Err(format!("trailer header {fields:?}"));
            }
            return Ok(members);
        }
        members.push(Member {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev: (rmajor, rminor),
            data,
        });
    }
}

// ---------------------------------------------------------------------------
// Entries, and what the writer must make of them
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    /// Contents given through a host file.
    HostFile(Vec<u8>),
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
}

#[derive(Debug, Clone)]
struct Spec {
    path: String,
    kind: Kind,
    mode: u32,
    owner: Option<(u32, u32)>,
}

impl Spec {
    fn entry(&self, host: &TempDir, n: usize) -> Entry {
        let entry = match &self.kind {
            Kind::Dir => Entry::dir(&self.path, self.mode),
            Kind::File(data) => Entry::file(&self.path, data.clone(), self.mode),
            Kind::HostFile(data) => Entry::file_from_path(&self.path, host.write(&format!("f{n}"), data), self.mode),
            Kind::Symlink(target) => Entry::symlink(&self.path, target),
            Kind::Char(major, minor) => Entry::char_device(&self.path, self.mode, *major, *minor),
            Kind::Block(major, minor) => Entry::block_device(&self.path, self.mode, *major, *minor),
        };
        match self.owner {
            Some((uid, gid)) => entry.owner(uid, gid),
            None => entry,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

/// The errors the writer may give for entries of bytes, as comparable
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    InvalidPath { path: String, problem: PathProblem },
    DuplicatePath { path: String },
    InvalidMode { path: String, mode: u32 },
    InvalidSymlinkTarget { path: String, target: String },
    ParentNotDirectory { path: String, parent: String },
}

fn refusal(e: &Error) -> Option<Refusal> {
    Some(match e {
        Error::InvalidPath { path, problem } => Refusal::InvalidPath {
            path: path.clone(),
            problem: *problem,
        },
        Error::DuplicatePath { path } => Refusal::DuplicatePath { path: path.clone() },
        Error::InvalidMode { path, mode } => Refusal::InvalidMode {
            path: path.clone(),
            mode: *mode,
        },
        Error::InvalidSymlinkTarget { path, target } => Refusal::InvalidSymlinkTarget {
            path: path.clone(),
            target: target.clone(),
        },
        Error::ParentNotDirectory { path, parent } => Refusal::ParentNotDirectory {
            path: path.clone(),
            parent: parent.clone(),
        },
        _ => return None,
    })
}

/// The name stored for a path, by the rules `initramfs::PathProblem`
/// documents: leading `/`s and one trailing `/` dropped; empty, NUL, the
/// root itself, the trailer's name (as the first component: it is stored
/// as a parent of its own), empty, `.` and `..` components, and names over
/// `PATH_MAX` refused.
fn stored_name(path: &str) -> Result<String, PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if path.contains('\0') {
        return Err(PathProblem::Nul);
    }
    let name = path.trim_start_matches('/');
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() {
        return Err(PathProblem::Root);
    }
    if name.split('/').next() == Some(TRAILER) {
        return Err(PathProblem::Trailer);
    }
    if let Some(bad) = name.split('/').find(|c| c.is_empty() || *c == "." || *c == "..") {
        return Err(match bad {
            "" => PathProblem::EmptyComponent,
            "." => PathProblem::CurrentDir,
            _ => PathProblem::ParentDir,
        });
    }
    if name.len() + 1 > PATH_MAX {
        return Err(PathProblem::TooLong);
    }
    Ok(name.to_owned())
}

/// What the writer must do with `specs`: the members in the order written,
/// or the refusal of the first bad entry (path, mode, symlink target,
/// duplicate, in the order given; then an entry under a non-directory, in
/// name order).
fn expected(specs: &[Spec], mtime: u32) -> Result<Vec<Member>, Refusal> {
    let mut tree: BTreeMap<String, Option<&Spec>> = BTreeMap::new();
    for spec in specs {
        let name = stored_name(&spec.path).map_err(|problem| Refusal::InvalidPath {
            path: spec.path.clone(),
            problem,
        })?;
        let shown = format!("/{name}");
        // A symlink's mode is not the caller's to give.
        if spec.mode > 0o7777 && !matches!(spec.kind, Kind::Symlink(_)) {
            return Err(Refusal::InvalidMode {
                path: shown,
                mode: spec.mode,
            });
        }
        if let Kind::Symlink(target) = &spec.kind {
            if target.is_empty() || target.contains('\0') || target.len() >= PATH_MAX {
                return Err(Refusal::InvalidSymlinkTarget {
                    path: shown,
                    target: target.clone(),
                });
            }
        }
        if tree.insert(name, Some(spec)).is_some() {
            return Err(Refusal::DuplicatePath { path: shown });
        }
    }
    let mut implicit = Vec::new();
    for name in tree.keys() {
        for (slash, _) in name.match_indices('/') {
            let parent = &name[..slash];
            match tree.get(parent) {
                None => implicit.push(parent.to_owned()),
                Some(Some(spec)) if !spec.is_dir() => {
                    return Err(Refusal::ParentNotDirectory {
                        path: format!("/{name}"),
                        parent: format!("/{parent}"),
                    })
                }
                Some(_) => {}
            }
        }
    }
    for name in implicit {
        tree.insert(name, None);
    }
    Ok(tree
        .into_iter()
        .enumerate()
        .map(|(i, (name, spec))| {
            let mut m = Member {
                name,
                ino: i as u32 + 1,
                mode: S_IFDIR | IMPLICIT_DIR_MODE,
                uid: 0,
                gid: 0,
                nlink: 2,
                mtime,
                rdev: (0, 0),
                data: Vec::new(),
            };
            if let Some(spec) = spec {
                (m.uid, m.gid) = spec.owner.unwrap_or((0, 0));
                m.nlink = 1;
                let kind = match &spec.kind {
                    Kind::Dir => {
                        m.nlink = 2;
                        S_IFDIR
                    }
                    Kind::File(data) | Kind::HostFile(data) => {
                        m.data = data.clone();
                        S_IFREG
                    }
                    Kind::Symlink(target) => {
                        m.data = target.as_bytes().to_vec();
                        S_IFLNK
                    }
                    Kind::Char(major, minor) => {
                        m.rdev = (*major, *minor);
                        S_IFCHR
                    }
                    Kind::Block(major, minor) => {
                        m.rdev = (*major, *minor);
                        S_IFBLK
                    }
                };
                m.mode = kind
                    | if matches!(spec.kind, Kind::Symlink(_)) {
                        0o777
                    } else {
                        spec.mode
                    };
            }
            m
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// One path component: a few common names (so that entries collide and
/// nest), odd characters, and the components the writer must refuse.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => prop::sample::select(vec!["a", "b", "etc", "dev", "init", "x.y", "..a", "a..", ".hidden"]).prop_map(str::to_string),
        20 => "[a-z0-9._-]{1,8}",
        10 => "[\\PC\n\t\r\\\\ *?\\[\\]'\"$`é€😀-]{1,6}",
        2 => prop::sample::select(vec![".", "..", "", "TRAILER!!!"]).prop_map(str::to_string),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        50 => (0usize..3, prop::collection::vec(component(), 1..4), any::<bool>()).prop_map(|(lead, parts, trail)| {
            let mut p = "/".repeat(lead) + &parts.join("/");
            if trail {
                p.push('/');
            }
            p
        }),
        1 => prop::sample::select(vec!["", "/", "//", "a\0b", "\0", "/TRAILER!!!", "TRAILER!!!/", "./a", "a/../b"]).prop_map(str::to_string),
        // Around PATH_MAX: 4095 bytes with the NUL fit, 4096 do not.
        1 => (4090usize..4100).prop_map(|n| "p/".repeat(n / 2) + &"q".repeat(n % 2 + 1)),
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => path(),
        2 => prop::sample::select(vec!["/init", "../lib", "..", ".", "/", "a b", "x\ny"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["", "a\0"]).prop_map(str::to_string),
        1 => (4094usize..=4096).prop_map(|n| "t".repeat(n)),
    ]
}

fn contents() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        10 => prop::collection::vec(any::<u8>(), 0..9),
        3 => prop::collection::vec(any::<u8>(), 0..600),
        1 => (0usize..70_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => Just(Kind::Dir),
        6 => contents().prop_map(Kind::File),
        1 => contents().prop_map(Kind::HostFile),
        3 => target().prop_map(Kind::Symlink),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Kind::Char(a, b)),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Kind::Block(a, b)),
    ]
}

fn mode() -> impl Strategy<Value = u32> {
    prop_oneof![30 => 0u32..=0o7777, 1 => any::<u32>(), 1 => Just(0o100_644)]
}

fn spec() -> impl Strategy<Value = Spec> {
    (path(), kind(), mode(), prop::option::of((any::<u32>(), any::<u32>()))).prop_map(|(path, kind, mode, owner)| {
        Spec {
            path,
            kind,
            mode,
            owner,
        }
    })
}

/// A writer that takes nothing: for archives that must be refused before
/// their first byte.
struct Refuse;

impl Write for Refuse {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("nothing may be written"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn build(specs: &[Spec], mtime: u32, host: &TempDir) -> Archive {
    let mut archive = Archive::new();
    archive.mtime(mtime);
    for (n, spec) in specs.iter().enumerate() {
        archive.add(spec.entry(host, n));
    }
    archive
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// Any entries: the writer refuses exactly when the model does, with
    /// the same error, having written nothing; otherwise the archive reads
    /// back, strictly, as the model's members (sorted, parents first and
    /// added where missing, inodes in order, every field and byte as
    /// given), and `Written` counts them and the bytes.
    #[test]
    fn prop_archives_read_back_as_given(specs in prop::collection::vec(spec(), 0..10), mtime in any::<u32>()) {
        let host = TempDir::new("prop");
        let archive = build(&specs, mtime, &host);
        let mut out = Vec::new();
        let written = archive.write_to(&mut out);
        match (written, expected(&specs, mtime)) {
            (Ok(written), Ok(members)) => {
                let read = read_newc(&out).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&read, &members);
                prop_assert_eq!((written.entries, written.bytes), (members.len(), out.len() as u64));
                // Nothing stored can leave the root it is unpacked in.
                for m in &read {
                    prop_assert!(!m.name.starts_with('/') && !m.name.contains('\0'));
                    prop_assert!(m.name.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
                }
            }
            (Err(e), Err(want)) => {
                prop_assert_eq!(refusal(&e), Some(want), "{}", e);
                prop_assert!(out.is_empty(), "{} bytes written before refusing", out.len());
                prop_assert!(matches!(archive.write_to(Refuse), Err(ref again) if refusal(again) == refusal(&e)));
            }
            (got, want) => prop_assert!(false, "wrote {:?}, expected {:?}", got.map_err(|e| e.to_string()), want.map(|m| m.len())),
        }
    }

    /// A path with a `..`, `.` or empty component, a NUL, or nothing but
    /// slashes is refused naming it, wherever it comes among good entries.
    #[test]
    fn prop_hostile_paths_are_refused(
        good in prop::collection::vec("[a-z]{1,6}", 0..4),
        at in any::<prop::sample::Index>(),
        hostile in prop_oneof![
            (prop::collection::vec("[a-z]{1,4}", 0..3), prop::sample::select(vec!["..", "."]), prop::collection::vec("[a-z]{1,4}", 0..3), 0usize..2)
                .prop_map(|(before, bad, after, lead)| "/".repeat(lead) + &[before, vec![bad.to_string()], after].concat().join("/")),
            // An empty component between two others (at the start it is an
            // absolute path, at the end a trailing slash: both fine).
            (prop::collection::vec("[a-z]{1,4}", 1..3), 2usize..4, prop::collection::vec("[a-z]{1,4}", 1..3))
                .prop_map(|(before, slashes, after)| before.join("/") + &"/".repeat(slashes) + &after.join("/")),
            "(/?TRAILER!!!/[a-z]{1,4})",
            "[a-z/]{0,6}\0[a-z/]{0,6}",
            "/{0,4}",
        ],
    ) {
        let mut archive = Archive::new();
        let names: Vec<String> = good.iter().enumerate().map(|(i, g)| format!("/g{i}{g}")).collect();
        let at = at.index(names.len() + 1);
        for name in &names[..at] {
            archive.file(name.as_str(), "ok", 0o644);
        }
        archive.dir(hostile.as_str(), 0o755);
        for name in &names[at..] {
            archive.file(name.as_str(), "ok", 0o644);
        }
        let mut out = Vec::new();
        match archive.write_to(&mut out) {
            Err(Error::InvalidPath { path, .. }) => prop_assert_eq!(path, hostile),
            other => prop_assert!(false, "{:?} gave {:?}", hostile, other),
        }
        prop_assert!(out.is_empty());
    }

    /// GNU cpio agrees: `cpio -t` lists the names written, in order, and
    /// `cpio -idm` recreates every file, directory and symlink with its
    /// bytes, target and mode (device nodes and owners too, as root).
    #[test]
    fn prop_gnu_cpio_extracts_what_was_written(
        specs in prop::collection::vec(spec(), 0..8),
        mtime in 0u32..2_000_000_000,
    ) {
        if !have_cpio("prop_gnu_cpio_extracts_what_was_written") {
            return Ok(());
        }
        let out = TempDir::new("prop-extract");
        let as_root = is_root(out.path());
        // What cpio -i can recreate here: directories it can write into,
        // owners it can give, nodes only as root.
        // Paths of a few components: a path near PATH_MAX brings two
        // thousand parent directories, which the first property covers.
        let specs: Vec<Spec> = specs
            .into_iter()
            .filter(|s| s.path.len() < 256)
            .filter(|s| as_root || !matches!(s.kind, Kind::Char(..) | Kind::Block(..)))
            .map(|mut s| {
                if s.is_dir() {
                    s.mode |= 0o700;
                }
                s.owner = s.owner.filter(|_| as_root).map(|(u, g)| (u % 65_534, g % 65_534));
                if let Kind::Char(major, minor) | Kind::Block(major, minor) = &mut s.kind {
                    (*major, *minor) = (*major % 4096, *minor % 1_048_576);
                }
                s
            })
            .collect();
        let Ok(members) = expected(&specs, mtime) else {
            return Ok(());
        };
        let host = TempDir::new("prop-host");
        let mut bytes = Vec::new();
        build(&specs, mtime, &host).write_to(&mut bytes).unwrap();

        let listing = cpio(Path::new("."), &["-t", "--quiet"], &bytes).stdout;
        let names: String = members.iter().map(|m| format!("{}\n", m.name)).collect();
        prop_assert_eq!(String::from_utf8_lossy(&listing), names);

        extract(out.path(), &bytes, &[]);
        for m in &members {
            let at = out.path().join(&m.name);
            let meta = fs::symlink_metadata(&at).map_err(|e| TestCaseError::fail(format!("{}: {e}", m.name)))?;
            match m.mode & 0o170_000 {
                S_IFDIR => prop_assert!(meta.is_dir(), "{} is a directory", m.name),
                S_IFREG => {
                    prop_assert!(meta.is_file(), "{} is a file", m.name);
                    prop_assert_eq!(fs::read(&at).unwrap(), m.data.clone(), "contents of {}", m.name);
                    prop_assert_eq!(meta.mtime(), i64::from(mtime), "mtime of {}", m.name);
                }
                S_IFLNK => {
                    prop_assert!(meta.file_type().is_symlink(), "{} is a symlink", m.name);
                    let target = fs::read_link(&at).unwrap();
                    prop_assert_eq!(target.as_os_str().as_encoded_bytes(), &m.data[..], "target of {}", m.name);
                }
                kind => {
                    let file_type = meta.file_type();
                    let is_node = if kind == S_IFCHR { file_type.is_char_device() } else { file_type.is_block_device() };
                    prop_assert!(is_node, "{} is a device node", m.name);
                    let (major, minor) = major_minor(meta.rdev());
                    prop_assert_eq!((major, minor), (u64::from(m.rdev.0), u64::from(m.rdev.1)), "{}", m.name);
                }
            }
            if m.mode & 0o170_000 != S_IFLNK {
                prop_assert_eq!(mode_of(&at), m.mode & 0o7777, "mode of {}", m.name);
            }
            if as_root {
                prop_assert_eq!((meta.uid(), meta.gid()), (m.uid, m.gid), "owner of {}", m.name);
            }
        }
    }
}

/// A host file over newc's 4 GiB - 1 (sparse: nothing is stored) is
/// refused when planned, before the first byte is written.
#[test]
fn a_host_file_over_four_gib_is_refused_before_writing() {
    let host = TempDir::new("huge");
    let path = host.path().join("huge");
    fs::File::create(&path).unwrap().set_len(1 << 32).unwrap();
    let mut archive = Archive::new();
    archive
        .file("/ok", "fine", 0o644)
        .file_from_path("/big/huge", &path, 0o644);
    match archive.write_to(Refuse) {
        Err(Error::TooLarge { path, size }) => assert_eq!((path.as_str(), size), ("/big/huge", 1 << 32)),
        other => panic!("{other:?}"),
    }
}

/// The reader is strict: a flipped byte anywhere in the headers, names or
/// padding of a written archive is caught.
#[test]
fn the_reader_refuses_damaged_archives() {
    let mut bytes = Vec::new();
    Archive::new()
        .file("/ab", "xyz", 0o644)
        .symlink("/b", "ab")
        .write_to(&mut bytes)
        .unwrap();
    assert!(read_newc(&bytes).is_ok());
    // "ab": header 0..110, name 110..113, padding 113..116, data 116..119,
    // padding 119. The magic, a digit, the name's NUL, both paddings.
    for at in [0, 20, 112, 113, 119] {
        let mut bad = bytes.clone();
        bad[at] = b'#';
        assert!(read_newc(&bad).is_err(), "byte {at}");
    }
    assert!(read_newc(&bytes[..bytes.len() - 4]).is_err());
    assert!(read_newc(&[bytes.clone(), vec![0; 4]].concat()).is_err());
}

/// Found by `prop_archives_read_back_as_given`: `/TRAILER!!!/a` was taken,
/// and the archive got a parent directory named `TRAILER!!!`, the member
/// that ends a newc archive. GNU cpio listed nothing of such an archive,
/// and everything sorted after it was lost. Now the path is refused.
#[test]
fn a_path_under_the_trailer_name_is_refused() {
    for path in ["/TRAILER!!!/a", "TRAILER!!!/x/y"] {
        let mut archive = Archive::new();
        archive.file("/zzz", "after", 0o644).dir(path, 0o755);
        match archive.write_to(Refuse) {
            Err(Error::InvalidPath { path: p, problem }) => {
                assert_eq!((p.as_str(), problem), (path, PathProblem::Trailer))
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    // The name further down is only a name.
    let mut bytes = Vec::new();
    Archive::new()
        .file("/etc/TRAILER!!!", "", 0o644)
        .write_to(&mut bytes)
        .unwrap();
    let names: Vec<String> = read_newc(&bytes).unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["etc", "etc/TRAILER!!!"]);
}

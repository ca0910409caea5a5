//! The archive builder: collects entries, then writes them as a
//! deterministic `newc` archive.
//!
//! Determinism is the point: the same entries give the same bytes, whatever
//! order they were added in and whatever machine writes them. So members are
//! written sorted by path, inode numbers count up from 1 in that order, every
//! member carries the archive's one `mtime`, owners are root unless an entry
//! says otherwise, and nothing about a host file but its bytes is looked at.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::entry::{Contents, Entry, Kind};
use crate::error::Error;
use crate::host_file::{copy_host_file, host_file_len};
use crate::newc::{padding, Header, S_IFDIR, TRAILER_NAME, ZEROS};
use crate::output::write_atomically;
use crate::path::{ancestors, display, normalize};

/// Mode of the directories the archive adds on its own, for entries whose
/// parents were not given.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;

/// A `newc` archive being built.
///
/// The builder methods never fail: every check (paths, duplicates, modes,
/// parents, host files) runs when the archive is written, before its first
/// byte, and the first problem found is returned as an [`Error`] that names
/// the path.
///
/// ```
/// use initramfs::Archive;
///
/// let mut bytes = Vec::new();
/// Archive::new()
///     .dir("/dev", 0o755)
///     .char_device("/dev/console", 0o600, 5, 1)
///     .file("/etc/hostname", "guest\n", 0o644) // `/etc` is added as 0755
///     .symlink("/bin/sh", "/init")
///     .write_to(&mut bytes)?;
/// assert!(bytes.starts_with(b"070701"));
/// # Ok::<(), initramfs::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archive {
    /// In the order they were added; sorting happens on write.
    entries: Vec<Entry>,
    /// The modification time of every member, seconds since 1970.
    mtime: u32,
}

/// What [`Archive::write_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Members written, implicit parent directories included, the trailer not.
    pub entries: usize,
    /// Bytes written, trailer included.
    pub bytes: u64,
}

impl Archive {
    /// An empty archive whose members will carry mtime 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the modification time of every member, in seconds since 1970
    /// (see [`crate::source_date_epoch`]).
    pub fn mtime(&mut self, seconds: u32) -> &mut Self {
        self.mtime = seconds;
        self
    }

    /// Adds an entry (see [`Entry`] for owners other than root).
    pub fn add(&mut self, entry: Entry) -> &mut Self {
        self.entries.push(entry);
        self
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: impl Into<String>, mode: u32) -> &mut Self {
        self.add(Entry::dir(path, mode))
    }

    /// Adds a regular file holding `contents`.
    pub fn file(&mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.add(Entry::file(path, contents, mode))
    }

    /// Adds a regular file holding the bytes of the host file `host_path`,
    /// which is read when the archive is written.
    pub fn file_from_path(&mut self, path: impl Into<String>, host_path: impl AsRef<Path>, mode: u32) -> &mut Self {
        self.add(Entry::file_from_path(path, host_path.as_ref(), mode))
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: impl Into<String>, target: impl Into<String>) -> &mut Self {
        self.add(Entry::symlink(path, target))
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: impl Into<String>, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.add(Entry::char_device(path, mode, major, minor))
    }

    /// Adds a block device node.
    pub fn block_device(&mut self, path: impl Into<String>, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.add(Entry::block_device(path, mode, major, minor))
    }

    /// Writes the archive to `out`, then flushes it.
    ///
    /// Every entry is checked, and every host file measured, before the
    /// first byte is written; only I/O errors (or a host file that changes
    /// while it is copied) can leave `out` with a partial archive.
    pub fn write_to<W: Write>(&self, mut out: W) -> Result<Written, Error> {
        let members = self.plan()?;
        let mut bytes = 0;
        for member in &members {
            bytes += member.write(&mut out)?;
        }
        let trailer = Header::trailer().encode(TRAILER_NAME);
        out.write_all(&trailer).map_err(|source| Error::Write {
            path: TRAILER_NAME.to_owned(),
            source,
        })?;
        out.flush().map_err(Error::Flush)?;
        Ok(Written {
            entries: members.len(),
            bytes: bytes + trailer.len() as u64,
        })
    }

    /// Writes the archive to the file `path` atomically: to a temporary file
    /// in the same directory, synced, then renamed over `path`. On error
    /// `path` is left as it was and the temporary file is removed. The
    /// directory is created if it does not exist.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<Written, Error> {
        write_atomically(path.as_ref(), |out| self.write_to(out))
    }

    /// Turns the entries into the members to write, in order: checks every
    /// entry, adds the parent directories nobody gave, numbers the inodes
    /// and fills in the headers.
    fn plan(&self) -> Result<Vec<Member<'_>>, Error> {
        // 1. Normalize every path and refuse bad entries and duplicates.
        //    `None` marks a parent directory the archive adds on its own.
        let mut tree: BTreeMap<String, Option<&Entry>> = BTreeMap::new();
        for entry in &self.entries {
            let name = normalize(&entry.path).map_err(|problem| Error::InvalidPath {
                path: entry.path.clone(),
                problem,
            })?;
            entry.validate(&name)?;
            if tree.contains_key(&name) {
                return Err(Error::DuplicatePath { path: display(&name) });
            }
            tree.insert(name, Some(entry));
        }

        // 2. Every ancestor of every entry must be a directory: a given one,
        //    or one added here.
        let mut missing = Vec::new();
        for name in tree.keys() {
            for parent in ancestors(name) {
                match tree.get(parent) {
                    None => missing.push(parent.to_owned()),
                    Some(Some(entry)) if !entry.is_dir() => {
                        return Err(Error::ParentNotDirectory {
                            path: display(name),
                            parent: display(parent),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        for parent in missing {
            tree.insert(parent, None);
        }

        // 3. Sorted by name, which puts every directory before what it holds
        //    (a parent's name is a prefix of its children's), inodes from 1.
        tree.into_iter()
            .enumerate()
            .map(|(index, (name, entry))| {
                let ino = u32::try_from(index + 1).expect("fewer than 2^32 entries fit in memory");
                self.member(ino, name, entry)
            })
            .collect()
    }

    /// The member for one entry (`None`: an implicit directory).
    fn member<'a>(&self, ino: u32, name: String, entry: Option<&'a Entry>) -> Result<Member<'a>, Error> {
        let mut header = Header {
            ino,
            mtime: self.mtime,
            nlink: 1,
            ..Header::default()
        };
        let Some(entry) = entry else {
            header.mode = S_IFDIR | IMPLICIT_DIR_MODE;
            header.nlink = 2;
            return Ok(Member {
                name,
                header,
                body: Body::Empty,
            });
        };

        header.mode = entry.file_type() | entry.mode;
        header.uid = entry.uid;
        header.gid = entry.gid;
        let body = match &entry.kind {
            Kind::Dir => {
                // "." and the entry in its parent; subdirectories' ".." are
                // not counted, as the kernel does not care and cpio does not.
                header.nlink = 2;
                Body::Empty
            }
            Kind::File(Contents::Bytes(bytes)) => Body::Bytes(bytes),
            Kind::File(Contents::HostFile(host_path)) => {
                let len = host_file_len(&name, host_path)?;
                Body::HostFile { host_path, len }
            }
            Kind::Symlink { target } => Body::Bytes(target.as_bytes()),
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                header.rdev_major = *major;
                header.rdev_minor = *minor;
                Body::Empty
            }
        };
        let len = body.len();
        header.filesize = u32::try_from(len).map_err(|_| Error::TooLarge {
            path: display(&name),
            size: len,
        })?;
        Ok(Member { name, header, body })
    }
}

/// One member ready to be written.
struct Member<'a> {
    /// The normalized name, as stored.
    name: String,
    header: Header,
    body: Body<'a>,
}

/// Where a member's data comes from.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A host file, with the length it had when the archive was planned.
    HostFile {
        host_path: &'a Path,
        len: u64,
    },
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::HostFile { len, .. } => *len,
        }
    }
}

impl Member<'_> {
    /// Writes header, name, data and padding; returns the bytes written.
    fn write(&self, out: &mut impl Write) -> Result<u64, Error> {
        let write_error = |source| Error::Write {
            path: display(&self.name),
            source,
        };
        let head = self.header.encode(&self.name);
        out.write_all(&head).map_err(write_error)?;
        match self.body {
            Body::Empty => {}
            Body::Bytes(bytes) => out.write_all(bytes).map_err(write_error)?,
            Body::HostFile { host_path, len } => copy_host_file(&self.name, host_path, len, out)?,
        }
        // `filesize` was checked to fit in 32 bits, so it fits in a usize.
        let len = self.header.filesize as usize;
        let pad = padding(len);
        out.write_all(&ZEROS[..pad]).map_err(write_error)?;
        Ok((head.len() + len + pad) as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, io};

    use super::*;
    use crate::host_file::COPY_BUFFER;
    use crate::newc::{S_IFCHR, S_IFLNK, S_IFREG};
    use crate::path::PathProblem;
    use crate::testutil::{parse, TempDir};

    fn bytes_of(archive: &Archive) -> Vec<u8> {
        let mut out = Vec::new();
        archive.write_to(&mut out).expect("archive writes");
        out
    }

    fn names(bytes: &[u8]) -> Vec<String> {
        parse(bytes).into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn members_are_sorted_with_parents_first_and_numbered_in_order() {
        let mut archive = Archive::new();
        archive
            .file("/usr/bin/tool", "x", 0o755)
            .char_device("/dev/console", 0o600, 5, 1)
            .file("/init", "init", 0o755)
            .dir("/dev", 0o755);
        let members = parse(&bytes_of(&archive));

        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "usr",
                "usr/bin",
                "usr/bin/tool",
                "TRAILER!!!"
            ]
        );
        let inos: Vec<u32> = members.iter().map(|m| m.header.ino).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5, 6, 0]);
    }

    #[test]
    fn headers_carry_type_mode_owner_links_and_device_numbers() {
        let mut archive = Archive::new();
        archive
            .mtime(1_700_000_000)
            .dir("/tmp", 0o1777)
            .add(Entry::file("/home/u/f", "abc", 0o640).owner(1000, 100))
            .symlink("/bin/sh", "/init")
            .char_device("/dev/null", 0o666, 1, 3)
            .block_device("/dev/vda", 0o660, 254, 0);
        let members = parse(&bytes_of(&archive));
        let get = |name: &str| members.iter().find(|m| m.name == name).unwrap();

        let tmp = get("tmp");
        assert_eq!(tmp.header.mode, S_IFDIR | 0o1777);
        assert_eq!(tmp.header.nlink, 2);
        assert_eq!(get("home").header.mode, S_IFDIR | IMPLICIT_DIR_MODE);

        let file = get("home/u/f");
        assert_eq!(file.header.mode, S_IFREG | 0o640);
        assert_eq!((file.header.uid, file.header.gid), (1000, 100));
        assert_eq!((file.header.nlink, file.header.filesize), (1, 3));
        assert_eq!(file.data, b"abc");
        // The owner belongs to the entry, not to the parents made for it.
        assert_eq!((get("home/u").header.uid, get("home/u").header.gid), (0, 0));

        let link = get("bin/sh");
        assert_eq!(link.header.mode, S_IFLNK | 0o777);
        assert_eq!(link.data, b"/init");
        assert_eq!(link.header.filesize, 5);

        let null = get("dev/null");
        assert_eq!(null.header.mode, S_IFCHR | 0o666);
        assert_eq!((null.header.rdev_major, null.header.rdev_minor), (1, 3));
        assert_eq!((null.header.dev_major, null.header.dev_minor), (0, 0));
        assert_eq!(null.header.filesize, 0);
        let vda = get("dev/vda");
        assert_eq!(vda.header.mode, crate::newc::S_IFBLK | 0o660);
        assert_eq!((vda.header.rdev_major, vda.header.rdev_minor), (254, 0));

        assert!(members
            .iter()
            .filter(|m| m.name != TRAILER_NAME)
            .all(|m| m.header.mtime == 1_700_000_000));
    }

    #[test]
    fn every_member_and_its_data_are_padded_to_four_bytes() {
        // Names and contents of every length modulo 4.
        let mut archive = Archive::new();
        for len in 0..8 {
            archive.file("n".repeat(len + 1), "d".repeat(len), 0o644);
        }
        let bytes = bytes_of(&archive);
        assert_eq!(bytes.len() % 4, 0);

        let members = parse(&bytes);
        for member in &members {
            assert_eq!(member.offset % 4, 0, "{} starts aligned", member.name);
            assert_eq!(member.data_offset % 4, 0, "{}'s data starts aligned", member.name);
        }
        for (member, len) in members.iter().zip(0..8) {
            assert_eq!(member.data, "d".repeat(len).as_bytes());
            // Padding is NUL, and exactly enough.
            let end = member.data_offset + len;
            let next = end.next_multiple_of(4);
            assert!(bytes[end..next].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn written_reports_members_and_bytes() {
        let mut archive = Archive::new();
        archive.file("/a/b", "hello", 0o644);
        let mut out = Vec::new();
        let written = archive.write_to(&mut out).unwrap();
        assert_eq!(written.entries, 2); // `a` and `a/b`
        assert_eq!(written.bytes, out.len() as u64);
        // a: 110 + 2 -> 112; a/b: 110 + 4 -> 116, + 5 -> 8; trailer: 124.
        assert_eq!(out.len(), 112 + 116 + 8 + 124);
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        assert_eq!(bytes_of(&Archive::new()), Header::trailer().encode(TRAILER_NAME));
    }

    #[test]
    fn same_entries_in_any_order_give_the_same_bytes() {
        let dir = TempDir::new();
        let host = dir.write("init", b"\x7fELF pretend");
        let entries = vec![
            Entry::dir("/dev", 0o755),
            Entry::char_device("/dev/console", 0o600, 5, 1),
            Entry::file_from_path("/init", &host, 0o755),
            Entry::symlink("/sbin/init", "/init"),
            Entry::file("/etc/hostname", "guest\n", 0o644),
            Entry::dir("/tmp", 0o1777),
        ];
        let build = |entries: &[Entry]| {
            let mut archive = Archive::new();
            for entry in entries {
                archive.add(entry.clone());
            }
            bytes_of(&archive)
        };

        let first = build(&entries);
        assert_eq!(build(&entries), first, "two builds");
        let mut reversed = entries.clone();
        reversed.reverse();
        assert_eq!(build(&reversed), first, "reversed");
        let mut rotated = entries.clone();
        rotated.rotate_left(2);
        assert_eq!(build(&rotated), first, "rotated");
    }

    #[test]
    fn explicit_directory_wins_over_the_implicit_one() {
        let mut archive = Archive::new();
        archive.file("/root/.profile", "", 0o600).dir("/root", 0o700);
        let members = parse(&bytes_of(&archive));
        assert_eq!(members[0].name, "root");
        assert_eq!(members[0].header.mode, S_IFDIR | 0o700);
        assert_eq!(names(&bytes_of(&archive)).len(), 3);
    }

    #[test]
    fn host_file_contents_are_copied_verbatim() {
        let dir = TempDir::new();
        // Over one copy buffer, and not a multiple of 4.
        let contents: Vec<u8> = (0..COPY_BUFFER * 2 + 3).map(|i| (i % 251) as u8).collect();
        let host = dir.write("big", &contents);
        let mut archive = Archive::new();
        archive.file_from_path("/big", &host, 0o644);
        let members = parse(&bytes_of(&archive));
        assert_eq!(members[0].data, contents);
    }

    fn error_of(archive: &Archive) -> Error {
        let mut out = Vec::new();
        let error = archive.write_to(&mut out).unwrap_err();
        assert!(out.is_empty(), "nothing is written before the checks pass");
        error
    }

    #[test]
    fn bad_paths_are_refused_naming_the_path() {
        for (path, problem) in [
            ("/../etc", PathProblem::ParentDir),
            ("", PathProblem::Empty),
            ("/", PathProblem::Root),
            ("a//b", PathProblem::EmptyComponent),
        ] {
            let mut archive = Archive::new();
            archive.file("/ok", "", 0o644).dir(path, 0o755);
            match error_of(&archive) {
                Error::InvalidPath { path: p, problem: q } => {
                    assert_eq!((p.as_str(), q), (path, problem))
                }
                other => panic!("{path:?}: unexpected {other:?}"),
            }
        }
        let mut archive = Archive::new();
        archive.dir("/../etc", 0o755);
        assert_eq!(
            error_of(&archive).to_string(),
            "invalid archive path \"/../etc\": it has a `..` component, which could escape the root"
        );
    }

    #[test]
    fn duplicates_are_refused_even_when_spelled_differently() {
        let mut archive = Archive::new();
        archive.dir("/etc", 0o755).file("etc/", "", 0o644);
        let error = error_of(&archive);
        assert!(matches!(&error, Error::DuplicatePath { path } if path == "/etc"));
        assert_eq!(error.to_string(), "archive path /etc is given more than once");
    }

    #[test]
    fn a_file_cannot_be_a_parent() {
        let mut archive = Archive::new();
        archive.file("/init", "", 0o755).file("/init/x", "", 0o644);
        assert!(matches!(
            error_of(&archive),
            Error::ParentNotDirectory { path, parent } if path == "/init/x" && parent == "/init"
        ));
    }

    #[test]
    fn modes_with_file_type_bits_are_refused() {
        let mut archive = Archive::new();
        archive.file("/init", "", 0o100_755);
        assert!(matches!(
            error_of(&archive),
            Error::InvalidMode { path, mode: 0o100_755 } if path == "/init"
        ));
    }

    #[test]
    fn empty_symlink_targets_are_refused() {
        let mut archive = Archive::new();
        archive.symlink("/bin/sh", "");
        assert!(matches!(
            error_of(&archive),
            Error::InvalidSymlinkTarget { path, .. } if path == "/bin/sh"
        ));
    }

    #[test]
    fn missing_and_non_regular_host_files_are_refused_naming_both_paths() {
        let dir = TempDir::new();
        let missing = dir.path().join("missing");
        let mut archive = Archive::new();
        archive.file_from_path("/init", &missing, 0o755);
        let error = error_of(&archive);
        assert!(
            matches!(&error, Error::ReadSource { path, host_path, source }
                if path == "/init" && *host_path == missing
                    && source.kind() == io::ErrorKind::NotFound),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("cannot read {} for /init", missing.display())
        );

        let mut archive = Archive::new();
        archive.file_from_path("/init", dir.path(), 0o755);
        assert!(matches!(error_of(&archive), Error::NotRegularFile { .. }));
    }

    #[test]
    fn write_to_path_replaces_the_file_atomically() {
        let dir = TempDir::new();
        let output = dir.path().join("build/initramfs.cpio");
        let mut archive = Archive::new();
        archive.file("/init", "v1", 0o755);
        let written = archive.write_to_path(&output).unwrap();
        assert_eq!(fs::read(&output).unwrap(), bytes_of(&archive));
        assert_eq!(written.bytes, fs::metadata(&output).unwrap().len());

        // A failing write leaves the old archive and no temporary file.
        let mut broken = Archive::new();
        broken.file_from_path("/init", dir.path().join("missing"), 0o755);
        assert!(broken.write_to_path(&output).is_err());
        assert_eq!(fs::read(&output).unwrap(), bytes_of(&archive));
        let left: Vec<_> = fs::read_dir(output.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["initramfs.cpio"]);
    }
}

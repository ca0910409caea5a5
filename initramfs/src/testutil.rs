//! Helpers for the unit tests: a temporary directory, and a small `newc`
//! reader to look at what the writer wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::newc::{Header, HEADER_LEN, MAGIC, TRAILER_NAME};

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("initramfs-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory; returns its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One member as read back, with where it lay in the archive.
#[derive(Debug)]
pub struct Parsed {
    pub name: String,
    pub header: Header,
    pub data: Vec<u8>,
    pub offset: usize,
    pub data_offset: usize,
}

/// Reads every member, trailer included, checking the magic, the name's NUL
/// and that the archive ends right after the trailer.
pub fn parse(bytes: &[u8]) -> Vec<Parsed> {
    let field = |at: usize| {
        let hex = std::str::from_utf8(&bytes[at..at + 8]).expect("ASCII field");
        u32::from_str_radix(hex, 16).expect("hex field")
    };
    let mut members = Vec::new();
    let mut offset = 0;
    loop {
        assert_eq!(&bytes[offset..offset + 6], MAGIC, "magic at {offset}");
        let f = |i: usize| field(offset + 6 + 8 * i);
        let header = Header {
            ino: f(0),
            mode: f(1),
            uid: f(2),
            gid: f(3),
            nlink: f(4),
            mtime: f(5),
            filesize: f(6),
            dev_major: f(7),
            dev_minor: f(8),
            rdev_major: f(9),
            rdev_minor: f(10),
        };
        assert_eq!(f(12), 0, "c_check");
        let namesize = f(11) as usize;
        let name_start = offset + HEADER_LEN;
        let name_bytes = &bytes[name_start..name_start + namesize];
        assert_eq!(name_bytes.last(), Some(&0), "name ends with NUL");
        let name = String::from_utf8(name_bytes[..namesize - 1].to_vec()).expect("UTF-8 name");
        let data_offset = (name_start + namesize).next_multiple_of(4);
        let data_end = data_offset + header.filesize as usize;
        let data = bytes[data_offset..data_end].to_vec();
        let is_trailer = name == TRAILER_NAME;
        members.push(Parsed {
            name,
            header,
            data,
            offset,
            data_offset,
        });
        offset = data_end.next_multiple_of(4);
        if is_trailer {
            assert_eq!(offset, bytes.len(), "nothing after the trailer");
            return members;
        }
    }
}

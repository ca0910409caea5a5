//! A directory tree reached only through descriptors: every lookup is of
//! one name relative to an open directory, and none follows a symbolic
//! link.
//!
//! A [`Dir`] is an open directory. Its methods take a single path
//! component (no `/`, never `.` or `..`) and act on that name inside it:
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS` to open (plain `openat` with `O_NOFOLLOW` where
//! the kernel lacks `openat2`: for one component the two refuse the same),
//! and `mkdirat`, `symlinkat`, `linkat`, `unlinkat`, `fchownat` and
//! `fstatat` with `AT_SYMLINK_NOFOLLOW` for the rest. Modes are set with
//! `fchmod` on a descriptor so opened, never by path. Whatever a layer put
//! in the tree, an operation here lands on the entry it names in this
//! directory, never on what a link points to.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `struct open_how` of `linux/openat2.h` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What `fstatat` says of an entry, as much as the applier needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    /// The `S_IFMT` bits.
    pub format: u32,
    pub dev: u64,
    pub ino: u64,
}

impl Stat {
    pub fn is_dir(&self) -> bool {
        self.format == libc::S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.format == libc::S_IFLNK
    }

    fn of(st: &libc::stat) -> Stat {
        Stat {
            format: st.st_mode & libc::S_IFMT,
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// An open directory of the tree.
#[derive(Debug)]
pub(super) struct Dir {
    file: File,
}

impl Dir {
    /// Opens the tree's root itself, a directory that must not be a link.
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let path = c_path(path.as_os_str())?;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        Ok(Dir {
            file: File::from(owned(fd)?),
        })
    }

    /// Another descriptor of this directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            file: self.file.try_clone()?,
        })
    }

    /// Opens the directory `name` here; `ENOTDIR` (or `ELOOP`) if it is a
    /// symbolic link, `ENOTDIR` if it is anything else but a directory.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let fd = self.openat(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(Dir { file: File::from(fd) })
    }

    /// Creates the regular file `name` here, which must not exist, with
    /// `mode` (before the umask), open for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let fd = self.openat(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode)?;
        Ok(File::from(fd))
    }

    /// `openat2` of one component, refusing every symbolic link.
    fn openat(&self, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let name = component(name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let how = OpenHow {
            flags: flags as u64,
            mode: u64::from(mode),
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        };
        // A rename elsewhere on the system may make RESOLVE_BENEATH give
        // EAGAIN; a few tries are enough.
        for _ in 0..8 {
            // SAFETY: the descriptor is open for the duration of the call,
            // `name` is NUL-terminated, and `how` is a `struct open_how`
            // whose size is passed with it; the kernel only reads them.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.file.as_raw_fd(),
                    name.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            match owned(fd as libc::c_int) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => break,
                result => return result,
            }
        }
        // Without openat2 (before Linux 5.6, or filtered): one component
        // with O_NOFOLLOW has no parent to resolve and refuses a final
        // link with ELOOP, which is what openat2 refuses too.
        // SAFETY: as above; `mode` is read only with O_CREAT.
        let fd = unsafe { libc::openat(self.file.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
        owned(fd)
    }

    /// The entry `name` here, not following a link; `None` if there is none.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let name = component(name)?;
        // SAFETY: an all-zero `stat` is a valid value of the plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open, `name` NUL-terminated, and `st` a
        // writable `struct stat` for the duration of the call.
        let rc = unsafe { libc::fstatat(self.file.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        match check(rc) {
            Ok(()) => Ok(Some(Stat::of(&st))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This directory's own identity.
    pub fn fstat(&self) -> io::Result<Stat> {
        // SAFETY: as in `stat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open and `st` writable during the call.
        check(unsafe { libc::fstat(self.file.as_raw_fd(), &mut st) })?;
        Ok(Stat::of(&st))
    }

    /// Creates the directory `name` here with `mode` (before the umask).
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let name = component(name)?;
        // SAFETY: the descriptor is open and `name` NUL-terminated.
        check(unsafe { libc::mkdirat(self.file.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
    }

    /// Creates the symbolic link `name` here, pointing at `target` (which
    /// is stored as it is, and never resolved).
    pub fn symlink(&self, target: &Path, name: &OsStr) -> io::Result<()> {
        let name = component(name)?;
        let target = c_path(target.as_os_str())?;
        // SAFETY: the descriptor is open; both strings are NUL-terminated.
        check(unsafe { libc::symlinkat(target.as_ptr(), self.file.as_raw_fd(), name.as_ptr()) })
    }

    /// Makes `name` here a new name of `from_name` in `from` (the entry
    /// itself: a symbolic link is linked, not followed).
    pub fn hard_link(&self, from: &Dir, from_name: &OsStr, name: &OsStr) -> io::Result<()> {
        let (from_name, name) = (component(from_name)?, component(name)?);
        // SAFETY: both descriptors are open and both names NUL-terminated;
        // flags 0 leaves out AT_SYMLINK_FOLLOW.
        check(unsafe {
            libc::linkat(
                from.file.as_raw_fd(),
                from_name.as_ptr(),
                self.file.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        })
    }

    /// Sets the owner of the entry `name` here, a link itself if it is one.
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let name = component(name)?;
        // SAFETY: the descriptor is open and `name` NUL-terminated.
        check(unsafe {
            libc::fchownat(
                self.file.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// Sets this directory's owner (`fchown`).
    pub fn chown_self(&self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))
    }

    /// Sets this directory's mode (`fchmod`).
    pub fn chmod_self(&self, mode: u32) -> io::Result<()> {
        self.file.set_permissions(Permissions::from_mode(mode))
    }

    /// Removes whatever `name` is here: a directory with all it holds, a
    /// link itself (never what it points to); nothing there is fine.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let Some(st) = self.stat(name)? else {
            return Ok(());
        };
        if st.is_dir() {
            let dir = self.open_dir(name)?;
            for child in dir.names()? {
                dir.remove(&child)?;
            }
        }
        let c = component(name)?;
        let flags = if st.is_dir() { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: the descriptor is open and `c` NUL-terminated.
        check(unsafe { libc::unlinkat(self.file.as_raw_fd(), c.as_ptr(), flags) })
    }

    /// The names in this directory, without `.` and `..`.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // fdopendir takes the descriptor it is given: give it a copy.
        let fd = self.file.as_fd().try_clone_to_owned()?;
        // The copy shares the offset: start from the first entry.
        // SAFETY: `fd` is open; lseek only moves its offset.
        if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: `raw` is an open directory descriptor owned here; on
        // success the DIR stream owns it, closed by closedir below.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `raw` is still ours to close.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            return Err(e);
        }
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; readdir reports errors only
            // through it, so it is cleared first.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `stream` is a valid DIR stream until closedir.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let e = io::Error::last_os_error();
                break if e.raw_os_error() == Some(0) { Ok(()) } else { Err(e) };
            }
            // SAFETY: readdir returned a valid dirent whose d_name is a
            // NUL-terminated string, read before the next readdir.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        };
        // SAFETY: `stream` came from fdopendir and is closed exactly once.
        unsafe { libc::closedir(stream) };
        result.map(|()| names)
    }
}

/// `name` as a C string, refused unless it is one plain component.
fn component(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    c_path(name)
}

fn c_path(path: &OsStr) -> io::Result<CString> {
    CString::new(path.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
}

/// A descriptor returned by a system call, or its errno.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative result of open/openat/openat2 is a new
    // descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_never_followed() {
        let t = TestDir::new("tree-links");
        let (root, outside) = (t.path().join("root"), t.path().join("outside"));
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("f"), "o").unwrap();
        symlink(&outside, root.join("link")).unwrap();
        symlink(outside.join("f"), root.join("flink")).unwrap();
        let dir = Dir::open_root(&root).unwrap();

        let err = dir.open_dir(OsStr::new("link")).unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)), "{err}");
        assert!(dir.create_file(OsStr::new("flink"), 0o600).is_err());
        assert!(dir.stat(OsStr::new("link")).unwrap().unwrap().is_symlink());
        assert!(dir.open_dir(OsStr::new("d")).is_ok());
        for bad in ["..", ".", "", "d/..", "link/f"] {
            let err = dir.stat(OsStr::new(bad)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }

        dir.chown(OsStr::new("flink"), 0, 0).unwrap();
        dir.remove(OsStr::new("link")).unwrap();
        dir.remove(OsStr::new("flink")).unwrap();
        dir.remove(OsStr::new("missing")).unwrap();
        assert_eq!(fs::read_to_string(outside.join("f")).unwrap(), "o");
        assert_eq!(dir.names().unwrap(), [OsString::from("d")]);
    }

    #[test]
    fn remove_takes_a_directory_with_its_contents() {
        let t = TestDir::new("tree-remove");
        fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        fs::write(t.path().join("a/b/c/f"), "x").unwrap();
        symlink("/", t.path().join("a/b/root")).unwrap();
        let dir = Dir::open_root(t.path()).unwrap();
        let mut names = dir
            .open_dir(OsStr::new("a"))
            .unwrap()
            .open_dir(OsStr::new("b"))
            .unwrap()
            .names()
            .unwrap();
        names.sort();
        assert_eq!(names, [OsString::from("c"), OsString::from("root")]);
        dir.remove(OsStr::new("a")).unwrap();
        assert!(dir.names().unwrap().is_empty());
    }
}

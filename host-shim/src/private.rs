//! Host state that is vmshim's alone: directories 0700 and files 0600
//! whatever the umask, checked before use, and never reached through a link
//! that another local user planted.
//!
//! * A directory vmshim keeps state in (a VM's runtime directory, the state
//!   directory, `vmshim runtime --root`) is made or checked with
//!   [`ensure_private_dir`]: created 0700 when missing; else it must be a
//!   real directory (not a symbolic link), owned by our effective uid and
//!   writable by nobody else, or it is refused with an error that names it
//!   and says what is wrong. One of ours that others may only read (as
//!   earlier versions made them) is narrowed to 0700.
//! * Files are created relative to their directory's descriptor with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC`, mode 0600
//!   ([`PrivateDir::create_file`], [`create_private_file`]), or written
//!   whole through such a file renamed into place
//!   ([`write_private_atomically`]): a planted link or file is never
//!   followed, truncated or written.
//! * Logs are capped and rotated ([`log`]).

pub mod log;

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The mode of every directory vmshim keeps state in.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file vmshim writes there.
pub const FILE_MODE: u32 = 0o600;

/// Why private state could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    /// Something in the way that we did not make, or that others can
    /// change: never used.
    #[error("{} {detail}: refusing to use it", path.display())]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong with it (`is a symbolic link`, `is owned by uid
        /// 65534, not 0`, `has mode 0777`, ...).
        detail: String,
    },
    /// A directory or file could not be made, opened or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl PrivateError {
    fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> PrivateError {
        let path = path.into();
        move |source| PrivateError::Io { what, path, source }
    }

    /// The I/O error underneath, if that is what it is.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            PrivateError::Io { source, .. } => Some(source.kind()),
            PrivateError::Unsafe { .. } => None,
        }
    }
}

/// A directory checked to be ours and private, held open: files are made
/// relative to this descriptor, so the directory cannot be swapped for
/// another under us.
#[derive(Debug)]
pub struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Makes `path` a private directory, or checks that it is one: created 0700
/// (its missing parents too) when it does not exist; else it must be a real
/// directory owned by our effective uid that nobody else may write, and is
/// narrowed to 0700. Anything else is refused, naming the path and what is
/// wrong (`/tmp/vmshim-0 is owned by uid 65534, not 0: refusing to use it`).
pub fn ensure_private_dir(path: &Path) -> Result<PrivateDir, PrivateError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(parent).is_err() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)
                .map_err(PrivateError::io("create", parent))?;
        }
    }
    check_parent(path)?;
    let c = cstring(path.as_os_str(), path)?;
    // SAFETY: c is a valid NUL-terminated path; mkdir has no other
    // preconditions.
    if unsafe { libc::mkdir(c.as_ptr(), DIR_MODE) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(PrivateError::Io {
                what: "create",
                path: path.to_owned(),
                source: e,
            });
        }
    }
    let fd = open_dir(libc::AT_FDCWD, &c, path)?;
    check_private(&fd, path)?;
    Ok(PrivateDir {
        fd,
        path: path.to_owned(),
    })
}

/// Creates file `name` in directory `dir` (checked as [`PrivateDir::open`]
/// checks it): 0600, never through a link, failing if the name exists.
pub fn create_private_file(dir: &Path, name: &str) -> Result<File, PrivateError> {
    PrivateDir::open(dir)?.create_file(name)
}

/// Writes `bytes` to `path` whole: a 0600 file made beside it (never
/// through a link) and renamed into place. The directory is checked as
/// [`PrivateDir::open`] checks it.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<(), PrivateError> {
    let (dir, name) = split(path)?;
    PrivateDir::open(dir)?.write_atomically(name, bytes)
}

impl PrivateDir {
    /// An existing directory, checked as [`ensure_private_dir`] checks it;
    /// never created.
    pub fn open(path: &Path) -> Result<PrivateDir, PrivateError> {
        let c = cstring(path.as_os_str(), path)?;
        let fd = open_dir(libc::AT_FDCWD, &c, path)?;
        check_private(&fd, path)?;
        Ok(PrivateDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The directory's path, as it was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in this directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates file `name`, write-only, 0600 whatever the umask; fails if
    /// anything (a file, a link, a socket) already has the name.
    pub fn create_file(&self, name: &str) -> Result<File, PrivateError> {
        let path = self.path.join(name);
        let c = cstring(OsStr::new(name), &path)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: the directory descriptor is open and c is a valid
        // NUL-terminated name; the mode argument is read for O_CREAT.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, FILE_MODE) };
        let fd = owned(fd).map_err(PrivateError::io("create", &path))?;
        set_mode(fd.as_raw_fd(), FILE_MODE).map_err(PrivateError::io("chmod", &path))?;
        Ok(File::from(fd))
    }

    /// Opens file `name` for appending, creating it 0600 when missing. An
    /// existing one must be a regular file of ours with one link (not a
    /// link planted to someone else's file); it is narrowed to 0600.
    pub fn open_append(&self, name: &str) -> Result<File, PrivateError> {
        let path = self.path.join(name);
        let c = cstring(OsStr::new(name), &path)?;
        let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: as in create_file.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, FILE_MODE) };
        let fd = owned(fd).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => PrivateError::Unsafe {
                path: path.clone(),
                detail: "is a symbolic link".to_owned(),
            },
            _ => PrivateError::io("open", &path)(e),
        })?;
        let st = fstat(fd.as_raw_fd()).map_err(PrivateError::io("stat", &path))?;
        let unsafe_because = |detail: String| PrivateError::Unsafe {
            path: path.clone(),
            detail,
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(unsafe_because("is not a regular file".to_owned()));
        }
        if st.st_uid != euid() {
            return Err(unsafe_because(format!("is owned by uid {}, not {}", st.st_uid, euid())));
        }
        if st.st_nlink != 1 {
            return Err(unsafe_because(format!("has {} hard links", st.st_nlink)));
        }
        if st.st_mode & 0o7777 != FILE_MODE {
            set_mode(fd.as_raw_fd(), FILE_MODE).map_err(PrivateError::io("chmod", &path))?;
        }
        Ok(File::from(fd))
    }

    /// Creates directory `name`, 0700 whatever the umask; fails if
    /// anything already has the name.
    pub fn create_dir(&self, name: &str) -> Result<PrivateDir, PrivateError> {
        let path = self.path.join(name);
        let c = cstring(OsStr::new(name), &path)?;
        // SAFETY: the directory descriptor is open and c is a valid
        // NUL-terminated name.
        if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), DIR_MODE) } != 0 {
            return Err(PrivateError::io("create", &path)(io::Error::last_os_error()));
        }
        let fd = open_dir(self.fd.as_raw_fd(), &c, &path)?;
        set_mode(fd.as_raw_fd(), DIR_MODE).map_err(PrivateError::io("chmod", &path))?;
        Ok(PrivateDir { fd, path })
    }

    /// Directory `name`, made 0700 when missing, else checked as
    /// [`ensure_private_dir`] checks it.
    pub fn ensure_dir(&self, name: &str) -> Result<PrivateDir, PrivateError> {
        match self.create_dir(name) {
            Ok(dir) => Ok(dir),
            Err(e) if e.io_kind() == Some(io::ErrorKind::AlreadyExists) => {
                let path = self.path.join(name);
                let c = cstring(OsStr::new(name), &path)?;
                let fd = open_dir(self.fd.as_raw_fd(), &c, &path)?;
                check_private(&fd, &path)?;
                Ok(PrivateDir { fd, path })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `bytes` to file `name` whole: a 0600 temporary file beside it,
    /// renamed over it.
    pub fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), PrivateError> {
        let path = self.path.join(name);
        let (tmp, mut file) = self.create_temporary(name)?;
        let written = file.write_all(bytes).map_err(PrivateError::io("write", &path));
        drop(file);
        let renamed = written.and_then(|()| self.rename(&tmp, name));
        if renamed.is_err() {
            let _ = self.remove_file(&tmp);
        }
        renamed
    }

    /// A new 0600 file named `.NAME.tmp-PID-N`.
    fn create_temporary(&self, name: &str) -> Result<(String, File), PrivateError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let mut tries = 0;
        loop {
            let tmp = format!(
                ".{name}.tmp-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            match self.create_file(&tmp) {
                Ok(file) => return Ok((tmp, file)),
                // Left by a process that had our pid: try the next name.
                Err(e) if e.io_kind() == Some(io::ErrorKind::AlreadyExists) && tries < 16 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Renames `from` to `to`, both in this directory (replacing `to`).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), PrivateError> {
        let path = self.path.join(to);
        let (f, t) = (cstring(OsStr::new(from), &path)?, cstring(OsStr::new(to), &path)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: both names are valid NUL-terminated strings, relative to
        // the same open directory.
        if unsafe { libc::renameat(fd, f.as_ptr(), fd, t.as_ptr()) } != 0 {
            return Err(PrivateError::io("rename into place", path)(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Removes file `name` (a link is removed, never followed).
    pub fn remove_file(&self, name: &str) -> Result<(), PrivateError> {
        let path = self.path.join(name);
        let c = cstring(OsStr::new(name), &path)?;
        // SAFETY: c is a valid NUL-terminated name in an open directory.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(PrivateError::io("remove", path)(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Another descriptor of the same directory.
    pub fn try_clone(&self) -> Result<PrivateDir, PrivateError> {
        Ok(PrivateDir {
            fd: self.fd.try_clone().map_err(PrivateError::io("open", &self.path))?,
            path: self.path.clone(),
        })
    }
}

/// Opens directory `name` (relative to `at`) without following a link.
fn open_dir(at: RawFd, name: &CString, path: &Path) -> Result<OwnedFd, PrivateError> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: at is AT_FDCWD or an open directory; name is NUL-terminated.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
    owned(fd).map_err(|e| match e.raw_os_error() {
        // O_NOFOLLOW | O_DIRECTORY on a link gives ENOTDIR or ELOOP; say
        // what is there.
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => PrivateError::Unsafe {
            path: path.to_owned(),
            detail: match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => "is a symbolic link".to_owned(),
                _ => "is not a directory".to_owned(),
            },
        },
        _ => PrivateError::io("open", path)(e),
    })
}

/// Refuses a directory others may change: owned by another uid, or
/// writable by group or others. One that others may only read is
/// narrowed to 0700.
fn check_private(fd: &OwnedFd, path: &Path) -> Result<(), PrivateError> {
    let st = fstat(fd.as_raw_fd()).map_err(PrivateError::io("stat", path))?;
    let me = euid();
    let refuse = |detail: String| PrivateError::Unsafe {
        path: path.to_owned(),
        detail,
    };
    if st.st_uid != me {
        return Err(refuse(format!("is owned by uid {}, not {me}", st.st_uid)));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!("has mode {mode:04o}: others may write to it")));
    }
    if mode != DIR_MODE {
        set_mode(fd.as_raw_fd(), DIR_MODE).map_err(PrivateError::io("chmod", path))?;
    }
    Ok(())
}

/// Refuses a directory whose parent anyone may write to without the
/// sticky bit (where anyone could rename ours away and put another in its
/// place).
fn check_parent(path: &Path) -> Result<(), PrivateError> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(parent) else {
        return Ok(());
    };
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    if mode & 0o002 != 0 && mode & libc::S_ISVTX == 0 {
        return Err(PrivateError::Unsafe {
            path: path.to_owned(),
            detail: format!(
                "is in {}, which anyone may write to (mode {:04o}, not sticky)",
                parent.display(),
                mode & 0o7777
            ),
        });
    }
    Ok(())
}

/// Our effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all zeros is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Sets the mode exactly, whatever the umask made of it.
fn set_mode(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fd is an open descriptor of ours.
    if unsafe { libc::fchmod(fd, mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor returned by a system call, or its error.
fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by a successful call and is owned by no
    // one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstring(s: &OsStr, path: &Path) -> Result<CString, PrivateError> {
    CString::new(s.as_bytes()).map_err(|_| PrivateError::Unsafe {
        path: path.to_owned(),
        detail: "holds a NUL byte".to_owned(),
    })
}

/// A path's directory and file name.
fn split(path: &Path) -> Result<(&Path, &str), PrivateError> {
    let name = path.file_name().and_then(OsStr::to_str);
    match (path.parent(), name) {
        (Some(dir), Some(name)) => Ok((
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            },
            name,
        )),
        _ => Err(PrivateError::Unsafe {
            path: path.to_owned(),
            detail: "does not name a file in a directory".to_owned(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Whether this is the child that runs test `name` under umask 0: the
    /// umask is the whole process's, and other tests run on threads beside
    /// this one, so the test is run again in a process of its own (the test
    /// binary, this test alone) with umask 0. The parent asserts that the
    /// child passed and returns false; the child returns true and runs the
    /// test's body.
    pub(crate) fn under_umask_0(name: &str) -> bool {
        const CHILD: &str = "VMSHIM_TEST_UMASK_CHILD";
        if std::env::var(CHILD).is_ok_and(|n| n == name) {
            // SAFETY: umask cannot fail.
            let mask = unsafe { libc::umask(0) };
            assert_eq!(mask, 0, "the child runs under umask 0");
            return true;
        }
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, name);
        // SAFETY: umask is async-signal-safe and cannot fail.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::umask(0);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{name} under umask 0: {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    pub(crate) fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    /// Whether we may chown files to another user (root, here).
    pub(crate) fn may_chown() -> bool {
        euid() == 0
    }

    #[test]
    fn directories_and_files_are_private_under_umask_0() {
        if !under_umask_0("private::tests::directories_and_files_are_private_under_umask_0") {
            return;
        }
        let t = TestDir::new("private-umask");
        // (Made 0777 under umask 0: a directory in it would be refused.)
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        {
            let dir = ensure_private_dir(&t.path().join("a/b/state")).unwrap();
            assert_eq!(mode(dir.path()), 0o700);
            assert_eq!(mode(&t.path().join("a")), 0o700, "missing parents are private too");
            let mut f = dir.create_file("spec.json").unwrap();
            f.write_all(b"{}").unwrap();
            assert_eq!(mode(&dir.join("spec.json")), 0o600);
            let sub = dir.create_dir("instances").unwrap();
            assert_eq!(mode(sub.path()), 0o700);
            assert_eq!(mode(dir.ensure_dir("instances").unwrap().path()), 0o700);
            write_private_atomically(&dir.join("state.json"), b"whole").unwrap();
            assert_eq!(mode(&dir.join("state.json")), 0o600);
            assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), b"whole");
            drop(dir.open_append("log").unwrap());
            assert_eq!(mode(&dir.join("log")), 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(t.path().join("a/b/state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn a_hostile_directory_is_refused_naming_it() {
        let t = TestDir::new("private-hostile");
        // Writable by everyone (made by someone else first, or by a umask 0
        // vmshim of old).
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&open).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} has mode 0777: others may write to it: refusing to use it",
                open.display()
            )
        );
        // A link to a directory elsewhere.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{} is a symbolic link: refusing to use it", link.display())
        );
        // A file where the directory should be.
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = ensure_private_dir(&file).unwrap_err().to_string();
        assert!(err.ends_with("is not a directory: refusing to use it"), "{err}");
        // One of ours that others could only read is narrowed, not refused.
        let readable = t.path().join("readable");
        std::fs::create_dir(&readable).unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&readable).unwrap();
        assert_eq!(mode(&readable), 0o700);
        // In a directory anyone may write to and that is not sticky.
        let wide = t.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&wide.join("d")).unwrap_err().to_string();
        assert!(
            err.contains("which anyone may write to (mode 0777, not sticky)"),
            "{err}"
        );
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_private_dir(&wide.join("d")).unwrap();
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        if !may_chown() {
            eprintln!("note: not root, cannot make a directory of another user; skipped");
            return;
        }
        let t = TestDir::new("private-owner");
        let theirs = t.path().join("vmshim-0");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = ensure_private_dir(&theirs).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} is owned by uid 65534, not {}: refusing to use it",
                theirs.display(),
                euid()
            )
        );
        assert!(matches!(PrivateDir::open(&theirs), Err(PrivateError::Unsafe { .. })));
    }

    #[test]
    fn planted_links_and_files_are_never_followed() {
        let t = TestDir::new("private-planted");
        let dir = ensure_private_dir(&t.path().join("run")).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("qemu.log")).unwrap();
        let err = dir.create_file("qemu.log").unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::AlreadyExists), "{err}");
        assert!(err.to_string().contains("qemu.log"), "{err}");
        let err = create_private_file(dir.path(), "qemu.log").unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::AlreadyExists), "{err}");
        let err = dir.open_append("qemu.log").unwrap_err().to_string();
        assert!(
            err.ends_with("qemu.log is a symbolic link: refusing to use it"),
            "{err}"
        );
        // A hard link to a file elsewhere is not appended to either.
        std::fs::hard_link(&victim, dir.join("log")).unwrap();
        let err = dir.open_append("log").unwrap_err().to_string();
        assert!(err.contains("has 2 hard links"), "{err}");
        // Replacing a link renames over it: the link goes, its target stays.
        write_private_atomically(&dir.join("qemu.log"), b"mine").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.join("qemu.log")).unwrap(), b"mine");
        assert!(!std::fs::symlink_metadata(dir.join("qemu.log")).unwrap().is_symlink());
        // A socket where a file is to be made.
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("console.log")).unwrap();
        assert!(dir.create_file("console.log").is_err());
    }
}

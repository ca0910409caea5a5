//! Host log files, capped and rotated: the instance log that holds a
//! detached VM's output, a VM's `console.log`, a network's `switch.log`.
//!
//! When a write would take a log past its limit (`$VMSHIM_LOG_MAX_SIZE`,
//! 10 MiB by default), the log is renamed `NAME.1` (the one older
//! generation kept, replacing the last) and a new `NAME` is started, 0600.
//! A write is cut after its last line that fits, so lines stay whole
//! unless one is longer than the limit. [`tail`] reads across both
//! generations.
//!
//! A daemon whose stdout and stderr are its log ([`install_stdio`]) moves
//! them to each new file, so its own lines are capped with the rest.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{PrivateDir, PrivateError};

/// The environment variable that sets the size at which logs rotate:
/// bytes, or a number with `K`, `M` or `G` (powers of 1024).
pub const LIMIT_ENV: &str = "VMSHIM_LOG_MAX_SIZE";

/// The size at which logs rotate unless `$VMSHIM_LOG_MAX_SIZE` says
/// otherwise.
pub const DEFAULT_LIMIT: u64 = 10 << 20;

/// How much of each generation [`tail`] reads, from its end.
const TAIL_WINDOW: u64 = 64 << 10;

/// The rotation size: `$VMSHIM_LOG_MAX_SIZE` when it is a valid size, else
/// [`DEFAULT_LIMIT`].
pub fn limit() -> u64 {
    std::env::var(LIMIT_ENV)
        .ok()
        .and_then(|v| parse_size(&v))
        .unwrap_or(DEFAULT_LIMIT)
}

/// `4096`, `64K`, `10M`, `1G` (powers of 1024); `None` for anything else
/// or for 0.
pub fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let (digits, shift) = match value.char_indices().last()? {
        (i, 'k' | 'K') => (&value[..i], 10),
        (i, 'm' | 'M') => (&value[..i], 20),
        (i, 'g' | 'G') => (&value[..i], 30),
        _ => (value, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift).filter(|&n| n > 0)
}

/// A log file appended to, rotated when it passes its limit.
#[derive(Debug)]
pub struct RotatingLog {
    dir: PrivateDir,
    name: String,
    limit: u64,
    file: Mutex<File>,
    /// Whether this process's stdout and stderr follow the log to each new
    /// file.
    stdio: bool,
}

impl RotatingLog {
    /// Opens (or creates, 0600) the log at `path` for appending; its
    /// directory must be private ([`PrivateDir::open`]).
    pub fn open(path: &Path, limit: u64) -> Result<RotatingLog, PrivateError> {
        let (dir, name) = super::split(path)?;
        let dir = PrivateDir::open(dir)?;
        let file = dir.open_append(name)?;
        Ok(RotatingLog {
            dir,
            name: name.to_owned(),
            limit,
            file: Mutex::new(file),
            stdio: false,
        })
    }

    /// A log in a new file `name` of `dir`: fails if anything has the name.
    pub fn create(dir: &PrivateDir, name: &str, limit: u64) -> Result<RotatingLog, PrivateError> {
        let file = dir.create_file(name)?;
        Ok(RotatingLog {
            dir: dir.try_clone()?,
            name: name.to_owned(),
            limit,
            file: Mutex::new(file),
            stdio: false,
        })
    }

    /// The current generation's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Another descriptor of the current file (for a child's stdio).
    pub fn file(&self) -> io::Result<File> {
        self.lock().try_clone()
    }

    /// Appends `buf`, rotating as often as it takes to keep each file
    /// within the limit.
    pub fn write(&self, mut buf: &[u8]) -> io::Result<()> {
        let mut file = self.lock();
        while !buf.is_empty() {
            let size = file.metadata()?.len();
            let room = self.limit.saturating_sub(size) as usize;
            if buf.len() <= room {
                return file.write_all(buf);
            }
            // What fits: up to the last whole line, or (in a file of its
            // own) as much of an overlong line as fits.
            let cut = match buf[..room].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if size == 0 => room.max(1),
                None => 0,
            };
            file.write_all(&buf[..cut])?;
            buf = &buf[cut..];
            self.rotate_locked(&mut file, buf.len() as u64)?;
        }
        Ok(())
    }

    /// Rotates the log if it has reached its limit (others may write to
    /// the same file: a daemon's stderr).
    pub fn rotate_if_full(&self) -> io::Result<()> {
        let mut file = self.lock();
        self.rotate_locked(&mut file, 0)
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rotates when the file holds something and `more` bytes would take
    /// it past the limit (or it is there already).
    fn rotate_locked(&self, file: &mut File, more: u64) -> io::Result<()> {
        let size = file.metadata()?.len();
        if size == 0 || (size + more <= self.limit && size < self.limit) {
            return Ok(());
        }
        let old = format!("{}.1", self.name);
        self.dir.rename(&self.name, &old).map_err(io::Error::other)?;
        let new = match self.dir.create_file(&self.name) {
            Ok(f) => f,
            // Another writer of the same log rotated it first.
            Err(e) if e.io_kind() == Some(io::ErrorKind::AlreadyExists) => {
                self.dir.open_append(&self.name).map_err(io::Error::other)?
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        if self.stdio {
            for fd in [1, 2] {
                // SAFETY: dup2 onto stdout and stderr, which this process
                // owns; the new file stays open in `file`.
                if unsafe { libc::dup2(new.as_raw_fd(), fd) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        *file = new;
        Ok(())
    }
}

/// The log this process's stdout and stderr go to, once installed.
static STDIO: OnceLock<Arc<RotatingLog>> = OnceLock::new();

/// Makes the log at `path` this process's rotating stdio, if stderr is that
/// file (a daemon started with its log as stdout and stderr): lines written
/// with `eprintln!` after [`rotate_stdio`] are then capped with the rest.
/// Returns the log, for other writers in this process.
pub fn install_stdio(path: &Path, limit: u64) -> Result<Arc<RotatingLog>, PrivateError> {
    let mut log = RotatingLog::open(path, limit)?;
    let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    };
    let ours = log.lock().metadata().ok();
    let stderr = std::fs::metadata("/proc/self/fd/2").ok();
    log.stdio = matches!((&ours, &stderr), (Some(a), Some(b)) if same(a, b));
    let log = Arc::new(log);
    if log.stdio {
        let _ = STDIO.set(log.clone());
        log.rotate_if_full().map_err(|source| PrivateError::Io {
            what: "rotate",
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(log)
}

/// This process's stdio log, once installed.
pub fn stdio() -> Option<Arc<RotatingLog>> {
    STDIO.get().cloned()
}

/// Rotates this process's stdio log if it is full; nothing when none is
/// installed. Called before a daemon writes a line.
pub fn rotate_stdio() {
    if let Some(log) = STDIO.get() {
        let _ = log.rotate_if_full();
    }
}

/// The last `lines` lines of the log at `path`, across `NAME.1` and `NAME`
/// (each read from at most its last 64 KiB); `None` when neither exists.
pub fn tail(path: &Path, lines: usize) -> Option<String> {
    let mut older = path.as_os_str().to_owned();
    older.push(".1");
    let mut text = Vec::new();
    let mut found = false;
    for p in [PathBuf::from(older), path.to_owned()] {
        if let Ok(bytes) = read_end(&p, TAIL_WINDOW) {
            found = true;
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend_from_slice(&bytes);
        }
    }
    if !found {
        return None;
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    Some(all[all.len().saturating_sub(lines)..].join("\n"))
}

/// The last `window` bytes of the file at `path`.
fn read_end(path: &Path, window: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > window {
        file.seek(SeekFrom::Start(len - window))?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::private::ensure_private_dir;
    use crate::private::tests::mode;
    use crate::test_dir::TestDir;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size(" 10m "), Some(10 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        for bad in ["", "0", "K", "-1", "10 MB", "x"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_full_log_is_renamed_and_a_new_one_started() {
        let t = TestDir::new("log-rotate");
        let dir = ensure_private_dir(&t.path().join("d")).unwrap();
        let log = RotatingLog::create(&dir, "log", 100).unwrap();
        for i in 0..10 {
            log.write(format!("line {i:02} {}\n", "x".repeat(10)).as_bytes())
                .unwrap();
        }
        // 10 lines of 19 bytes: 95 bytes, then 95 more after a rotation.
        let current = std::fs::read_to_string(dir.join("log")).unwrap();
        let older = std::fs::read_to_string(dir.join("log.1")).unwrap();
        assert_eq!(current.lines().count(), 5, "{current}");
        assert!(
            current.starts_with("line 05") && older.starts_with("line 00"),
            "{older}"
        );
        assert!(current.len() <= 100 && older.len() <= 100);
        assert_eq!(mode(&dir.join("log")), 0o600);
        // Only one older generation: the next rotation replaces it.
        for i in 10..15 {
            log.write(format!("line {i:02} {}\n", "x".repeat(10)).as_bytes())
                .unwrap();
        }
        let older = std::fs::read_to_string(dir.join("log.1")).unwrap();
        assert!(older.starts_with("line 05"), "{older}");
        assert!(!dir.join("log.2").exists());
        // The reader sees across both.
        let tail = super::tail(&dir.join("log"), 7).unwrap();
        assert_eq!(tail.lines().next().unwrap(), format!("line 08 {}", "x".repeat(10)));
        assert_eq!(tail.lines().count(), 7);
        assert_eq!(super::tail(&dir.join("none"), 3), None);
    }

    #[test]
    fn a_log_written_by_others_too_rotates_when_checked() {
        let t = TestDir::new("log-others");
        let dir = ensure_private_dir(&t.path().join("d")).unwrap();
        let log = RotatingLog::create(&dir, "switch.log", 64).unwrap();
        // Another descriptor of the file (as a daemon's stderr is).
        let mut other = log.file().unwrap();
        other.write_all(&[b'a'; 80]).unwrap();
        log.rotate_if_full().unwrap();
        assert_eq!(std::fs::metadata(dir.join("switch.log.1")).unwrap().len(), 80);
        assert_eq!(std::fs::metadata(dir.join("switch.log")).unwrap().len(), 0);
        log.write(b"new\n").unwrap();
        assert_eq!(std::fs::read(dir.join("switch.log")).unwrap(), b"new\n");
    }

    #[test]
    fn a_planted_link_is_not_appended_to() {
        let t = TestDir::new("log-link");
        let dir = ensure_private_dir(&t.path().join("d")).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("log")).unwrap();
        let err = RotatingLog::open(&dir.join("log"), 100).unwrap_err().to_string();
        assert!(err.ends_with("is a symbolic link: refusing to use it"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}

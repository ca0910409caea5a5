//! The cache directory (`build/cache/`) is private: what it holds is made
//! from root filesystems, with their `/etc/shadow` and set-user-ID
//! binaries, for the guest alone. The directory is 0700 and ours, and the
//! images in it 0600, whatever the umask.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the files in the cache.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Makes `dir` (its parents as usual) a directory only we can reach, as
/// every private directory of vmshim is ([`crate::private`]): created 0700,
/// or, if it is there, a real directory (not a link) that we own and no one
/// else may write, narrowed to 0700. Anything else is refused, naming it.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    crate::private::ensure_private_dir(dir)
        .map(drop)
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))
}

/// Narrows the file at `path` (not a link) to 0600, if it is not already.
pub(crate) fn private_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    narrow(&file, FILE_MODE)
}

/// Sets `mode` on what `file` is, which must be ours.
fn narrow(file: &File, mode: u32) -> io::Result<()> {
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("owned by uid {}, not {euid}: it cannot be kept private", meta.uid()),
        ));
    }
    if meta.mode() & 0o7777 != mode {
        file.set_permissions(Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The process's umask set for the length of a test (tests run in
/// threads of one process: what they assert must not hang on it).
#[cfg(test)]
pub(crate) struct Umask(libc::mode_t);

#[cfg(test)]
impl Umask {
    pub(crate) fn set(mask: libc::mode_t) -> Umask {
        // SAFETY: umask only swaps the process's file mode mask.
        Umask(unsafe { libc::umask(mask) })
    }
}

#[cfg(test)]
impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe { libc::umask(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::fs;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn the_cache_is_made_0700_and_an_open_one_narrowed() {
        let _umask = Umask::set(0o022);
        let t = TestDir::new("cache-private");
        let cache = t.path().join("build/cache");
        private_dir(&cache).unwrap();
        assert_eq!(mode(&cache), 0o700);

        fs::set_permissions(&cache, Permissions::from_mode(0o755)).unwrap();
        let image = cache.join("rootfs-x.ext4");
        fs::write(&image, "image").unwrap();
        fs::set_permissions(&image, Permissions::from_mode(0o644)).unwrap();
        private_dir(&cache).unwrap();
        private_file(&image).unwrap();
        assert_eq!((mode(&cache), mode(&image)), (0o700, 0o600));
    }

    #[test]
    fn a_link_or_a_file_in_its_place_is_refused() {
        let t = TestDir::new("cache-link");
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::set_permissions(&elsewhere, Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.path().join("cache")).unwrap();
        let err = private_dir(&t.path().join("cache")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(mode(&elsewhere), 0o755);

        fs::write(t.path().join("file"), "").unwrap();
        assert!(private_dir(&t.path().join("file")).is_err());
        std::os::unix::fs::symlink(t.path().join("file"), t.path().join("flink")).unwrap();
        assert!(private_file(&t.path().join("flink")).is_err());
    }

    #[test]
    fn a_cache_another_user_owns_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to make a directory another user owns");
            return;
        }
        let t = TestDir::new("cache-owner");
        let cache = t.path().join("cache");
        fs::create_dir(&cache).unwrap();
        std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
        let err = private_dir(&cache).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }
}

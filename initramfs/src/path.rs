//! Archive paths: what a caller writes (`/dev/console`) and what the archive
//! stores (`dev/console`).
//!
//! The kernel unpacks every member relative to the root of its rootfs, so
//! names carry no leading `/`. A name must stay inside that root and mean one
//! thing only, so `..`, `.` and empty components are refused rather than
//! resolved: an initramfs spec with `a/../b` in it is more likely a mistake
//! than an intention.

use crate::newc::TRAILER_NAME;

/// The kernel refuses names (and symlink targets) longer than this, counting
/// the terminating NUL (`PATH_MAX` in `init/initramfs.c`).
pub const PATH_MAX: usize = 4096;

/// Why an archive path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathProblem {
    /// `""`.
    #[error("the path is empty")]
    Empty,
    /// `/` (or only slashes): the root is not a member of its own.
    #[error("the path names the root itself, which the archive always has")]
    Root,
    /// `a//b`: two slashes in a row inside the path.
    #[error("it has an empty component (`//`)")]
    EmptyComponent,
    /// `a/./b`.
    #[error("it has a `.` component")]
    CurrentDir,
    /// `a/../b`: refused rather than resolved.
    #[error("it has a `..` component, which could escape the root")]
    ParentDir,
    /// A NUL byte, which would end the name early in the archive.
    #[error("it contains a NUL byte")]
    Nul,
    /// `TRAILER!!!` or a path under it: a member of that name ends the
    /// archive for the kernel.
    #[error("it is or lies under `TRAILER!!!`, the name that ends a newc archive")]
    Trailer,
    /// Longer than [`PATH_MAX`] with its NUL: the kernel would skip it.
    #[error("it is longer than PATH_MAX ({PATH_MAX} bytes with its NUL)")]
    TooLong,
}

/// Turns a caller's path into the name stored in the archive: leading `/`s
/// and one trailing `/` are dropped, everything else must already be clean.
pub fn normalize(path: &str) -> Result<String, PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if path.contains('\0') {
        return Err(PathProblem::Nul);
    }
    let relative = path.trim_start_matches('/');
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    if relative.is_empty() {
        return Err(PathProblem::Root);
    }
    // The first component is stored as a member of its own (the parent
    // the archive adds), and a member of that name ends the archive.
    if relative.split('/').next() == Some(TRAILER_NAME) {
        return Err(PathProblem::Trailer);
    }
    for component in relative.split('/') {
        match component {
            "" => return Err(PathProblem::EmptyComponent),
            "." => return Err(PathProblem::CurrentDir),
            ".." => return Err(PathProblem::ParentDir),
            _ => {}
        }
    }
    if relative.len() + 1 > PATH_MAX {
        return Err(PathProblem::TooLong);
    }
    Ok(relative.to_owned())
}

/// The proper ancestors of a normalized name, outermost first:
/// `a/b/c` gives `a`, then `a/b`.
pub fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(slash, _)| &name[..slash])
}

/// How a normalized name is shown in messages: as the absolute guest path.
pub fn display(name: &str) -> String {
    format!("/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_and_trailing_slashes_are_dropped() {
        assert_eq!(normalize("/init").unwrap(), "init");
        assert_eq!(normalize("init").unwrap(), "init");
        assert_eq!(normalize("//dev/console").unwrap(), "dev/console");
        assert_eq!(normalize("/dev/").unwrap(), "dev");
        assert_eq!(normalize("a b/.hidden/x..y").unwrap(), "a b/.hidden/x..y");
        assert_eq!(normalize("etc/TRAILER!!!").unwrap(), "etc/TRAILER!!!");
    }

    #[test]
    fn unclean_paths_are_refused_with_the_reason() {
        let cases = [
            ("", PathProblem::Empty),
            ("/", PathProblem::Root),
            ("///", PathProblem::Root),
            ("a//b", PathProblem::EmptyComponent),
            ("a//", PathProblem::EmptyComponent),
            ("./a", PathProblem::CurrentDir),
            ("/a/./b", PathProblem::CurrentDir),
            ("..", PathProblem::ParentDir),
            ("/../etc/passwd", PathProblem::ParentDir),
            ("a/b/..", PathProblem::ParentDir),
            ("a\0b", PathProblem::Nul),
            ("/TRAILER!!!", PathProblem::Trailer),
            ("/TRAILER!!!/a", PathProblem::Trailer),
        ];
        for (path, problem) in cases {
            assert_eq!(normalize(path), Err(problem), "{path:?}");
        }
    }

    #[test]
    fn names_are_bounded_by_path_max() {
        // 4095 bytes plus the NUL fit exactly; one more does not.
        let longest = "a/".repeat(2047) + "b";
        assert_eq!(longest.len(), PATH_MAX - 1);
        assert!(normalize(&longest).is_ok());
        assert_eq!(normalize(&(longest + "c")), Err(PathProblem::TooLong));
    }

    #[test]
    fn ancestors_are_listed_outermost_first() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(ancestors("init").count(), 0);
    }
}

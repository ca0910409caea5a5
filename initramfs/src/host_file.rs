//! Regular files whose bytes come from the host. The archive header states
//! a file's length before its bytes follow, so a file is measured when the
//! archive is planned and must still have exactly that length when copied.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::Error;
use crate::path::display;

/// Size of the buffer host files are copied through.
pub(crate) const COPY_BUFFER: usize = 64 * 1024;

/// The length of the host file behind `name`, which must be a regular file
/// (symlinks to one are followed).
pub(crate) fn host_file_len(name: &str, host_path: &Path) -> Result<u64, Error> {
    let metadata = fs::metadata(host_path).map_err(|source| Error::ReadSource {
        path: display(name),
        host_path: host_path.to_owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(Error::NotRegularFile {
            path: display(name),
            host_path: host_path.to_owned(),
        });
    }
    Ok(metadata.len())
}

/// Copies exactly `len` bytes of `host_path` to `out`, and fails if the file
/// does not have exactly that many: the header already promised `len`.
pub(crate) fn copy_host_file(name: &str, host_path: &Path, len: u64, out: &mut impl Write) -> Result<(), Error> {
    let read_error = |source| Error::ReadSource {
        path: display(name),
        host_path: host_path.to_owned(),
        source,
    };
    let changed = || Error::SourceChanged {
        path: display(name),
        host_path: host_path.to_owned(),
    };

    let mut file = File::open(host_path).map_err(read_error)?;
    if file.metadata().map_err(read_error)?.len() != len {
        return Err(changed());
    }
    let mut buffer = vec![0; COPY_BUFFER.min(len as usize)];
    let mut remaining = len;
    while remaining > 0 {
        let want = buffer.len().min(remaining as usize);
        let got = match file.read(&mut buffer[..want]) {
            Ok(0) => return Err(changed()),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        out.write_all(&buffer[..got]).map_err(|source| Error::Write {
            path: display(name),
            source,
        })?;
        remaining -= got as u64;
    }
    // A file that grew after it was measured would otherwise be cut short
    // without a word.
    let mut probe = [0; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(changed()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn a_file_is_copied_whole() {
        let dir = TempDir::new();
        let host = dir.write("f", b"four");
        let mut out = Vec::new();
        copy_host_file("f", &host, host_file_len("f", &host).unwrap(), &mut out).unwrap();
        assert_eq!(out, b"four");
    }

    #[test]
    fn a_host_file_that_changes_size_is_caught() {
        let dir = TempDir::new();
        let host = dir.write("f", b"four");
        // Measured at 4 bytes, but 5 by the time it is copied.
        fs::write(&host, b"five!").unwrap();
        let mut out = Vec::new();
        let error = copy_host_file("f", &host, 4, &mut out).unwrap_err();
        assert!(matches!(error, Error::SourceChanged { .. }), "{error:?}");
    }

    #[test]
    fn a_host_file_that_shrinks_is_caught() {
        let dir = TempDir::new();
        let host = dir.write("f", b"four");
        let mut out = Vec::new();
        let error = copy_host_file("f", &host, 5, &mut out).unwrap_err();
        assert!(matches!(error, Error::SourceChanged { .. }), "{error:?}");
    }
}

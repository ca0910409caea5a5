//! Writing a file so that readers see the old contents or the new ones,
//! never half of either: write a temporary file beside it, sync, rename.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process;

use crate::error::Error;

/// How many temporary names to try before giving up (each try only fails if
/// a file of that name is left over from an earlier run).
const TEMP_ATTEMPTS: u32 = 100;

/// Creates `path` (and its directory, if missing) with what `write` writes,
/// atomically. On any error the temporary file is removed and `path` is
/// left as it was.
pub(crate) fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidOutputPath { path: path.to_owned() })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        dir: dir.to_owned(),
        source,
    })?;

    let (temp_path, file) = create_temp(dir, file_name)?;
    let result = fill_and_rename(file, &temp_path, path, write);
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// Creates a new, empty `.NAME.PID.N.tmp` in `dir`.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> Result<(PathBuf, File), Error> {
    let mut attempt = 0;
    loop {
        let mut temp_name = OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".{}.{attempt}.tmp", process::id()));
        let temp_path = dir.join(temp_name);
        match OpenOptions::new().write(true).create_new(true).open(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_ATTEMPTS => {
                attempt += 1;
            }
            Err(source) => {
                return Err(Error::CreateTemp {
                    path: temp_path,
                    source,
                })
            }
        }
    }
}

fn fill_and_rename<T>(
    file: File,
    temp_path: &Path,
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let persist_error = |source| Error::Persist {
        path: path.to_owned(),
        source,
    };
    let mut out = BufWriter::new(file);
    let value = write(&mut out)?;
    let file = out.into_inner().map_err(|e| persist_error(e.into_error()))?;
    file.sync_all().map_err(persist_error)?;
    fs::rename(temp_path, path).map_err(persist_error)?;
    Ok(value)
}

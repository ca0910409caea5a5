//! `mkinitramfs`: packs vminitd as `/init` into the guest's initramfs.
//!
//! ```text
//! mkinitramfs --init PATH [--file SRC:DEST[:MODE]]... -o build/initramfs.cpio
//! ```
//!
//! All the work is in the `initramfs` library; this only parses flags and
//! reports. The output is replaced atomically and depends only on the inputs'
//! contents (and `SOURCE_DATE_EPOCH`, if set).

use std::error::Error as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use initramfs::{layout, source_date_epoch, Error, Written};

/// Pack vminitd as /init into a deterministic newc initramfs.
///
/// The archive holds /init (mode 0755), the directories the guest mounts on
/// (dev, etc, mnt, newroot, proc, root, run, sys, tmp), /dev/console (c 5 1)
/// and /dev/null (c 1 3), plus any --file. Every member has mtime 0, or
/// SOURCE_DATE_EPOCH if that is set.
#[derive(Debug, Parser)]
#[command(name = "mkinitramfs", version)]
struct Cli {
    /// The vminitd binary, packed as /init.
    #[arg(long, value_name = "PATH")]
    init: PathBuf,

    /// Also pack the host file SRC at guest path DEST, with octal MODE
    /// (default: 0755 if SRC is executable, else 0644). Repeatable.
    #[arg(long = "file", value_name = "SRC:DEST[:MODE]", value_parser = parse_file_spec)]
    files: Vec<FileSpec>,

    /// Where to write the archive; an existing file is replaced atomically.
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
}

/// One `--file SRC:DEST[:MODE]`.
#[derive(Debug, Clone)]
struct FileSpec {
    src: PathBuf,
    dest: String,
    mode: Option<u32>,
}

fn parse_file_spec(spec: &str) -> Result<FileSpec, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dest, mode) = match parts[..] {
        [src, dest] => (src, dest, None),
        [src, dest, mode] => (src, dest, Some(mode)),
        _ => return Err("expected SRC:DEST or SRC:DEST:MODE".to_owned()),
    };
    if src.is_empty() || dest.is_empty() {
        return Err("SRC and DEST must not be empty".to_owned());
    }
    let mode = mode
        .map(|mode| {
            let digits = mode.strip_prefix("0o").unwrap_or(mode);
            u32::from_str_radix(digits, 8)
                .ok()
                .filter(|&m| m <= 0o7777 && !digits.is_empty())
                .ok_or_else(|| format!("MODE {mode:?} is not an octal mode from 0 to 7777"))
        })
        .transpose()?;
    Ok(FileSpec {
        src: PathBuf::from(src),
        dest: dest.to_owned(),
        mode,
    })
}

/// The mode a `--file` without one gets: like git, only the executable bit
/// of the host file counts, so the archive does not depend on the umask.
fn default_mode(spec: &FileSpec) -> Result<u32, String> {
    let metadata = fs::metadata(&spec.src).map_err(|e| format!("cannot read {}: {e}", spec.src.display()))?;
    let executable = metadata.permissions().mode() & 0o111 != 0;
    Ok(if executable { 0o755 } else { 0o644 })
}

fn run(cli: &Cli) -> Result<Written, String> {
    let mut archive = layout::guest_archive(&cli.init);
    for spec in &cli.files {
        let mode = match spec.mode {
            Some(mode) => mode,
            None => default_mode(spec)?,
        };
        archive.file_from_path(spec.dest.as_str(), &spec.src, mode);
    }
    if let Some(mtime) = source_date_epoch().map_err(|e| chain(&e))? {
        archive.mtime(mtime);
    }
    archive.write_to_path(&cli.output).map_err(|e| chain(&e))
}

/// An error and its causes on one line: `cannot read x for /init: No such
/// file or directory (os error 2)`.
fn chain(error: &Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(written) => {
            eprintln!(
                "mkinitramfs: wrote {} ({} entries, {} bytes)",
                cli.output.display(),
                written.entries,
                written.bytes
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mkinitramfs: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_specs_parse_with_and_without_mode() {
        let spec = parse_file_spec("busybox:/bin/busybox:0755").unwrap();
        assert_eq!(spec.src, PathBuf::from("busybox"));
        assert_eq!((spec.dest.as_str(), spec.mode), ("/bin/busybox", Some(0o755)));
        assert_eq!(parse_file_spec("a:/b:1777").unwrap().mode, Some(0o1777));
        assert_eq!(parse_file_spec("a:/b:0o600").unwrap().mode, Some(0o600));
        assert_eq!(parse_file_spec("hosts:/etc/hosts").unwrap().mode, None);
    }

    #[test]
    fn bad_file_specs_say_what_is_wrong() {
        for spec in ["a", "a:b:644:x", ":b", "a:", "a:b:", "a:b:888", "a:b:17777", "a:b:rw"] {
            assert!(parse_file_spec(spec).is_err(), "{spec:?}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

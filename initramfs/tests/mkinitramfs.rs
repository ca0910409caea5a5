//! The `mkinitramfs` binary, run as a user would: what it packs, what it
//! prints, how it fails, and that it never leaves a half-written archive.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use common::{extract, have_cpio, list, major_minor, mode_of, TempDir};

fn mkinitramfs(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mkinitramfs"));
    command.args(args).env_remove("SOURCE_DATE_EPOCH");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("run mkinitramfs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fake vminitd, a plain file and an executable one, and an output path
/// in a directory that does not exist yet.
struct Inputs {
    dir: TempDir,
}

impl Inputs {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        dir.write("vminitd", b"\x7fELF vminitd");
        dir.write("motd", b"hello\n");
        let tool = dir.write("tool", b"#!/bin/sh\n");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o700)).unwrap();
        Inputs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn output(&self) -> String {
        self.path("build/initramfs.cpio")
    }

    /// `--init vminitd` and the three `--file`s, then `extra`.
    fn run(&self, extra: &[&str], envs: &[(&str, &str)]) -> Output {
        let (init, motd, tool) = (self.path("vminitd"), self.path("motd"), self.path("tool"));
        let output = self.output();
        let files = [
            format!("{motd}:/etc/motd"),
            format!("{tool}:/usr/bin/tool"),
            format!("{motd}:/etc/secret:0600"),
        ];
        let mut args = vec!["--init", &init, "-o", &output];
        for file in &files {
            args.extend(["--file", file]);
        }
        args.extend(extra);
        mkinitramfs(&args, envs)
    }
}

#[test]
fn packs_init_the_guest_skeleton_and_extra_files() {
    if !have_cpio("packs_init_the_guest_skeleton_and_extra_files") {
        return;
    }
    let inputs = Inputs::new("cli-pack");
    let output = inputs.run(&[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(&format!("mkinitramfs: wrote {} (", inputs.output())),
        "{message}"
    );

    let archive = fs::read(inputs.output()).unwrap();
    assert_eq!(
        list(&archive),
        [
            "dev",
            "dev/console",
            "dev/null",
            "etc",
            "etc/motd",
            "etc/secret",
            "init",
            "mnt",
            "newroot",
            "proc",
            "root",
            "run",
            "sys",
            "tmp",
            "usr",
            "usr/bin",
            "usr/bin/tool",
        ]
    );

    let root = TempDir::new("cli-extract");
    let at = |p: &str| root.path().join(p);
    // Only root may make device nodes.
    let as_root = common::is_root(root.path());
    extract(root.path(), &archive, if as_root { &[] } else { &["dev/*"] });
    assert_eq!(fs::read(at("init")).unwrap(), b"\x7fELF vminitd");
    assert_eq!(fs::read(at("etc/motd")).unwrap(), b"hello\n");
    for (path, mode) in [
        ("init", 0o755),
        ("etc/motd", 0o644),     // not executable on the host
        ("usr/bin/tool", 0o755), // executable on the host (0700)
        ("etc/secret", 0o600),   // given
        ("tmp", 0o1777),
        ("proc", 0o555),
        ("root", 0o700),
    ] {
        assert_eq!(mode_of(&at(path)), mode, "mode of {path}");
    }
    if as_root {
        let console = fs::symlink_metadata(at("dev/console")).unwrap();
        assert!(console.file_type().is_char_device());
        assert_eq!(major_minor(console.rdev()), (5, 1));
        let null = fs::symlink_metadata(at("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(major_minor(null.rdev()), (1, 3));
    }
}

#[test]
fn output_depends_only_on_inputs_and_source_date_epoch() {
    let inputs = Inputs::new("cli-determinism");
    assert!(inputs.run(&[], &[]).status.success());
    let first = fs::read(inputs.output()).unwrap();

    // Host file times and the order of --file do not matter.
    let motd = fs::File::options().write(true).open(inputs.path("motd")).unwrap();
    motd.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    let reordered = mkinitramfs(
        &[
            "--file",
            &format!("{}:/etc/secret:0600", inputs.path("motd")),
            "--file",
            &format!("{}:/usr/bin/tool", inputs.path("tool")),
            "--file",
            &format!("{}:/etc/motd", inputs.path("motd")),
            "--init",
            &inputs.path("vminitd"),
            "-o",
            &inputs.path("again.cpio"),
        ],
        &[],
    );
    assert!(reordered.status.success(), "{}", stderr(&reordered));
    assert_eq!(fs::read(inputs.path("again.cpio")).unwrap(), first);

    // SOURCE_DATE_EPOCH sets every mtime (8 hex digits at offset 46).
    let dated = inputs.run(&[], &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(dated.status.success(), "{}", stderr(&dated));
    let dated = fs::read(inputs.output()).unwrap();
    assert_eq!(dated.len(), first.len());
    assert_eq!(&first[46..54], b"00000000");
    assert_eq!(&dated[46..54], b"6553F100");
}

#[test]
fn a_bad_source_date_epoch_is_an_error() {
    let inputs = Inputs::new("cli-epoch");
    let output = inputs.run(&[], &[("SOURCE_DATE_EPOCH", "yesterday")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("mkinitramfs: invalid SOURCE_DATE_EPOCH \"yesterday\""),
        "{}",
        stderr(&output)
    );
    assert!(!Path::new(&inputs.output()).exists());
}

#[test]
fn a_missing_init_fails_naming_it_and_keeps_the_old_archive() {
    let inputs = Inputs::new("cli-missing");
    assert!(inputs.run(&[], &[]).status.success());
    let before = fs::read(inputs.output()).unwrap();

    fs::remove_file(inputs.path("vminitd")).unwrap();
    let output = inputs.run(&[], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim_end(),
        format!(
            "mkinitramfs: cannot read {} for /init: No such file or directory (os error 2)",
            inputs.path("vminitd")
        )
    );
    assert_eq!(fs::read(inputs.output()).unwrap(), before);
    let build: Vec<_> = fs::read_dir(inputs.path("build"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(build, ["initramfs.cpio"], "no temporary file is left");
}

#[test]
fn a_file_over_init_is_a_duplicate() {
    let inputs = Inputs::new("cli-duplicate");
    let clash = format!("{}:/init", inputs.path("motd"));
    let output = inputs.run(&["--file", &clash], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim_end(),
        "mkinitramfs: archive path /init is given more than once"
    );
}

#[test]
fn a_malformed_file_spec_is_a_usage_error() {
    let inputs = Inputs::new("cli-usage");
    let output = inputs.run(&["--file", "just-one-part"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("expected SRC:DEST or SRC:DEST:MODE"),
        "{}",
        stderr(&output)
    );
}

//! Host state is private and safe against another local user: run under
//! umask 0 with a secret in the process's environment, every directory
//! vmshim keeps state in (the state directory with its instances and
//! networks, `vmshim runtime --root`, the VMs' runtime directories) is 0700
//! and every file and socket in them 0600 while the VMs run; another user
//! can neither list them nor read `spec.json`; logs are rotated at their
//! limit and still read; and directories that another user made or may
//! write to are refused before anything boots.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use vminitd_tests::{vmshim_bin, TempDir};

const SECRET: &str = "SECRET=hunter2-never-on-disk-for-others";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `vmshim ARGS` with umask 0 (the worst a caller can hand it), `state` as
/// its state directory, logs rotated at 4 KiB. Its stdout and stderr are
/// files (a container keeps `runtime create`'s stdio), read back once it
/// has exited.
fn vmshim(state: &Path, args: &[&str]) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_dir = TempDir::new(&format!("private-out-{n}"));
    let (stdout, stderr) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut cmd = Command::new(vmshim_bin());
    cmd.args(args)
        .env("VMSHIM_STATE_DIR", state)
        .env("VMSHIM_LOG_MAX_SIZE", "4K")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(&stderr).unwrap());
    // SAFETY: umask is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let status = cmd.status().expect("run vmshim");
    Output {
        status,
        stdout: fs::read(&stdout).unwrap(),
        stderr: fs::read(&stderr).unwrap(),
    }
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Runs `args` as user nobody (uid and gid 65534, no groups).
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)")
}

/// What is wrong with the modes of everything under `root`: each
/// directory must be 0700, each file and socket 0600.
fn mode_problems(root: &Path, out: &mut Vec<String>) {
    let meta = fs::symlink_metadata(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let mode = meta.mode() & 0o7777;
    let kind = meta.file_type();
    let (want, what) = if kind.is_dir() {
        (0o700, "directory")
    } else if kind.is_socket() {
        (0o600, "socket")
    } else if kind.is_file() {
        (0o600, "file")
    } else {
        out.push(format!(
            "{}: a {kind:?}, not a file, socket or directory",
            root.display()
        ));
        return;
    };
    if mode != want {
        out.push(format!("{} ({what}): mode {mode:04o}, not {want:04o}", root.display()));
    }
    if meta.uid() != 0 && euid() == 0 {
        out.push(format!("{}: owned by uid {}", root.display(), meta.uid()));
    }
    if kind.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(root).unwrap().flatten().map(|e| e.path()).collect();
        entries.sort();
        for entry in entries {
            mode_problems(&entry, out);
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The runtime directories of the VMs that process `pid` holds, in the base
/// directory vmshim chose (`$XDG_RUNTIME_DIR/vmshim`, `/run/vmshim` for
/// root, or `$TMPDIR/vmshim-<uid>`).
fn runtime_dirs_of(pid: u64) -> Vec<PathBuf> {
    let mut bases = Vec::new();
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        bases.push(PathBuf::from(xdg).join("vmshim"));
    }
    bases.push(PathBuf::from("/run/vmshim"));
    bases.push(std::env::temp_dir().join(format!("vmshim-{}", euid())));
    let prefix = format!("{pid}-");
    bases
        .iter()
        .filter_map(|base| fs::read_dir(base).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn daemon_pid(instance_dir: &Path) -> u64 {
    let record: Value = serde_json::from_slice(&fs::read(instance_dir.join("instance.json")).unwrap()).unwrap();
    record["pid"].as_u64().expect("the daemon's pid")
}

/// Stops what a test started, even when it fails halfway.
struct Cleanup<'a> {
    state: &'a Path,
    root: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = vmshim(self.state, &["stop", "box"]);
        let root = self.root.to_str().unwrap();
        let _ = vmshim(self.state, &["runtime", "--root", root, "delete", "--force", "c1"]);
        let _ = vmshim(self.state, &["network", "rm", "priv"]);
    }
}

#[test]
fn state_runtime_and_root_directories_are_private_under_umask_0() {
    if euid() != 0 {
        eprintln!("note: not root: another user's view cannot be tried; skipped");
        return;
    }
    let t = TempDir::new("private-state");
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let state = t.path().join("state");
    let root = t.path().join("root");
    let root_arg = root.to_str().unwrap();
    let _cleanup = Cleanup {
        state: &state,
        root: &root,
    };

    // A network (its switch daemon), a detached VM on it whose main process
    // has the secret and writes far more than the 4 KiB log limit, and a
    // container of `vmshim runtime` with the secret in its bundle.
    ok(
        vmshim(&state, &["network", "create", "priv", "--subnet", "10.89.211.0/24"]),
        "network create",
    );
    let chatter = "i=0; while [ $i -lt 600 ]; do echo \"output line $i of the main process\"; i=$((i+1)); done; \
                   echo all written; exec sleep 600";
    ok(
        vmshim(
            &state,
            &[
                "run",
                "-d",
                "--name",
                "box",
                "--network",
                "priv",
                "-e",
                SECRET,
                "--",
                "sh",
                "-c",
                chatter,
            ],
        ),
        "run -d",
    );
    let b = vminitd_tests::runc_bundle(t.path(), "bundle", &["sleep", "600"], &["PATH=/bin:/sbin", SECRET]);
    let pid_file = t.path().join("c1.pid");
    ok(
        vmshim(
            &state,
            &[
                "runtime",
                "--root",
                root_arg,
                "create",
                "--bundle",
                b.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                "c1",
            ],
        ),
        "runtime create",
    );

    let instance = state.join("instances/box");
    let container = root.join("c1/instances/c1");
    assert!(
        vminitd_tests::eventually(Duration::from_secs(30), || log_has(
            &instance.join("log"),
            "all written"
        )),
        "the main process's output never reached its log"
    );
    // The secret is on disk (the daemons need it) — for its owner alone.
    for spec in [instance.join("spec.json"), container.join("spec.json")] {
        let bytes = fs::read(&spec).unwrap();
        assert!(text(&bytes).contains(SECRET), "{}", spec.display());
    }

    // Every directory 0700, every file and socket 0600, while both VMs run.
    let mut runtime_dirs = runtime_dirs_of(daemon_pid(&instance));
    runtime_dirs.extend(runtime_dirs_of(daemon_pid(&container)));
    assert_eq!(runtime_dirs.len(), 2, "one runtime directory per VM: {runtime_dirs:?}");
    let base = runtime_dirs[0].parent().unwrap().to_owned();
    let mut problems = Vec::new();
    // The base itself (other vmshims' VMs come and go in it), then ours.
    let base_mode = fs::symlink_metadata(&base).unwrap().mode() & 0o7777;
    if base_mode != 0o700 {
        problems.push(format!(
            "{} (directory): mode {base_mode:04o}, not 0700",
            base.display()
        ));
    }
    for dir in [&state, &root].into_iter().chain(&runtime_dirs) {
        mode_problems(dir, &mut problems);
    }
    // The build cache, which the runtime container's root went into: the
    // directory 0700, its images 0600; an unpacked image tree keeps its
    // image's modes (its root becomes the guest's `/`), behind the cache.
    let cache = host_shim::assets::build_dir().join("cache");
    let mut cached = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect::<Vec<_>>();
    // (Names starting with "." are other tests' work in progress.)
    cached.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        !name.starts_with("image-") && !name.starts_with('.')
    });
    assert!(
        cached.iter().any(|p| p.extension().is_some_and(|e| e == "ext4")),
        "no image in {}",
        cache.display()
    );
    let cache_mode = fs::symlink_metadata(&cache).unwrap().mode() & 0o7777;
    if cache_mode != 0o700 {
        problems.push(format!(
            "{} (directory): mode {cache_mode:04o}, not 0700",
            cache.display()
        ));
    }
    for entry in &cached {
        mode_problems(entry, &mut problems);
    }
    for dir in &runtime_dirs {
        assert!(
            dir.join("console.log").is_file() && dir.join("qemu.log").is_file(),
            "{}",
            dir.display()
        );
    }
    assert!(problems.is_empty(), "not private:\n{}", problems.join("\n"));
    // The caller's pid file is the caller's, as runc writes it.
    assert_eq!(fs::metadata(&pid_file).unwrap().mode() & 0o777, 0o666);

    // Another user can list none of it, and read neither spec.json.
    for path in [&state, &root, &instance, &base, &runtime_dirs[0]] {
        let out = as_nobody(&["ls", path.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "nobody listed {}: {}",
            path.display(),
            text(&out.stdout)
        );
        assert!(text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));
    }
    for spec in [instance.join("spec.json"), container.join("spec.json")] {
        let out = as_nobody(&["cat", spec.to_str().unwrap()]);
        assert!(!out.status.success(), "nobody read {}", spec.display());
        assert!(!text(&out.stdout).contains("hunter2"));
    }

    // The instance log passed 4 KiB: rotated, one older generation kept,
    // and what reads it still sees the latest lines.
    let log = fs::read_to_string(instance.join("log")).unwrap();
    let older = fs::read_to_string(instance.join("log.1")).expect("the log was rotated");
    assert!(
        log.len() <= 4096 + 512 && older.len() <= 4096 + 512,
        "{} {}",
        log.len(),
        older.len()
    );
    assert!(log.contains("all written"), "{log}");
    assert!(!log.contains("output line 0 "), "the oldest lines are gone: {log}");
    for dir in &runtime_dirs {
        assert!(fs::metadata(dir.join("console.log")).unwrap().len() <= 4096);
    }
}

fn log_has(path: &Path, needle: &str) -> bool {
    fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

#[test]
fn directories_another_user_made_or_may_write_are_refused() {
    if euid() != 0 {
        eprintln!("note: not root: cannot make a directory of another user; skipped");
        return;
    }
    let t = TempDir::new("private-hostile");
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let b = vminitd_tests::runc_bundle(t.path(), "bundle", &["true"], &["PATH=/bin"]);

    // A --root that anyone may write to: refused, naming it, nothing made.
    let open_root = t.path().join("root");
    fs::create_dir(&open_root).unwrap();
    fs::set_permissions(&open_root, fs::Permissions::from_mode(0o777)).unwrap();
    let out = vmshim(
        &t.path().join("state"),
        &[
            "runtime",
            "--root",
            open_root.to_str().unwrap(),
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "c1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let wanted = format!(
        "{} has mode 0777: others may write to it: refusing to use it",
        open_root.display()
    );
    assert!(text(&out.stderr).contains(&wanted), "{}", text(&out.stderr));
    assert_eq!(fs::read_dir(&open_root).unwrap().count(), 0);

    // A state directory that another user made: refused.
    let theirs = t.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = vmshim(&theirs, &["network", "create", "n"]);
    assert!(!out.status.success());
    let wanted = format!("{} is owned by uid 65534, not 0: refusing to use it", theirs.display());
    assert!(text(&out.stderr).contains(&wanted), "{}", text(&out.stderr));

    // A runtime base planted as a link by someone else (here: the session's
    // runtime directory holds a `vmshim` link to a directory of theirs).
    let xdg = t.path().join("xdg");
    fs::create_dir(&xdg).unwrap();
    fs::set_permissions(&xdg, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&theirs, xdg.join("vmshim")).unwrap();
    let mut cmd = Command::new(vmshim_bin());
    cmd.args(["run", "--", "true"])
        .env("XDG_RUNTIME_DIR", &xdg)
        .env("VMSHIM_STATE_DIR", t.path().join("state"))
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let wanted = format!("refusing to use {}: is a symbolic link", xdg.join("vmshim").display());
    assert!(text(&out.stderr).contains(&wanted), "{}", text(&out.stderr));
    assert_eq!(fs::read_dir(&theirs).unwrap().count(), 0, "nothing made in theirs");
}

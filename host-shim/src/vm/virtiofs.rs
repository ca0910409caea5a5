//! Host files in the guest: one virtio-fs share per VM, served by a
//! `virtiofsd` of its own (the Rust daemon, vhost-user) over the VM's
//! memfd-shared RAM, QEMU's `vhost-user-fs-device` in the guest.
//!
//! Each shared host file or directory ([`SharedPath`]) is bound into the
//! share's directory as `N` (its index), and the guest mounts the share at
//! [`GUEST_SHARES`]: `GUEST_SHARES/N` is that host path. The binds are made
//! in a mount namespace of the daemon's own, made between fork and exec
//! (with a user namespace too where vmshim is not root), on a tmpfs laid
//! over the share's directory there: the host's mount table never changes,
//! and the directory on the host stays empty. A read-only share is bound
//! read-only there (recursively), so the daemon itself cannot write it,
//! whatever the guest asks.
//!
//! The daemon runs with `--cache auto`: the guest revalidates a file's
//! data on every open and its metadata after at most a second, and writes
//! go through to the host at once (no writeback cache), so a write on
//! either side is seen by the other. Its own sandbox (`--sandbox
//! namespace`: a mount, PID and network namespace of its own, pivoted into
//! the share) and seccomp filter (`--seccomp kill`) stay on.
//!
//! The guest learns about the share from the kernel command line
//! (`vminitd.share=TAG`), and about the shares it binds into its root
//! filesystem at boot (`vmshim run -v`) from `vminitd.volume=N,ro|rw,DEST`.
//! A container's bind mounts of host paths are ordinary bind mounts from
//! `GUEST_SHARES/N` instead (see `image::bundle`).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use agent_proto::GUEST_SHARES;

use super::child::Supervised;
use super::VmError;
use namespace::{read_report, report_pipe, NamespacePlan};

mod namespace;

/// The share's virtio-fs tag, which the guest mounts.
pub const SHARE_TAG: &str = "vmshim";

/// How long the daemon may take to create its socket.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One host file or directory the guest reaches through the VM's share,
/// at `GUEST_SHARES/N`, N its index in the VM's list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedPath {
    /// The host file or directory (absolute).
    pub source: PathBuf,
    /// Bound read-only: neither the guest nor the daemon can write it.
    pub readonly: bool,
    /// Bound with what is mounted below it (`rbind`), else alone (`bind`).
    pub recursive: bool,
    /// Where the guest binds it in its root filesystem at boot, for every
    /// process of the VM (`vmshim run -v`); absent: a container's bind
    /// mount takes it from `GUEST_SHARES/N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_bind: Option<String>,
}

impl SharedPath {
    /// Where the guest sees share `index`.
    pub fn guest_path(index: usize) -> String {
        format!("{GUEST_SHARES}/{index}")
    }
}

/// Why host paths could not be shared with a VM.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// A `-v` value is not `HOST:GUEST[:OPTIONS]`.
    #[error("-v {value:?}: {why}")]
    BadVolume {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A host path to share is not there, or cannot be looked at.
    #[error("cannot share {}: {source}", path.display())]
    Source {
        /// The host path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A host path to share is neither a directory nor a file that can be
    /// bound (a socket, a device, ...).
    #[error("cannot share {}: {kind}, not a directory or a regular file", path.display())]
    SourceKind {
        /// The host path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// `virtiofsd` is not installed.
    #[error("virtiofsd is not installed (host files in the guest need it): run scripts/setup.sh")]
    NoDaemon,
    /// The daemon's mount namespace could not be made, or a share bound
    /// into it.
    #[error("cannot prepare the share for virtiofsd: {step}: {source}")]
    Namespace {
        /// The step that failed (`bind /srv/data as 0`).
        step: String,
        /// What the system said.
        source: io::Error,
    },
    /// The daemon could not be started, or did not get ready.
    #[error("virtiofsd: {detail}")]
    Daemon {
        /// Why, with the end of its log.
        detail: String,
    },
}

/// `vmshim run -v HOST:GUEST[:OPTIONS]`: a host file or directory bound at
/// GUEST in the VM, read-write, or read-only with `ro`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path (absolute: a relative one is taken from the current
    /// directory).
    pub host: PathBuf,
    /// The path in the guest (absolute).
    pub guest: String,
    /// Read-only (`ro`).
    pub readonly: bool,
}

impl FromStr for Volume {
    type Err = ShareError;

    fn from_str(value: &str) -> Result<Volume, ShareError> {
        let bad = |why: String| ShareError::BadVolume {
            value: value.to_owned(),
            why,
        };
        let parts: Vec<&str> = value.split(':').collect();
        let (host, guest, options) = match parts.as_slice() {
            [host, guest] => (*host, *guest, ""),
            [host, guest, options] => (*host, *guest, *options),
            _ => return Err(bad("expected HOST:GUEST or HOST:GUEST:OPTIONS (ro, rw)".into())),
        };
        if host.is_empty() {
            return Err(bad("no host path".into()));
        }
        if !guest.starts_with('/') {
            return Err(bad(format!("the guest path {guest:?} is not absolute")));
        }
        if Path::new(guest)
            .components()
            .all(|c| c == std::path::Component::RootDir)
        {
            return Err(bad("the guest path cannot be /".into()));
        }
        let mut readonly = false;
        for option in options.split(',').filter(|o| !o.is_empty()) {
            match option {
                "ro" => readonly = true,
                "rw" => readonly = false,
                other => return Err(bad(format!("unknown option {other:?} (expected ro or rw)"))),
            }
        }
        let host = std::path::absolute(host).map_err(|e| bad(format!("the host path: {e}")))?;
        if let Err(source) = std::fs::metadata(&host) {
            return Err(bad(format!("the host path {}: {source}", host.display())));
        }
        Ok(Volume {
            host,
            guest: guest.to_owned(),
            readonly,
        })
    }
}

impl Volume {
    /// The share that makes it: bound at boot in the guest's root.
    pub fn share(&self) -> SharedPath {
        SharedPath {
            source: self.host.clone(),
            readonly: self.readonly,
            recursive: true,
            guest_bind: Some(self.guest.clone()),
        }
    }

    /// The share that makes it for a container: its bind mount (appended
    /// to the spec's) takes it from `GUEST_SHARES/index`.
    pub fn container_share(&self, index: usize) -> (SharedPath, agent_proto::Mount) {
        let mut options = vec!["rbind".to_owned()];
        if self.readonly {
            options.push("ro".to_owned());
        }
        let share = SharedPath {
            guest_bind: None,
            ..self.share()
        };
        let mount = agent_proto::Mount {
            destination: self.guest.clone(),
            kind: Some("bind".to_owned()),
            source: Some(SharedPath::guest_path(index)),
            options,
        };
        (share, mount)
    }
}

/// The kernel command-line words that tell the guest about `shares`:
/// none for a VM without them.
pub fn cmdline(shares: &[SharedPath]) -> Vec<String> {
    if shares.is_empty() {
        return Vec::new();
    }
    let mut words = vec![format!("vminitd.share={SHARE_TAG}")];
    for (i, share) in shares.iter().enumerate() {
        if let Some(dest) = &share.guest_bind {
            let mode = if share.readonly { "ro" } else { "rw" };
            words.push(format!("vminitd.volume={i},{mode},{}", percent_encode(dest)));
        }
    }
    words
}

/// `path` with every byte but letters, digits and `/._-+@~=,:` written
/// `%XX`, so that it is one word of the kernel command line whatever it
/// holds (spaces, quotes, ...).
fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-+@~=,:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `virtiofsd` serving one VM's share.
pub(crate) struct Virtiofsd {
    /// The daemon, killed with the VM.
    daemon: Supervised,
    /// Its vhost-user socket, which QEMU connects to.
    socket: PathBuf,
}

impl Virtiofsd {
    /// Starts the daemon of a VM whose runtime files live in `dir` (a
    /// private directory), sharing `shares`; returns once its socket is
    /// there.
    pub async fn start(dir: &Path, shares: &[SharedPath]) -> Result<Virtiofsd, VmError> {
        Virtiofsd::start_program(find_virtiofsd()?, dir, shares).await
    }

    /// [`Virtiofsd::start`] with the daemon `program`.
    async fn start_program(program: PathBuf, dir: &Path, shares: &[SharedPath]) -> Result<Virtiofsd, VmError> {
        let shared = dir.join("shares");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&shared)
            .map_err(|source| VmError::Io {
                what: "create",
                path: shared.clone(),
                source,
            })?;
        let plan = NamespacePlan::new(&shared, shares)?;
        let socket = dir.join("virtiofsd.sock");
        let log_path = dir.join("virtiofsd.log");
        let log = crate::private::create_private_file(dir, "virtiofsd.log")?;
        let mut cmd = Command::new(&program);
        cmd.arg("--shared-dir")
            .arg(&shared)
            .arg("--socket-path")
            .arg(&socket)
            // Coherent both ways: data revalidated on open, metadata after
            // at most a second, writes through at once.
            .args(["--cache", "auto", "--sandbox", "namespace", "--seccomp", "kill"]);
        if plan.user_namespace {
            // Opening a file handle needs CAP_DAC_READ_SEARCH of the
            // host's user namespace, which the daemon does not have there.
            cmd.arg("--inode-file-handles=never");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let (report_read, report_write) = report_pipe().map_err(|source| ShareError::Namespace {
            step: "make a pipe".into(),
            source,
        })?;
        let raw_report = report_write.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec; the
        // plan was prepared before fork and enter() makes only
        // async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || plan.enter(raw_report));
        }
        let spawned = Supervised::spawn("virtiofsd", cmd);
        drop(report_write);
        let mut daemon = match spawned {
            Ok(daemon) => daemon,
            Err(source) => {
                return Err(match read_report(report_read, shares, &shared) {
                    Some(step) => ShareError::Namespace { step, source }.into(),
                    None => VmError::Spawn { program, source },
                });
            }
        };
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        while !socket.exists() {
            if let Some(status) = daemon.try_status() {
                return Err(ShareError::Daemon {
                    detail: format!("exited ({status}): {}", super::console::tail(&log_path, 5)),
                }
                .into());
            }
            if Instant::now() >= deadline {
                return Err(ShareError::Daemon {
                    detail: format!(
                        "did not create {} within {DAEMON_READY_TIMEOUT:?}: {}",
                        socket.display(),
                        super::console::tail(&log_path, 5)
                    ),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(Virtiofsd { daemon, socket })
    }

    /// The QEMU arguments that give the guest the share's device.
    pub fn qemu_args(&self) -> Vec<String> {
        let path = self.socket.to_string_lossy().replace(',', ",,");
        vec![
            "-chardev".into(),
            format!("socket,id=virtiofs,path={path}"),
            "-device".into(),
            format!("vhost-user-fs-device,chardev=virtiofs,tag={SHARE_TAG}"),
        ]
    }

    /// The daemon's role and pid.
    pub fn process(&self) -> (&'static str, u32) {
        (self.daemon.name(), self.daemon.pid())
    }

    /// Kills the daemon and reaps it.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }
}

/// `$VMSHIM_VIRTIOFSD`, else `virtiofsd` in PATH or in cargo's bin
/// directory (where `scripts/setup.sh` installs it). QEMU 7.2's own C
/// daemon (`/usr/lib/qemu/virtiofsd`) takes other options, and is not used.
fn find_virtiofsd() -> Result<PathBuf, ShareError> {
    super::find_helper_program("VMSHIM_VIRTIOFSD", "virtiofsd").ok_or(ShareError::NoDaemon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn volumes_parse_and_name_what_is_wrong() {
        let t = TestDir::new("volumes");
        let host = t.path().display().to_string();
        let v: Volume = format!("{host}:/data").parse().unwrap();
        assert_eq!(
            (v.host.as_path(), v.guest.as_str(), v.readonly),
            (t.path(), "/data", false)
        );
        let v: Volume = format!("{host}:/data:ro").parse().unwrap();
        assert!(v.readonly);
        let v: Volume = format!("{host}:/data:ro,rw").parse().unwrap();
        assert!(!v.readonly);
        let missing = t.path().join("missing");
        for (value, names) in [
            (format!("{}:/data", missing.display()), missing.display().to_string()),
            (format!("{host}:data"), "\"data\" is not absolute".to_owned()),
            (format!("{host}:/data:z"), "unknown option \"z\"".to_owned()),
            (format!("{host}:/"), "cannot be /".to_owned()),
            (host.clone(), "HOST:GUEST".to_owned()),
            (format!("{host}:/a:ro:x"), "HOST:GUEST".to_owned()),
            (":/a".to_owned(), "no host path".to_owned()),
        ] {
            let e = value.parse::<Volume>().unwrap_err().to_string();
            assert!(e.contains(&names), "{value}: {e}");
            assert!(e.contains(&value), "{value}: {e}");
        }
    }

    #[test]
    fn the_guest_learns_of_shares_from_the_command_line() {
        assert!(cmdline(&[]).is_empty(), "no shares, no words");
        let share = |bind: Option<&str>, readonly| SharedPath {
            source: "/srv".into(),
            readonly,
            recursive: true,
            guest_bind: bind.map(str::to_owned),
        };
        let words = cmdline(&[
            share(None, false),
            share(Some("/my data/\"x\"%"), true),
            share(Some("/a,b"), false),
        ]);
        assert_eq!(
            words,
            [
                "vminitd.share=vmshim",
                "vminitd.volume=1,ro,/my%20data/%22x%22%25",
                "vminitd.volume=2,rw,/a,b"
            ]
        );
    }

    #[test]
    fn a_volume_of_a_container_is_its_bind_mount_from_the_share() {
        let t = TestDir::new("volume-container");
        let v: Volume = format!("{}:/data:ro", t.path().display()).parse().unwrap();
        let (share, mount) = v.container_share(3);
        assert_eq!((share.guest_bind, share.readonly, share.recursive), (None, true, true));
        assert_eq!(mount.source.as_deref(), Some("/run/vminitd/shares/3"));
        assert_eq!(
            (mount.destination.as_str(), mount.kind.as_deref()),
            ("/data", Some("bind"))
        );
        assert_eq!(mount.options, ["rbind", "ro"]);
    }

    /// A stand-in daemon: reports what it sees in the share and what it
    /// may write there, then makes its "socket".
    const FAKE_DAEMON: &str = r#"#!/bin/sh
S=$2 P=$4
{
  cat "$S/0/in.txt" "$S/1"
  echo from-daemon > "$S/2/out.txt" && echo "2 writable"
  (echo x > "$S/0/no.txt") 2>/dev/null || echo "0 read-only"
  (echo x >> "$S/1") 2>/dev/null || echo "1 read-only"
  (echo x > "$S/3/sub/no.txt") 2>/dev/null || echo "3 read-only"
  ls "$S" | tr '\n' ' '; echo
  grep -c " $S/" /proc/self/mountinfo
} > "$(dirname "$P")/report" 2>&1
touch "$P"
exec sleep 30
"#;

    #[tokio::test(flavor = "current_thread")]
    async fn the_daemon_sees_each_share_in_a_namespace_of_its_own() {
        let t = TestDir::new("virtiofs-ns");
        let host = t.path().join("host");
        std::fs::create_dir_all(host.join("ro")).unwrap();
        std::fs::create_dir_all(host.join("rw")).unwrap();
        std::fs::create_dir_all(host.join("ro-rec/sub")).unwrap();
        std::fs::write(host.join("ro/in.txt"), "a directory\n").unwrap();
        std::fs::write(host.join("file"), "a file\n").unwrap();
        let fake = t.path().join("fake-virtiofsd");
        std::fs::write(&fake, FAKE_DAEMON).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let share = |path: &str, readonly| SharedPath {
            source: host.join(path),
            readonly,
            recursive: true,
            guest_bind: None,
        };
        let shares = [
            share("ro", true),
            share("file", true),
            share("rw", false),
            share("ro-rec", true),
        ];
        let run = t.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut daemon = Virtiofsd::start_program(fake, &run, &shares).await.unwrap();
        let report = std::fs::read_to_string(run.join("report")).unwrap();
        let during = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        daemon.kill();
        assert_eq!(
            report,
            "a directory\na file\n2 writable\n0 read-only\n1 read-only\n3 read-only\n0 1 2 3 \n4\n"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("rw/out.txt")).unwrap(),
            "from-daemon\n"
        );
        // The host saw none of it: its mounts, and an empty directory.
        assert_eq!(before, during);
        assert_eq!(std::fs::read_dir(run.join("shares")).unwrap().count(), 0);
        let args = daemon.qemu_args().join(" ");
        assert!(
            args.ends_with("-device vhost-user-fs-device,chardev=virtiofs,tag=vmshim"),
            "{args}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_source_that_cannot_be_shared_is_named() {
        let t = TestDir::new("virtiofs-bad");
        let socket = t.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (source, says) in [
            (t.path().join("missing"), "No such file"),
            (socket.clone(), "a socket, not a directory or a regular file"),
        ] {
            let run = t.path().join(format!("run-{}", says.len()));
            std::fs::create_dir(&run).unwrap();
            let share = SharedPath {
                source: source.clone(),
                readonly: false,
                recursive: false,
                guest_bind: None,
            };
            let e = Virtiofsd::start_program("/bin/true".into(), &run, &[share])
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(&source.display().to_string()) && e.contains(says), "{e}");
        }
    }
}

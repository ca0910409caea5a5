//! `vmshim runtime exec`, and the relay that `exec --detach` leaves
//! behind: runc's flags over `host_shim::runtime`'s exec.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use agent_proto::{ExitStatus, ProcessSpec, WindowSize};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use host_shim::runtime::{write_pid_file, Exec, ExecFlags, ExecProcess, ExecStdio, Runtime};
use host_shim::terminal::{is_terminal, window_size, RawMode};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{LogFormat, Logger};

/// runc's exit status when `exec` itself fails.
pub const EXEC_FAILED: u8 = 255;

/// The descriptor on which a detached exec's relay talks to the `exec`
/// that started it.
const RELAY_FD: RawFd = 3;

#[derive(Args)]
pub struct ExecArgs {
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// With --detach and --tty: where the terminal's master is sent.
    #[arg(long = "console-socket", value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// The working directory in the container.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Set an environment variable (appended to the bundle's).
    #[arg(short, long, value_name = "K=V")]
    env: Vec<String>,
    /// The user: UID[:GID] (the bundle's group when no GID is given).
    #[arg(short, long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// An additional group id.
    #[arg(
        short = 'g',
        long = "additional-gids",
        value_name = "GID",
        allow_negative_numbers = true
    )]
    additional_gids: Vec<i64>,
    /// The process from a process.json instead of the flags.
    #[arg(short, long, value_name = "FILE")]
    process: Option<PathBuf>,
    /// Return once the process is started.
    #[arg(short, long)]
    detach: bool,
    /// Write the pid of the vmshim that relays the process's stdio (the
    /// process runs in the VM) to FILE.
    #[arg(long = "pid-file", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Set noNewPrivileges for the process.
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Add a capability to the bounding, effective, permitted and ambient
    /// sets.
    #[arg(short, long, value_name = "CAP")]
    cap: Vec<String>,
    /// Descriptors beyond stdio to pass to the process: only 0 works.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Refused: the VM has no AppArmor.
    #[arg(long, value_name = "PROFILE")]
    apparmor: Option<String>,
    /// Refused: the VM has no SELinux.
    #[arg(long = "process-label", value_name = "LABEL")]
    process_label: Option<String>,
    /// Refused: the agent puts the process in the container's cgroup.
    #[arg(long, value_name = "PATH")]
    cgroup: Vec<String>,
    /// Accepted, as runc accepts it: containers are never paused.
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `exec`: the process built from the flags (or `--process`) over the
/// bundle's, started with this command's stdio; waits for it (forwarding
/// signals, and window sizes to a terminal) and exits as it did. With
/// `--detach`, a relay that outlives this command takes the stdio over
/// (see [`exec_relay`]), and `exec` returns once the process started.
pub async fn exec(runtime: &Runtime, root: &Path, logger: &Logger, args: &ExecArgs) -> Result<u8> {
    let refused = [
        ("--apparmor", args.apparmor.is_some()),
        ("--process-label", args.process_label.is_some()),
        ("--cgroup", !args.cgroup.is_empty()),
        ("--preserve-fds", args.preserve_fds > 0),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
        bail!("{flag}: a process in a VM cannot be given that");
    }
    let _ = args.ignore_paused;
    let how = match &args.process {
        Some(path) => ExecProcess::File(path.clone()),
        None => ExecProcess::Flags(ExecFlags {
            args: args.command.clone(),
            cwd: args.cwd.clone(),
            env: args.env.clone(),
            tty: args.tty,
            user: args.user.clone(),
            additional_gids: args.additional_gids.clone(),
            no_new_privileges: args.no_new_privs.then_some(true),
            caps: args.cap.clone(),
        }),
    };
    let mut process = runtime.exec_process(&args.id, &how)?;
    // runc's check of the terminal against the console socket.
    match (args.detach, process.terminal, &args.console_socket) {
        (true, true, None) => bail!("cannot allocate tty if runc will detach without setting console socket"),
        (false, _, Some(_)) | (_, false, Some(_)) => {
            bail!("cannot use console socket if runc will not detach or allocate tty")
        }
        _ => {}
    }
    if args.detach {
        let console_socket = match &args.console_socket {
            Some(path) => Some(std::path::absolute(path)?),
            None => None,
        };
        let pid = start_relay(root, logger, &args.id, process, console_socket).await?;
        if let Some(path) = &args.pid_file {
            write_pid_file(path, pid)?;
        }
        return Ok(0);
    }
    let own_terminal = process.terminal && is_terminal(libc::STDOUT_FILENO);
    if own_terminal {
        if let Some((rows, cols)) = window_size(libc::STDOUT_FILENO) {
            process.size = Some(WindowSize { rows, cols });
        }
    }
    let _raw = match process.terminal && is_terminal(libc::STDIN_FILENO) {
        true => Some(RawMode::enable(libc::STDIN_FILENO)?),
        false => None,
    };
    let running = runtime.exec(&args.id, process, own_stdio()?).await?;
    if let Some(path) = &args.pid_file {
        write_pid_file(path, std::process::id())?;
    }
    let status = drive(&running, own_terminal).await?;
    running.finish().await;
    Ok(status.shell_code().clamp(0, 255) as u8)
}

/// This process's stdin, stdout and stderr, for a process's streams.
fn own_stdio() -> Result<ExecStdio> {
    Ok(ExecStdio::Files {
        stdin: Some(duplicate(libc::STDIN_FILENO)?),
        stdout: duplicate(libc::STDOUT_FILENO)?,
        stderr: duplicate(libc::STDERR_FILENO)?,
    })
}

/// A close-on-exec copy of `fd`.
fn duplicate(fd: RawFd) -> Result<File> {
    // SAFETY: F_DUPFD_CLOEXEC only duplicates; a bad fd is an error.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("descriptor {fd}"));
    }
    // SAFETY: fcntl just returned this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(copy) }))
}

/// Waits for `running` to end, forwarding this process's signals to it
/// and, with `terminal`, this terminal's window size.
async fn drive(running: &Exec, terminal: bool) -> Result<ExitStatus> {
    let mut signals = Signals::new()?;
    let wait = running.wait();
    tokio::pin!(wait);
    loop {
        tokio::select! {
            status = &mut wait => return Ok(status?),
            signo = signals.next() => match signo {
                libc::SIGWINCH if terminal => {
                    if let Some((rows, cols)) = window_size(libc::STDOUT_FILENO) {
                        let _ = running.resize(rows, cols).await;
                    }
                }
                libc::SIGWINCH => {}
                // It may have ended meanwhile.
                signo => {
                    let _ = running.signal(signo).await;
                }
            },
        }
    }
}

/// What `exec --detach` tells its relay.
#[derive(serde::Serialize, serde::Deserialize)]
struct RelayRequest {
    id: String,
    process: ProcessSpec,
    console_socket: Option<PathBuf>,
}

/// What the relay answers once the process started, or could not.
#[derive(serde::Serialize, serde::Deserialize)]
enum RelayReply {
    Started,
    Failed(String),
}

/// Starts `vmshim runtime exec-relay` in a session of its own with this
/// command's stdio, hands it the process over a socket pair (its
/// descriptor 3), and waits until it says the process started; returns
/// its pid.
async fn start_relay(
    root: &Path,
    logger: &Logger,
    id: &str,
    process: ProcessSpec,
    console_socket: Option<PathBuf>,
) -> Result<u32> {
    let (mut mine, theirs) = UnixStream::pair()?;
    let program = std::env::current_exe().context("cannot find the vmshim program")?;
    let mut cmd = std::process::Command::new(program);
    cmd.arg("runtime").arg("--root").arg(root);
    if let Some(log) = &logger.file {
        cmd.arg("--log").arg(log);
    }
    if logger.format == LogFormat::Json {
        cmd.args(["--log-format", "json"]);
    }
    cmd.arg("exec-relay");
    let theirs_fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setsid and dup2, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::dup2(theirs_fd, RELAY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot start the relay of the process's stdio")?;
    drop(theirs);
    let request = serde_json::to_vec(&RelayRequest {
        id: id.to_owned(),
        process,
        console_socket,
    })?;
    let reply = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        mine.write_all(&request)?;
        mine.shutdown(std::net::Shutdown::Write)?;
        let mut reply = Vec::new();
        mine.read_to_end(&mut reply)?;
        Ok(reply)
    })
    .await??;
    match serde_json::from_slice(&reply) {
        Ok(RelayReply::Started) => Ok(child.id()),
        Ok(RelayReply::Failed(message)) => Err(anyhow!(message)),
        Err(_) => bail!("the relay of the process's stdio ended before the process started"),
    }
}

/// `exec-relay`: the process `exec --detach` was given, started with the
/// stdio this relay inherited (or a terminal handed to a console socket),
/// the start reported on descriptor 3; then its stdio relayed, signals
/// forwarded, until it ends. Exits as it did.
pub async fn exec_relay(runtime: &Runtime) -> Result<u8> {
    // SAFETY: `exec --detach` put one end of a socket pair at 3 for this
    // process, taken once here.
    let mut channel = unsafe { UnixStream::from_raw_fd(RELAY_FD) };
    let mut request = Vec::new();
    channel.read_to_end(&mut request)?;
    let request: RelayRequest = serde_json::from_slice(&request)?;
    let stdio = match request.console_socket {
        Some(path) => ExecStdio::ConsoleSocket(path),
        None => own_stdio()?,
    };
    let started = runtime.exec(&request.id, request.process, stdio).await;
    let reply = match &started {
        Ok(_) => RelayReply::Started,
        Err(e) => RelayReply::Failed(e.to_string()),
    };
    let _ = channel.write_all(&serde_json::to_vec(&reply)?);
    drop(channel);
    let running = started?;
    let status = drive(&running, false).await?;
    running.finish().await;
    Ok(status.shell_code().clamp(0, 255) as u8)
}

/// The signals forwarded to a process, and SIGWINCH.
pub struct Signals(Vec<(i32, Signal)>);

impl Signals {
    pub fn new() -> Result<Signals> {
        let kinds = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::quit(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
            SignalKind::window_change(),
        ];
        let mut signals = Vec::new();
        for kind in kinds {
            signals.push((kind.as_raw_value(), signal(kind)?));
        }
        Ok(Signals(signals))
    }

    /// The next to arrive, by number.
    pub async fn next(&mut self) -> i32 {
        std::future::poll_fn(|cx| {
            for (signo, sig) in self.0.iter_mut() {
                if sig.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*signo);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

//! `vmshim runtime`: runc's command line over `host_shim::runtime`, each
//! container a micro-VM. Flags and messages are runc's; errors exit 1
//! (`exec`'s 255) and go where runc's go (see [`Logger`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use agent_proto::{ExitStatus, ProcessSpec, WindowSize};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use host_shim::accel::Accel;
use host_shim::image::{container_spec, RootPlacement};
use host_shim::runtime::{
    parse_signal, rfc3339_nanos, write_pid_file, CreateOptions, Exec, ExecFlags, ExecProcess, ExecStdio, Runtime,
    RuntimeError, State, VmSettings, DEFAULT_ROOT,
};
use host_shim::terminal::{is_terminal, window_size, RawMode};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// runc's exit status when `exec` itself fails.
const EXEC_FAILED: u8 = 255;

/// The descriptor on which a detached exec's relay talks to the `exec`
/// that started it.
const RELAY_FD: RawFd = 3;

#[derive(Args)]
pub struct RuntimeArgs {
    /// Where the containers' state lives.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Write errors to FILE (and only the message to stderr), as runc does.
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The format of log lines.
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Accepted, as runc accepts it.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc's callers and ignored: the VM has cgroups of its own.
    #[arg(long = "systemd-cgroup", global = true, hide = true)]
    systemd_cgroup: bool,
    /// Accepted for runc's callers and ignored.
    #[arg(long, global = true, hide = true, value_name = "true|false|auto")]
    rootless: Option<String>,
    /// Guest kernel [default: build/vmlinux].
    #[arg(long, global = true, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initramfs with vminitd as /init [default: build/initramfs.cpio].
    #[arg(long, global = true, value_name = "FILE")]
    initramfs: Option<PathBuf>,
    /// Virtual CPUs of each container's VM.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Memory of each container's VM, in MiB.
    #[arg(long, global = true, default_value_t = 256, value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Accelerator: kvm or tcg [default: kvm where it really runs a guest].
    #[arg(long, global = true, value_parser = clap::builder::ValueParser::new(str::parse::<Accel>))]
    accel: Option<Accel>,
    /// Seconds a VM's agent may take to answer after QEMU starts.
    #[arg(long = "boot-timeout", global = true, default_value_t = 30)]
    boot_timeout: u64,
    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum RuntimeCommand {
    /// Create a container: its VM booted, its process waiting for `start`;
    /// its stdout and stderr are this command's, and its stdin too unless
    /// that is a terminal.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Print a container's state as JSON (pid: the VM's QEMU).
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's process.
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        /// A name (KILL, SIGKILL) or a number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container: its VM shut down, its state removed.
    Delete {
        /// Delete it even if it runs (or does not exist).
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List the containers.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        /// Only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create, start, wait for and delete a container; exits with its
    /// process's status (128+N when killed by signal N).
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once it is started, leaving it running.
        #[arg(short, long)]
        detach: bool,
    },
    /// Run another process in a created or running container; exits with
    /// its status (128+N when killed by signal N), 255 when it cannot run.
    Exec(Box<ExecArgs>),
    /// The relay of a detached exec's stdio (started by `exec --detach`).
    #[command(name = "exec-relay", hide = true)]
    ExecRelay,
}

#[derive(Args)]
struct ExecArgs {
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

#[derive(Args)]
struct CreateArgs {
    /// The bundle directory.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    bundle: PathBuf,
    /// Write the container's pid (its VM's QEMU) to FILE.
    #[arg(long = "pid-file", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Where a terminal's master is sent (an AF_UNIX socket).
    #[arg(long = "console-socket", value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Descriptors beyond stdio to pass to the process: only 0 works.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Accepted, as runc accepts it; the VM always uses pivot_root.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted, as runc accepts it.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    id: String,
}

/// `vmshim runtime ...`: the exit status.
pub async fn main(args: RuntimeArgs) -> u8 {
    let logger = Logger {
        file: args.log.clone(),
        format: args.log_format,
    };
    match dispatch(args, &logger).await {
        Ok(code) => code,
        Err(e) => {
            logger.error(&format!("{e:#}"));
            1
        }
    }
}

async fn dispatch(args: RuntimeArgs, logger: &Logger) -> Result<u8> {
    let warnings = logger.clone();
    let runtime = Runtime::new(&args.root).with_vm(VmSettings {
        kernel: args.kernel,
        initramfs: args.initramfs,
        cpus: args.cpus,
        memory_mib: args.memory,
        accel: args.accel,
        boot_timeout: Duration::from_secs(args.boot_timeout),
    });
    let runtime = runtime.with_warnings(move |e| warnings.warn(&e.to_string()));
    match args.command {
        RuntimeCommand::Create(create_args) => create(&runtime, &create_args, false).await.map(|_| 0),
        RuntimeCommand::Start { id } => runtime.start(&id).await.map(|()| 0).map_err(Into::into),
        RuntimeCommand::State { id } => {
            let state = runtime.state(&id).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(0)
        }
        RuntimeCommand::Kill { all, id, signal } => {
            let signo = parse_signal(&signal).ok_or_else(|| anyhow!("unknown signal {signal:?}"))?;
            runtime.kill(&id, signo, all).await?;
            Ok(0)
        }
        RuntimeCommand::Delete { force, id } => match runtime.delete(&id, force).await {
            // runc's: forcing the delete of what is not there is no error.
            Err(RuntimeError::NotExist { .. }) if force => Ok(0),
            done => done.map(|()| 0).map_err(Into::into),
        },
        RuntimeCommand::List { format, quiet } => {
            let states = runtime.list().await?;
            let mut out = String::new();
            match (quiet, format) {
                (true, _) => states.iter().for_each(|s| out.push_str(&format!("{}\n", s.id))),
                (false, ListFormat::Table) => out = table(&states),
                (false, ListFormat::Json) => out = format!("{}\n", serde_json::to_string(&states)?),
            }
            print!("{out}");
            Ok(0)
        }
        RuntimeCommand::Run {
            create: create_args,
            detach,
        } => run(&runtime, &create_args, detach).await,
        RuntimeCommand::Exec(exec_args) => match exec(&runtime, &args.root, logger, &exec_args).await {
            Ok(code) => Ok(code),
            Err(e) => {
                logger.error(&format!("exec failed: {e:#}"));
                Ok(EXEC_FAILED)
            }
        },
        RuntimeCommand::ExecRelay => exec_relay(&runtime).await,
    }
}

/// `create`: the container created, its pid file written. `foreground`:
/// for `run` without `--detach`.
async fn create(runtime: &Runtime, args: &CreateArgs, foreground: bool) -> Result<State> {
    if args.preserve_fds > 0 {
        bail!("--preserve-fds: no descriptor but stdio can reach a process in a VM");
    }
    let _ = (args.no_pivot, args.no_new_keyring);
    let options = CreateOptions {
        bundle: args.bundle.clone(),
        console_socket: args.console_socket.clone(),
        stdin: !is_terminal(libc::STDIN_FILENO),
        foreground,
    };
    let state = runtime.create(&args.id, &options).await?;
    if let Some(path) = &args.pid_file {
        if let Err(e) = write_pid_file(path, state.pid) {
            let _ = runtime.delete(&args.id, true).await;
            return Err(e.into());
        }
    }
    Ok(state)
}

/// `run`: create and start; unless detached, wait (forwarding signals to
/// the process, and this terminal's window size to its terminal), delete,
/// and exit as the process did.
async fn run(runtime: &Runtime, args: &CreateArgs, detach: bool) -> Result<u8> {
    let id = &args.id;
    create(runtime, args, !detach).await?;
    // A terminal on this process's own: raw while the container runs.
    let terminal = !detach && container_spec(&args.bundle, id, RootPlacement::Guest)?.process.terminal;
    let _raw = match terminal && is_terminal(libc::STDIN_FILENO) {
        true => Some(RawMode::enable(libc::STDIN_FILENO)?),
        false => None,
    };
    if let Err(e) = runtime.start(id).await {
        let _ = runtime.delete(id, true).await;
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let resize = || async {
        if let Some((rows, cols)) = window_size(libc::STDOUT_FILENO) {
            let _ = runtime.resize(id, rows, cols).await;
        }
    };
    if terminal {
        resize().await;
    }
    let mut signals = Signals::new()?;
    let waited = {
        let wait = runtime.wait(id);
        tokio::pin!(wait);
        loop {
            let signo = tokio::select! {
                status = &mut wait => break status,
                signo = signals.next() => signo,
            };
            match signo {
                libc::SIGWINCH if terminal => resize().await,
                libc::SIGWINCH => {}
                // It may have ended meanwhile.
                signo => {
                    let _ = runtime.kill(id, signo, false).await;
                }
            }
        }
    };
    let deleted = runtime.delete(id, true).await;
    let status = waited?;
    deleted?;
    Ok(status.shell_code().clamp(0, 255) as u8)
}

/// `exec`: the process built from the flags (or `--process`) over the
/// bundle's, started with this command's stdio; waits for it (forwarding
/// signals, and window sizes to a terminal) and exits as it did. With
/// `--detach`, a relay that outlives this command takes the stdio over
/// (see [`exec_relay`]), and `exec` returns once the process started.
async fn exec(runtime: &Runtime, root: &std::path::Path, logger: &Logger, args: &ExecArgs) -> Result<u8> {
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
    root: &std::path::Path,
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
async fn exec_relay(runtime: &Runtime) -> Result<u8> {
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
struct Signals(Vec<(i32, Signal)>);

impl Signals {
    fn new() -> Result<Signals> {
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
    async fn next(&mut self) -> i32 {
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

/// runc's `list` table: ID PID STATUS BUNDLE CREATED OWNER, laid out as
/// Go's tabwriter lays it out for runc (columns at least 12 wide, 3 spaces
/// of padding, the last column unpadded).
fn table(states: &[State]) -> String {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(str::to_owned)];
    for s in states {
        rows.push([
            s.id.clone(),
            s.pid.to_string(),
            s.status.clone(),
            s.bundle.clone(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count() + 3).max().unwrap_or(0).max(12))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(&format!("{cell:<width$}"));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    out
}

/// Where errors and warnings go, as runc sends them: with `--log`, a log
/// line to the file (and an error's bare message to stderr); without, the
/// log line to stderr (`ERRO[0000] message` on a terminal, as logrus
/// writes it there).
#[derive(Clone)]
struct Logger {
    file: Option<PathBuf>,
    format: LogFormat,
}

impl Logger {
    fn error(&self, message: &str) {
        self.log("error", "ERRO", message);
        if self.file.is_some() {
            eprintln!("{message}");
        }
    }

    fn warn(&self, message: &str) {
        self.log("warning", "WARN", message);
    }

    fn log(&self, level: &str, short: &str, message: &str) {
        let line = self.line(level, message);
        match &self.file {
            Some(path) => {
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
                if let Err(e) = written {
                    eprintln!("vmshim runtime: cannot write the log {}: {e}", path.display());
                }
            }
            None if is_terminal(libc::STDERR_FILENO) => eprintln!("{short}[0000] {message}"),
            None => eprint!("{line}"),
        }
    }

    /// One log line, as logrus formats it.
    fn line(&self, level: &str, message: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() * 1_000_000_000)
            .unwrap_or(0);
        let time = rfc3339_nanos(now);
        let quoted = serde_json::to_string(message).unwrap_or_default();
        match self.format {
            LogFormat::Json => format!("{{\"level\":\"{level}\",\"msg\":{quoted},\"time\":\"{time}\"}}\n"),
            LogFormat::Text => format!("time=\"{time}\" level={level} msg={quoted}\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_as_runc_lays_it_out() {
        let state = |id: &str, pid, status: &str| State {
            oci_version: "1.0.2".into(),
            id: id.into(),
            pid,
            status: status.into(),
            bundle: "/srv/bundles/web".into(),
            rootfs: "/srv/bundles/web/rootfs".into(),
            created: "2023-11-14T22:13:20.5Z".into(),
            annotations: Default::default(),
            owner: String::new(),
        };
        let text = table(&[state("web", 4242, "running"), state("a-much-longer-id", 0, "stopped")]);
        assert_eq!(
            text,
            "ID                 PID         STATUS      BUNDLE             CREATED                  OWNER\n\
             web                4242        running     /srv/bundles/web   2023-11-14T22:13:20.5Z   \n\
             a-much-longer-id   0           stopped     /srv/bundles/web   2023-11-14T22:13:20.5Z   \n"
        );
    }

    #[test]
    fn log_lines_as_logrus_writes_them() {
        let json = Logger {
            file: None,
            format: LogFormat::Json,
        }
        .line("error", "container \"x\" does not exist");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (v["level"].as_str(), v["msg"].as_str()),
            (Some("error"), Some("container \"x\" does not exist"))
        );
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(json.starts_with("{\"level\":\"error\",\"msg\":"), "{json}");
        let text = Logger {
            file: None,
            format: LogFormat::Text,
        }
        .line("error", "container does not exist");
        assert!(
            text.starts_with("time=\"") && text.ends_with(" level=error msg=\"container does not exist\"\n"),
            "{text}"
        );
    }
}

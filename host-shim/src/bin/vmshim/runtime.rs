//! `vmshim runtime`: runc's command line over `host_shim::runtime`, each
//! container a micro-VM. Flags and messages are runc's; errors exit 1
//! (`exec`'s 255) and go where runc's go (see [`Logger`]).

mod events;
mod exec;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use host_shim::accel::Accel;
use host_shim::image::{container_spec, RootPlacement};
use host_shim::runtime::{
    parse_signal, rfc3339_nanos, write_pid_file, CreateOptions, PodDir, Runtime, RuntimeError, State, VmSettings,
    DEFAULT_ROOT,
};
use host_shim::terminal::{is_terminal, window_size, RawMode};

use events::{events, EventsArgs};
use exec::{exec, exec_relay, ExecArgs, Signals, EXEC_FAILED};

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
    /// Memory of each container's VM, in MiB (`update --memory` is a
    /// container's cgroup limit, as runc's).
    #[arg(long = "vm-memory", global = true, default_value_t = 256, value_parser = clap::value_parser!(u32).range(64..=65536))]
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
    /// Freeze every process of a running container.
    Pause { id: String },
    /// Change a container's cgroup limits.
    Update(UpdateArgs),
    /// Thaw a paused container.
    Resume { id: String },
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
    /// Print a container's resource figures as runc's JSON events: with
    /// --stats once, else every --interval, with an oom event for each
    /// OOM kill, until it stops.
    Events(EventsArgs),
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
    /// Also share host directory DIR with the container's VM, with what is
    /// mounted below it, then and later (after the spec's bind mounts: the
    /// guest sees it at /run/vminitd/shares/N, N their count). A pod's
    /// sandbox shares the pod's directory so.
    #[arg(long = "share", value_name = "DIR")]
    share: Vec<PathBuf>,
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
        RuntimeCommand::Update(args) => {
            let id = args.id.clone();
            runtime.update(&id, args.resources()?).await?;
            Ok(0)
        }
        RuntimeCommand::Pause { id } => {
            runtime.set_paused(&id, true).await?;
            Ok(0)
        }
        RuntimeCommand::Resume { id } => {
            runtime.set_paused(&id, false).await?;
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
        RuntimeCommand::Events(events_args) => events(&runtime, &events_args).await,
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
        shares: args.share.iter().map(|dir| PodDir::at(dir).share()).collect(),
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

/// `update`'s flags, as runc's.
#[derive(Args)]
struct UpdateArgs {
    /// An OCI `linux.resources` JSON file (`-` for stdin); the flags below
    /// change it further.
    #[arg(short, long, value_name = "FILE")]
    resources: Option<PathBuf>,
    /// Memory limit in bytes (a k, m, g or t suffix allowed; -1: none).
    #[arg(
        long = "memory",
        id = "memory_limit",
        value_name = "BYTES",
        allow_hyphen_values = true
    )]
    memory: Option<String>,
    /// Memory soft limit (memory.low).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Memory plus swap (-1: unlimited swap).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// CPU shares (relative weight, 2 to 262144).
    #[arg(long, value_name = "N")]
    cpu_share: Option<u64>,
    /// CPU CFS quota in microseconds per period (-1: none).
    #[arg(long, value_name = "US", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long, value_name = "US")]
    cpu_period: Option<u64>,
    /// CPUs allowed (cpuset.cpus), e.g. 0-1.
    #[arg(long, value_name = "LIST")]
    cpuset_cpus: Option<String>,
    /// Memory nodes allowed (cpuset.mems).
    #[arg(long, value_name = "LIST")]
    cpuset_mems: Option<String>,
    /// Maximum number of processes (0 or less: no limit).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Block IO weight, 10 to 1000.
    #[arg(long, value_name = "N")]
    blkio_weight: Option<u16>,
    id: String,
}

impl UpdateArgs {
    /// The limits to apply: `--resources`, then the flags.
    fn resources(&self) -> Result<agent_proto::Resources> {
        let mut r = match &self.resources {
            Some(path) => {
                let json = if path.as_os_str() == "-" {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                    buf
                } else {
                    std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?
                };
                host_shim::image::resources_from_json(&json, path)?
            }
            None => agent_proto::Resources::default(),
        };
        let bytes = |flag: &str, value: &Option<String>| value.as_deref().map(|v| parse_bytes(flag, v)).transpose();
        if let Some(v) = bytes("--memory", &self.memory)? {
            r.memory.get_or_insert_with(Default::default).limit = Some(v);
        }
        if let Some(v) = bytes("--memory-reservation", &self.memory_reservation)? {
            r.memory.get_or_insert_with(Default::default).reservation = Some(v);
        }
        if let Some(v) = bytes("--memory-swap", &self.memory_swap)? {
            r.memory.get_or_insert_with(Default::default).swap = Some(v);
        }
        let cpu_flags = (self.cpu_share, self.cpu_quota, self.cpu_period);
        if cpu_flags != (None, None, None) || self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            let cpu = r.cpu.get_or_insert_with(Default::default);
            cpu.shares = self.cpu_share.or(cpu.shares);
            cpu.quota = self.cpu_quota.or(cpu.quota);
            cpu.period = self.cpu_period.or(cpu.period);
            cpu.cpus = self.cpuset_cpus.clone().or(cpu.cpus.take());
            cpu.mems = self.cpuset_mems.clone().or(cpu.mems.take());
        }
        if let Some(limit) = self.pids_limit {
            r.pids_limit = Some(limit);
        }
        if let Some(weight) = self.blkio_weight {
            r.block_io.get_or_insert_with(Default::default).weight = Some(weight);
        }
        Ok(r)
    }
}

/// A size as runc's flags take it: bytes, or with a k, m, g or t suffix
/// (powers of 1024, an optional trailing b); -1 is no limit.
fn parse_bytes(flag: &str, value: &str) -> Result<i64> {
    let lower = value.trim().to_ascii_lowercase();
    if lower == "-1" {
        return Ok(-1);
    }
    let digits = lower.trim_end_matches('b');
    let (number, shift) = match digits.chars().last() {
        Some('k') => (&digits[..digits.len() - 1], 10),
        Some('m') => (&digits[..digits.len() - 1], 20),
        Some('g') => (&digits[..digits.len() - 1], 30),
        Some('t') => (&digits[..digits.len() - 1], 40),
        _ => (digits, 0),
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| anyhow!("{flag}: {value:?} is not a size (bytes, or with k, m, g or t)"))
}

#[cfg(test)]
mod update_tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("--memory", "1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("--memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("--memory", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("--memory", "512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("--memory", "-1").unwrap(), -1);
        let e = parse_bytes("--memory", "lots").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--memory: \"lots\" is not a size (bytes, or with k, m, g or t)"
        );
        assert!(parse_bytes("--memory", "-5m").is_err());
    }
}

//! `vmshim`: the command line of vminitd's host side. Flags are parsed here;
//! the work is done by the `host_shim` library.
//!
//! Run under the name [`RUNTIME_NAME`] (`make install` installs that link),
//! it is `vmshim runtime`: runc's command line, which podman's `--runtime`
//! and docker's `--add-runtime` need as a program of its own.

mod instance;
mod memory;
mod network;
mod process;
mod profile;
mod run;
mod runtime;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent_proto::{AgentKey, Endpoint, ErrorCode, ExecFailure};
use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use host_shim::exec::spawn;
use host_shim::terminal::{is_terminal, RawMode};
use host_shim::{AgentAddr, Client, ClientError};
use process::{drive, host_stdio, Ended, ProcessArgs};

/// Exit status for vmshim's own failures (as `docker run` does).
const EXIT_SHIM_ERROR: u8 = 125;
/// Exit status when the program could not be started.
const EXIT_CANNOT_EXEC: u8 = 126;
/// Exit status when the program was not found.
const EXIT_NOT_FOUND: u8 = 127;

/// The name under which vmshim is `vmshim runtime`, an OCI runtime with
/// runc's command line.
const RUNTIME_NAME: &str = "vminitd-runtime";

#[derive(Parser)]
#[command(name = "vmshim", version, about = "Boot vminitd micro-VMs and run processes in them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a micro-VM, run a command in it with stdio relayed, shut it down;
    /// exits with the command's status (128+N when killed by signal N).
    Run(Box<run::RunArgs>),
    /// Run a command in a running instance (`run -d`), or through the agent
    /// at --connect, relaying its stdio; exits with its status (128+N when
    /// killed by signal N).
    Exec(ExecArgs),
    /// List the running instances (`run -d`).
    Ps(instance::PsArgs),
    /// Stop an instance: shut its VM down and remove its state.
    Stop(instance::StopArgs),
    /// The daemon that holds an instance's VM (started by `run -d`).
    #[command(hide = true)]
    Instance(instance::InstanceArgs),
    /// Print the agent's version and boot timeline.
    Ping(ConnectArgs),
    /// Show running VMs' memory: the guest's (used, cache, free), the
    /// balloon, and what each costs the host (RSS, PSS, guest RAM held);
    /// with --connect, an agent's own figures as JSON.
    Stats(memory::StatsArgs),
    /// Resize a running instance's memory through its balloon.
    Update(memory::UpdateArgs),
    /// Ask the agent to stop every process and power off (or exit).
    Shutdown(ConnectArgs),
    /// Print a boot profile that `run --profile=FILE` wrote: the phase
    /// table and the kernel's slow initcalls; with a second trace, each
    /// phase's time in both and which phase grew.
    Profile(profile::ProfileArgs),
    /// Create, list and remove the networks VMs join with `run --network`.
    Network(network::NetworkArgs),
    /// An OCI runtime with runc's command line: each container in a
    /// micro-VM of its own.
    Runtime(Box<runtime::RuntimeArgs>),
}

#[derive(Args)]
struct ConnectArgs {
    /// Where the agent listens: unix:PATH, vsock:CID:PORT or hvsock:PATH:PORT.
    #[arg(long, value_name = "URL")]
    connect: Endpoint,
    /// A file holding the agent key (64 hex digits) that the agent asks
    /// for: the key its host handed it at boot.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

impl ConnectArgs {
    fn addr(&self) -> Result<AgentAddr> {
        agent_addr(&self.connect, self.key_file.as_deref())
    }
}

/// An endpoint and the key read from `key_file`.
fn agent_addr(endpoint: &Endpoint, key_file: Option<&std::path::Path>) -> Result<AgentAddr> {
    let key = match key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the agent key file {}", path.display()))?;
            let key = AgentKey::from_hex(&text).with_context(|| format!("the agent key file {}", path.display()))?;
            Some(key)
        }
        None => None,
    };
    Ok(AgentAddr::new(endpoint.clone(), key))
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["name", "connect"])))]
struct ExecArgs {
    /// The instance to run it in (`vmshim run -d --name NAME`).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Where the agent listens: unix:PATH, vsock:CID:PORT or hvsock:PATH:PORT.
    #[arg(long, value_name = "URL")]
    connect: Option<Endpoint>,
    /// With --connect: a file holding the agent key the agent asks for.
    #[arg(long, value_name = "FILE", requires = "connect")]
    key_file: Option<PathBuf>,
    #[command(flatten)]
    process: ProcessArgs,
}

/// vmshim's arguments as the CLI parses them: under [`RUNTIME_NAME`],
/// `runtime` comes first, so that `vminitd-runtime create ...` is `vmshim
/// runtime create ...`.
fn cli_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let invoked_as = args.first().and_then(|a| Path::new(a).file_name()).map(OsString::from);
    if invoked_as.as_deref() == Some(RUNTIME_NAME.as_ref()) {
        args.insert(1, "runtime".into());
    }
    args
}

/// `vmshim runtime --version` (`-v`), as runc answers it: its version and
/// the spec's, one `key: value` a line after the first (docker and podman
/// show it in their `info`).
fn runtime_version(args: &[OsString]) -> Option<String> {
    match args {
        [_, runtime, flag] if runtime == "runtime" && (flag == "--version" || flag == "-v") => Some(format!(
            "{RUNTIME_NAME} version {}\nspec: {}\n",
            env!("CARGO_PKG_VERSION"),
            host_shim::runtime::OCI_VERSION
        )),
        _ => None,
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let args = cli_args(std::env::args_os());
    if let Some(version) = runtime_version(&args) {
        print!("{version}");
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmshim: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SHIM_ERROR);
        }
    };
    let result = runtime.block_on(dispatch(cli, started));
    // A pending read of the host's stdin must not hold the process open.
    runtime.shutdown_timeout(Duration::from_millis(10));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vmshim: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// The exit status for an error: 127 when the agent says the program was
/// not found, 126 when it could not be started, 125 for everything else.
fn exit_code_for(e: &anyhow::Error) -> u8 {
    let agent_error = e
        .chain()
        .find_map(|c| c.downcast_ref::<ClientError>())
        .and_then(ClientError::agent_error);
    match agent_error {
        Some(err) if err.code == ErrorCode::ExecFailed => match err.exec_failure {
            Some(ExecFailure::ProgramNotFound) => EXIT_NOT_FOUND,
            _ => EXIT_CANNOT_EXEC,
        },
        _ => EXIT_SHIM_ERROR,
    }
}

async fn dispatch(cli: Cli, started: Instant) -> Result<u8> {
    match cli.command {
        Command::Run(args) => run::run(*args, started).await,
        Command::Exec(args) => exec(args).await,
        Command::Ping(args) => ping(args).await,
        Command::Stats(args) => memory::stats(args).await,
        Command::Update(args) => memory::update(args).await,
        Command::Shutdown(args) => {
            Client::connect(args.addr()?).await?.shutdown().await?;
            Ok(0)
        }
        Command::Network(args) => network::run(args).await,
        Command::Profile(args) => profile::run(args),
        Command::Ps(args) => instance::ps(args),
        Command::Stop(args) => instance::stop(args),
        Command::Instance(args) => instance::serve(args).await,
        Command::Runtime(args) => Ok(runtime::main(*args).await),
    }
}

async fn ping(args: ConnectArgs) -> Result<u8> {
    let client = Client::connect(args.addr()?).await?;
    let hello = client.hello();
    let (_, rtt) = client.hello_timing();
    println!(
        "{} (protocol {}, mode {}) at {}",
        hello.agent, hello.version, hello.mode, args.connect
    );
    println!("round trip: {:.3} ms", rtt.as_secs_f64() * 1e3);
    println!("boot timeline (guest CLOCK_BOOTTIME):");
    let entered = hello.boot.get("entered").unwrap_or(0);
    for phase in &hello.boot.phases {
        println!(
            "  {:<12} {:>12.3} ms   +{:.3} ms since entered",
            phase.name,
            phase.boottime_ns as f64 / 1e6,
            phase.boottime_ns.saturating_sub(entered) as f64 / 1e6
        );
    }
    Ok(0)
}

async fn exec(args: ExecArgs) -> Result<u8> {
    let mut spec = args.process.spec()?;
    let tty = args.process.tty;
    let endpoint = match (&args.name, &args.connect) {
        (_, Some(url)) => agent_addr(url, args.key_file.as_deref())?,
        (Some(name), None) => {
            // The instance's processes run in its root filesystem, as `run`'s.
            spec.root = Some(agent_proto::GUEST_ROOTFS.to_owned());
            instance::endpoint(name)?
        }
        (None, None) => unreachable!("clap requires a NAME or --connect"),
    };
    let client = Client::connect(&endpoint).await?;
    let _raw = raw_terminal(tty)?;
    let running = spawn(&client, spec, host_stdio(true)).await?;
    match drive(&client, running, tty, None).await? {
        Ended::Exited(status) => Ok(status.shell_code().clamp(0, 255) as u8),
        Ended::Interrupted(signo) => Ok((128 + signo) as u8),
    }
}

/// Raw mode for the host terminal with `-t`, restored when dropped.
fn raw_terminal(tty: bool) -> Result<Option<RawMode>> {
    if tty && is_terminal(libc::STDIN_FILENO) {
        Ok(Some(
            RawMode::enable(libc::STDIN_FILENO).context("cannot put the terminal in raw mode")?,
        ))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::ErrorBody;

    fn agent(error: ErrorBody) -> anyhow::Error {
        anyhow::Error::new(ClientError::Agent { op: "start", error }).context("running the command")
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn under_the_runtimes_name_vmshim_is_vmshim_runtime() {
        let args = cli_args(os(&["/usr/local/bin/vminitd-runtime", "--root", "/r", "state", "c1"]));
        assert_eq!(
            args,
            os(&[
                "/usr/local/bin/vminitd-runtime",
                "runtime",
                "--root",
                "/r",
                "state",
                "c1"
            ])
        );
        let cli = Cli::try_parse_from(args).unwrap();
        assert!(matches!(cli.command, Command::Runtime(_)));
        // Under its own name (or any other), the arguments are as given.
        let args = os(&["/usr/local/bin/vmshim", "runtime", "list"]);
        assert_eq!(cli_args(args.clone()), args);
        assert_eq!(cli_args(os(&["vminitd-runtime"])), os(&["vminitd-runtime", "runtime"]));
    }

    #[test]
    fn the_runtime_prints_its_version_as_runc_does() {
        let version = runtime_version(&cli_args(os(&["vminitd-runtime", "--version"]))).unwrap();
        let mut lines = version.lines();
        assert_eq!(
            lines.next(),
            Some(format!("vminitd-runtime version {}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert_eq!(lines.next(), Some("spec: 1.0.2"));
        assert!(runtime_version(&os(&["vmshim", "runtime", "-v"])).is_some());
        assert!(runtime_version(&os(&["vmshim", "--version"])).is_none());
        assert!(runtime_version(&os(&["vmshim", "runtime", "state", "--version"])).is_none());
    }

    #[test]
    fn exit_codes_come_from_what_the_agent_says_failed() {
        // The message says "not found" either way: the code and the
        // exec failure decide, not the text.
        let failed = ErrorBody::new(ErrorCode::ExecFailed, "program \"x\" not found in PATH=/bin");
        let not_found = failed.clone().with_exec_failure(ExecFailure::ProgramNotFound);
        assert_eq!(exit_code_for(&agent(not_found)), EXIT_NOT_FOUND);
        assert_eq!(exit_code_for(&agent(failed)), EXIT_CANNOT_EXEC);
        let other = ErrorBody::new(ErrorCode::NotFound, "no process 3: not found");
        assert_eq!(exit_code_for(&agent(other)), EXIT_SHIM_ERROR);
        assert_eq!(exit_code_for(&anyhow::anyhow!("not found")), EXIT_SHIM_ERROR);
    }
}

//! `vmshim`: the command line of vminitd's host side.

use std::process::ExitCode;
use std::time::Duration;

use agent_proto::{Endpoint, ErrorCode, ProcessSpec, User, WindowSize};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use host_shim::exec::{spawn, ExecIo};
use host_shim::terminal::{is_terminal, window_size, RawMode};
use host_shim::{Client, ClientError};
use tokio::signal::unix::{signal, SignalKind};

/// Exit status for vmshim's own failures (as `docker run` does).
const EXIT_SHIM_ERROR: u8 = 125;
/// Exit status when the program could not be started.
const EXIT_CANNOT_EXEC: u8 = 126;
/// Exit status when the program was not found.
const EXIT_NOT_FOUND: u8 = 127;

#[derive(Parser)]
#[command(name = "vmshim", version, about = "Boot vminitd micro-VMs and run processes in them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command through a running agent, relaying its stdio; exits with
    /// its status (128+N when killed by signal N).
    Exec(ExecArgs),
    /// Print the agent's version and boot timeline.
    Ping(ConnectArgs),
    /// Print the guest's and the agent's resource figures as JSON.
    Stats(ConnectArgs),
    /// Ask the agent to stop every process and power off (or exit).
    Shutdown(ConnectArgs),
}

#[derive(Args)]
struct ConnectArgs {
    /// Where the agent listens: unix:PATH, vsock:CID:PORT or hvsock:PATH:PORT.
    #[arg(long, value_name = "URL")]
    connect: Endpoint,
}

#[derive(Args)]
struct ExecArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Run on a terminal (the host terminal goes to raw mode).
    #[arg(short = 't', long)]
    tty: bool,
    /// Environment entry KEY=VALUE, or KEY to pass the host's value.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory in the guest.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: UID or UID:GID (numeric).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    user: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let result = runtime.block_on(run(cli));
    // Pending reads of the host's stdin must not hold the process open.
    runtime.shutdown_timeout(Duration::from_millis(10));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vmshim: {e:#}");
            let code = match e.downcast_ref::<ClientError>().and_then(ClientError::agent_error) {
                Some(err) if err.code == ErrorCode::ExecFailed && err.message.contains("not found") => EXIT_NOT_FOUND,
                Some(err) if err.code == ErrorCode::ExecFailed => EXIT_CANNOT_EXEC,
                _ => EXIT_SHIM_ERROR,
            };
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Exec(args) => exec(args).await,
        Command::Ping(args) => ping(args).await,
        Command::Stats(args) => {
            let client = Client::connect(&args.connect).await?;
            println!("{}", serde_json::to_string_pretty(&client.stats().await?)?);
            Ok(0)
        }
        Command::Shutdown(args) => {
            Client::connect(&args.connect).await?.shutdown().await?;
            Ok(0)
        }
    }
}

async fn ping(args: ConnectArgs) -> Result<u8> {
    let client = Client::connect(&args.connect).await?;
    let hello = client.hello();
    let (_, rtt) = client.hello_timing();
    println!(
        "{} (protocol {}, mode {}) at {}",
        hello.agent, hello.version, hello.mode, args.connect
    );
    println!("round trip: {:.3} ms", rtt.as_secs_f64() * 1e3);
    println!("boot timeline (guest CLOCK_BOOTTIME):");
    let entered = hello.boot.get("entered");
    for phase in &hello.boot.phases {
        let since = entered.map(|e| phase.boottime_ns.saturating_sub(e)).unwrap_or(0);
        println!(
            "  {:<12} {:>12.3} ms   +{:.3} ms",
            phase.name,
            phase.boottime_ns as f64 / 1e6,
            since as f64 / 1e6
        );
    }
    Ok(0)
}

async fn exec(args: ExecArgs) -> Result<u8> {
    let spec = ProcessSpec {
        args: args.command,
        env: resolve_env(&args.env)?,
        cwd: args.workdir,
        user: args.user.as_deref().map(parse_user).transpose()?,
        terminal: args.tty,
        size: if args.tty {
            window_size(libc::STDOUT_FILENO).map(|(rows, cols)| WindowSize { rows, cols })
        } else {
            None
        },
    };
    let client = Client::connect(&args.connect.connect).await?;
    let io = ExecIo {
        stdin: Some(Box::new(tokio::io::stdin())),
        stdout: Some(Box::new(tokio::io::stdout())),
        stderr: Some(Box::new(tokio::io::stderr())),
    };
    let raw = if args.tty && is_terminal(libc::STDIN_FILENO) {
        Some(RawMode::enable(libc::STDIN_FILENO).context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let running = spawn(&client, spec, io).await?;
    let process = running.process;
    let relay = async {
        let mut winch = signal(SignalKind::window_change())?;
        let mut forwarded = Vec::new();
        for kind in [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::quit(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
        ] {
            forwarded.push((kind.as_raw_value(), signal(kind)?));
        }
        loop {
            let mut next = Box::pin(futures_any(&mut forwarded));
            tokio::select! {
                _ = winch.recv(), if args.tty => {
                    if let Some((rows, cols)) = window_size(libc::STDOUT_FILENO) {
                        let _ = client.resize(process, rows, cols).await;
                    }
                }
                signo = &mut next => {
                    drop(next);
                    let _ = client.signal(process, signo).await;
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    let status = tokio::select! {
        status = running.wait(&client) => status?,
        relayed = relay => { relayed?; bail!("signal relay ended") }
    };
    drop(raw);
    Ok(status.shell_code().clamp(0, 255) as u8)
}

/// Resolves when any of the signals arrives, with its number.
async fn futures_any(signals: &mut [(i32, tokio::signal::unix::Signal)]) -> i32 {
    std::future::poll_fn(|cx| {
        for (signo, sig) in signals.iter_mut() {
            if sig.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*signo);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// `-e K=V` as given; `-e K` takes K from vmshim's own environment (and is
/// dropped when it has none there).
fn resolve_env(entries: &[String]) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for entry in entries {
        if entry.is_empty() || entry.starts_with('=') {
            bail!("bad environment entry {entry:?}: expected KEY=VALUE or KEY");
        }
        if entry.contains('=') {
            env.push(entry.clone());
        } else if let Ok(value) = std::env::var(entry) {
            env.push(format!("{entry}={value}"));
        }
    }
    Ok(env)
}

/// `UID` or `UID:GID`, numeric.
fn parse_user(s: &str) -> Result<User> {
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: u32 = uid
        .parse()
        .with_context(|| format!("bad user {s:?}: expected UID or UID:GID, numeric"))?;
    let gid: u32 = match gid {
        Some(g) => g
            .parse()
            .with_context(|| format!("bad group in {s:?}: expected a number"))?,
        None => uid,
    };
    Ok(User {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

//! `vmshim run -d`, `ps`, `stop` and the hidden `instance serve`: VMs that
//! outlive the command, over `host_shim::instance`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use host_shim::instance::{Instance, InstanceSpec, Instances, MainProcess};
use host_shim::vm::net::PortMapping;
use host_shim::vm::VmConfig;

/// `run -d`'s network flags: --no-network, -p, --network, --ip.
pub type NetworkFlags = (bool, Vec<PortMapping>, Option<String>, Option<Ipv4Addr>);

/// `run -d`: starts the daemon of instance `name`, whose main process is
/// `main` (the command given, or the image's or the bundle's; none: the VM
/// runs until stopped), waits until the VM runs, and prints the name.
pub async fn run_detached(
    cfg: VmConfig,
    name: String,
    (no_network, publish, network, ip): NetworkFlags,
    main: Option<MainProcess>,
) -> Result<u8> {
    let mut spec = InstanceSpec::from_config(&cfg);
    spec.no_network = no_network;
    spec.publish = publish.iter().map(ToString::to_string).collect();
    spec.network = network;
    spec.ip = ip;
    spec.process = main;
    let instances = Instances::from_env()?;
    // Blocking: it waits for the daemon, up to the boot timeout.
    tokio::task::block_in_place(|| instances.start(&name, &spec))?;
    println!("{name}");
    Ok(0)
}

/// Where instance `name`'s agent listens, for `exec NAME`.
pub fn endpoint(name: &str) -> Result<host_shim::AgentAddr> {
    Ok(Instances::from_env()?.endpoint(name)?)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Args)]
pub struct PsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// `vmshim ps`: the live instances; the state of dead ones is swept.
pub fn ps(args: PsArgs) -> Result<u8> {
    let instances = Instances::from_env()?.list()?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&instances)?),
        Format::Table => print!("{}", table(&instances, now())),
    }
    Ok(0)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// NAME STATUS CREATED COMMAND, columns as wide as their widest cell.
fn table(instances: &[Instance], now: u64) -> String {
    let mut rows = vec![["NAME".to_owned(), "STATUS".into(), "CREATED".into(), "COMMAND".into()]];
    for i in instances {
        let command = if i.command.is_empty() {
            "-".to_owned()
        } else {
            i.command.join(" ")
        };
        rows.push([
            i.name.clone(),
            i.status.to_string(),
            ago(now.saturating_sub(i.created)),
            command,
        ]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for c in 0..3 {
            out.push_str(&format!("{:<w$}   ", r[c], w = widths[c]));
        }
        out.push_str(&r[3]);
        out.push('\n');
    }
    out
}

/// "5 seconds ago", "3 minutes ago", ...
fn ago(secs: u64) -> String {
    let (n, unit) = match secs {
        0..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86399 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[derive(Args)]
pub struct StopArgs {
    /// The instance.
    name: String,
    /// Seconds to wait for an orderly shutdown before killing the VM.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
}

/// `vmshim stop NAME`.
pub fn stop(args: StopArgs) -> Result<u8> {
    let instances = Instances::from_env()?;
    instances.get(&args.name)?;
    instances.stop(&args.name, Duration::from_secs(args.time))?;
    Ok(0)
}

#[derive(Args)]
pub struct InstanceArgs {
    #[command(subcommand)]
    command: InstanceCommand,
}

#[derive(Subcommand)]
enum InstanceCommand {
    /// Hold instance NAME's VM until stopped (run by `run -d`, detached).
    Serve {
        name: String,
        /// The state directory the instance lives in.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
}

/// `vmshim instance serve NAME`: the daemon.
pub async fn serve(args: InstanceArgs) -> Result<u8> {
    match args.command {
        InstanceCommand::Serve { name, state_dir } => {
            if !state_dir.is_absolute() {
                bail!("--state-dir must be absolute");
            }
            // A container's daemon exits with its process's status.
            Instances::at(state_dir)
                .serve(&name)
                .await
                .with_context(|| format!("instance {name:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_shim::instance::Status;

    #[test]
    fn a_table_of_instances() {
        let i = |name: &str, created, command: &[&str]| Instance {
            name: name.to_owned(),
            pid: 1,
            started: None,
            status: Status::Running,
            endpoint: None,
            agent_key: None,
            created,
            command: command.iter().map(|s| s.to_string()).collect(),
            vm_pids: vec![],
            qmp: None,
            exit: None,
            exit_stats: None,
            error: None,
        };
        let text = table(&[i("a", 995, &[]), i("web-1", 0, &["sh", "-c", "sleep 9"])], 1000);
        assert_eq!(
            text,
            "NAME    STATUS    CREATED          COMMAND\n\
             a       running   5 seconds ago    -\n\
             web-1   running   16 minutes ago   sh -c sleep 9\n"
        );
    }
}

//! `vmshim network`: create, list and remove the virtual networks VMs join
//! with `vmshim run --network NAME`; `serve` is the switch daemon itself.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use host_shim::network::{self, Networks};

#[derive(Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Create a network and start its switch; prints its name and subnet.
    Create {
        /// Letters, digits, '_', '.', '-'; starts with a letter or digit.
        name: String,
        /// An IPv4 subnet, /8 to /29 [default: the first free 10.89.N.0/24].
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
    },
    /// List networks: name, subnet, whether the switch runs, how many VMs.
    #[command(alias = "list")]
    Ls,
    /// Stop a network's switch and delete the network (refused while VMs
    /// are on it).
    #[command(alias = "remove")]
    Rm { name: String },
    /// Run the switch of a network (started by vmshim itself, detached).
    #[command(hide = true)]
    Serve {
        name: String,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

pub async fn run(args: NetworkArgs) -> Result<u8> {
    match args.command {
        NetworkCommand::Create { name, subnet } => {
            let created = network::create(&name, subnet.as_deref())?;
            println!("{} {}", created.name, created.subnet);
        }
        NetworkCommand::Ls => {
            let rows: Vec<[String; 4]> = network::list()?
                .into_iter()
                .map(|n| {
                    let switch = if n.switch_running { "running" } else { "stopped" };
                    [n.name, n.subnet.to_string(), switch.to_owned(), n.members.to_string()]
                })
                .collect();
            print!("{}", table(["NAME", "SUBNET", "SWITCH", "MEMBERS"], &rows));
        }
        NetworkCommand::Rm { name } => {
            network::remove(&name)?;
            println!("{name}");
        }
        NetworkCommand::Serve { name, state_dir } => {
            let networks = match state_dir {
                Some(dir) => Networks::at(dir),
                None => Networks::from_env()?,
            };
            networks.serve(&name).await?;
        }
    }
    Ok(0)
}

/// Left-aligned columns, three spaces apart.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(padded.join("   ").trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_table() {
        let rows = [
            [
                "lab".to_owned(),
                "10.89.0.0/24".to_owned(),
                "running".to_owned(),
                "2".to_owned(),
            ],
            [
                "a-much-longer-name".to_owned(),
                "192.168.0.0/16".to_owned(),
                "stopped".to_owned(),
                "0".to_owned(),
            ],
        ];
        assert_eq!(
            table(["NAME", "SUBNET", "SWITCH", "MEMBERS"], &rows),
            "NAME                 SUBNET           SWITCH    MEMBERS\n\
             lab                  10.89.0.0/24     running   2\n\
             a-much-longer-name   192.168.0.0/16   stopped   0\n"
        );
    }
}

//! `vmshim network`: create, list and remove the virtual networks VMs join
//! with `vmshim run --network NAME`; `serve` is the switch daemon itself.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use host_shim::network::{self, Driver, NetworkInfo, Networks};

#[derive(Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Subcommand)]
enum NetworkCommand {
    /// Create a network: start its switch, or make its bridge; prints its
    /// name and subnet.
    Create {
        /// Letters, digits, '_', '.', '-'; starts with a letter or digit.
        name: String,
        /// An IPv4 subnet, /8 to /29 [default: the first free 10.89.N.0/24].
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// How the network carries frames.
        #[arg(long, value_enum, default_value_t = DriverArg::Switch)]
        driver: DriverArg,
    },
    /// List networks: name, driver, subnet, whether the switch runs (or the
    /// bridge device), how many VMs.
    #[command(alias = "list")]
    Ls,
    /// Stop a network's switch (or delete its bridge) and delete the
    /// network (refused while VMs are on it).
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

#[derive(Clone, Copy, ValueEnum)]
enum DriverArg {
    /// A userspace switch on a Unix socket; no root needed.
    Switch,
    /// A Linux bridge holding the subnet's .1, so the host reaches the VMs,
    /// and a tap device per VM; needs root (CAP_NET_ADMIN).
    Bridge,
}

impl From<DriverArg> for Driver {
    fn from(arg: DriverArg) -> Driver {
        match arg {
            DriverArg::Switch => Driver::Switch,
            DriverArg::Bridge => Driver::Bridge,
        }
    }
}

pub async fn run(args: NetworkArgs) -> Result<u8> {
    match args.command {
        NetworkCommand::Create { name, subnet, driver } => {
            // Blocking: it may run `ip` and wait on a starting switch.
            let created = tokio::task::block_in_place(|| network::create(&name, subnet.as_deref(), driver.into()))?;
            println!("{} {}", created.name, created.subnet);
        }
        NetworkCommand::Ls => {
            let rows: Vec<[String; 5]> = network::list()?.into_iter().map(row).collect();
            print!("{}", table(["NAME", "DRIVER", "SUBNET", "SWITCH", "MEMBERS"], &rows));
        }
        NetworkCommand::Rm { name } => {
            tokio::task::block_in_place(|| network::remove(&name))?;
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

/// A line of `network ls`: the SWITCH of a bridge network is its bridge.
fn row(n: NetworkInfo) -> [String; 5] {
    let switch = match (&n.bridge, n.switch_running) {
        (Some(bridge), true) => bridge.clone(),
        (Some(bridge), false) => format!("{bridge} (absent)"),
        (None, true) => "running".to_owned(),
        (None, false) => "stopped".to_owned(),
    };
    [
        n.name,
        n.driver.to_string(),
        n.subnet.to_string(),
        switch,
        n.members.to_string(),
    ]
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
    fn rows_name_the_bridge() {
        let info = |driver, bridge: Option<&str>, running| NetworkInfo {
            name: "lab".into(),
            subnet: "10.89.0.0/24".parse().unwrap(),
            driver,
            bridge: bridge.map(str::to_owned),
            switch_running: running,
            members: 1,
        };
        assert_eq!(
            row(info(Driver::Bridge, Some("vmbr-lab"), true)),
            ["lab", "bridge", "10.89.0.0/24", "vmbr-lab", "1"].map(str::to_owned)
        );
        assert_eq!(
            row(info(Driver::Bridge, Some("vmbr-lab"), false))[3],
            "vmbr-lab (absent)"
        );
        assert_eq!(
            row(info(Driver::Switch, None, false))[..4],
            ["lab", "switch", "10.89.0.0/24", "stopped"]
        );
    }

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

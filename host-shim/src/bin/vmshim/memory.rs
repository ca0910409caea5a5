//! `vmshim stats` and `vmshim update`: a running VM's memory, from the
//! guest, the balloon and the host, and its size changed through the
//! balloon.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use host_shim::instance::Instances;
use host_shim::vm::memory::VmMemory;
use host_shim::Client;

use crate::ConnectArgs;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table, one VM a row.
    Table,
    /// One JSON object a line, one VM each: `{"name":..,"memory":{..}}`.
    Json,
}

#[derive(Args)]
pub struct StatsArgs {
    /// The instances (`run -d`) to show [default: every running one].
    #[arg(value_name = "NAME", conflicts_with = "connect")]
    names: Vec<String>,
    /// Keep refreshing, every --interval, as `docker stats` does (until
    /// interrupted).
    #[arg(long, conflicts_with = "connect")]
    watch: bool,
    /// How often --watch refreshes, in seconds.
    #[arg(long, default_value_t = 1.0, requires = "watch")]
    interval: f64,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", conflicts_with = "connect")]
    format: Format,
    /// The agent at this endpoint instead of instances: its own figures
    /// (guest and agent) as JSON, once.
    #[arg(long, value_name = "URL")]
    connect: Option<agent_proto::Endpoint>,
    /// With --connect: a file holding the agent key the agent asks for.
    #[arg(long, value_name = "FILE", requires = "connect")]
    key_file: Option<std::path::PathBuf>,
}

/// One VM's figures, as `--format json` prints them.
#[derive(serde::Serialize)]
struct Line<'a> {
    name: &'a str,
    memory: &'a VmMemory,
}

/// `vmshim stats`.
pub async fn stats(args: StatsArgs) -> Result<u8> {
    if let Some(connect) = args.connect {
        let addr = ConnectArgs {
            connect,
            key_file: args.key_file,
        }
        .addr()?;
        let client = Client::connect(addr).await?;
        println!("{}", serde_json::to_string_pretty(&client.stats().await?)?);
        return Ok(0);
    }
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        bail!("--interval {}: not a number of seconds above 0", args.interval);
    }
    let instances = Instances::from_env()?;
    let terminal = host_shim::terminal::is_terminal(libc::STDOUT_FILENO);
    loop {
        let names = match args.names.is_empty() {
            true => instances.list()?.into_iter().map(|i| i.name).collect(),
            false => args.names.clone(),
        };
        let mut rows = Vec::new();
        for name in &names {
            match instances.memory(name).await {
                Ok(memory) => rows.push((name.clone(), memory)),
                // Listed, then stopped meanwhile: not shown.
                Err(_) if args.names.is_empty() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let text = match args.format {
            Format::Table => table(&rows),
            Format::Json => {
                let mut out = String::new();
                for (name, memory) in &rows {
                    out.push_str(&serde_json::to_string(&Line { name, memory })?);
                    out.push('\n');
                }
                out
            }
        };
        let mut stdout = std::io::stdout().lock();
        // A terminal is redrawn in place (cursor home, clear), as docker
        // stats does; a pipe gets one table (or set of lines) after another.
        if args.watch && terminal && args.format == Format::Table {
            write!(stdout, "\x1b[H\x1b[2J")?;
        }
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        drop(stdout);
        if !args.watch {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
    }
}

/// Bytes as `docker stats` shows them: `12.3MiB`, `1.02GiB`, `512KiB`,
/// `0B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{}", UNITS[unit])
}

/// The table: the guest's memory (what it uses of its total, its cache,
/// what is free), the balloon, and the host's cost (the processes' RSS
/// and PSS added up, and the guest RAM the host holds).
fn table(rows: &[(String, VmMemory)]) -> String {
    let mut cells = vec![[
        "NAME",
        "MEM USAGE / LIMIT",
        "CACHE",
        "FREE",
        "BALLOON",
        "HOST RSS",
        "HOST PSS",
        "GUEST RAM ON HOST",
    ]
    .map(str::to_owned)];
    for (name, m) in rows {
        cells.push([
            name.clone(),
            format!("{} / {}", human(m.guest.used_bytes), human(m.guest.total_bytes)),
            human(m.guest.cache_bytes),
            human(m.guest.free_bytes),
            human(m.balloon.inflated_bytes),
            human(m.host.rss_bytes),
            human(m.host.pss_bytes),
            m.host.guest_ram_bytes.map_or("-".to_owned(), human),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| cells.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in cells {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The instance (`run -d`).
    name: String,
    /// The VM's memory: MiB (as `run --memory`), or a size with k, m, g or
    /// t (`128m`, `1g`), in whole MiB; at least 64 MiB and at most what
    /// the VM booted with. The guest inflates or deflates its balloon to
    /// it; its main container's limit follows.
    #[arg(long, value_name = "SIZE")]
    memory: String,
    /// Seconds to wait for the guest to get there.
    #[arg(long, default_value_t = 10)]
    wait: u64,
}

/// `vmshim update NAME --memory SIZE`: exits 0 once the guest has the size,
/// 1 if it has not come there within --wait (it goes on as its memory is
/// freed).
pub async fn update(args: UpdateArgs) -> Result<u8> {
    let mib = parse_mib(&args.memory)?;
    let instances = Instances::from_env()?;
    let resized = instances
        .set_memory(&args.name, mib, Duration::from_secs(args.wait))
        .await?;
    if resized.reached {
        return Ok(0);
    }
    eprintln!(
        "vmshim: {}: the guest has come to {} MiB of the {mib} MiB asked for within {} s; it gives the rest back as its memory is freed",
        args.name,
        resized.balloon.actual_bytes >> 20,
        args.wait
    );
    Ok(1)
}

/// `--memory`: a plain number is MiB; with a k, m, g or t suffix (and an
/// optional `b` or `ib`), bytes that must come to whole MiB.
fn parse_mib(value: &str) -> Result<u64> {
    let bad = || anyhow!("--memory {value:?}: not a size (MiB, or a number with k, m, g or t)");
    let lower = value.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches("ib").trim_end_matches('b');
    let (number, shift) = match digits.chars().last() {
        Some('k') => (&digits[..digits.len() - 1], 10),
        Some('m') => (&digits[..digits.len() - 1], 20),
        Some('g') => (&digits[..digits.len() - 1], 30),
        Some('t') => (&digits[..digits.len() - 1], 40),
        Some(c) if c.is_ascii_digit() && digits == lower => return lower.parse().map_err(|_| bad()),
        _ => return Err(bad()),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(bad)?;
    if bytes % (1 << 20) != 0 {
        bail!("--memory {value:?}: not a whole number of MiB");
    }
    Ok(bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_mib() {
        assert_eq!(parse_mib("128").unwrap(), 128);
        assert_eq!(parse_mib("128m").unwrap(), 128);
        assert_eq!(parse_mib("128MiB").unwrap(), 128);
        assert_eq!(parse_mib("1G").unwrap(), 1024);
        assert_eq!(parse_mib("131072k").unwrap(), 128);
        assert_eq!(
            parse_mib("1000k").unwrap_err().to_string(),
            "--memory \"1000k\": not a whole number of MiB"
        );
        assert_eq!(
            parse_mib("lots").unwrap_err().to_string(),
            "--memory \"lots\": not a size (MiB, or a number with k, m, g or t)"
        );
        assert!(parse_mib("-1").is_err());
        assert!(parse_mib("12b").is_err());
    }

    #[test]
    fn sizes_as_docker_stats_shows_them() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(512 << 10), "512KiB");
        assert_eq!(human(12_900_000), "12.3MiB");
        assert_eq!(human(3 << 20), "3.00MiB");
        assert_eq!(human(1_100_000_000), "1.02GiB");
    }

    #[test]
    fn the_table_shows_each_vms_memory() {
        let memory: VmMemory = serde_json::from_value(serde_json::json!({
            "guest": {"total_bytes": 251_686_912u64, "used_bytes": 12_900_000u64, "cache_bytes": 3_166_208u64,
                      "free_bytes": 235_620_704u64, "available_bytes": 234_717_184u64},
            "balloon": {"vm_bytes": 268_435_456u64, "actual_bytes": 268_435_456u64, "inflated_bytes": 0},
            "host": {"processes": [], "rss_bytes": 95_000_000u64, "pss_bytes": 80_000_000u64,
                     "guest_ram_bytes": 33_554_432u64}
        }))
        .unwrap();
        let text = table(&[("box".to_owned(), memory)]);
        assert_eq!(
            text,
            "NAME   MEM USAGE / LIMIT   CACHE     FREE     BALLOON   HOST RSS   HOST PSS   GUEST RAM ON HOST\n\
             box    12.3MiB / 240MiB    3.02MiB   225MiB   0B        90.6MiB    76.3MiB    32.0MiB\n"
        );
    }
}

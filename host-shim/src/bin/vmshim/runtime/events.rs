//! `vmshim runtime events`: runc's `events` over `Runtime::stats`, one
//! JSON object a line. With `--stats`, the container's figures once;
//! without, its figures every `--interval` and an `oom` event whenever
//! the OOM killer has killed in it, until it stops.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use host_shim::runtime::{RuncEvent, RuncStats, Runtime, RuntimeError};

/// How often the stream looks for OOM kills (and for the container's end)
/// between two stats.
const OOM_POLL: Duration = Duration::from_secs(1);

#[derive(Args)]
pub struct EventsArgs {
    /// How often to print the stats, as Go writes a duration (5s, 500ms,
    /// 1m30s).
    #[arg(long, default_value = "5s")]
    interval: String,
    /// Print the container's stats once, then exit.
    #[arg(long)]
    stats: bool,
    id: String,
}

/// `events`: exits 0 once the stats are printed (`--stats`) or the
/// container has stopped.
pub async fn events(runtime: &Runtime, args: &EventsArgs) -> Result<u8> {
    let interval = parse_go_duration(&args.interval)
        .ok_or_else(|| anyhow!("invalid value {:?} for flag -interval: invalid duration", args.interval))?;
    if interval.is_zero() {
        bail!("duration interval must be greater than 0");
    }
    let id = args.id.as_str();
    if stopped(runtime, id).await? {
        bail!("container with id {id} is not running");
    }
    if args.stats {
        let stats = runtime.stats(id).await?;
        print(&RuncEvent {
            kind: "stats",
            id,
            data: Some(RuncStats::new(&stats)),
        })?;
        return Ok(0);
    }
    let mut oom_kills = runtime.stats(id).await?.oom_kills();
    let mut until_stats = interval;
    loop {
        let wait = until_stats.min(OOM_POLL);
        tokio::time::sleep(wait).await;
        until_stats = until_stats.saturating_sub(wait);
        // Stopped: its last figures (the daemon's), for a last OOM kill.
        let ended = stopped(runtime, id).await?;
        let stats = match runtime.stats(id).await {
            Ok(stats) => stats,
            Err(RuntimeError::NotRunning { .. } | RuntimeError::NotExist { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        if stats.oom_kills() > oom_kills {
            oom_kills = stats.oom_kills();
            print(&RuncEvent {
                kind: "oom",
                id,
                data: None,
            })?;
        }
        if ended {
            return Ok(0);
        }
        if until_stats.is_zero() {
            until_stats = interval;
            print(&RuncEvent {
                kind: "stats",
                id,
                data: Some(RuncStats::new(&stats)),
            })?;
        }
    }
}

/// Whether container `id` has stopped.
async fn stopped(runtime: &Runtime, id: &str) -> Result<bool> {
    Ok(runtime.state(id).await?.status == agent_proto::ContainerStatus::Stopped.name())
}

/// One event, a line of JSON on stdout.
fn print(event: &RuncEvent<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, event)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// A duration as Go's `time.ParseDuration` reads one: numbers, each with
/// a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), decimals allowed
/// (`1.5s`, `1h30m`); `0` alone is zero, and so is a negative one (no
/// interval either way).
fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if let Some(negative) = text.strip_prefix('-') {
        return parse_go_duration(negative).map(|_| Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("-1s"), Some(Duration::ZERO));
        for bad in ["", "5", "s", "5x", "-", "1.2.3s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}

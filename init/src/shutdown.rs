//! The orderly end: stop taking work, SIGTERM everyone, wait for the grace
//! period while reaping, SIGKILL whoever is left, reap, sync, unmount (in a
//! machine) and power off, or exit.

use std::convert::Infallible;
use std::io;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::agent::Agent;
use crate::config::{Config, Mode};
use crate::mounts::Mounts;
use crate::reaper::Children;
use crate::{fatal, procfs};

/// How long to reap after SIGKILL before going on regardless.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long the output of the last processes may take to reach the host.
const FLUSH_WAIT: Duration = Duration::from_secs(1);
/// How often to look for ended children while waiting.
const POLL: Duration = Duration::from_millis(10);

/// The signals that ask for a shutdown: SIGTERM, SIGINT (also Ctrl-Alt-Del
/// in a machine) and SIGPWR.
pub struct Signals {
    term: Signal,
    int: Signal,
    pwr: Signal,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            pwr: signal(SignalKind::from_raw(libc::SIGPWR))?,
        })
    }
}

/// Resolves when a shutdown is asked for; says by what.
pub async fn requested(agent: &Agent, signals: &mut Signals) -> &'static str {
    tokio::select! {
        _ = signals.term.recv() => "SIGTERM",
        _ = signals.int.recv() => "SIGINT",
        _ = signals.pwr.recv() => "SIGPWR",
        _ = agent.shutdown_requested() => "requested by the host",
    }
}

/// Runs the shutdown and ends vminitd.
pub async fn run(agent: &Agent, config: &Config, mounts: &mut Mounts) -> Infallible {
    agent.request_shutdown();
    let had_processes = agent.processes.len() > 0;
    signal_everyone(agent, libc::SIGTERM);
    if reap_until_none_left(agent, config.grace).await == Children::Remaining {
        info!(
            "processes still running after {} ms: killing them",
            config.grace.as_millis()
        );
        signal_everyone(agent, libc::SIGKILL);
        if reap_until_none_left(agent, KILL_WAIT).await == Children::Remaining {
            warn!("processes still running after SIGKILL: going on");
        }
    }
    if had_processes {
        flush(agent).await;
    }
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fatal::remove_socket();
    if config.mode == Mode::Machine {
        mounts.unmount_all();
        fatal::power_off();
    }
    info!("exiting");
    fatal::end(0)
}

/// Sends `signal` to every process we are responsible for: as PID 1, to all
/// (kill -1 spares only us); as a subreaper, to our children only.
fn signal_everyone(agent: &Agent, signal: i32) {
    if agent.mode.is_pid1() {
        // SAFETY: kill has no memory preconditions. ESRCH (nobody left) is fine.
        unsafe { libc::kill(-1, signal) };
        return;
    }
    // Under the reaper's lock no child is reaped, so no pid is reused.
    agent.reaper.while_locked(|mut pids| {
        pids.extend(procfs::children_of(std::process::id() as i32));
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            // SAFETY: `pid` is our unreaped child.
            unsafe { libc::kill(pid, signal) };
        }
    });
}

/// Reaps until no child is left or `limit` has passed.
async fn reap_until_none_left(agent: &Agent, limit: Duration) -> Children {
    let deadline = Instant::now() + limit;
    loop {
        if agent.reaper.sweep() == Children::None {
            return Children::None;
        }
        if Instant::now() >= deadline {
            return Children::Remaining;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lets output pumps deliver their last bytes and waits answer.
async fn flush(agent: &Agent) {
    let deadline = Instant::now() + FLUSH_WAIT;
    while !agent.processes.all_done() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    // One more round for the session writers to send the answers.
    tokio::time::sleep(POLL).await;
}

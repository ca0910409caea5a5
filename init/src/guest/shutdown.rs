//! The orderly end: stop taking work, SIGTERM everyone, wait for the grace
//! period while reaping, SIGKILL whoever is left, reap, sync, unmount (in a
//! machine) and power off, or exit.

use std::convert::Infallible;
use std::io;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::config::{Config, Mode};
use super::fatal;
use super::mounts::Mounts;
use crate::process::{Children, Processes};
use crate::sys::procfs;

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
    /// Installs the handlers (in the runtime).
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            pwr: signal(SignalKind::from_raw(libc::SIGPWR))?,
        })
    }
}

/// Resolves when a signal asks for a shutdown; says which.
pub async fn signalled(signals: &mut Signals) -> &'static str {
    tokio::select! {
        _ = signals.term.recv() => "SIGTERM",
        _ = signals.int.recv() => "SIGINT",
        _ = signals.pwr.recv() => "SIGPWR",
    }
}

/// Runs the shutdown of `processes` (the agent takes no more work by now)
/// and ends vminitd.
pub async fn run(processes: &Processes, config: &Config, mounts: &mut Mounts) -> Infallible {
    let had_processes = !processes.is_empty();
    signal_everyone(processes, config.mode, libc::SIGTERM);
    if reap_until_none_left(processes, config.grace).await == Children::Remaining {
        info!(
            "processes still running after {} ms: killing them",
            config.grace.as_millis()
        );
        signal_everyone(processes, config.mode, libc::SIGKILL);
        if reap_until_none_left(processes, KILL_WAIT).await == Children::Remaining {
            warn!("processes still running after SIGKILL: going on");
        }
    }
    if had_processes {
        flush(processes).await;
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
fn signal_everyone(processes: &Processes, mode: Mode, signal: i32) {
    if mode.is_pid1() {
        // SAFETY: kill has no memory preconditions. ESRCH (nobody left) is fine.
        unsafe { libc::kill(-1, signal) };
        return;
    }
    // Under the reaper's lock no child is reaped, so no pid is reused.
    processes.reaper().while_locked(|mut pids| {
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
async fn reap_until_none_left(processes: &Processes, limit: Duration) -> Children {
    let deadline = Instant::now() + limit;
    loop {
        if processes.reaper().sweep() == Children::None {
            return Children::None;
        }
        if Instant::now() >= deadline {
            return Children::Remaining;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lets output pumps deliver their last bytes and waits answer.
async fn flush(processes: &Processes) {
    let deadline = Instant::now() + FLUSH_WAIT;
    while !processes.all_done() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    // One more round for the session writers to send the answers.
    tokio::time::sleep(POLL).await;
}

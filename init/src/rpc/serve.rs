//! From the runtime's start to the end of vminitd: the reaper, the
//! listener, the agent, serving until a shutdown is asked for, then the
//! shutdown. One named call per step, in the order they happen.

use std::convert::Infallible;
use std::sync::Arc;

use agent_proto::{Endpoint, Listener};

use super::access::{self, Access};
use super::agent::Agent;
use super::{server, session};
use crate::guest::boot::Booted;
use crate::guest::config::Mode;
use crate::guest::{fatal, protect, shutdown};
use crate::process::{Processes, Reaper};
use crate::sys::timeline;

/// Serves the host until a shutdown, then shuts the guest down. Runs
/// inside the runtime.
pub async fn serve(booted: Booted) -> Infallible {
    let Booted {
        config,
        mut timeline,
        mut mounts,
        rootfs,
        files,
    } = booted;
    let reaper = Reaper::start().unwrap_or_else(|e| fatal::die(&e));
    let mut signals = shutdown::Signals::install()
        .unwrap_or_else(|e| fatal::die(&format_args!("cannot install signal handlers: {e}")));
    let listener = listen(&config.listen);
    timeline.mark("listening");
    info!(
        "listening on {} ({} mode, ready in {:.1} ms)",
        config.listen,
        config.mode.name(),
        timeline.elapsed_ms()
    );
    let access = Arc::new(Access::new(&config.listen, config.notify.is_some()));
    // While the host dials in: the workloads' cgroup (see protect.rs).
    if config.mode == Mode::Machine {
        protect::make_workloads_in_background("/sys/fs/cgroup".into());
    }
    let processes = Arc::new(Processes::new(reaper, rootfs));
    let agent = Arc::new(Agent::new(
        config.mode,
        timeline.to_boot(),
        processes.clone(),
        files,
        access.clone(),
    ));
    if let Some(notify) = config.notify.clone() {
        tokio::spawn(exchange_readiness(notify, agent.clone()));
    }
    let reason = tokio::select! {
        reason = shutdown::signalled(&mut signals) => reason,
        () = agent.shutdown_requested() => "requested by the host",
        never = server::serve(agent.clone(), listener, access) => match never {},
    };
    info!("shutting down ({reason})");
    agent.request_shutdown();
    shutdown::run(&processes, &config, &mut mounts).await
}

/// Tells the host that the agent listens (`vminitd.notify=`) and receives
/// the agent key in answer; connections are accepted meanwhile and wait
/// for it (see `access.rs`). The readiness connection then serves as the
/// host's first control session: the host need not dial, and its first
/// requests, written behind the key, are answered at once.
async fn exchange_readiness(notify: Endpoint, agent: Arc<Agent>) {
    let span = timeline::begin(|| "readiness exchange".into());
    let received = access::receive_key(&notify).await;
    drop(span);
    match received {
        Ok((key, conn)) => {
            agent.access.set_key(Ok(key));
            session::serve(agent, conn).await;
        }
        Err(e) => agent.access.set_key(Err(e)),
    }
}

fn listen(endpoint: &Endpoint) -> Listener {
    let listener = Listener::bind(endpoint).unwrap_or_else(|e| fatal::die(&e));
    if let Endpoint::Unix(path) = endpoint {
        fatal::set_socket_path(Some(path.clone()));
    }
    listener
}

//! vminitd: the PID 1 and agent of a vminitd micro-VM.
//!
//! Booted by the kernel as `/init` (machine mode), or run as PID 1 of a PID
//! and mount namespace on a host with `--listen unix:PATH` (namespace mode,
//! for tests), or as a plain process (a child subreaper). The start reads
//! top to bottom in [`boot`] and [`serve`], one named call per step.
//!
//! vminitd brings its own C `main` (`no_main`): the Rust start-up code would
//! abort when fds 0-2 are closed and `/dev/null` is missing, which an init
//! must instead repair (see `console.rs`).

#![cfg_attr(not(test), no_main)]
// Under test the harness brings its own main, and ours is left out.
#![cfg_attr(test, allow(dead_code))]

#[macro_use]
mod log;

mod access;
mod agent;
mod cgroup;
mod command;
mod config;
mod console;
mod container;
mod fatal;
mod fdio;
mod mounts;
mod netlink;
mod network;
mod process;
mod procfs;
mod protect;
mod pty;
mod reaper;
mod rootfs;
mod seccomp;
mod seccomp_table;
mod security;
mod server;
mod session;
mod shutdown;
mod spawn;
mod start;
mod stats;
mod streams;
mod sysctl;
mod timeline;
mod vsock_filter;

use std::convert::Infallible;
use std::sync::Arc;

use agent_proto::{Endpoint, Listener};

use crate::agent::Agent;
use crate::config::{CmdlineSettings, Config, Flags, Invocation, Mode};
use crate::mounts::Mounts;
use crate::reaper::Reaper;
use crate::timeline::Timeline;

/// The C entry point.
#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    let timeline = Timeline::entered();
    // SAFETY: the C start-up code passes `main` a valid argc/argv.
    let args = unsafe { console::args_from_c(argc, argv) };
    boot(timeline, args)
}

/// From the kernel's hand-over to a listening agent.
fn boot(mut timeline: Timeline, args: Vec<String>) -> ! {
    let args = args.get(1..).unwrap_or_default();
    let mode = Mode::detect(std::process::id() as i32, config::has_listen_flag(args));
    fatal::set_mode(mode);
    name_ourselves();
    console::ensure_std_fds(mode == Mode::Machine);
    console::close_inherited_fds_on_exec();
    ignore_sigpipe();
    fatal::install_panic_hook();
    let flags = parse_flags(mode, args);
    log::set_debug(flags.debug.unwrap_or(false));
    become_subreaper(mode);
    let mut mounts = Mounts::new(mode);
    mount_proc(&mut mounts);
    let config = config::resolve(mode, flags, read_kernel_cmdline(mode));
    log::set_debug(config.debug);
    fatal::set_halt(config.halt);
    mounts.mount_rest();
    reopen_console(mode);
    protect_the_agent(mode);
    timeline.mark("mounts_done");
    let mut files = network::NetworkFiles::default();
    if let Err(e) = files.update(&config.network) {
        warn!("kernel command line: {e}");
    }
    let rootfs = match config.rootfs.clone() {
        Some(device) => rootfs::mount_in_background(device, files.clone()),
        None => tokio::sync::watch::channel(rootfs::RootfsStatus::Unused).1,
    };
    bring_up_network(mode, &config.network);
    timeline.mark("network_up");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal::die(&format_args!("cannot start the async runtime: {e}")));
    match runtime.block_on(serve(config, timeline, mounts, rootfs, files)) {}
}

/// From the runtime's start to the end of vminitd.
async fn serve(
    config: Config,
    mut timeline: Timeline,
    mut mounts: Mounts,
    rootfs: tokio::sync::watch::Receiver<rootfs::RootfsStatus>,
    files: network::NetworkFiles,
) -> Infallible {
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
    let access = Arc::new(access::Access::new(&config.listen, config.notify.is_some()));
    if let Some(notify) = config.notify.clone() {
        tokio::spawn(receive_key(notify, access.clone()));
    }
    // While the host dials in: the workloads' cgroup (see protect.rs).
    if config.mode == Mode::Machine {
        protect::make_workloads_in_background("/sys/fs/cgroup".into());
    }
    let agent = Arc::new(Agent::new(
        config.mode,
        timeline.to_boot(),
        reaper,
        rootfs,
        files,
        access.clone(),
    ));
    let reason = tokio::select! {
        reason = shutdown::requested(&agent, &mut signals) => reason,
        never = server::serve(agent.clone(), listener, access) => match never {},
    };
    info!("shutting down ({reason})");
    shutdown::run(&agent, &config, &mut mounts).await
}

fn parse_flags(mode: Mode, args: &[String]) -> Flags {
    match config::parse_flags(args, mode == Mode::Machine) {
        Ok(Invocation::Run(flags)) => flags,
        Ok(Invocation::Help) => {
            log::write_fd(1, config::HELP.as_bytes());
            fatal::end(0)
        }
        Ok(Invocation::Version) => {
            log::write_fd(1, format!("vminitd {}\n", env!("CARGO_PKG_VERSION")).as_bytes());
            fatal::end(0)
        }
        Err(e) if mode.is_pid1() => fatal::die(&e),
        Err(e) => {
            log::write_line(format_args!("{e}"));
            std::process::exit(2)
        }
    }
}

/// The kernel starts us as `/init`; `ps` and `/proc/1/comm` should say what
/// runs there.
fn name_ourselves() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"vminitd".as_ptr(), 0, 0, 0) };
}

/// The agent ignores SIGPIPE (a host that goes away is an error on write,
/// not a death); children get it back by default.
fn ignore_sigpipe() {
    // SAFETY: setting a standard disposition for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Not PID 1: orphans of our processes are re-parented to us all the same.
fn become_subreaper(mode: Mode) {
    if mode != Mode::Process {
        return;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        warn!("cannot become a child subreaper: {}", std::io::Error::last_os_error());
    }
}

/// The agent keeps the means to serve: a raised descriptor limit and no
/// OOM kill (its workloads' cgroup comes once it listens, in `serve`).
fn protect_the_agent(mode: Mode) {
    protect::raise_fd_limit(mode);
    protect::shield_from_oom_killer();
}

/// `/proc` first: the kernel command line and the mount table come from it.
/// Without it a machine cannot go on.
fn mount_proc(mounts: &mut Mounts) {
    if let Err(e) = mounts.mount_proc() {
        fatal::die(&e);
    }
}

/// The `vminitd.*` settings of the kernel command line (machine mode only).
fn read_kernel_cmdline(mode: Mode) -> Option<CmdlineSettings> {
    if mode != Mode::Machine {
        return None;
    }
    let text = match std::fs::read_to_string("/proc/cmdline") {
        Ok(text) => text,
        Err(e) => {
            warn!("cannot read /proc/cmdline: {e}");
            return None;
        }
    };
    let settings =
        config::parse_cmdline(&text).unwrap_or_else(|e| fatal::die(&format_args!("kernel command line: {e}")));
    for word in &settings.unknown {
        warn!("unknown kernel command-line setting {word}");
    }
    Some(settings)
}

/// In a machine whose initramfs had no `/dev/console`, fds 0-2 could only be
/// `/dev/null` or nothing: now that devtmpfs is up, give them the console.
/// Then make Ctrl-Alt-Del a SIGINT to us (an orderly shutdown) rather than
/// an immediate reboot.
fn reopen_console(mode: Mode) {
    if mode != Mode::Machine {
        return;
    }
    console::ensure_std_fds(true);
    // SAFETY: reboot with the CAD_OFF command only changes a kernel flag.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// `lo`, then in a machine the interfaces and host name of the kernel
/// command line. A namespace that shares the host's network gets nothing
/// changed (`lo` is already up there).
fn bring_up_network(mode: Mode, settings: &agent_proto::NetworkConfig) {
    if !mode.is_pid1() {
        return;
    }
    match network::loopback_up() {
        Ok(()) => debug!("lo is up"),
        Err(e) if mode == Mode::Machine => warn!("{e}"),
        Err(e) => debug!("{e} (no network namespace of our own)"),
    }
    if mode != Mode::Machine {
        return;
    }
    if let Err(e) = network::configure_interfaces(&settings.interfaces) {
        warn!("{e}");
    }
    if let Some(name) = &settings.hostname {
        if let Err(e) = network::set_hostname(name) {
            warn!("{e}");
        }
    }
}

/// Tells the host that the agent listens (`vminitd.notify=`) and receives
/// the agent key in answer; connections are accepted meanwhile and wait
/// for it (see `access.rs`).
async fn receive_key(notify: Endpoint, access: Arc<access::Access>) {
    access.set_key(access::receive_key(&notify).await);
}

fn listen(endpoint: &Endpoint) -> Listener {
    let listener = Listener::bind(endpoint).unwrap_or_else(|e| fatal::die(&e));
    if let Endpoint::Unix(path) = endpoint {
        fatal::set_socket_path(Some(path.clone()));
    }
    listener
}

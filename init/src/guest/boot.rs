//! PID 1's boot, from the kernel's hand-over to the moment the agent can
//! listen: one named call per step, in the order they happen. The RPC
//! layer takes over from there (`rpc::serve`).
//!
//! vminitd is booted by the kernel as `/init` (machine mode), or runs as
//! PID 1 of a PID and mount namespace on a host with `--listen unix:PATH`
//! (namespace mode, for tests), or as a plain process (a child subreaper).

use tokio::sync::watch;

use super::config::{self, CmdlineSettings, Config, Flags, Invocation, Mode};
use super::mounts::Mounts;
use super::network::{self, NetworkFiles};
use super::{console, fatal, memory, protect, rootfs};
use crate::process::RootfsStatus;
use crate::sys::log;
use crate::sys::timeline::Timeline;

/// What the boot leaves for the agent to serve with.
pub struct Booted {
    /// The settings, resolved.
    pub config: Config,
    /// The phases so far.
    pub timeline: Timeline,
    /// What was mounted, to be unmounted at shutdown.
    pub mounts: Mounts,
    /// The processes' root filesystem, being mounted.
    pub rootfs: watch::Receiver<RootfsStatus>,
    /// What `/etc/hosts` and `/etc/resolv.conf` are made of.
    pub files: NetworkFiles,
}

/// From the kernel's hand-over to the network up. `args` are the
/// program's arguments, its name first.
pub fn boot(mut timeline: Timeline, args: Vec<String>) -> Booted {
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
    report_freed_memory(mode);
    timeline.mark("mounts_done");
    let mut files = NetworkFiles::default();
    if let Err(e) = files.update(&config.network) {
        warn!("kernel command line: {e}");
    }
    // With a root filesystem to mount, the network comes up on the same
    // thread, first: the agent listens meanwhile, and a process waits for
    // both (they are the root filesystem's readiness).
    let rootfs = mount_root_and_shares(mode, &config, &files);
    if config.rootfs.is_none() {
        network::bring_up(mode, &config.network);
        timeline.mark("network_up");
    }
    Booted {
        config,
        timeline,
        mounts,
        rootfs,
        files,
    }
}

/// The processes' root filesystem and the host's share, on a thread (see
/// `rootfs.rs`); without a root, the share alone, here.
fn mount_root_and_shares(mode: Mode, config: &Config, files: &NetworkFiles) -> watch::Receiver<RootfsStatus> {
    let shares = rootfs::BootShares {
        tag: config.share.clone(),
        volumes: config.volumes.clone(),
    };
    match config.rootfs.clone() {
        Some(device) => rootfs::mount_in_background(device, shares, files.clone(), (mode, config.network.clone())),
        None => {
            if let Some(tag) = &shares.tag {
                if let Err(e) = super::shares::mount_share(tag) {
                    warn!("{e}");
                }
            }
            if !shares.volumes.is_empty() {
                warn!("vminitd.volume= without vminitd.rootfs=: no root to bind the shares into");
            }
            watch::channel(RootfsStatus::Unused).1
        }
    }
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

/// In a VM, the memory the guest frees goes back to the host in blocks of
/// 128 KiB and up, not only 4 MiB ones (`memory.rs`).
fn report_freed_memory(mode: Mode) {
    if mode == Mode::Machine {
        memory::report_small_free_blocks();
    }
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

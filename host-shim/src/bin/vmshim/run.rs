//! `vmshim run`: boot a micro-VM, run one command, shut the VM down.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_proto::GUEST_ROOTFS;
use anyhow::{Context, Result};
use clap::Args;
use host_shim::accel::Accel;
use host_shim::assets;
use host_shim::exec::{spawn, spawn_container};
use host_shim::image::{self, under_flags, Bundle, ImageRef};
use host_shim::instance::MainProcess;
use host_shim::network::{HostsFile, Networks};
use host_shim::profile::{initcall, Profile};
use host_shim::vm::net::{GuestNetwork, PortMapping, SwitchPort};
use host_shim::vm::virtiofs::{SharedPath, Volume};
use host_shim::vm::{Vm, VmConfig};

use crate::process::{drive, host_stdio, Ended, ProcessArgs};

/// How long a process may take to end after a forwarded SIGINT, SIGTERM or
/// SIGHUP before the VM is stopped under it.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// How long the guest may take to power off after the shutdown request.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);

#[derive(Args)]
// With -d the command is optional: without one the VM runs until stopped.
#[command(mut_arg("command", |a| a.required(false).required_unless_present("detach")))]
// An image or a bundle gives the command.
#[command(mut_arg("command", |a| a.required_unless_present_any(["image", "bundle"])))]
pub struct RunArgs {
    /// Guest kernel (an uncompressed vmlinux with PVH boot) [default: build/vmlinux].
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initramfs with vminitd as /init [default: build/initramfs.cpio].
    #[arg(long, value_name = "FILE")]
    initramfs: Option<PathBuf>,
    /// Root filesystem directory for the process (made into a cached
    /// read-only ext4 image with a writable overlay) [default: busybox].
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Run in an OCI image layout (`skopeo copy ... oci:DIR:TAG`, umoci):
    /// its layers (cached by manifest digest) are the root filesystem, its
    /// config gives the command (a command after `--` replaces Cmd and
    /// keeps Entrypoint), environment, working directory and user.
    #[arg(long, value_name = "DIR[:TAG]", conflicts_with_all = ["rootfs", "bundle"])]
    image: Option<ImageRef>,
    /// Run an OCI runtime bundle as a container in the VM, as `vmshim
    /// runtime run` does: `DIR/config.json` whole (a command after `--`
    /// replaces `process.args`; -e, -w, -u, -t override); what the VM
    /// cannot carry is refused, naming the fields.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rootfs"])]
    bundle: Option<PathBuf>,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(64..=65536))]
    memory: u32,
    /// Accelerator: kvm or tcg [default: kvm where it really runs a guest].
    #[arg(long, value_parser = clap::builder::ValueParser::new(str::parse::<Accel>))]
    accel: Option<Accel>,
    /// Keep the memory the guest frees: no free page reporting (by default
    /// the guest reports the pages it frees and the host discards them).
    #[arg(long)]
    no_free_page_reporting: bool,
    /// Seconds the agent may take to answer after QEMU starts.
    #[arg(long, default_value_t = 30)]
    boot_timeout: u64,
    /// Keep stdin attached to the process.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// The VM's name: its host name, and its name on a network.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Publish a guest port on the host: [ADDRESS:]HOST_PORT:GUEST_PORT[/tcp|/udp]
    /// (ADDRESS defaults to 127.0.0.1). Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "MAPPING")]
    publish: Vec<PortMapping>,
    /// Bind a host file or directory into the VM: HOST:GUEST, or
    /// HOST:GUEST:ro for read-only (HOST shared over virtio-fs; writes on
    /// either side are seen on the other). Repeatable.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    volumes: Vec<String>,
    /// No network but loopback (no NAT).
    #[arg(long = "no-network", conflicts_with_all = ["publish", "network"])]
    no_network: bool,
    /// Join a vmshim network (`vmshim network create`): the VMs on it reach
    /// each other by address and by name.
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// This VM's address on --network [default: the lowest free one].
    #[arg(long, value_name = "ADDRESS", requires = "network")]
    ip: Option<std::net::Ipv4Addr>,
    /// Print the boot profile on stderr; with =FILE, also write it as Chrome
    /// trace JSON (Perfetto, chrome://tracing; `vmshim profile FILE`
    /// reads it back). The kernel reports its initcalls on the console
    /// (`initcall_debug`), which the profile places on the guest's clock.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    profile: Option<String>,
    /// Under TCG, make the guest's clock count instructions (QEMU's
    /// `-icount shift=0,sleep=off`): each guest phase of --profile then
    /// reads the same on every run, the boot about ten times slower (raise
    /// --boot-timeout). One vCPU only.
    #[arg(long)]
    icount: bool,
    /// Leave the VM running, held by a daemon, and print its name (see
    /// `vmshim ps`, `exec NAME`, `stop NAME`); the command, if any, is its
    /// main process: the VM stops when it exits.
    #[arg(short = 'd', long, conflicts_with_all = ["interactive", "tty", "profile"])]
    detach: bool,
    #[command(flatten)]
    process: ProcessArgs,
}

pub async fn run(args: RunArgs, started: Instant) -> Result<u8> {
    let mut profile = Profile::new(started);
    profile.mark("vmshim start");
    let mut cfg = VmConfig::new(
        assets::kernel(args.kernel.as_deref())?,
        assets::initramfs(args.initramfs.as_deref())?,
    );
    cfg.cpus = args.cpus;
    cfg.memory_mib = args.memory;
    cfg.accel = args.accel;
    cfg.free_page_reporting = !args.no_free_page_reporting;
    cfg.icount = args.icount;
    cfg.boot_timeout = Duration::from_secs(args.boot_timeout);
    // Under icount the guest's phases are instructions, not wall time:
    // a load over them would mean nothing.
    cfg.sample_cpu = args.profile.is_some() && !args.icount;
    if args.profile.is_some() {
        cfg.cmdline_extra
            .extend(initcall::KERNEL_CMDLINE.iter().map(|w| w.to_string()));
    }
    let volumes = args
        .volumes
        .iter()
        .map(|v| v.parse::<Volume>().with_context(|| format!("-v {v:?}")))
        .collect::<Result<Vec<_>>>()?;
    let (tree, workload, hostname, shares) = root_and_workload(&args, &volumes)?;
    cfg.shares = shares;
    cfg.rootfs = Some(assets::rootfs_image(tree.as_deref()).context("root filesystem")?);
    for mapping in &args.publish {
        mapping.check_free()?;
    }
    let name = args
        .name
        .clone()
        .or(hostname)
        .unwrap_or_else(|| format!("vm-{:08x}", host_shim::vm::vsock::random_u32()));
    // The container is named after its VM.
    let workload = match workload {
        MainProcess::Container(spec) => MainProcess::Container(Box::new(agent_proto::ContainerSpec {
            id: name.clone(),
            ..*spec
        })),
        process => process,
    };
    if args.detach {
        let network = (args.no_network, args.publish, args.network, args.ip);
        // Without a command, image or bundle, no main process: the VM runs
        // until stopped.
        let main = match workload {
            MainProcess::Process(spec) if spec.args.is_empty() => None,
            main => Some(main),
        };
        return crate::instance::run_detached(cfg, name, network, main).await;
    }
    // Held until the VM is gone: the address is ours while the lease lives.
    let lease = match &args.network {
        // Blocking: it may wait on the network's lock, on its switch, or on
        // `ip` making the VM's tap device.
        Some(network) => Some(tokio::task::block_in_place(|| {
            host_shim::network::lease(network, &name, args.ip)
        })?),
        None => None,
    };
    cfg.network = GuestNetwork {
        none: args.no_network,
        publish: args.publish.clone(),
        switch: lease.as_ref().map(SwitchPort::for_lease),
        hostname: Some(name.clone()),
        taps: Vec::new(),
    };
    profile.mark("assets ready");

    let tty = match &workload {
        MainProcess::Process(spec) => spec.terminal,
        MainProcess::Container(spec) => spec.process.terminal,
    };
    let stdin = args.interactive || tty;

    // A SIGINT, SIGTERM or SIGHUP while the VM boots stops the boot: what
    // was started is torn down as the boot is dropped.
    let mut vm = tokio::select! {
        vm = Vm::boot(&cfg, &mut profile) => vm?,
        signo = stop_signal() => return Ok((128 + signo?) as u8),
    };
    let outcome = async {
        let mut hosts = HostsFile::default();
        let networks = Networks::from_env()?;
        if let Some(network) = &args.network {
            hosts.refresh(vm.client(), &networks, network).await?;
        }
        let _raw = crate::raw_terminal(tty && stdin)?;
        let running = match workload {
            MainProcess::Process(spec) => spawn(vm.client(), *spec, host_stdio(stdin)).await?,
            MainProcess::Container(spec) => spawn_container(vm.client(), *spec, host_stdio(stdin)).await?,
        };
        profile.mark("process started");
        let drive = drive(vm.client(), running, tty, Some(SIGNAL_GRACE));
        let ended = match &args.network {
            Some(network) => tokio::select! {
                ended = drive => ended?,
                never = hosts.keep_current(vm.client(), &networks, network) => match never {},
            },
            None => drive.await?,
        };
        profile.mark("process exited");
        anyhow::Ok(ended)
    }
    .await;
    if args.profile.is_some() {
        // Blocking for at most one sampling interval.
        profile.add_cpu_samples(tokio::task::block_in_place(|| vm.take_cpu_samples()));
        // The kernel's reports were all written long before: the console
        // is read as it is, a phase of its own so that it does not count
        // in the teardown's.
        profile.add_kernel_log(&vm.console_tail(usize::MAX));
        // vminitd's own spans; a guest that cannot say leaves them out.
        if let Ok(timeline) = vm.client().timeline().await {
            profile.add_agent_spans(&timeline.spans);
        }
        profile.mark("profile read");
    }
    // The process has ended and its output is out. A guest with nothing
    // to write out (no read-write share) is not asked to power off: it is
    // gone at once.
    match cfg.shares.iter().all(|share| share.readonly) {
        true => vm.discard(),
        false => vm.shutdown(POWEROFF_GRACE).await,
    }
    // Blocking: on a bridge network it runs `ip` to delete the VM's tap.
    tokio::task::block_in_place(|| drop(lease));
    profile.mark("VM gone");

    if let Some(target) = &args.profile {
        eprint!("{}", profile.table());
        if !target.is_empty() {
            let json = serde_json::to_vec_pretty(&profile.chrome_trace())?;
            std::fs::write(target, json).with_context(|| format!("cannot write the profile to {target}"))?;
        }
    }
    match outcome? {
        Ended::Exited(status) => Ok(status.shell_code().clamp(0, 255) as u8),
        Ended::Interrupted(signo) => Ok((128 + signo) as u8),
    }
}

/// The first SIGINT, SIGTERM or SIGHUP, by number.
async fn stop_signal() -> std::io::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::select! {
        _ = int.recv() => libc::SIGINT,
        _ = term.recv() => libc::SIGTERM,
        _ = hup.recv() => libc::SIGHUP,
    })
}

/// What a VM of `vmshim run` is made of.
type Workload = (Option<PathBuf>, MainProcess, Option<String>, Vec<SharedPath>);

/// The root filesystem tree (`None`: the default busybox), what runs in
/// it (the flags over the image's process, or over the bundle's; the
/// command alone in a `--rootfs` or the busybox root), the host name
/// that `--image`, `--bundle` or `--rootfs` give, and the host paths the
/// VM shares: `volumes`, bound in the VM's root at boot (a bundle's
/// container binds them, after the spec's own mounts, and its spec's
/// bind mounts of host paths come first).
fn root_and_workload(args: &RunArgs, volumes: &[Volume]) -> Result<Workload> {
    let flags = args.process.spec()?;
    if let Some(image) = &args.image {
        let cache = assets::build_dir().join("cache");
        let unpacked = tokio::task::block_in_place(|| image::unpack_image(image, &cache))
            .with_context(|| format!("image {}", image.dir.display()))?;
        if !unpacked.skipped.is_empty() {
            let list: Vec<String> = unpacked
                .skipped
                .iter()
                .map(|s| format!("{} ({})", s.entry, s.kind))
                .collect();
            eprintln!("vmshim: note: not created from the image: {}", list.join(", "));
        }
        let process = in_guest_root(unpacked.defaults.under(flags));
        let shares = volumes.iter().map(Volume::share).collect();
        return Ok((
            Some(unpacked.tree),
            MainProcess::Process(Box::new(process)),
            None,
            shares,
        ));
    }
    if let Some(dir) = &args.bundle {
        // Named once the VM's name is known.
        let mut bundle = Bundle::read(dir, "bundle")?;
        bundle.spec.process = under_flags(bundle.spec.process, flags);
        for volume in volumes {
            let (share, mount) = volume.container_share(bundle.shares.len());
            bundle.shares.push(share);
            bundle.spec.mounts.push(mount);
        }
        let hostname = bundle.spec.hostname.clone();
        return Ok((
            Some(bundle.rootfs),
            MainProcess::Container(Box::new(bundle.spec)),
            hostname,
            bundle.shares,
        ));
    }
    Ok((
        args.rootfs.clone(),
        MainProcess::Process(Box::new(in_guest_root(flags))),
        None,
        volumes.iter().map(Volume::share).collect(),
    ))
}

/// `spec`, run in the VM's root filesystem.
fn in_guest_root(spec: agent_proto::ProcessSpec) -> agent_proto::ProcessSpec {
    agent_proto::ProcessSpec {
        root: Some(GUEST_ROOTFS.to_owned()),
        ..spec
    }
}

//! Every message of the protocol, in the order a conversation uses them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::container::*;
pub use crate::container_stats::*;
use crate::key::AgentKey;

/// The agent's handle for a process it manages. Assigned by the agent in the
/// answer to [`Op::Create`]; never reused while the agent runs.
pub type ProcessId = u64;

// ---------------------------------------------------------------------------
// Opening a connection
// ---------------------------------------------------------------------------

/// The first frame of every connection, sent by the host: what this
/// connection is for, and the agent key ([`crate::key`]) where the agent was
/// given one at boot: `{"open":"control","key":"<64 hex digits>"}`. An
/// agent with a key answers a connection without it, or with another, with
/// [`ErrorCode::Unauthorized`] and closes it; nothing else is read from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "open", rename_all = "snake_case")]
pub enum Open {
    /// A control session: [`Request`] frames from the host, [`Response`]
    /// frames from the agent, until either side closes.
    Control {
        /// The agent key, 64 hex digits; absent only for an agent that
        /// was given none (one listening on a Unix socket without
        /// `--notify`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<AgentKey>,
    },
    /// One stdio stream of a created, not yet started process. The agent
    /// answers with one [`AttachReply`] frame; after `ok` the connection
    /// carries raw bytes (host → process for stdin, process → host for stdout
    /// and stderr). A stream that is not attached when the process starts is
    /// connected to `/dev/null`.
    Attach {
        /// The process, as [`Created`] or [`ContainerCreated`] named it.
        process: ProcessId,
        /// Which of its streams this connection carries.
        stream: StreamKind,
        /// The agent key, as for [`Open::Control`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<AgentKey>,
    },
}

impl Open {
    /// The key this connection presents.
    pub fn key(&self) -> Option<&AgentKey> {
        match self {
            Open::Control { key } | Open::Attach { key, .. } => key.as_ref(),
        }
    }
}

/// One of a process's stdio streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Host → process. Half-closing the connection is end-of-file (with a
    /// terminal, the terminal's end-of-file character is sent instead).
    Stdin,
    /// Process → host. With a terminal, everything the terminal shows.
    Stdout,
    /// Process → host. Not available with a terminal.
    Stderr,
}

impl StreamKind {
    /// The stream's wire name: `stdin`, `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Stdin => "stdin",
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// The agent's answer to [`Open::Attach`]: `{"ok":null}` or `{"err":{..}}`.
pub type AttachReply = Outcome<()>;

// ---------------------------------------------------------------------------
// Control requests
// ---------------------------------------------------------------------------

/// A control request, sent by the host on a control session:
/// `{"id":N,"op":"...",...}`. `id` is chosen by the host and echoed in the
/// [`Response`]; ids should not repeat while a request is outstanding. Id 0 is
/// reserved: the agent uses it for errors about frames it could not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The host's number for this request, echoed in its [`Response`].
    pub id: u64,
    /// What is asked: its `"op"` and the op's own fields, side by side with
    /// `id` in one JSON object.
    #[serde(flatten)]
    pub op: Op,
}

/// What a [`Request`] asks for. Each variant says what comes back in `ok`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The handshake: first request of a session. The agent checks `version`
    /// against [`crate::PROTOCOL_VERSION`] (a mismatch is
    /// [`ErrorCode::VersionMismatch`]) and answers [`HelloReply`]: its
    /// version, its boot timeline and its clock.
    Hello {
        /// The protocol version the host speaks
        /// ([`crate::PROTOCOL_VERSION`] of its agent-proto).
        version: u32,
        /// The host program's name and version, for the agent's log
        /// (`vmshim 0.1.0`).
        client: String,
    },
    /// Prepare a process (nothing runs yet). Answer: [`Created`], with the id
    /// used to attach streams, start, wait, signal and resize it. Errors:
    /// [`ErrorCode::InvalidRequest`] for an empty argv, a bad environment
    /// entry, an unknown capability or resource limit name, a soft limit
    /// above its hard one, or a seccomp profile that does not compile.
    Create(ProcessSpec),
    /// Start a created process with the streams attached so far. Answer:
    /// [`Started`] with its pid. Errors: [`ErrorCode::NotFound`],
    /// [`ErrorCode::InvalidState`] if already started, and
    /// [`ErrorCode::ExecFailed`] naming what failed (program not found, the
    /// working directory, the user, a resource limit, the capabilities, the
    /// seccomp filter, the exec itself).
    Start {
        /// The process, as [`Created`] named it.
        process: ProcessId,
    },
    /// Wait for a started process to end. Answer: [`ExitStatus`], sent only
    /// after every attached output stream has delivered its last byte. Any
    /// number of waits may be outstanding and all get the answer. The agent
    /// forgets a process once it has ended and been waited for (a later wait
    /// is [`ErrorCode::NotFound`]), or once it has ended after its creating
    /// session closed; a created process that never started is forgotten
    /// when its session closes.
    Wait {
        /// A started process (or a container's process).
        process: ProcessId,
    },
    /// Send a signal (its number) to a started process. Answer: `null`.
    Signal {
        /// A started process (or a container's process).
        process: ProcessId,
        /// The signal number, 1 to 64 (15 is `SIGTERM`).
        signal: i32,
    },
    /// Set the terminal size of a process started with a terminal. Answer:
    /// `null`. The process receives `SIGWINCH` from its terminal.
    Resize {
        /// A process created with a terminal.
        process: ProcessId,
        /// The new height, in character cells.
        rows: u16,
        /// The new width, in character cells.
        cols: u16,
    },
    /// Configure the guest's network: each part that is present is applied
    /// (interfaces are brought up with their MTU, addresses and default
    /// routes; `hosts` and `dns` rewrite `/etc/hosts` and `/etc/resolv.conf`
    /// of the root filesystem). Answer: `null`. Errors:
    /// [`ErrorCode::InvalidRequest`] for a bad address or name,
    /// [`ErrorCode::InvalidState`] where the agent does not own the network
    /// (not the init of a VM), [`ErrorCode::Internal`] naming what the
    /// kernel refused.
    ConfigureNetwork(NetworkConfig),
    /// Resource figures of the guest and the agent. Answer: [`Stats`].
    Stats,
    /// The agent's timeline so far: the boot phases [`Op::Hello`] reports,
    /// and the spans of the agent's own work since it started (the boot's
    /// steps, the first requests, the first processes' forks), for a boot
    /// profile. Answer: [`BootTimeline`] with its `spans`.
    Timeline,
    /// Stop every process (TERM, a grace period, KILL), sync, unmount and
    /// power off the machine (or exit, when the agent runs in a namespace).
    /// Answer: `null`, sent before the shutdown begins.
    Shutdown,
    /// Create a container: its namespaces, cgroup, mounts and devices set
    /// up, the `create_runtime` and `create_container` hooks run, and its
    /// process waiting, before exec, for [`Op::StartContainer`]. Answer:
    /// [`ContainerCreated`]. The container belongs to the agent, not to the
    /// session: it stays until [`Op::DeleteContainer`]. Errors:
    /// [`ErrorCode::InvalidRequest`] for a bad id, a field that cannot be
    /// honoured (named), a bad process; [`ErrorCode::InvalidState`] for an
    /// id in use; [`ErrorCode::ExecFailed`] naming the step that failed.
    CreateContainer {
        /// The container: its id, root, process and the OCI spec's
        /// `linux` section. (Boxed: it is by far the largest op.)
        spec: Box<ContainerSpec>,
    },
    /// Start a created container: the `start_container` hooks, then its
    /// program, then the `poststart` hooks. Answer: [`Started`]. Errors:
    /// [`ErrorCode::NotFound`], [`ErrorCode::InvalidState`] unless created,
    /// [`ErrorCode::ExecFailed`].
    StartContainer {
        /// The container's id ([`ContainerSpec::id`]).
        container: String,
    },
    /// Prepare another process in a running container: it joins every
    /// namespace and the cgroup of the container's process, and its root.
    /// Answer: [`Created`]; attach and [`Op::Start`] it as any process.
    /// Its `root` must be absent.
    ExecContainer {
        /// The container's id.
        container: String,
        /// The new process; its `root` must be absent.
        process: ProcessSpec,
    },
    /// A container's state. Answer: [`ContainerInfo`].
    ContainerState {
        /// The container's id.
        container: String,
    },
    /// Every container. Answer: a list of [`ContainerInfo`].
    ListContainers,
    /// Send a signal to a created or running container's process, or with
    /// `all` to every process of its cgroup. Answer: `null`. Errors:
    /// [`ErrorCode::InvalidState`] once stopped.
    KillContainer {
        /// The container's id.
        container: String,
        /// The signal number, 1 to 64.
        signal: i32,
        /// Signal every process of the container's cgroup and its
        /// sub-cgroups, not only its own process (runc's `kill --all`).
        #[serde(default)]
        all: bool,
    },
    /// Delete a stopped (or created) container: its cgroup is removed, the
    /// `poststop` hooks run, its id is free again. With `force`, a running
    /// one is killed first. Answer: `null`.
    DeleteContainer {
        /// The container's id.
        container: String,
        /// Kill a running or paused container rather than refuse it.
        #[serde(default)]
        force: bool,
    },
    /// Freeze every process of a running container (its cgroup's
    /// `cgroup.freeze`), answering once they are frozen. Answer: `null`.
    /// Errors: [`ErrorCode::InvalidState`] unless running, or for a
    /// container without a cgroup.
    PauseContainer {
        /// The container's id.
        container: String,
    },
    /// Thaw a paused container. Answer: `null`. Errors:
    /// [`ErrorCode::InvalidState`] unless paused.
    ResumeContainer {
        /// The container's id.
        container: String,
    },
    /// New cgroup limits for a container that has not stopped (runc's
    /// `update`); only the limits given change. Answer: `null`. Errors:
    /// [`ErrorCode::InvalidRequest`] for a bad value, a controller the
    /// cgroup2 tree does not offer, or a device rule (the allow-list is
    /// fixed at create); [`ErrorCode::InvalidState`] once stopped or
    /// without a cgroup.
    UpdateContainer {
        /// The container's id.
        container: String,
        /// The limits to set; the parts left out keep their values.
        resources: Resources,
    },
    /// The resource figures of a container's cgroup: CPU time, memory
    /// (use, limit, `memory.stat`), memory events (OOM kills among them),
    /// tasks, I/O per device. Answer: [`ContainerStats`], each part absent
    /// where the cgroup has no file for it. A stopped container that has
    /// not been deleted still has its cgroup and its figures. Errors:
    /// [`ErrorCode::NotFound`]; [`ErrorCode::InvalidState`] for a
    /// container without a cgroup.
    ContainerStats {
        /// The container's id.
        container: String,
    },
    /// Size the workloads' cgroup (every process the agent starts,
    /// containers included) for a guest whose memory (`MemTotal`) is, or is
    /// about to be, `guest_total_bytes`. The host resizes a VM through its
    /// balloon and sends this before it takes memory away (lowering the
    /// limit makes the workloads give their page cache back at once, so the
    /// balloon finds the memory free) and after it gives memory back. The
    /// workloads' `memory.max` becomes `guest_total_bytes` less the agent's
    /// headroom ([`crate::workloads_headroom`]), as at boot. Answer:
    /// [`CgroupMemory`], the workloads' figures after the change. Errors:
    /// [`ErrorCode::InvalidState`] where the agent has no workloads' cgroup
    /// (not the init of a VM); [`ErrorCode::InvalidRequest`] for a size
    /// that leaves the workloads nothing; [`ErrorCode::Internal`] naming the
    /// file the kernel refused.
    ResizeWorkloads {
        /// The guest's memory, in bytes, as `MemTotal` counts it.
        guest_total_bytes: u64,
    },
}

impl Op {
    /// The wire names of every op this version knows, in the order the
    /// variants are declared. An op outside this list is answered with
    /// [`ErrorCode::Unsupported`]. A unit test holds it to serde's own list
    /// of the variants, and `docs/protocol.md` has one section for each.
    pub const NAMES: &'static [&'static str] = &[
        "hello",
        "create",
        "start",
        "wait",
        "signal",
        "resize",
        "configure_network",
        "stats",
        "timeline",
        "shutdown",
        "create_container",
        "start_container",
        "exec_container",
        "container_state",
        "list_containers",
        "kill_container",
        "delete_container",
        "pause_container",
        "resume_container",
        "update_container",
        "container_stats",
        "resize_workloads",
    ];

    /// The op's wire name, the `"op"` of its [`Request`] (one of
    /// [`Op::NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello { .. } => "hello",
            Op::Create(_) => "create",
            Op::Start { .. } => "start",
            Op::Wait { .. } => "wait",
            Op::Signal { .. } => "signal",
            Op::Resize { .. } => "resize",
            Op::ConfigureNetwork(_) => "configure_network",
            Op::Stats => "stats",
            Op::Timeline => "timeline",
            Op::Shutdown => "shutdown",
            Op::CreateContainer { .. } => "create_container",
            Op::StartContainer { .. } => "start_container",
            Op::ExecContainer { .. } => "exec_container",
            Op::ContainerState { .. } => "container_state",
            Op::ListContainers => "list_containers",
            Op::KillContainer { .. } => "kill_container",
            Op::DeleteContainer { .. } => "delete_container",
            Op::PauseContainer { .. } => "pause_container",
            Op::ResumeContainer { .. } => "resume_container",
            Op::UpdateContainer { .. } => "update_container",
            Op::ContainerStats { .. } => "container_stats",
            Op::ResizeWorkloads { .. } => "resize_workloads",
        }
    }
}

/// Decodes a request body, telling apart an op this version does not know
/// ([`ErrorCode::Unsupported`]) from a known op with bad fields
/// ([`ErrorCode::InvalidRequest`]). On error, returns the request id when it
/// could be read (else 0) with the error to answer.
pub fn parse_request(body: &[u8]) -> Result<Request, (u64, ErrorBody)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        (
            0,
            ErrorBody::new(ErrorCode::BadFrame, format!("frame is not JSON: {e}")),
        )
    })?;
    let id = value.get("id").and_then(Value::as_u64).unwrap_or(0);
    let Some(obj) = value.as_object() else {
        return Err((
            id,
            ErrorBody::new(ErrorCode::InvalidRequest, "request is not a JSON object"),
        ));
    };
    if !obj.get("id").is_some_and(Value::is_u64) {
        return Err((
            id,
            ErrorBody::new(ErrorCode::InvalidRequest, "request has no numeric \"id\""),
        ));
    }
    match obj.get("op") {
        Some(Value::String(op)) if !Op::NAMES.contains(&op.as_str()) => {
            return Err((
                id,
                ErrorBody::new(ErrorCode::Unsupported, format!("unknown op \"{op}\"")),
            ));
        }
        Some(Value::String(_)) => {}
        _ => {
            return Err((
                id,
                ErrorBody::new(ErrorCode::InvalidRequest, "request has no string \"op\""),
            ))
        }
    }
    serde_json::from_value(value).map_err(|e| {
        (
            id,
            ErrorBody::new(ErrorCode::InvalidRequest, format!("invalid request: {e}")),
        )
    })
}

/// How to run a process ([`Op::Create`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program and arguments. A program without `/` is looked up in the
    /// `PATH` of `env` (or the default `PATH`).
    pub args: Vec<String>,
    /// `KEY=VALUE` entries: the whole environment of the process, plus a
    /// default `PATH` when it has none and `TERM=xterm` with a terminal.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Identity; the agent's own (root) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Run on a new pseudo-terminal (stdin, stdout and stderr all on it) as
    /// the leader of a new session with it as controlling terminal.
    #[serde(default)]
    pub terminal: bool,
    /// Initial terminal size, with `terminal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<WindowSize>,
    /// Run inside this directory of the guest as the root filesystem: in a
    /// mount namespace of its own, after `pivot_root`, with `/proc`, `/sys`
    /// and `/dev` mounted in it. Usually [`crate::GUEST_ROOTFS`]. Absent: the
    /// agent's own root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The file mode creation mask (OCI `process.user.umask`); the agent's
    /// (0022) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// Resource limits (OCI `process.rlimits`), each set on the process
    /// before exec; the agent's own for the others. An unknown `kind` or a
    /// soft limit above the hard one is [`ErrorCode::InvalidRequest`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// Set `no_new_privs` (OCI `process.noNewPrivileges`): exec can no
    /// longer grant privileges (set-user-id bits, file capabilities).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// The capability sets (OCI `process.capabilities`), kept across the
    /// change of user. Absent: for root, the agent's own (every
    /// capability), except that a process of the agent's own PID namespace
    /// (`create`, not joining a container) goes without `CAP_SYS_PTRACE`,
    /// which would reach the agent's memory; none for another user. An
    /// unknown name is [`ErrorCode::InvalidRequest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// The process's `/proc/PID/oom_score_adj` (OCI `process.oomScoreAdj`),
    /// -1000 to 1000; inherited from the agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// A seccomp filter (OCI `linux.seccomp`), installed just before exec
    /// (before the change of user and capabilities when
    /// `no_new_privileges` is not set, as runc does). An unknown action,
    /// architecture, syscall name or comparison is
    /// [`ErrorCode::InvalidRequest`]. Absent: no filter. (Boxed: a spec
    /// travels inside [`Op`].)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Box<Seccomp>>,
    /// Whether the process may open `AF_VSOCK` sockets. By default it may
    /// not: the agent installs a seccomp filter (besides the spec's) that
    /// fails `socket(AF_VSOCK, ..)` with `EPERM`, as Docker's default profile
    /// does, so that nothing in the guest reaches the host's vsock services.
    /// For a container, the annotation [`crate::VSOCK_ANNOTATION`] `=
    /// allow` does the same for all its processes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_vsock: bool,
}

/// A seccomp profile, as the OCI runtime spec's `linux.seccomp`.
///
/// Actions are `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO`, `SCMP_ACT_KILL` (=
/// `SCMP_ACT_KILL_THREAD`), `SCMP_ACT_KILL_PROCESS`, `SCMP_ACT_TRAP` and
/// `SCMP_ACT_LOG`. Only x86_64 syscalls are compiled: `architectures` may
/// name `SCMP_ARCH_X86_64`, `SCMP_ARCH_X86` and `SCMP_ARCH_X32` (as runc
/// accepts them), but a syscall made through another ABI (i386 `int 0x80`,
/// x32) kills the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seccomp {
    /// The action for a syscall no rule matches.
    pub default_action: String,
    /// The errno of `SCMP_ACT_ERRNO` as the default action; EPERM when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_*` names the profile is meant for; anything but
    /// `SCMP_ARCH_X86_64`, `SCMP_ARCH_X86` and `SCMP_ARCH_X32` is
    /// [`ErrorCode::InvalidRequest`]. Empty: the native one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// The rules, the first matching one deciding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<SeccompRule>,
}

/// One rule: `action` for the syscalls in `names` whose arguments all
/// match `args`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompRule {
    /// x86_64 syscall names such as `mkdir`.
    pub names: Vec<String>,
    /// What a matching call gets: one of the actions of [`Seccomp`].
    pub action: String,
    /// The errno of `SCMP_ACT_ERRNO`; EPERM when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<SeccompArg>,
}

/// A condition on argument `index` (0 to 5), compared as 64 bits:
/// `SCMP_CMP_EQ`, `_NE`, `_LT`, `_LE`, `_GT`, `_GE` with `value`, or
/// `SCMP_CMP_MASKED_EQ`: `arg & value == value_two`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompArg {
    /// Which argument, 0 to 5.
    pub index: u32,
    /// The value compared with, or the mask of `SCMP_CMP_MASKED_EQ`.
    pub value: u64,
    /// The value the masked argument must equal, with
    /// `SCMP_CMP_MASKED_EQ`; unused by the other comparisons.
    #[serde(default)]
    pub value_two: u64,
    /// The comparison, `SCMP_CMP_EQ` and so on.
    pub op: String,
}

/// One resource limit, as `setrlimit(2)` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The resource by its C name: `RLIMIT_NOFILE`, `RLIMIT_NPROC`, ....
    pub kind: String,
    /// The soft limit (`rlim_cur`), at most `hard`.
    pub soft: u64,
    /// The hard limit (`rlim_max`).
    pub hard: u64,
}

/// The capability sets of a process, each a list of names such as
/// `CAP_NET_RAW` (as in the OCI runtime spec). Bounding: every capability
/// not listed is dropped. Ambient ones that are not also permitted and
/// inheritable are left out (as runc does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The bounding set: the most the process and what it runs can ever
    /// hold.
    #[serde(default)]
    pub bounding: Vec<String>,
    /// The effective set: what the kernel checks now.
    #[serde(default)]
    pub effective: Vec<String>,
    /// The inheritable set: what may pass through an exec.
    #[serde(default)]
    pub inheritable: Vec<String>,
    /// The permitted set: what the process may make effective.
    #[serde(default)]
    pub permitted: Vec<String>,
    /// The ambient set: what an exec of an ordinary program keeps.
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// A numeric identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user id the process runs as (real, effective and saved).
    pub uid: u32,
    /// The group id the process runs as (real, effective and saved).
    pub gid: u32,
    /// Supplementary groups; none when empty.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Height, in character cells.
    pub rows: u16,
    /// Width, in character cells.
    pub cols: u16,
}

/// The guest's network ([`Op::ConfigureNetwork`]); absent parts are left as
/// they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Interfaces to configure, by name (`eth0`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceConfig>,
    /// The guest's host name (also mapped in `/etc/hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The whole list of `/etc/hosts` entries besides localhost and the
    /// host name; replaces the previous list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostEntry>>,
    /// `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Name servers on the loopback of the network namespace the VM's
    /// network stands for (docker's embedded DNS at `127.0.0.11`), which
    /// the guest answers by relaying each query to the host. Set once;
    /// absent: left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_relay: Option<DnsRelay>,
}

/// Name servers the guest relays to the host ([`NetworkConfig::dns_relay`]).
///
/// The agent listens on UDP port 53 of each address in the guest (a
/// loopback address: the guest's own, which a container that joins the
/// VM's network shares) and sends each query over a vsock connection of
/// its own to host port `port` (CID 2), framed as DNS over TCP frames it
/// (a 16-bit big-endian length, then the message); the host asks the name
/// server in the namespace and answers on the same connection, framed the
/// same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRelay {
    /// Loopback addresses (`127.0.0.11`, `::1`), IPv4 or IPv6.
    pub addresses: Vec<String>,
    /// The host's vsock port.
    pub port: u32,
}

/// One interface: brought up, with its MTU, addresses, gateways and
/// routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceConfig {
    /// The interface's name in the guest (`eth0`), or its MAC address
    /// (`52:54:00:12:34:56`): the host knows the MACs it gave, not the
    /// order in which the guest found the devices. A MAC no interface has
    /// is [`ErrorCode::InvalidRequest`].
    pub name: String,
    /// The MTU to set; the kernel's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `ADDRESS/PREFIX`, IPv4 or IPv6.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// A default route through this gateway (IPv4 and/or IPv6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Routes through this interface besides the default ones, added in
    /// order after the addresses and gateways (a route's gateway must be
    /// reachable by then).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// A route through an interface ([`InterfaceConfig::routes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// `ADDRESS/PREFIX`, IPv4 or IPv6.
    pub destination: String,
    /// The next hop, of the destination's family; absent: the destination
    /// is on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// One `/etc/hosts` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// An IPv4 or IPv6 address.
    pub address: String,
    /// The host names that resolve to it, the canonical one first.
    pub names: Vec<String>,
}

/// `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// `nameserver` lines: IPv4 or IPv6 addresses, in the order to ask them.
    pub nameservers: Vec<String>,
    /// The `search` line: domains to try short names in.
    #[serde(default)]
    pub search: Vec<String>,
    /// The `options` line: resolver options such as `ndots:2`.
    #[serde(default)]
    pub options: Vec<String>,
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// The agent's answer to one [`Request`]: `{"id":N,"ok":..}` or
/// `{"id":N,"err":{"code":..,"message":..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The `id` of the request this answers; 0 for an error about a frame
    /// the agent could not read as a request, or a refused connection.
    pub id: u64,
    /// `"ok"` with the op's answer, or `"err"`, side by side with `id`.
    #[serde(flatten)]
    pub outcome: Outcome<Value>,
}

/// Success with a value, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    /// `{"ok": ...}`: it was done; the answer each op documents (`null`
    /// for most).
    Ok(T),
    /// `{"err": {"code": ..., "message": ...}}`: it was not.
    Err(ErrorBody),
}

/// An error the agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// What kind of error, for a program to act on.
    pub code: ErrorCode,
    /// What went wrong, for a person: it names the process, container,
    /// field or step involved.
    pub message: String,
    /// With [`ErrorCode::ExecFailed`], what failed where the host decides
    /// on it (a program not found exits 127, any other failure to start
    /// 126, as in a shell); absent when the code says all, and from older
    /// agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_failure: Option<ExecFailure>,
}

impl ErrorBody {
    /// An error of kind `code` that says `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            exec_failure: None,
        }
    }

    /// This error, saying what failed to start ([`ErrorBody::exec_failure`]).
    pub fn with_exec_failure(self, failure: ExecFailure) -> Self {
        ErrorBody {
            exec_failure: Some(failure),
            ..self
        }
    }
}

/// What failed to start, in an [`ErrorBody`] of [`ErrorCode::ExecFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecFailure {
    /// The program has no `/` in its name and is in no directory of the
    /// process's `PATH`.
    ProgramNotFound,
    /// A failure this version does not know (sent by a newer agent).
    #[serde(other)]
    Unknown,
}

/// What kind of error. The message says the specifics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A frame could not be read: truncated, over the limit, not JSON. The
    /// agent closes the connection after answering.
    BadFrame,
    /// A known op with missing or wrong fields, or a first frame that is not
    /// an [`Open`].
    InvalidRequest,
    /// An op this agent does not know. The session goes on.
    Unsupported,
    /// The `hello` named a protocol version the agent does not speak.
    VersionMismatch,
    /// No process (or container) with that id.
    NotFound,
    /// The process is not in a state that allows this (attach or start after
    /// start, resize without a terminal, signal before start).
    InvalidState,
    /// The process could not be started; the message names the step.
    ExecFailed,
    /// The agent is shutting down and takes no new work.
    ShuttingDown,
    /// The connection did not present the agent key the agent was given at
    /// boot (or presented another). The agent closes it.
    Unauthorized,
    /// The agent is at one of its limits (connections, requests in flight on
    /// a session); the message names it. Nothing was done: retry later.
    Busy,
    /// The operating system refused something the agent needed.
    Internal,
    /// A code this version does not know (sent by a newer agent).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, in the order the variants are declared. A unit test holds
    /// it to serde's own list of the variants, and `docs/protocol.md` lists
    /// each one.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadFrame,
        ErrorCode::InvalidRequest,
        ErrorCode::Unsupported,
        ErrorCode::VersionMismatch,
        ErrorCode::NotFound,
        ErrorCode::InvalidState,
        ErrorCode::ExecFailed,
        ErrorCode::ShuttingDown,
        ErrorCode::Unauthorized,
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::Unknown,
    ];

    /// The code's wire name, the `"code"` of an [`ErrorBody`].
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::ExecFailed => "exec_failed",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Answer to [`Op::Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The protocol version the agent speaks.
    pub version: u32,
    /// The agent's name and version, e.g. `vminitd 0.1.0`.
    pub agent: String,
    /// `machine` when the agent is the init of a VM, `namespace` when it runs
    /// as PID 1 of a namespace on a host, `process` otherwise.
    pub mode: String,
    /// The agent's boot timeline.
    pub boot: BootTimeline,
    /// The agent's `CLOCK_BOOTTIME` when it wrote this answer, in
    /// nanoseconds: with the round trip measured by the host, it places the
    /// guest's timeline on the host's time axis.
    pub now_ns: u64,
}

/// Phases of the agent's start, on the guest's `CLOCK_BOOTTIME` (nanoseconds
/// since the guest kernel booted), in the order they happened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimeline {
    /// The phases, earliest first.
    pub phases: Vec<BootPhase>,
    /// Spans of the agent's work, in the order they began: only in the
    /// answer to [`Op::Timeline`]. At most [`MAX_SPANS`] are kept (the
    /// first ones: a boot profile wants the start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Span>,
}

/// How many [`Span`]s an agent keeps.
pub const MAX_SPANS: usize = 256;

/// One span of the agent's work, on the guest's `CLOCK_BOOTTIME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// What ran: `mount root filesystem`, `network`, `request start`,
    /// `fork+exec true`, ...
    pub name: String,
    /// When it began.
    pub start_ns: u64,
    /// When it ended.
    pub end_ns: u64,
}

/// One phase of [`BootTimeline`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPhase {
    /// `entered` (first instruction of the agent's main), `mounts_done`,
    /// `network_up`, `listening`; beside them `rootfs_ready` (only with
    /// `vminitd.rootfs=`) and `key_received` (only when the host hands
    /// the agent a key).
    pub name: String,
    /// When the phase ended.
    pub boottime_ns: u64,
}

impl BootTimeline {
    /// The time of the phase named `name`, if it was recorded.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.boottime_ns)
    }
}

/// Answer to [`Op::Create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// The new process's id: attach its streams with it, then start it.
    pub process: ProcessId,
}

/// Answer to [`Op::Start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The pid, as seen by the agent.
    pub pid: i32,
}

/// Answer to [`Op::Wait`]: how the process ended. Exactly one field is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, when the process exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal number, when a signal killed the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// The status a shell would report: the exit code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        }
    }
}

/// Answer to [`Op::Stats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds since the guest kernel booted.
    pub uptime_s: f64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// The guest's memory.
    pub memory: MemoryStats,
    /// Resident memory of the agent itself.
    pub agent_rss_bytes: u64,
    /// Processes the agent manages that have not been forgotten yet.
    pub processes: usize,
    /// The memory of every process the agent starts, containers included
    /// (their cgroup, `workloads`); absent where they have none (the agent
    /// outside a VM, a kernel without the memory controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<CgroupMemory>,
}

/// Guest memory, from `/proc/meminfo`. What the guest uses is
/// `total_bytes - free_bytes - cache_bytes`, as `free` counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// `MemTotal`: the memory the guest kernel manages. A balloon the host
    /// inflated takes its pages out of it.
    pub total_bytes: u64,
    /// `MemFree`: memory nothing uses.
    pub free_bytes: u64,
    /// `MemAvailable`: what new work could get without swapping, caches
    /// given back included.
    pub available_bytes: u64,
    /// `Buffers`, `Cached` and `SReclaimable`: the page cache (files, and
    /// tmpfs, which cannot be given back), what `free` calls buff/cache.
    #[serde(default)]
    pub cache_bytes: u64,
}

impl MemoryStats {
    /// What neither is free nor a cache: the kernel's own and processes'
    /// memory.
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes
            .saturating_sub(self.free_bytes)
            .saturating_sub(self.cache_bytes)
    }
}

/// A cgroup's memory: `memory.current` and `memory.max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMemory {
    /// `memory.current`: what its processes use, page cache they brought
    /// in included.
    pub current_bytes: u64,
    /// `memory.max`; absent for `max`, no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_wire_shape() {
        let req = Request {
            id: 7,
            op: Op::Signal { process: 3, signal: 15 },
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v, json!({"id": 7, "op": "signal", "process": 3, "signal": 15}));
        assert_eq!(parse_request(v.to_string().as_bytes()).unwrap(), req);
        let create = Request {
            id: 1,
            op: Op::Create(ProcessSpec {
                args: vec!["true".into()],
                ..Default::default()
            }),
        };
        let v = serde_json::to_value(&create).unwrap();
        assert_eq!(
            v,
            json!({"id": 1, "op": "create", "args": ["true"], "env": [], "terminal": false})
        );
        assert_eq!(parse_request(v.to_string().as_bytes()).unwrap(), create);
    }

    #[test]
    fn every_op_name_is_listed() {
        let ops = [
            Op::Hello {
                version: 1,
                client: String::new(),
            },
            Op::Create(ProcessSpec::default()),
            Op::Start { process: 0 },
            Op::Wait { process: 0 },
            Op::Signal { process: 0, signal: 0 },
            Op::Resize {
                process: 0,
                rows: 0,
                cols: 0,
            },
            Op::ConfigureNetwork(NetworkConfig::default()),
            Op::Stats,
            Op::Timeline,
            Op::Shutdown,
            Op::CreateContainer { spec: Box::default() },
            Op::StartContainer {
                container: String::new(),
            },
            Op::ExecContainer {
                container: String::new(),
                process: ProcessSpec::default(),
            },
            Op::ContainerState {
                container: String::new(),
            },
            Op::ListContainers,
            Op::KillContainer {
                container: String::new(),
                signal: 0,
                all: false,
            },
            Op::DeleteContainer {
                container: String::new(),
                force: false,
            },
            Op::PauseContainer {
                container: String::new(),
            },
            Op::ResumeContainer {
                container: String::new(),
            },
            Op::UpdateContainer {
                container: String::new(),
                resources: Resources::default(),
            },
            Op::ContainerStats {
                container: String::new(),
            },
            Op::ResizeWorkloads { guest_total_bytes: 0 },
        ];
        let mut named = Vec::new();
        for op in ops {
            let v = serde_json::to_value(Request { id: 1, op: op.clone() }).unwrap();
            assert_eq!(v["op"], op.name());
            named.push(op.name());
        }
        assert_eq!(named, Op::NAMES, "one example of every op, in the order of Op::NAMES");
    }

    /// The wire names serde gives `T`'s variants, from the message with
    /// which it refuses one it does not know: "unknown variant `x`,
    /// expected one of `a`, `b`, ...".
    fn variants_serde_lists<T: serde::de::DeserializeOwned + std::fmt::Debug>(unknown: Value) -> Vec<String> {
        let message = serde_json::from_value::<T>(unknown).unwrap_err().to_string();
        let list = message
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("serde did not list the variants: {message}"))
            .1;
        let list = list.split(" at line ").next().unwrap_or(list);
        list.split(", ").map(|name| name.trim_matches('`').to_owned()).collect()
    }

    /// A deserializer that answers an enum's request with an error naming
    /// the variants serde passed it: the names of an enum that never refuses
    /// a name (`#[serde(other)]`).
    struct VariantNames;

    impl<'de> serde::Deserializer<'de> for VariantNames {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not an enum"))
        }

        fn deserialize_enum<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom(variants.join(" ")))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
            ignored_any
        }
    }

    #[test]
    fn op_names_are_the_variants_serde_knows() {
        // A variant added to Op (and to Op::name(), whose match is
        // exhaustive) but not to Op::NAMES fails here, and so would a name
        // in NAMES that serde does not accept.
        let serde_names = variants_serde_lists::<Op>(json!({"op": "?"}));
        assert_eq!(serde_names, Op::NAMES);
        for name in Op::NAMES {
            if let Err((_, e)) = parse_request(json!({"id": 1, "op": name}).to_string().as_bytes()) {
                assert_ne!(e.code, ErrorCode::Unsupported, "{name}");
            }
        }
    }

    #[test]
    fn error_codes_are_the_variants_serde_knows() {
        let serde_names = ErrorCode::deserialize(VariantNames).unwrap_err().to_string();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.name()).collect();
        assert_eq!(serde_names, all.join(" "));
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.name()));
            assert_eq!(serde_json::from_value::<ErrorCode>(json!(code.name())).unwrap(), *code);
            assert_eq!(code.to_string(), code.name());
        }
    }

    #[test]
    fn an_exec_failure_is_on_the_wire_only_when_said() {
        let plain = ErrorBody::new(ErrorCode::ExecFailed, "cannot exec \"/x\"");
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            json!({"code": "exec_failed", "message": "cannot exec \"/x\""})
        );
        let not_found = plain.clone().with_exec_failure(ExecFailure::ProgramNotFound);
        let v = serde_json::to_value(&not_found).unwrap();
        assert_eq!(v["exec_failure"], "program_not_found");
        assert_eq!(serde_json::from_value::<ErrorBody>(v).unwrap(), not_found);
        // From an older agent, none; from a newer one, one this version
        // does not know.
        let old: ErrorBody = serde_json::from_value(json!({"code": "exec_failed", "message": "m"})).unwrap();
        assert_eq!(old.exec_failure, None);
        let newer: ErrorBody =
            serde_json::from_value(json!({"code": "exec_failed", "message": "m", "exec_failure": "no_cpu"})).unwrap();
        assert_eq!(newer.exec_failure, Some(ExecFailure::Unknown));
    }

    #[test]
    fn container_ops_keep_the_request_id() {
        let req = Request {
            id: 9,
            op: Op::CreateContainer {
                spec: Box::new(ContainerSpec {
                    id: "web".into(),
                    ..Default::default()
                }),
            },
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["id"], 9);
        assert_eq!(v["spec"]["id"], "web");
        assert_eq!(parse_request(v.to_string().as_bytes()).unwrap(), req);
        let req = Request {
            id: 10,
            op: Op::KillContainer {
                container: "web".into(),
                signal: 9,
                all: true,
            },
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"id": 10, "op": "kill_container", "container": "web", "signal": 9, "all": true})
        );
    }

    #[test]
    fn response_wire_shape() {
        let ok = Response {
            id: 2,
            outcome: Outcome::Ok(json!({"pid": 5})),
        };
        assert_eq!(serde_json::to_value(&ok).unwrap(), json!({"id": 2, "ok": {"pid": 5}}));
        let err = Response {
            id: 3,
            outcome: Outcome::Err(ErrorBody::new(ErrorCode::NotFound, "no process 9")),
        };
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(
            v,
            json!({"id": 3, "err": {"code": "not_found", "message": "no process 9"}})
        );
        assert_eq!(serde_json::from_value::<Response>(v).unwrap(), err);
    }

    #[test]
    fn unknown_op_is_unsupported_and_bad_fields_invalid() {
        let (id, e) = parse_request(br#"{"id":4,"op":"frobnicate"}"#).unwrap_err();
        assert_eq!((id, e.code), (4, ErrorCode::Unsupported));
        let (id, e) = parse_request(br#"{"id":5,"op":"signal","process":"x"}"#).unwrap_err();
        assert_eq!((id, e.code), (5, ErrorCode::InvalidRequest));
        let (id, e) = parse_request(br#"{"op":"stats"}"#).unwrap_err();
        assert_eq!((id, e.code), (0, ErrorCode::InvalidRequest));
        let (_, e) = parse_request(b"[1,2]").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let (_, e) = parse_request(b"{nope").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);
    }

    #[test]
    fn open_and_attach_reply() {
        let open = Open::Attach {
            process: 9,
            stream: StreamKind::Stderr,
            key: None,
        };
        assert_eq!(
            serde_json::to_value(&open).unwrap(),
            json!({"open": "attach", "process": 9, "stream": "stderr"})
        );
        assert_eq!(
            serde_json::to_value(Open::Control { key: None }).unwrap(),
            json!({"open": "control"})
        );
        let key = crate::AgentKey::from_hex(&"ab".repeat(32)).unwrap();
        let keyed: Open = serde_json::from_value(json!({"open": "control", "key": "ab".repeat(32)})).unwrap();
        assert_eq!(keyed.key(), Some(&key));
        assert!(serde_json::from_value::<Open>(json!({"open": "control", "key": "short"})).is_err());
        assert_eq!(serde_json::to_value(AttachReply::Ok(())).unwrap(), json!({"ok": null}));
    }

    #[test]
    fn unknown_error_code_from_a_newer_agent() {
        let e: ErrorBody = serde_json::from_value(json!({"code": "brand_new", "message": "m"})).unwrap();
        assert_eq!(e.code, ErrorCode::Unknown);
    }

    #[test]
    fn shell_code() {
        assert_eq!(
            ExitStatus {
                code: Some(42),
                signal: None
            }
            .shell_code(),
            42
        );
        assert_eq!(
            ExitStatus {
                code: None,
                signal: Some(9)
            }
            .shell_code(),
            137
        );
    }
}

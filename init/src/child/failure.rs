//! What the child reports when a step before exec fails, and how the agent
//! describes it: the step, the errno and, for a step over a list, which
//! item; each described naming the value that failed.

use std::ffi::CStr;
use std::io;

use super::command::Command;
use super::root::EnterStep;
use super::security;
use super::setup::SetupStep;

/// The steps of the child, in order; the code travels through the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Resetting the signal dispositions and mask.
    SignalMask = 1,
    /// `setsid`.
    Session = 2,
    /// Making the terminal the controlling terminal.
    ControllingTerminal = 3,
    /// Moving the stdio onto 0, 1 and 2.
    Stdio = 4,
    /// The supplementary groups.
    Groups = 5,
    /// The group id.
    Gid = 6,
    /// The user id.
    Uid = 7,
    /// The working directory.
    Cwd = 8,
    /// `execve` itself.
    Exec = 9,
    /// A mount namespace for the root.
    RootNamespace = 10,
    /// The root bound onto itself.
    RootBind = 11,
    /// `/proc` in the root.
    RootProc = 12,
    /// `/sys` in the root.
    RootSys = 13,
    /// `/dev` in the root.
    RootDev = 14,
    /// `pivot_root` into the root.
    RootPivot = 15,
    /// `oom_score_adj`.
    OomScoreAdj = 16,
    /// A resource limit; `detail` is its index.
    Rlimit = 17,
    /// Dropping a capability from the bounding set; `detail` is its number.
    BoundingSet = 18,
    /// Keeping the capabilities across the change of user.
    KeepCaps = 19,
    /// The capability sets.
    Capabilities = 20,
    /// Raising an ambient capability; `detail` is its number.
    AmbientCaps = 21,
    /// `no_new_privs`.
    NoNewPrivs = 22,
    /// The spec's seccomp filter.
    Seccomp = 23,
    /// The filter that refuses `AF_VSOCK` sockets (`vsock_filter.rs`).
    VsockFilter = 24,
    /// Waiting for the agent (its gate).
    Sync = 25,
    /// Becoming root in a user namespace.
    UserRoot = 26,
    /// Entering a namespace by path; `detail` is its index.
    JoinNamespace = 27,
    /// Unsharing the container's namespaces.
    Unshare = 28,
    /// A step of the container's filesystem setup; `detail` is its
    /// `SetupStep::code`.
    Setup = 29,
    /// Giving back the descriptor limit the agent raised for itself.
    FdLimit = 30,
    /// Bringing up the loopback interface of a new network namespace.
    Loopback = 31,
    /// Dropping `CAP_SYS_PTRACE` (`security::drop_ptrace`).
    DropPtrace = 32,
    /// Not a failure: the container is set up and waits for its start.
    Ready = 100,
    /// Not a failure: the container's mounts are made, before
    /// `pivot_root`; it waits while the agent runs the creation hooks.
    Mounted = 101,
}

impl From<EnterStep> for Step {
    fn from(step: EnterStep) -> Step {
        match step {
            EnterStep::MountNamespace => Step::RootNamespace,
            EnterStep::BindRoot => Step::RootBind,
            EnterStep::Proc => Step::RootProc,
            EnterStep::Sys => Step::RootSys,
            EnterStep::Dev => Step::RootDev,
            EnterStep::Pivot => Step::RootPivot,
        }
    }
}

impl Step {
    fn from_code(code: u32) -> Option<Step> {
        Some(match code {
            1 => Step::SignalMask,
            2 => Step::Session,
            3 => Step::ControllingTerminal,
            4 => Step::Stdio,
            5 => Step::Groups,
            6 => Step::Gid,
            7 => Step::Uid,
            8 => Step::Cwd,
            9 => Step::Exec,
            10 => Step::RootNamespace,
            11 => Step::RootBind,
            12 => Step::RootProc,
            13 => Step::RootSys,
            14 => Step::RootDev,
            15 => Step::RootPivot,
            16 => Step::OomScoreAdj,
            17 => Step::Rlimit,
            18 => Step::BoundingSet,
            19 => Step::KeepCaps,
            20 => Step::Capabilities,
            21 => Step::AmbientCaps,
            22 => Step::NoNewPrivs,
            23 => Step::Seccomp,
            24 => Step::VsockFilter,
            25 => Step::Sync,
            26 => Step::UserRoot,
            27 => Step::JoinNamespace,
            28 => Step::Unshare,
            29 => Step::Setup,
            30 => Step::FdLimit,
            31 => Step::Loopback,
            32 => Step::DropPtrace,
            100 => Step::Ready,
            101 => Step::Mounted,
            _ => return None,
        })
    }
}

/// A step of the child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFailure {
    /// Which step (`None`: a code this agent does not know).
    pub step: Option<Step>,
    /// The errno it failed with.
    pub errno: i32,
    /// Which one, for a step over a list: the index of the rlimit, the
    /// number of the capability.
    pub detail: u32,
}

impl ChildFailure {
    pub(super) fn decode(buf: [u8; 12]) -> ChildFailure {
        let [a, b, c, d, e, f, g, h, i, j, k, l] = buf;
        ChildFailure {
            step: Step::from_code(u32::from_le_bytes([a, b, c, d])),
            errno: i32::from_le_bytes([e, f, g, h]),
            detail: u32::from_le_bytes([i, j, k, l]),
        }
    }

    /// [`ChildFailure::describe`] as an error that keeps the failure.
    pub fn error(&self, command: &Command, program: &CStr) -> ExecError {
        ExecError {
            failure: *self,
            description: self.describe(command, program),
        }
    }

    /// What failed, naming the value: `cannot change to working directory
    /// "/nope": No such file or directory (os error 2)`.
    pub fn describe(&self, command: &Command, program: &CStr) -> String {
        let err = io::Error::from_raw_os_error(self.errno);
        match self.step {
            Some(Step::SignalMask) => format!("cannot reset the signal mask: {err}"),
            Some(Step::Session) => format!("cannot create a new session: {err}"),
            Some(Step::ControllingTerminal) => format!("cannot make the terminal the controlling terminal: {err}"),
            Some(Step::Stdio) => format!("cannot set up stdin, stdout and stderr: {err}"),
            Some(Step::Groups) => {
                let gids = command
                    .user
                    .as_ref()
                    .map(|u| u.additional_gids.clone())
                    .unwrap_or_default();
                format!("cannot set supplementary groups {gids:?}: {err}")
            }
            Some(Step::Gid) => format!(
                "cannot set group id {}: {err}",
                command.user.as_ref().map_or(0, |u| u.gid)
            ),
            Some(Step::Uid) => format!(
                "cannot set user id {}: {err}",
                command.user.as_ref().map_or(0, |u| u.uid)
            ),
            Some(Step::Cwd) => format!("cannot change to working directory \"{}\": {err}", command.cwd),
            Some(Step::Exec) => format!("cannot exec \"{}\": {err}", program.to_string_lossy()),
            Some(Step::OomScoreAdj) => format!(
                "cannot set oom_score_adj to {}: {err}",
                command.security.oom_score_adj.unwrap_or_default()
            ),
            Some(Step::Rlimit) => match command.security.rlimits.get(self.detail as usize) {
                Some(l) => format!("cannot set {} to {}/{}: {err}", l.kind, l.soft, l.hard),
                None => format!("cannot set a resource limit: {err}"),
            },
            Some(Step::BoundingSet) => format!(
                "cannot drop {} from the bounding set: {err}",
                security::capability_name(self.detail)
            ),
            Some(Step::KeepCaps) => format!("cannot keep the capabilities across the change of user: {err}"),
            Some(Step::Capabilities) => format!("cannot set the capabilities: {err}"),
            Some(Step::AmbientCaps) => format!(
                "cannot raise the ambient capability {}: {err}",
                security::capability_name(self.detail)
            ),
            Some(Step::NoNewPrivs) => format!("cannot set no_new_privs: {err}"),
            Some(Step::Seccomp) => format!("cannot install the seccomp filter: {err}"),
            Some(Step::VsockFilter) => format!("cannot install the filter that keeps it off vsock: {err}"),
            Some(Step::DropPtrace) => {
                format!("cannot drop CAP_SYS_PTRACE, which would reach the agent's memory: {err}")
            }
            Some(Step::FdLimit) => format!("cannot set its descriptor limit back to the agent's default: {err}"),
            Some(Step::Loopback) => {
                format!("cannot bring up the loopback interface of its new network namespace: {err}")
            }
            Some(Step::Sync) => format!("lost the agent while waiting for it: {err}"),
            Some(Step::UserRoot) => format!("cannot become root in the new user namespace (is 0 mapped?): {err}"),
            Some(Step::JoinNamespace) => format!("cannot enter a namespace: {err}"),
            Some(Step::Unshare) => format!("cannot create the container's namespaces: {err}"),
            Some(Step::Setup) => match SetupStep::from_code(self.detail) {
                Some(step) => format!("cannot set up the container's filesystem ({step:?}): {err}"),
                None => format!("cannot set up the container's filesystem: {err}"),
            },
            Some(Step::Ready | Step::Mounted) => "the process stopped before exec".to_owned(),
            Some(
                step @ (Step::RootNamespace
                | Step::RootBind
                | Step::RootProc
                | Step::RootSys
                | Step::RootDev
                | Step::RootPivot),
            ) => {
                let what = match step {
                    Step::RootNamespace => "cannot create a mount namespace",
                    Step::RootBind => "cannot bind the root onto itself",
                    Step::RootProc => "cannot mount /proc in it",
                    Step::RootSys => "cannot mount /sys in it",
                    Step::RootDev => "cannot bind /dev into it",
                    _ => "cannot pivot into it",
                };
                let root = command
                    .root
                    .as_deref()
                    .map(|r| r.display().to_string())
                    .unwrap_or_default();
                format!("cannot enter the root filesystem \"{root}\": {what}: {err}")
            }
            None => format!("the child failed before exec: {err}"),
        }
    }
}

/// A child that failed before its exec, described naming the value
/// involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct ExecError {
    /// What the child reported: the step, the errno.
    pub failure: ChildFailure,
    /// What failed, naming the value: `cannot exec "/bin/x": ...`.
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::ProcessSpec;

    #[test]
    fn failure_messages_name_the_step_and_value() {
        let spec = ProcessSpec {
            args: vec!["/bin/x".into()],
            cwd: Some("/nope".into()),
            ..Default::default()
        };
        let command = Command::from_spec(spec).unwrap();
        let program = c"/bin/x";
        let f = ChildFailure::decode([8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            f,
            ChildFailure {
                step: Some(Step::Cwd),
                errno: libc::ENOENT,
                detail: 0,
            }
        );
        let msg = f.describe(&command, program);
        assert!(
            msg.starts_with("cannot change to working directory \"/nope\": No such file or directory"),
            "{msg}"
        );
        let f = ChildFailure {
            step: Some(Step::Exec),
            errno: libc::EACCES,
            detail: 0,
        };
        assert!(f
            .describe(&command, program)
            .starts_with("cannot exec \"/bin/x\": Permission denied"));
        for code in 1..=31 {
            assert_eq!(Step::from_code(code).map(|s| s as u32), Some(code));
        }
        assert_eq!(Step::from_code(0), None);
    }

    #[test]
    fn capability_failures_name_the_capability() {
        let command = Command::from_spec(ProcessSpec {
            args: vec!["/bin/x".into()],
            ..Default::default()
        })
        .unwrap();
        let f = ChildFailure {
            step: Some(Step::AmbientCaps),
            errno: libc::EPERM,
            detail: 13,
        };
        assert!(f
            .describe(&command, c"/bin/x")
            .starts_with("cannot raise the ambient capability CAP_NET_RAW: Operation not permitted"));
        let f = ChildFailure {
            step: Some(Step::Capabilities),
            ..f
        };
        assert!(f
            .describe(&command, c"/bin/x")
            .starts_with("cannot set the capabilities: "));
    }
}

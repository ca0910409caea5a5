//! Every error of the layers below as the protocol carries it: one
//! [`ErrorCode`] per kind of failure, and the error's own text. The only
//! place that knows the wire's codes.

use agent_proto::{ErrorBody, ErrorCode, ExecFailure};

use crate::container::ContainerError;
use crate::guest::network::NetworkError;
use crate::guest::protect::WorkloadsError;
use crate::guest::stats::StatsError;
use crate::process::ProcessError;

/// An error the host can be told about.
pub trait WireError: std::fmt::Display {
    /// Its protocol code.
    fn code(&self) -> ErrorCode;

    /// What failed to start, where the host decides on it (a program not
    /// found is the shell's 127, any other failure to start 126).
    fn exec_failure(&self) -> Option<ExecFailure> {
        None
    }

    /// The error as an answer: its code, its text, and what failed to
    /// start.
    fn to_body(&self) -> ErrorBody {
        let body = ErrorBody::new(self.code(), self.to_string());
        match self.exec_failure() {
            Some(failure) => body.with_exec_failure(failure),
            None => body,
        }
    }
}

impl WireError for ProcessError {
    fn code(&self) -> ErrorCode {
        match self {
            ProcessError::NotFound { .. } => ErrorCode::NotFound,
            ProcessError::InvalidState { .. } => ErrorCode::InvalidState,
            ProcessError::InvalidSpec(_) | ProcessError::BadSignal { .. } => ErrorCode::InvalidRequest,
            ProcessError::ProgramNotFound(_)
            | ProcessError::NoRootfs { .. }
            | ProcessError::JoinContainer { .. }
            | ProcessError::ExecFailed(_) => ErrorCode::ExecFailed,
            ProcessError::Stdio { .. }
            | ProcessError::Spawn { .. }
            | ProcessError::Signal { .. }
            | ProcessError::Resize { .. }
            | ProcessError::Start { .. }
            | ProcessError::Lost { .. } => ErrorCode::Internal,
        }
    }

    fn exec_failure(&self) -> Option<ExecFailure> {
        matches!(self, ProcessError::ProgramNotFound(_)).then_some(ExecFailure::ProgramNotFound)
    }
}

impl WireError for ContainerError {
    fn code(&self) -> ErrorCode {
        match self {
            ContainerError::NotFound { .. } => ErrorCode::NotFound,
            ContainerError::Exists { .. } | ContainerError::InvalidState { .. } => ErrorCode::InvalidState,
            ContainerError::Plan(_)
            | ContainerError::Spec(_)
            | ContainerError::Resources { .. }
            | ContainerError::ExecRoot
            | ContainerError::BadSignal { .. } => ErrorCode::InvalidRequest,
            ContainerError::NoRootfs { .. }
            | ContainerError::ProgramNotFound { .. }
            | ContainerError::SetupFailed { .. } => ErrorCode::ExecFailed,
            ContainerError::Cgroup { .. }
            | ContainerError::Stdio { .. }
            | ContainerError::Terminal { .. }
            | ContainerError::TerminalNul { .. }
            | ContainerError::Gate { .. }
            | ContainerError::Spawn { .. }
            | ContainerError::IdMaps { .. }
            | ContainerError::Wake { .. }
            | ContainerError::Signal { .. }
            | ContainerError::FreezeTimeout { .. }
            | ContainerError::StillRunning { .. } => ErrorCode::Internal,
            ContainerError::Process(e) => e.code(),
        }
    }

    fn exec_failure(&self) -> Option<ExecFailure> {
        match self {
            ContainerError::ProgramNotFound { .. } => Some(ExecFailure::ProgramNotFound),
            ContainerError::Process(e) => e.exec_failure(),
            _ => None,
        }
    }
}

impl WireError for NetworkError {
    fn code(&self) -> ErrorCode {
        match self {
            NetworkError::BadAddress { .. } | NetworkError::BadHostname { .. } | NetworkError::NoSuchMac { .. } => {
                ErrorCode::InvalidRequest
            }
            NetworkError::NotOwned(_) => ErrorCode::InvalidState,
            NetworkError::Netlink(_)
            | NetworkError::SetHostname { .. }
            | NetworkError::WriteFile { .. }
            | NetworkError::Relay { .. } => ErrorCode::Internal,
        }
    }
}

impl WireError for StatsError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

impl WireError for WorkloadsError {
    fn code(&self) -> ErrorCode {
        match self {
            WorkloadsError::NoWorkloads | WorkloadsError::NoCgroup2(_) => ErrorCode::InvalidState,
            WorkloadsError::TooSmall { .. } => ErrorCode::InvalidRequest,
            WorkloadsError::MemTotal(_) | WorkloadsError::Io { .. } => ErrorCode::Internal,
        }
    }
}

/// The answer to new work once the shutdown has begun.
pub fn shutting_down() -> ErrorBody {
    ErrorBody::new(ErrorCode::ShuttingDown, "the agent is shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::command::SpecError;
    use crate::container::PlanError;

    #[test]
    fn process_errors_map_to_codes() {
        assert_eq!(ProcessError::NotFound { id: 3 }.to_body().message, "no process 3");
        assert_eq!(ProcessError::BadSignal { signal: 99 }.code(), ErrorCode::InvalidRequest);
        assert_eq!(
            ProcessError::from(SpecError::NoProgram).code(),
            ErrorCode::InvalidRequest
        );
        assert_eq!(ProcessError::Lost { id: 4 }.code(), ErrorCode::Internal);
        assert_eq!(shutting_down().code, ErrorCode::ShuttingDown);
    }

    #[test]
    fn container_errors_map_to_codes() {
        let id = || "c1".to_owned();
        let bad_id = ContainerError::from(PlanError::BadId { id: "..".into() });
        assert_eq!(bad_id.code(), ErrorCode::InvalidRequest);
        assert!(bad_id.to_body().message.starts_with("container id \"..\" is invalid"));
        assert_eq!(ContainerError::Exists { id: id() }.code(), ErrorCode::InvalidState);
        let failed = ContainerError::SetupFailed {
            id: id(),
            source: crate::container::SetupError::Ended,
        };
        assert_eq!(failed.code(), ErrorCode::ExecFailed);
        assert_eq!(
            failed.to_string(),
            "container \"c1\": its process ended during the setup"
        );
        let nested = ContainerError::from(ProcessError::NotFound { id: 7 });
        assert_eq!(nested.code(), ErrorCode::NotFound);
        let frozen = ContainerError::FreezeTimeout {
            id: id(),
            frozen: true,
            after: std::time::Duration::from_secs(5),
        };
        assert_eq!(frozen.code(), ErrorCode::Internal);
        assert_eq!(
            frozen.to_string(),
            "container \"c1\": its cgroup is not frozen after 5s"
        );
    }

    #[test]
    fn a_program_not_found_says_so_on_the_wire() {
        let missing = || crate::child::command::NotFound {
            program: "nope".into(),
            path: "/bin".into(),
        };
        let body = ProcessError::from(missing()).to_body();
        assert_eq!(
            (body.code, body.exec_failure),
            (ErrorCode::ExecFailed, Some(ExecFailure::ProgramNotFound))
        );
        let body = ContainerError::ProgramNotFound {
            id: "c1".into(),
            source: missing(),
        }
        .to_body();
        assert_eq!(body.exec_failure, Some(ExecFailure::ProgramNotFound));
        let body = ContainerError::from(ProcessError::from(missing())).to_body();
        assert_eq!(body.exec_failure, Some(ExecFailure::ProgramNotFound));
        // Any other failure to start is only exec_failed.
        let ended = ContainerError::SetupFailed {
            id: "c1".into(),
            source: crate::container::SetupError::Ended,
        };
        assert_eq!(ended.to_body().exec_failure, None);
    }

    #[test]
    fn network_errors_map_to_codes() {
        let bad = NetworkError::BadHostname { name: "a b".into() };
        assert_eq!(bad.code(), ErrorCode::InvalidRequest);
        assert_eq!(NetworkError::NotOwned("no").code(), ErrorCode::InvalidState);
    }
}

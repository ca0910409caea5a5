//! What to run: a [`ProcessSpec`] checked and turned into the C strings that
//! `execve` needs, the environment defaults applied, and the program looked
//! up in `PATH`.
//!
//! Everything here happens in the agent before fork: after fork the child
//! may not allocate.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agent_proto::{ProcessSpec, User, WindowSize};

use super::seccomp::Filter;
use super::security::{Security, SecurityError};

/// The `PATH` of a process whose environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `TERM` of a process with a terminal whose environment has none.
pub const DEFAULT_TERM: &str = "xterm";

/// Why a process spec is refused (`invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `args` is empty.
    #[error("args is empty: there is no program to run")]
    NoProgram,
    /// `args[0]` is empty.
    #[error("the program (args[0]) is an empty string")]
    EmptyProgram,
    /// An argument cannot be a C string.
    #[error("argument {index} ({arg:?}) contains a NUL byte")]
    ArgNul {
        /// Its index in `args`.
        index: usize,
        /// As given.
        arg: String,
    },
    /// An environment entry without `=`.
    #[error("environment entry {entry:?} has no '='")]
    EnvNoEquals {
        /// As given.
        entry: String,
    },
    /// An environment entry that starts with `=`.
    #[error("environment entry {entry:?} has an empty name")]
    EnvEmptyName {
        /// As given.
        entry: String,
    },
    /// An environment entry that cannot be a C string.
    #[error("environment entry {entry:?} contains a NUL byte")]
    EnvNul {
        /// As given.
        entry: String,
    },
    /// A working directory that cannot be a C string.
    #[error("working directory {cwd:?} contains a NUL byte")]
    CwdNul {
        /// As given.
        cwd: String,
    },
    /// A root that is relative or cannot be a C string.
    #[error("root {root:?} is not an absolute path without NUL bytes")]
    BadRoot {
        /// As given.
        root: String,
    },
    /// The security attributes are refused.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The seccomp profile is refused.
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::SeccompError),
}

/// The program is nowhere in `PATH` (`exec_failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("program \"{program}\" not found in PATH={path}")]
pub struct NotFound {
    /// `args[0]`.
    pub program: String,
    /// The `PATH` searched.
    pub path: String,
}

/// A checked process spec, ready for fork and exec.
#[derive(Debug)]
pub struct Command {
    /// args[0], as given.
    pub program: String,
    pub argv: Vec<CString>,
    /// The complete environment, defaults included.
    pub env: Vec<CString>,
    /// The `PATH` the program is looked up in.
    pub search_path: String,
    /// The working directory, as given (or `/`), and as a C string.
    pub cwd: String,
    pub cwd_c: CString,
    pub user: Option<User>,
    pub terminal: bool,
    pub size: Option<WindowSize>,
    /// The root filesystem to run in, if not the agent's.
    pub root: Option<PathBuf>,
    pub root_c: Option<CString>,
    /// oom_score_adj, rlimits, umask, capabilities, no_new_privs.
    pub security: Security,
    /// The compiled seccomp filter.
    pub seccomp: Option<Filter>,
    /// Whether it may open `AF_VSOCK` sockets (`vsock_filter.rs`).
    pub allow_vsock: bool,
    /// Whether it goes without `CAP_SYS_PTRACE` (`security::drop_ptrace`):
    /// a process the host runs in the agent's PID namespace whose spec
    /// names no capabilities. Off for the container engine's own (hooks,
    /// which run with the runtime's privileges).
    pub drop_ptrace: bool,
}

impl Command {
    /// Checks `spec` and prepares its strings.
    pub fn from_spec(spec: ProcessSpec) -> Result<Command, SpecError> {
        let program = spec.args.first().ok_or(SpecError::NoProgram)?.clone();
        let security = Security::from_spec(&spec)?;
        let seccomp = spec.seccomp.as_deref().map(Filter::compile).transpose()?;
        if program.is_empty() {
            return Err(SpecError::EmptyProgram);
        }
        let argv = spec
            .args
            .iter()
            .enumerate()
            .map(|(index, arg)| {
                CString::new(arg.as_str()).map_err(|_| SpecError::ArgNul {
                    index,
                    arg: arg.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for entry in &spec.env {
            check_env_entry(entry)?;
        }
        let env = effective_env(spec.env, spec.terminal);
        let search_path = env_value(&env, "PATH").unwrap_or(DEFAULT_PATH).to_owned();
        let env = env
            .into_iter()
            .map(|entry| CString::new(entry.clone()).map_err(|_| SpecError::EnvNul { entry }))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = spec.cwd.unwrap_or_else(|| "/".to_owned());
        let cwd_c = CString::new(cwd.as_str()).map_err(|_| SpecError::CwdNul { cwd: cwd.clone() })?;
        let root_c = match &spec.root {
            Some(root) if root.starts_with('/') => {
                Some(CString::new(root.as_str()).map_err(|_| SpecError::BadRoot { root: root.clone() })?)
            }
            Some(root) => return Err(SpecError::BadRoot { root: root.clone() }),
            None => None,
        };
        Ok(Command {
            program,
            argv,
            env,
            search_path,
            cwd,
            cwd_c,
            user: spec.user,
            terminal: spec.terminal,
            size: spec.size,
            root: spec.root.map(PathBuf::from),
            root_c,
            security,
            seccomp,
            allow_vsock: spec.allow_vsock,
            drop_ptrace: false,
        })
    }

    /// The path to exec: the program itself when it contains `/`, else the
    /// first executable regular file of that name in `PATH` (looked up
    /// inside the process's root, when it has one).
    pub fn resolve_program(&self) -> Result<CString, NotFound> {
        let not_found = || NotFound {
            program: self.program.clone(),
            path: self.search_path.clone(),
        };
        if self.program.contains('/') {
            return CString::new(self.program.as_str()).map_err(|_| not_found());
        }
        let found = match &self.root {
            Some(root) => find_in_path_in_root(root, &self.program, &self.search_path),
            None => find_in_path(&self.program, &self.search_path),
        }
        .ok_or_else(not_found)?;
        CString::new(found.as_os_str().as_bytes()).map_err(|_| not_found())
    }
}

/// One `KEY=VALUE` entry: a `=`, a non-empty name, no NUL.
fn check_env_entry(entry: &str) -> Result<(), SpecError> {
    if entry.contains('\0') {
        return Err(SpecError::EnvNul {
            entry: entry.to_owned(),
        });
    }
    match entry.split_once('=') {
        None => Err(SpecError::EnvNoEquals {
            entry: entry.to_owned(),
        }),
        Some(("", _)) => Err(SpecError::EnvEmptyName {
            entry: entry.to_owned(),
        }),
        Some(_) => Ok(()),
    }
}

/// The request's environment, plus a default `PATH` when it has none and
/// `TERM=xterm` with a terminal when it has none.
pub fn effective_env(mut env: Vec<String>, terminal: bool) -> Vec<String> {
    if env_value(&env, "PATH").is_none() {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if terminal && env_value(&env, "TERM").is_none() {
        env.push(format!("TERM={DEFAULT_TERM}"));
    }
    env
}

/// The value of the first `name=` entry, as `getenv` would find it.
fn env_value<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter().find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
}

/// The first executable regular file named `program` in the directories of
/// `path` (empty entries are skipped: they would mean the child's cwd).
pub fn find_in_path(program: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable_file(candidate))
}

/// [`find_in_path`] with every lookup resolved inside `root`.
pub fn find_in_path_in_root(root: &Path, program: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .to_str()
                .is_some_and(|c| crate::sys::in_root::is_executable_in_root(root, c))
        })
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str], env: &[&str]) -> ProcessSpec {
        ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            ..ProcessSpec::default()
        }
    }

    fn strings(v: &[CString]) -> Vec<String> {
        v.iter().map(|c| c.to_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn env_defaults() {
        let env = effective_env(vec!["A=1".into()], false);
        assert_eq!(env, ["A=1".to_string(), format!("PATH={DEFAULT_PATH}")]);
        let env = effective_env(vec!["PATH=/x".into()], true);
        assert_eq!(env, ["PATH=/x", "TERM=xterm"]);
        let env = effective_env(vec!["TERM=dumb".into(), "PATH=/y".into()], true);
        assert_eq!(env, ["TERM=dumb", "PATH=/y"]);
        // PATHX= is not PATH=.
        let env = effective_env(vec!["PATHX=1".into()], false);
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn command_from_spec() {
        let mut s = spec(&["echo", "hi"], &["PATH=/bin:/usr/bin", "X=a=b"]);
        s.cwd = Some("/tmp".into());
        let c = Command::from_spec(s).unwrap();
        assert_eq!(c.program, "echo");
        assert_eq!(strings(&c.argv), ["echo", "hi"]);
        assert_eq!(strings(&c.env), ["PATH=/bin:/usr/bin", "X=a=b"]);
        assert_eq!(c.search_path, "/bin:/usr/bin");
        assert_eq!(c.cwd, "/tmp");
        let c = Command::from_spec(spec(&["true"], &[])).unwrap();
        assert_eq!(c.search_path, DEFAULT_PATH);
        assert_eq!(c.cwd, "/");
    }

    #[test]
    fn bad_specs_name_the_entry() {
        assert_eq!(Command::from_spec(spec(&[], &[])).unwrap_err(), SpecError::NoProgram);
        assert_eq!(
            Command::from_spec(spec(&[""], &[])).unwrap_err(),
            SpecError::EmptyProgram
        );
        let e = Command::from_spec(spec(&["echo", "a\0b"], &[])).unwrap_err();
        assert_eq!(
            e,
            SpecError::ArgNul {
                index: 1,
                arg: "a\0b".into()
            }
        );
        assert!(e.to_string().contains("argument 1"), "{e}");
        let e = Command::from_spec(spec(&["true"], &["NOEQUALS"])).unwrap_err();
        assert_eq!(e.to_string(), "environment entry \"NOEQUALS\" has no '='");
        let e = Command::from_spec(spec(&["true"], &["=x"])).unwrap_err();
        assert!(matches!(e, SpecError::EnvEmptyName { .. }));
        let e = Command::from_spec(spec(&["true"], &["A=\0"])).unwrap_err();
        assert!(matches!(e, SpecError::EnvNul { .. }), "{e}");
        let mut s = spec(&["true"], &[]);
        s.cwd = Some("/a\0".into());
        assert!(matches!(Command::from_spec(s).unwrap_err(), SpecError::CwdNul { .. }));
    }

    #[test]
    fn path_resolution() {
        let root = std::env::temp_dir().join(format!("vminitd-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let write = |p: &Path, mode: u32| {
            std::fs::write(p, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&a.join("tool"), 0o644); // not executable: skipped
        write(&b.join("tool"), 0o755);
        std::fs::create_dir(a.join("dir")).unwrap(); // a directory: skipped
        write(&b.join("dir"), 0o755);
        let path = format!("{}::{}", a.display(), b.display());
        assert_eq!(find_in_path("tool", &path), Some(b.join("tool")));
        assert_eq!(find_in_path("dir", &path), Some(b.join("dir")));
        assert_eq!(find_in_path("missing", &path), None);

        let c = Command::from_spec(spec(&["tool"], &[&format!("PATH={path}")])).unwrap();
        assert_eq!(
            c.resolve_program().unwrap().to_str().unwrap(),
            b.join("tool").to_str().unwrap()
        );
        let c = Command::from_spec(spec(&["nope"], &[&format!("PATH={path}")])).unwrap();
        let e = c.resolve_program().unwrap_err();
        assert_eq!(e.to_string(), format!("program \"nope\" not found in PATH={path}"));
        // With a '/', the program is used as is, existing or not.
        let c = Command::from_spec(spec(&["./x/y"], &[])).unwrap();
        assert_eq!(c.resolve_program().unwrap().to_str().unwrap(), "./x/y");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

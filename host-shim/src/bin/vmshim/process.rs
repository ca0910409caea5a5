//! What `exec` and `run` share: the process flags, and driving a running
//! process (terminal size, forwarded signals) until it ends.

use std::time::Duration;

use agent_proto::{ExitStatus, ProcessSpec, User, WindowSize};
use anyhow::{bail, Context, Result};
use clap::Args;
use host_shim::exec::{ExecIo, Running};
use host_shim::terminal::window_size;
use host_shim::Client;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Flags that describe the process.
#[derive(Args, Debug, Clone)]
pub struct ProcessArgs {
    /// Run on a terminal (the host terminal goes to raw mode).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment entry KEY=VALUE, or KEY to pass the host's value.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory in the guest.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: UID or UID:GID (numeric).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Let the process open AF_VSOCK sockets (by default a seccomp filter
    /// of the agent's refuses them).
    #[arg(long)]
    pub allow_vsock: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ProcessArgs {
    /// The process spec these flags describe.
    pub fn spec(&self) -> Result<ProcessSpec> {
        Ok(ProcessSpec {
            args: self.command.clone(),
            env: resolve_env(&self.env)?,
            cwd: self.workdir.clone(),
            user: self.user.as_deref().map(parse_user).transpose()?,
            terminal: self.tty,
            size: if self.tty {
                window_size(libc::STDOUT_FILENO).map(|(rows, cols)| WindowSize { rows, cols })
            } else {
                None
            },
            allow_vsock: self.allow_vsock,
            ..Default::default()
        })
    }
}

/// The host's stdio for a process; stdin only when `stdin` is set.
pub fn host_stdio(stdin: bool) -> ExecIo {
    ExecIo {
        stdin: stdin.then(|| Box::new(tokio::io::stdin()) as _),
        stdout: Some(Box::new(tokio::io::stdout())),
        stderr: Some(Box::new(tokio::io::stderr())),
    }
}

/// How driving a process ended.
pub enum Ended {
    /// The process ended.
    Exited(ExitStatus),
    /// vmshim got signal N, forwarded it, and the process did not end within
    /// the grace period.
    Interrupted(i32),
}

/// The signals vmshim forwards to the process.
const FORWARDED: [fn() -> SignalKind; 6] = [
    SignalKind::interrupt,
    SignalKind::terminate,
    SignalKind::hangup,
    SignalKind::quit,
    SignalKind::user_defined1,
    SignalKind::user_defined2,
];

/// Waits for `running` to end, meanwhile forwarding vmshim's signals to it
/// and, with `tty`, terminal size changes. With `give_up_after`, a forwarded
/// SIGINT, SIGTERM or SIGHUP that does not end the process within that time
/// ends the wait with [`Ended::Interrupted`].
pub async fn drive(client: &Client, running: Running, tty: bool, give_up_after: Option<Duration>) -> Result<Ended> {
    let process = running.process;
    let mut winch = signal(SignalKind::window_change())?;
    let mut signals = Vec::new();
    for kind in FORWARDED {
        let kind = kind();
        signals.push((kind.as_raw_value(), signal(kind)?));
    }
    let wait = running.wait();
    tokio::pin!(wait);
    let mut deadline: Option<(tokio::time::Instant, i32)> = None;
    loop {
        let give_up = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = &mut wait => return Ok(Ended::Exited(status?)),
            _ = winch.recv(), if tty => {
                if let Some((rows, cols)) = window_size(libc::STDOUT_FILENO) {
                    let _ = client.resize(process, rows, cols).await;
                }
            }
            signo = next_signal(&mut signals) => {
                let _ = client.signal(process, signo).await;
                if let Some(grace) = give_up_after {
                    if deadline.is_none() && [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&signo) {
                        deadline = Some((tokio::time::Instant::now() + grace, signo));
                    }
                }
            }
            _ = give_up => {
                let (_, signo) = deadline.expect("the timer runs only with a deadline");
                return Ok(Ended::Interrupted(signo));
            }
        }
    }
}

/// The next of `signals` to arrive, by number.
async fn next_signal(signals: &mut [(i32, Signal)]) -> i32 {
    std::future::poll_fn(|cx| {
        for (signo, sig) in signals.iter_mut() {
            if sig.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*signo);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// `-e K=V` as given; `-e K` takes K from vmshim's own environment (and is
/// dropped when it has none there).
fn resolve_env(entries: &[String]) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for entry in entries {
        if entry.is_empty() || entry.starts_with('=') {
            bail!("bad environment entry {entry:?}: expected KEY=VALUE or KEY");
        }
        if entry.contains('=') {
            env.push(entry.clone());
        } else if let Ok(value) = std::env::var(entry) {
            env.push(format!("{entry}={value}"));
        }
    }
    Ok(env)
}

/// `UID` or `UID:GID`, numeric.
fn parse_user(s: &str) -> Result<User> {
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: u32 = uid
        .parse()
        .with_context(|| format!("bad user {s:?}: expected UID or UID:GID, numeric"))?;
    let gid: u32 = match gid {
        Some(g) => g
            .parse()
            .with_context(|| format!("bad group in {s:?}: expected a number"))?,
        None => uid,
    };
    Ok(User {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        assert_eq!(
            parse_user("1000").unwrap(),
            User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            parse_user("5:7").unwrap(),
            User {
                uid: 5,
                gid: 7,
                additional_gids: vec![]
            }
        );
        assert!(parse_user("root").unwrap_err().to_string().contains("root"));
        assert!(parse_user("1:x").is_err());
    }

    #[test]
    fn env_entries() {
        std::env::set_var("VMSHIM_TEST_PASSED", "yes");
        let env = resolve_env(&["A=1".into(), "VMSHIM_TEST_PASSED".into(), "VMSHIM_TEST_UNSET_X".into()]).unwrap();
        assert_eq!(env, ["A=1", "VMSHIM_TEST_PASSED=yes"]);
        assert!(resolve_env(&["=x".into()]).is_err());
    }
}

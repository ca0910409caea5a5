//! vminitd run by an ordinary user as a plain process (no namespaces of its
//! own, a child subreaper), as a developer or an unprivileged runtime would
//! run it on a host: its processes start, as that user, and still cannot
//! open a vsock socket unless their spec allows it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{Endpoint, ProcessSpec};
use host_shim::{AgentAddr, Client};
use vminitd_tests::{probe_bin, run, sh, vminitd_bin, TempDir};

/// The agent as `nobody`, under `runuser` in a process group of their own,
/// killed with it when dropped (`runuser` forks the program).
struct Unprivileged(Child);

impl Drop for Unprivileged {
    fn drop(&mut self) {
        // SAFETY: kill with integer arguments: the group runuser leads.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_agent_run_by_an_ordinary_user_starts_its_processes_off_vsock() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running the agent as another user needs root");
        return;
    }
    let dir = TempDir::new("agent-nobody");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Copies nobody can run, wherever the checkout is.
    let (agent_bin, probe) = (dir.path().join("vminitd"), dir.path().join("vsock-probe"));
    std::fs::copy(vminitd_bin(), &agent_bin).unwrap();
    std::fs::copy(probe_bin(), &probe).unwrap();
    let socket = dir.path().join("agent.sock");
    let _agent = Unprivileged(
        Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(&agent_bin)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("runuser"),
    );
    let addr = AgentAddr::new(Endpoint::Unix(socket.clone()), None);
    let client = Client::connect_with_deadline(addr, Instant::now() + Duration::from_secs(20))
        .await
        .expect("the agent answers its owner's root");

    let out = run(
        &client,
        sh("id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"),
        None,
    )
    .await
    .expect("a process of an unprivileged agent starts");
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_str());
    let lines = out.stdout_str();
    assert!(lines.starts_with("65534\n"), "{lines}");
    assert!(lines.contains("CapEff:\t0000000000000000\n"), "{lines}");
    // The vsock filter, installed with no_new_privs, which a process of an
    // agent without CAP_SYS_ADMIN needs for it.
    assert!(
        lines.contains("NoNewPrivs:\t1\n") && lines.contains("Seccomp:\t2\n"),
        "{lines}"
    );

    let probe_spec = |allow_vsock| ProcessSpec {
        args: vec![probe.display().to_string(), "2".into(), "1024".into()],
        allow_vsock,
        ..Default::default()
    };
    let refused = run(&client, probe_spec(false), None).await.unwrap();
    assert_eq!(refused.status.code, Some(2), "{}", refused.stdout_str());
    assert!(
        refused.stdout_str().contains("socket: Operation not permitted"),
        "{}",
        refused.stdout_str()
    );
    // Allowed, the socket is the host kernel's to give or refuse, not ours,
    // and the process keeps the right to gain privileges.
    let allowed = run(&client, probe_spec(true), None).await.unwrap();
    assert!(
        !allowed.stdout_str().contains("Operation not permitted"),
        "{}",
        allowed.stdout_str()
    );
    let out = run(
        &client,
        ProcessSpec {
            allow_vsock: true,
            ..sh("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status")
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.stdout_str(), "NoNewPrivs:\t0\nSeccomp:\t0\n");
}

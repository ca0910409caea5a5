//! Who reaches the agent, tried as an attacker would, with the agent as PID 1
//! of a namespace on the host: the agent key handed over at boot, another
//! local user, floods of idle and half-written connections, a session that
//! asks too much at once.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_proto::{
    encode_frame, read_frame, write_frame, AgentKey, AttachReply, Endpoint, ErrorCode, Open, Outcome, Response,
    StreamKind, Transport,
};
use host_shim::vm::vsock::NotifyListener;
use host_shim::{AgentAddr, Client};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use vminitd_tests::{run, sh, vmshim_bin, NamespacedAgent, TempDir};

/// An agent that was handed `key` over `--notify`, as a VM's agent is at
/// boot, by the host's own code (`NotifyListener`, then the control
/// session on the readiness connection, which is checked to serve).
async fn agent_with_key(dir: &TempDir, key: &AgentKey) -> NamespacedAgent {
    let path = dir.path().join("notify.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let notify = NotifyListener::Unix {
        listener,
        path: path.clone(),
    };
    let url = format!("unix:{}", path.display());
    let flags = ["--notify", url.as_str()];
    // The agent is started and handed its key at once: it answers no one
    // before it has the key.
    let readiness = async {
        let conn = notify.accept().await.expect("the agent announced itself");
        // The session's endpoint is only named in its errors.
        let addr = AgentAddr::new(Endpoint::Unix(path.clone()), Some(key.clone()));
        Client::over_readiness(addr, conn)
            .await
            .expect("the agent took the key")
    };
    let (agent, session) = tokio::join!(NamespacedAgent::start_with_key(&flags, key.clone()), readiness);
    notify.close();
    assert!(
        !path.exists(),
        "the readiness socket is removed once the key is handed over"
    );
    // The readiness connection is a control session of its own (its
    // client names the notify socket, so no stream is attached through it).
    let process = session.create(sh("exit 7")).await.unwrap();
    session.start(process).await.unwrap();
    assert_eq!(session.wait(process).await.unwrap().code, Some(7));
    agent
}

#[tokio::test]
async fn an_agent_given_a_key_serves_only_connections_that_show_it() {
    let dir = TempDir::new("keyed");
    let key = AgentKey::generate().unwrap();
    let agent = agent_with_key(&dir, &key).await;
    let addr = AgentAddr::new(agent.endpoint.clone(), Some(key.clone()));

    // The owner, with the key: served.
    let client = Client::connect(&addr).await.expect("the key opens the agent");
    let out = run(&client, sh("echo served"), None).await.unwrap();
    assert_eq!(out.stdout_str(), "served\n");

    // Without a key, or with another: refused before any op, and told why.
    let err = Client::connect(&agent.endpoint).await.err().expect("no key: refused");
    let body = err.agent_error().expect("the agent says why");
    assert_eq!(body.code, ErrorCode::Unauthorized, "{err}");
    assert!(body.message.contains("none was presented"), "{err}");
    let other = AgentAddr::new(agent.endpoint.clone(), Some(AgentKey::generate().unwrap()));
    let err = Client::connect(&other).await.err().expect("another key: refused");
    assert_eq!(
        err.agent_error().map(|e| e.code),
        Some(ErrorCode::Unauthorized),
        "{err}"
    );
    assert!(err.to_string().contains("not this VM's"), "{err}");

    // An attach with another key does not take the process's stream.
    let process = client.create(sh("echo attached")).await.unwrap();
    let mut conn = agent.endpoint.connect().await.unwrap();
    let open = Open::Attach {
        process,
        stream: StreamKind::Stdout,
        key: Some(AgentKey::generate().unwrap()),
    };
    write_frame(&mut conn, &open).await.unwrap();
    let reply: AttachReply = read_frame(&mut conn, 1 << 20).await.unwrap().unwrap();
    assert!(
        matches!(reply, Outcome::Err(ref e) if e.code == ErrorCode::Unauthorized),
        "{reply:?}"
    );
    client
        .attach(process, StreamKind::Stdout)
        .await
        .expect("the owner's attach still works");

    // A raw control session without the key gets no answer to its op.
    let mut conn = agent.endpoint.connect().await.unwrap();
    write_frame(&mut conn, &Open::Control { key: None }).await.unwrap();
    let _ = write_frame(&mut conn, &serde_json::json!({"id": 7, "op": "stats"})).await;
    let resp: Response = read_frame(&mut conn, 1 << 20).await.unwrap().unwrap();
    assert_eq!(resp.id, 0, "the refusal, not an answer to the op: {resp:?}");
    let out = run(&client, sh("echo still-serving"), None).await.unwrap();
    assert_eq!(out.stdout_str(), "still-serving\n");
}

#[tokio::test]
async fn a_bad_frame_behind_the_key_ends_that_session_and_the_agent_serves_on() {
    let dir = TempDir::new("readiness");
    let key = AgentKey::generate().unwrap();
    let path = dir.path().join("notify.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let url = format!("unix:{}", path.display());
    let flags = ["--notify", url.as_str()];
    // The host hands the key, then writes a length over the limit where
    // its hello belongs.
    let host = async {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut first = key.line();
        first.extend_from_slice(&u32::MAX.to_be_bytes());
        conn.write_all(&first).await.unwrap();
        let mut ready = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut conn, &mut ready)
            .await
            .unwrap();
        assert_eq!(&ready, b"READY\n");
        let answer: Response = read_frame(&mut conn, 1 << 20).await.unwrap().expect("an answer");
        conn.shutdown().await.ok();
        answer
    };
    let (agent, answer) = tokio::join!(NamespacedAgent::start_with_key(&flags, key.clone()), host);
    assert_eq!(answer.id, 0);
    assert!(
        matches!(answer.outcome, Outcome::Err(ref e) if e.code == ErrorCode::BadFrame),
        "{answer:?}"
    );
    // The key was taken all the same, and the agent serves its host.
    let addr = AgentAddr::new(agent.endpoint.clone(), Some(key));
    let client = Client::connect(&addr).await.expect("the key opens the agent");
    let out = run(&client, sh("echo still serving"), None).await.unwrap();
    assert_eq!(out.stdout_str(), "still serving\n");
}

#[tokio::test]
async fn another_local_user_cannot_reach_the_agent() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: trying as another user needs root");
        return;
    }
    let agent = NamespacedAgent::start().await;
    let Endpoint::Unix(socket) = &agent.endpoint else {
        unreachable!()
    };
    // Let nobody reach the socket's directory, as a shared /tmp would.
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = std::fs::metadata(socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the agent's socket is its owner's alone");
    let as_nobody = || {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(vmshim_bin())
            .args(["ping", "--connect"])
            .arg(agent.endpoint.to_string())
            .output()
            .expect("runuser");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = as_nobody();
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // Even through a socket opened to everyone, the agent refuses the peer
    // by its uid, and says so.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, stderr) = as_nobody();
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("unauthorized") && stderr.contains("uid 65534") && stderr.contains("only root or uid 0"),
        "{stderr}"
    );
    let client = agent.client().await;
    let out = run(&client, sh("echo owner-served"), None).await.unwrap();
    assert_eq!(out.stdout_str(), "owner-served\n");
}

/// The agent's open descriptors.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Lets this process hold thousands of connections.
fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[tokio::test]
async fn floods_of_idle_and_half_written_connections_leave_the_agent_serving() {
    raise_own_fd_limit();
    let agent = NamespacedAgent::start().await;
    let pid = agent.agent_host_pid();
    let before = open_fds(pid);
    let mut held = Vec::new();
    // 2,000 connections that never send a byte.
    for _ in 0..2000 {
        held.push(agent.endpoint.connect().await.expect("connect"));
    }
    // 500 that announce a first frame and send only part of it.
    let mut partial = encode_frame(&serde_json::json!({"open": "control", "pad": "x".repeat(200)})).unwrap();
    partial.truncate(40);
    for _ in 0..500 {
        let mut conn = agent.endpoint.connect().await.expect("connect");
        conn.write_all(&partial).await.unwrap();
        held.push(conn);
    }
    // The owner is still served, promptly.
    let started = Instant::now();
    let client = tokio::time::timeout(Duration::from_secs(20), agent.client())
        .await
        .expect("a new session is accepted during the flood");
    let out = run(&client, sh("echo served-during-the-flood"), None).await.unwrap();
    assert_eq!(out.stdout_str(), "served-during-the-flood\n");
    let took = started.elapsed();
    // The flood holds no more than the waiting connections' cap (512).
    let during = open_fds(pid);
    assert!(
        during < before + 512 + 16,
        "the agent holds {during} descriptors during the flood ({before} before)"
    );
    drop(held);
    eprintln!("exec during a flood of 2,500 connections: {took:?}; agent descriptors {before} → {during}");
}

#[tokio::test]
async fn a_session_with_too_many_requests_in_flight_gets_busy_answers() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let process = client.create(sh("exec sleep 600")).await.unwrap();
    client.start(process).await.unwrap();
    // 1,030 waits on one session: 1,024 run, 6 are answered busy at once.
    let mut conn = agent.endpoint.connect().await.unwrap();
    write_frame(&mut conn, &Open::Control { key: None }).await.unwrap();
    let mut frames = Vec::new();
    for id in 1..=1030u64 {
        frames.extend(encode_frame(&serde_json::json!({"id": id, "op": "wait", "process": process})).unwrap());
    }
    conn.write_all(&frames).await.unwrap();
    let mut busy = 0;
    while busy < 6 {
        let resp: Response = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut conn, 1 << 20))
            .await
            .expect("busy answers come at once")
            .unwrap()
            .unwrap();
        match resp.outcome {
            Outcome::Err(e) if e.code == ErrorCode::Busy => {
                assert!(e.message.contains("1024 requests"), "{e}");
                busy += 1;
            }
            other => panic!("request {}: {other:?}", resp.id),
        }
    }
    // Another session is not held up; the waits end with the process.
    client.signal(process, libc::SIGKILL).await.unwrap();
    let mut ended = 0;
    while ended < 1024 {
        let resp: Response = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut conn, 1 << 20))
            .await
            .expect("every wait answers")
            .unwrap()
            .unwrap();
        assert!(matches!(resp.outcome, Outcome::Ok(_)), "{resp:?}");
        ended += 1;
    }
}

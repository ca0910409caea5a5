//! The agent as PID 1 of a PID + mount namespace on the host, driven through
//! the host library: processes, streams, terminals, signals, reaping, and
//! hostile clients.

use std::time::Duration;

use agent_proto::{
    encode_frame, read_frame, write_frame, AttachReply, Endpoint, ErrorCode, Open, Outcome, ProcessSpec, Response,
    StreamKind, Transport, User, WindowSize, MAX_FRAME_LEN,
};
use host_shim::exec::{spawn, ExecIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vminitd_tests::{run, sh, Capture, NamespacedAgent};

/// The agent still serves: a new connection gets a hello answer.
async fn assert_serving(agent: &NamespacedAgent) {
    let client = agent.client().await;
    assert_eq!(client.hello().version, agent_proto::PROTOCOL_VERSION);
    assert_eq!(client.hello().mode, "namespace");
}

#[tokio::test]
async fn output_and_exit_code() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let out = run(&client, sh("echo hi; echo oops >&2; exit 42"), None).await.unwrap();
    assert_eq!(out.stdout_str(), "hi\n");
    assert_eq!(out.stderr_str(), "oops\n");
    assert_eq!(out.status.code, Some(42));
    assert_eq!(out.status.signal, None);
}

#[tokio::test]
async fn hello_carries_the_boot_timeline() {
    let agent = NamespacedAgent::start().await;
    let hello = agent.client().await.hello().clone();
    assert!(hello.agent.starts_with("vminitd "), "{}", hello.agent);
    let names: Vec<&str> = hello.boot.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["entered", "mounts_done", "network_up", "listening"]);
    let times: Vec<u64> = hello.boot.phases.iter().map(|p| p.boottime_ns).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "phases out of order: {times:?}");
    assert!(hello.now_ns >= times[3]);
}

#[tokio::test]
async fn env_cwd_and_user() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let spec = ProcessSpec {
        env: vec!["GREETING=hello there".into()],
        cwd: Some("/proc".into()),
        user: Some(User {
            uid: 1234,
            gid: 5678,
            additional_gids: vec![10, 20],
        }),
        ..sh("echo \"$GREETING\"; pwd; id -u; id -g; id -G; echo \"$PATH\"")
    };
    let out = run(&client, spec, None).await.unwrap();
    let lines: Vec<String> = out.stdout_str().lines().map(str::to_owned).collect();
    assert_eq!(
        lines[..4],
        ["hello there", "/proc", "1234", "5678"],
        "{}",
        out.stderr_str()
    );
    let mut groups: Vec<&str> = lines[4].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["10", "20", "5678"]);
    assert!(lines[5].contains("/usr/bin"), "a default PATH is given: {}", lines[5]);
}

#[tokio::test]
async fn stdin_round_trip() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let input: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let out = run(
        &client,
        ProcessSpec {
            args: vec!["cat".into()],
            ..Default::default()
        },
        Some(input.clone()),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code, Some(0));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "stdin came back altered");
    // Half-close is end-of-file: wc sees every byte and then finishes.
    let out = run(&client, sh("wc -c"), Some(b"12345".to_vec())).await.unwrap();
    assert_eq!(out.stdout_str().trim(), "5");
}

/// `seq 1 n` as the process prints it.
fn seq(n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 1..=n {
        v.extend_from_slice(format!("{i}\n").as_bytes());
    }
    v
}

#[tokio::test]
async fn sixty_four_mib_on_stdout_and_stderr_arrive_intact() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    // 9,000,000 lines of seq are over 64 MiB on each stream, and the process
    // exits right after its last write.
    let n = 9_000_000;
    let expected = seq(n);
    assert!(expected.len() > 64 << 20);
    let out = run(&client, sh(&format!("seq 1 {n} >&2 & exec seq 1 {n}")), None)
        .await
        .unwrap();
    assert_eq!(out.status.code, Some(0));
    assert_eq!(out.stdout.len(), expected.len(), "stdout length");
    assert_eq!(out.stderr.len(), expected.len(), "stderr length");
    assert!(out.stdout == expected, "stdout bytes differ");
    assert!(out.stderr == expected, "stderr bytes differ");
}

#[tokio::test]
async fn signals() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    // Death by signal is reported as the signal.
    let running = spawn(&client, sh("exec sleep 1000"), ExecIo::default()).await.unwrap();
    client.signal(running.process, libc::SIGKILL).await.unwrap();
    let status = running.wait().await.unwrap();
    assert_eq!((status.code, status.signal), (None, Some(libc::SIGKILL)));
    assert_eq!(status.shell_code(), 137);
    // A handled signal reaches the process, which decides how to end.
    let (running, out) = spawn_until_ready(
        &client,
        sh("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done"),
    )
    .await;
    client.signal(running.process, libc::SIGTERM).await.unwrap();
    let status = running.wait().await.unwrap();
    assert_eq!(status.code, Some(7));
    assert!(String::from_utf8_lossy(&out.take()).contains("got TERM"));
    // A signal number that does not exist is refused.
    let running = spawn(&client, sh("exec sleep 1000"), ExecIo::default()).await.unwrap();
    let err = client.signal(running.process, 999).await.unwrap_err();
    assert_eq!(
        err.agent_error().map(|e| e.code),
        Some(ErrorCode::InvalidRequest),
        "{err}"
    );
    client.signal(running.process, libc::SIGTERM).await.unwrap();
    assert_eq!(running.wait().await.unwrap().signal, Some(libc::SIGTERM));
}

/// Waits until the captured output contains `needle`.
/// Starts `spec` with stdout captured and waits until it prints `ready`.
async fn spawn_until_ready(client: &host_shim::Client, spec: ProcessSpec) -> (host_shim::exec::Running, Capture) {
    let out = Capture::default();
    let io = ExecIo {
        stdout: Some(Box::new(out.clone())),
        ..Default::default()
    };
    let running = spawn(client, spec, io).await.unwrap();
    wait_for(&out, "ready").await;
    (running, out)
}

async fn wait_for(out: &Capture, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        seen.extend(out.take());
        if String::from_utf8_lossy(&seen).contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never saw {needle:?} in {:?}", String::from_utf8_lossy(&seen));
}

#[tokio::test]
async fn terminal_and_resize() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let spec = ProcessSpec {
        terminal: true,
        size: Some(WindowSize { rows: 40, cols: 100 }),
        ..sh("tty; stty size; [ -t 0 ] && echo stdin-is-a-tty")
    };
    let out = run(&client, spec, None).await.unwrap();
    let text = out.stdout_str();
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("40 100"), "{text:?}");
    assert!(text.contains("stdin-is-a-tty"), "{text:?}");
    assert_eq!(out.status.code, Some(0));

    // A resize reaches the process as SIGWINCH and a new size.
    let spec = ProcessSpec {
        terminal: true,
        size: Some(WindowSize { rows: 24, cols: 80 }),
        ..sh("trap 'stty size; exit 3' WINCH; echo ready; while :; do sleep 0.05; done")
    };
    let (running, out) = spawn_until_ready(&client, spec).await;
    client.resize(running.process, 50, 120).await.unwrap();
    let status = running.wait().await.unwrap();
    assert_eq!(status.code, Some(3));
    assert!(String::from_utf8_lossy(&out.take()).contains("50 120"));

    // Resizing a process without a terminal is refused.
    let running = spawn(&client, sh("exec sleep 1000"), ExecIo::default()).await.unwrap();
    let err = client.resize(running.process, 1, 1).await.unwrap_err();
    assert_eq!(
        err.agent_error().map(|e| e.code),
        Some(ErrorCode::InvalidState),
        "{err}"
    );
    client.signal(running.process, libc::SIGKILL).await.unwrap();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn two_hundred_processes_at_once() {
    let agent = NamespacedAgent::start().await;
    let client = std::sync::Arc::new(agent.client().await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let spec = ProcessSpec {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "sleep 0.2; echo $1; exit $(($1 % 100))".into(),
                    "sh".into(),
                    i.to_string(),
                ],
                ..Default::default()
            };
            let out = run(&client, spec, None).await.unwrap();
            assert_eq!(out.stdout_str(), format!("{i}\n"));
            assert_eq!(out.status.code, Some(i % 100));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every process was forgotten once waited for.
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.processes, 0, "{stats:?}");
}

#[tokio::test]
async fn orphaned_grandchildren_are_reaped() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    // The shell exits at once; its children are re-parented to PID 1 (the
    // agent) and exit later.
    let out = run(
        &client,
        sh("for i in 1 2 3 4 5; do (sleep 0.3; exit 3) & done; exit 0"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.status.code, Some(0));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Inside the namespace, /proc lists only its own processes.
    let out = run(&client, sh("cat /proc/[0-9]*/stat 2>/dev/null"), None)
        .await
        .unwrap();
    let stats = out.stdout_str();
    let zombies: Vec<&str> = stats
        .lines()
        .filter(|l| l.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    let pid1 = stats
        .lines()
        .find(|l| l.starts_with("1 "))
        .expect("PID 1 is in this namespace's /proc");
    assert!(pid1.contains("(vminitd)"), "{pid1}");
}

#[tokio::test]
async fn exec_failures_are_clear_errors() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let err = run(
        &client,
        ProcessSpec {
            args: vec!["no-such-program".into()],
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap_err();
    let e = err.agent_error().expect("an agent error").clone();
    assert_eq!(e.code, ErrorCode::ExecFailed);
    assert!(
        e.message.contains("no-such-program") && e.message.contains("not found"),
        "{}",
        e.message
    );

    let err = run(
        &client,
        ProcessSpec {
            cwd: Some("/no/such/dir".into()),
            ..sh("true")
        },
        None,
    )
    .await
    .unwrap_err();
    let e = err.agent_error().expect("an agent error").clone();
    assert_eq!(e.code, ErrorCode::ExecFailed);
    assert!(e.message.contains("/no/such/dir"), "{}", e.message);

    let err = run(
        &client,
        ProcessSpec {
            args: vec!["/etc/hostname".into()],
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.agent_error().map(|e| e.code), Some(ErrorCode::ExecFailed), "{err}");

    let err = client.create(ProcessSpec::default()).await.unwrap_err();
    assert_eq!(
        err.agent_error().map(|e| e.code),
        Some(ErrorCode::InvalidRequest),
        "{err}"
    );
    let err = client
        .create(ProcessSpec {
            env: vec!["NOEQUALS".into()],
            ..sh("true")
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOEQUALS"), "{err}");
    assert_serving(&agent).await;
}

/// Sends raw bytes as a new connection and returns what the agent answers
/// before closing.
async fn raw_exchange(endpoint: &Endpoint, bytes: &[u8]) -> Vec<u8> {
    let mut conn = endpoint.connect().await.unwrap();
    conn.write_all(bytes).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the agent closes a connection it cannot serve")
        .ok();
    answer
}

/// Decodes the one error response in `answer`.
fn error_code(answer: &[u8]) -> ErrorCode {
    assert!(answer.len() > 4, "expected one response frame, got {answer:?}");
    let len = u32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]) as usize;
    assert_eq!(answer.len(), 4 + len, "exactly one frame, then the close");
    let resp: Response = serde_json::from_slice(&answer[4..]).expect("a response frame");
    assert_eq!(resp.id, 0, "errors about unreadable frames carry id 0");
    match resp.outcome {
        Outcome::Err(e) => e.code,
        Outcome::Ok(v) => panic!("expected an error, got {v}"),
    }
}

#[tokio::test]
async fn hostile_frames_get_errors_and_the_agent_keeps_serving() {
    let agent = NamespacedAgent::start().await;
    let ep = &agent.endpoint;

    // Garbage: an HTTP request read as a length prefix is far over the limit.
    let answer = raw_exchange(ep, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(error_code(&answer), ErrorCode::BadFrame);
    assert_serving(&agent).await;

    // A frame over the limit.
    let answer = raw_exchange(ep, &((MAX_FRAME_LEN as u32) + 1).to_be_bytes()).await;
    assert_eq!(error_code(&answer), ErrorCode::BadFrame);
    assert_serving(&agent).await;

    // A truncated frame: the length says 100, 10 bytes come, then EOF.
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(b"{\"open\":\"c");
    let answer = raw_exchange(ep, &bytes).await;
    if !answer.is_empty() {
        assert_eq!(error_code(&answer), ErrorCode::BadFrame);
    }
    assert_serving(&agent).await;

    // Invalid JSON in a well-formed frame.
    let mut bytes = 5u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(b"{oops");
    assert_eq!(error_code(&raw_exchange(ep, &bytes).await), ErrorCode::BadFrame);
    assert_serving(&agent).await;

    // A first frame that is JSON but no known opening.
    let answer = raw_exchange(ep, &encode_frame(&serde_json::json!({"open": "teleport"})).unwrap()).await;
    assert_eq!(error_code(&answer), ErrorCode::InvalidRequest);

    // On a control session: an unknown op is unsupported and the session goes
    // on; a known op with bad fields is invalid and the session goes on; then
    // bad JSON closes the session.
    let mut conn = ep.connect().await.unwrap();
    write_frame(&mut conn, &Open::Control { key: None }).await.unwrap();
    for (req, code) in [
        (serde_json::json!({"id": 1, "op": "teleport"}), ErrorCode::Unsupported),
        (
            serde_json::json!({"id": 2, "op": "wait", "process": "seven"}),
            ErrorCode::InvalidRequest,
        ),
        (
            serde_json::json!({"id": 3, "op": "wait", "process": 999999}),
            ErrorCode::NotFound,
        ),
        (
            serde_json::json!({"id": 4, "op": "hello", "version": 999, "client": "t"}),
            ErrorCode::VersionMismatch,
        ),
    ] {
        write_frame(&mut conn, &req).await.unwrap();
        let resp: Response = read_frame(&mut conn, MAX_FRAME_LEN).await.unwrap().unwrap();
        assert_eq!(resp.id, req["id"].as_u64().unwrap());
        assert!(
            matches!(resp.outcome, Outcome::Err(ref e) if e.code == code),
            "{req}: {resp:?}"
        );
    }
    write_frame(&mut conn, &serde_json::json!({"id": 5, "op": "stats"}))
        .await
        .unwrap();
    let resp: Response = read_frame(&mut conn, MAX_FRAME_LEN).await.unwrap().unwrap();
    assert!(
        matches!(resp.outcome, Outcome::Ok(_)),
        "the session still works: {resp:?}"
    );
    conn.write_all(&[0, 0, 0, 2, b'}', b'{']).await.unwrap();
    let resp: Response = read_frame(&mut conn, MAX_FRAME_LEN).await.unwrap().unwrap();
    assert!(
        matches!(resp.outcome, Outcome::Err(ref e) if e.code == ErrorCode::BadFrame),
        "{resp:?}"
    );
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after a bad frame");
    assert_serving(&agent).await;
}

#[tokio::test]
async fn attach_errors() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    // A process that does not exist.
    let err = client.attach(424242, StreamKind::Stdout).await.unwrap_err();
    assert_eq!(err.agent_error().map(|e| e.code), Some(ErrorCode::NotFound), "{err}");
    // After start, attaching is too late.
    let running = spawn(&client, sh("exec sleep 1000"), ExecIo::default()).await.unwrap();
    let err = client.attach(running.process, StreamKind::Stdout).await.unwrap_err();
    assert_eq!(
        err.agent_error().map(|e| e.code),
        Some(ErrorCode::InvalidState),
        "{err}"
    );
    client.signal(running.process, libc::SIGKILL).await.unwrap();
    running.wait().await.unwrap();
    // A raw attach frame for a missing process gets an error frame and a close.
    let mut conn = agent.endpoint.connect().await.unwrap();
    write_frame(
        &mut conn,
        &Open::Attach {
            process: 77,
            stream: StreamKind::Stdin,
            key: None,
        },
    )
    .await
    .unwrap();
    let reply: AttachReply = read_frame(&mut conn, MAX_FRAME_LEN).await.unwrap().unwrap();
    assert!(
        matches!(reply, Outcome::Err(ref e) if e.code == ErrorCode::NotFound),
        "{reply:?}"
    );
    assert_serving(&agent).await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let process = client.create(sh("seq 1 3000000; echo done >&2")).await.unwrap();
    let mut stdout = client.attach(process, StreamKind::Stdout).await.unwrap();
    let mut stderr = client.attach(process, StreamKind::Stderr).await.unwrap();
    client.start(process).await.unwrap();
    let mut some = vec![0u8; 4096];
    stdout.read_exact(&mut some).await.unwrap();
    drop(stdout);
    // The process is not blocked on a full pipe: it finishes.
    let mut err = String::new();
    stderr.read_to_string(&mut err).await.unwrap();
    assert_eq!(err, "done\n");
    let status = client.wait(process).await.unwrap();
    assert_eq!(status.code, Some(0));

    // A control session that vanishes with a wait outstanding.
    {
        let c2 = agent.client().await;
        let running = spawn(&c2, sh("sleep 0.3"), ExecIo::default()).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(50), c2.wait(running.process)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_serving(&agent).await;
    assert_eq!(
        agent.client().await.stats().await.unwrap().processes,
        0,
        "nothing is left in the table"
    );
}

#[tokio::test]
async fn a_wait_sent_before_the_start_answers_as_the_process_ends() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    // Sent before the start, on the same session: it waits through the
    // start instead of failing, and answers once the output is out.
    let process = client.create(sh("echo out; exit 7")).await.unwrap();
    let mut stdout = client.attach(process, StreamKind::Stdout).await.unwrap();
    let exit = client.send_wait(process).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.start(process).await.unwrap();
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "out\n");
    assert_eq!(exit.get().await.unwrap().code, Some(7));

    // A process whose program does not exist: the start says why, the
    // wait sent beside it answers 127, as for a failed exec.
    let process = client
        .create(ProcessSpec {
            args: vec!["/no/such/program".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let start = client
        .send::<agent_proto::Started>(agent_proto::Op::Start { process })
        .await
        .unwrap();
    let exit = client.send_wait(process).await.unwrap();
    let err = start.get().await.unwrap_err();
    assert_eq!(err.agent_error().map(|e| e.code), Some(ErrorCode::ExecFailed), "{err}");
    assert_eq!(exit.get().await.unwrap().code, Some(127));

    // Created on one session and waited for on another: when the first
    // closes before the start, the wait answers 127 (never started).
    let creator = agent.client().await;
    let process = creator.create(sh("exit 0")).await.unwrap();
    let exit = client.send_wait(process).await.unwrap();
    // The agent starts a session's requests in the order they came, on
    // one thread: once a later request of this session has answered, the
    // wait holds the process.
    client.stats().await.unwrap();
    creator.close().await;
    let status = tokio::time::timeout(Duration::from_secs(10), exit.get())
        .await
        .expect("the wait answers once the creating session has closed")
        .unwrap();
    assert_eq!(status.code, Some(127));
    assert_serving(&agent).await;
}

#[tokio::test]
async fn a_root_process_cannot_reach_the_agents_memory() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    // Root with no capabilities named: all but CAP_SYS_PTRACE, so the
    // agent's memory and namespaces stay shut, while the process still
    // reaches the memory of its own child.
    let script = "grep -E 'CapEff|CapBnd' /proc/self/status; \
                  (exec 3</proc/1/mem) 2>/dev/null && echo agent-mem-open || echo agent-mem-refused; \
                  readlink /proc/1/ns/mnt >/dev/null 2>&1 && echo agent-ns-open || echo agent-ns-refused; \
                  sleep 5 & (exec 4</proc/$!/mem) && echo child-mem-open; kill $!";
    let out = run(&client, sh(script), None).await.unwrap();
    let text = out.stdout_str();
    // The agent holds what this test holds (it runs it as PID 1 of a
    // namespace): its processes get that, less CAP_SYS_PTRACE (bit 19).
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let ptrace = 1u64 << 19;
    assert_eq!(
        (cap_mask(&text, "CapEff"), cap_mask(&text, "CapBnd")),
        (cap_mask(&ours, "CapPrm") & !ptrace, cap_mask(&ours, "CapBnd") & !ptrace),
        "{text}"
    );
    assert!(text.contains("agent-mem-refused\n"), "{text}");
    assert!(text.contains("agent-ns-refused\n"), "{text}");
    assert!(text.contains("child-mem-open\n"), "{text}");
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_str());

    // A spec that grants CAP_SYS_PTRACE gets it, and with it the agent's
    // memory: the caller's choice, as with runc.
    let caps = names(&["CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_SETPCAP"]);
    let mut granted = sh("(exec 3</proc/1/mem) && echo agent-mem-open");
    granted.capabilities = Some(agent_proto::Capabilities {
        bounding: caps.clone(),
        effective: caps.clone(),
        permitted: caps,
        ..Default::default()
    });
    let out = run(&client, granted, None).await.unwrap();
    // The agent holds more capabilities than these three: CAP_SYS_PTRACE
    // is what opens it.
    assert_eq!(out.stdout_str(), "agent-mem-open\n", "{}", out.stderr_str());
}

#[tokio::test]
async fn stats_from_procfs() {
    let agent = NamespacedAgent::start().await;
    let stats = agent.client().await.stats().await.unwrap();
    assert!(
        stats.memory.total_bytes > 0 && stats.memory.available_bytes <= stats.memory.total_bytes,
        "{stats:?}"
    );
    assert!(stats.agent_rss_bytes > 100 * 1024, "{stats:?}");
    assert!(stats.uptime_s > 0.0);
}

#[tokio::test]
async fn sigterm_shuts_down_in_order() {
    let mut agent = NamespacedAgent::start_with(&["--grace-ms", "2000"]).await;
    let client = agent.client().await;
    // One process ends on TERM, the other ignores it and needs the KILL.
    let polite = spawn(&client, sh("exec sleep 1000"), ExecIo::default()).await.unwrap();
    // Only once the trap is set does the process ignore TERM.
    let (stubborn, _) = spawn_until_ready(&client, sh("trap '' TERM; echo ready; while :; do sleep 0.05; done")).await;
    let started = std::time::Instant::now();
    // SAFETY: sends a signal to a pid we just looked up.
    unsafe { libc::kill(agent.agent_host_pid(), libc::SIGTERM) };
    let status = polite.wait().await.unwrap();
    assert_eq!(status.signal, Some(libc::SIGTERM));
    let _ = stubborn.wait().await;
    let exit = agent
        .wait_exit(Duration::from_secs(15))
        .expect("the agent exits after the grace period");
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the grace period was honoured"
    );
    assert!(!agent.endpoint.to_string().is_empty());
    if let Endpoint::Unix(path) = &agent.endpoint {
        assert!(!path.exists(), "the socket file is removed");
    }
}

#[tokio::test]
async fn shutdown_op_ends_the_agent() {
    let mut agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    client.shutdown().await.unwrap();
    let exit = agent.wait_exit(Duration::from_secs(15)).expect("the agent exits");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_process_in_its_own_root() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = vminitd_tests::TempDir::new("root");
    let root = dir.path().join("rootfs");
    host_shim::rootfs::busybox_tree(std::path::Path::new("/bin/busybox"), &root).unwrap();
    std::fs::write(root.join("etc/marker"), "inside\n").unwrap();
    let spec = ProcessSpec {
        root: Some(root.to_str().unwrap().to_owned()),
        cwd: Some("/etc".into()),
        // `sh` is a link to /bin/busybox: found by a lookup inside the root.
        ..sh("cat marker; readlink /bin/sh; ls /proc/1/ >/dev/null && echo proc; ls /dev/null && [ -d /sys/kernel ] && echo sys")
    };
    let out = run(&client, spec, None).await.unwrap();
    assert_eq!(
        out.stdout_str(),
        "inside\n/bin/busybox\nproc\n/dev/null\nsys\n",
        "{}",
        out.stderr_str()
    );
    assert_eq!(out.status.code, Some(0));
    // The root's mounts stay in the process's own mount namespace.
    let out = run(
        &client,
        sh(&format!("grep -c {} /proc/self/mountinfo || true", root.display())),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        out.stdout_str().trim(),
        "0",
        "no mount leaked into the agent's namespace"
    );
    // A program that is not in the root is not found there, even if the agent has it.
    let spec = ProcessSpec {
        root: Some(root.to_str().unwrap().to_owned()),
        ..ProcessSpec {
            args: vec!["bash".into()],
            ..Default::default()
        }
    };
    let err = run(&client, spec, None).await.unwrap_err();
    assert!(err.to_string().contains("\"bash\" not found"), "{err}");
    // A relative root is refused.
    let spec = ProcessSpec {
        root: Some("relative/dir".into()),
        ..sh("true")
    };
    let err = client.create(spec).await.unwrap_err();
    assert_eq!(
        err.agent_error().map(|e| e.code),
        Some(ErrorCode::InvalidRequest),
        "{err}"
    );
}

#[tokio::test]
async fn a_daemon_holding_stdout_does_not_hold_the_exit_status() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let started = std::time::Instant::now();
    // The background sleep inherits stdout and stderr and keeps them open.
    let out = run(&client, sh("sleep 30 & echo bye; echo err >&2"), None)
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "bye\n");
    assert_eq!(out.stderr_str(), "err\n");
    assert_eq!(out.status.code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered once the process exited and output went quiet"
    );
    // The same on a terminal.
    let spec = ProcessSpec {
        terminal: true,
        ..sh("sleep 30 & echo bye")
    };
    let out = run(&client, spec, None).await.unwrap();
    assert!(out.stdout_str().contains("bye"), "{:?}", out.stdout_str());
}

/// `CapInh`, `CapPrm`, `CapEff`, `CapBnd` and `CapAmb` of `/proc/self/status`.
fn cap_masks(status: &str) -> Vec<(String, String)> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.starts_with("Cap"))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// One of [`cap_masks`], as a number.
fn cap_mask(status: &str, name: &str) -> u64 {
    let (_, hex) = cap_masks(status)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"));
    u64::from_str_radix(&hex, 16).unwrap()
}

fn masks(inh: &str, prm: &str, eff: &str, bnd: &str, amb: &str) -> Vec<(String, String)> {
    ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .into_iter()
        .zip([inh, prm, eff, bnd, amb])
        .map(|(k, v)| (k.to_owned(), format!("{:0>16}", v)))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn umask_rlimits_oom_score_adj_and_no_new_privileges() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let script = "umask; ulimit -n; ulimit -Hn; grep 'Max open files' /proc/self/limits; \
                  cat /proc/self/oom_score_adj; grep NoNewPrivs /proc/self/status";
    let spec = ProcessSpec {
        umask: Some(0o027),
        rlimits: vec![agent_proto::Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 100,
            hard: 200,
        }],
        oom_score_adj: Some(500),
        no_new_privileges: true,
        ..sh(script)
    };
    let out = run(&client, spec, None).await.unwrap();
    let stdout = out.stdout_str();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}{}", out.stdout_str(), out.stderr_str());
    assert_eq!(lines[..3], ["0027", "100", "200"]);
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["Max", "open", "files", "100", "200", "files"]
    );
    assert_eq!(lines[4], "500");
    assert_eq!(lines[5].split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "1"]);
    // Without them, the process gets the agent's.
    let out = run(&client, sh(script), None).await.unwrap();
    let stdout = out.stdout_str();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0022");
    assert_ne!(lines[1], "100");
    assert_eq!(lines[5].split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "0"]);
}

#[tokio::test]
async fn capabilities_are_kept_across_the_change_of_user() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let caps = |sets: [&[&str]; 5]| agent_proto::Capabilities {
        bounding: names(sets[0]),
        effective: names(sets[1]),
        permitted: names(sets[2]),
        inheritable: names(sets[3]),
        ambient: names(sets[4]),
    };
    let user = |uid| User {
        uid,
        gid: uid,
        additional_gids: vec![],
    };
    let two: &[&str] = &["CAP_CHOWN", "CAP_NET_BIND_SERVICE"];
    // CAP_CHOWN (0) and CAP_NET_BIND_SERVICE (10): 0x401. A user other than
    // root keeps them across exec only as ambient capabilities.
    let cases = [
        (
            1000,
            caps([two, two, two, two, two]),
            masks("401", "401", "401", "401", "401"),
        ),
        (1000, caps([two, two, two, &[], &[]]), masks("0", "0", "0", "401", "0")),
        // Root: exec gives the whole bounding set back as permitted and
        // effective (as with runc).
        (
            0,
            caps([
                &["CAP_KILL", "CAP_SETGID", "CAP_SETUID"],
                &["CAP_KILL"],
                &["CAP_KILL"],
                &[],
                &[],
            ]),
            masks("0", "e0", "e0", "e0", "0"),
        ),
    ];
    for (uid, capabilities, expected) in cases {
        let spec = ProcessSpec {
            user: Some(user(uid)),
            capabilities: Some(capabilities.clone()),
            ..sh("id -u; cat /proc/self/status")
        };
        let out = run(&client, spec, None).await.unwrap();
        assert_eq!(out.status.code, Some(0), "{}", out.stderr_str());
        assert_eq!(out.stdout_str().lines().next(), Some(uid.to_string().as_str()));
        assert_eq!(cap_masks(&out.stdout_str()), expected, "uid {uid}, {capabilities:?}");
    }
    // With no_new_privs, exec gives root no more than it had: the
    // permitted set stays as set (as with runc).
    let spec = ProcessSpec {
        capabilities: Some(caps([
            &["CAP_KILL", "CAP_SETGID", "CAP_SETUID"],
            &["CAP_KILL"],
            &["CAP_KILL"],
            &[],
            &[],
        ])),
        no_new_privileges: true,
        ..sh("cat /proc/self/status")
    };
    let out = run(&client, spec, None).await.unwrap();
    assert_eq!(cap_masks(&out.stdout_str()), masks("0", "20", "20", "e0", "0"));
    // Ambient capabilities that are not inheritable are left out, as runc
    // does with the stock `runc spec` (ambient, no inheritable).
    let spec = ProcessSpec {
        user: Some(user(1000)),
        capabilities: Some(caps([two, two, two, &[], two])),
        ..sh("cat /proc/self/status")
    };
    let out = run(&client, spec, None).await.unwrap();
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_str());
    assert_eq!(cap_masks(&out.stdout_str()), masks("0", "0", "0", "401", "0"));
    assert_serving(&agent).await;
}

#[tokio::test]
async fn bad_capabilities_and_rlimits_are_refused_by_name() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let rlimit = |kind: &str, soft, hard| ProcessSpec {
        rlimits: vec![agent_proto::Rlimit {
            kind: kind.into(),
            soft,
            hard,
        }],
        ..sh("true")
    };
    let bad = [
        (
            ProcessSpec {
                capabilities: Some(agent_proto::Capabilities {
                    bounding: names(&["CAP_CHOWN", "CAP_FLY"]),
                    ..Default::default()
                }),
                ..sh("true")
            },
            "unknown capability \"CAP_FLY\" in the bounding set",
        ),
        (rlimit("RLIMIT_BOGUS", 1, 1), "unknown resource limit \"RLIMIT_BOGUS\""),
        (
            rlimit("RLIMIT_NOFILE", 300, 200),
            "RLIMIT_NOFILE: the soft limit 300 is above the hard limit 200",
        ),
    ];
    for (spec, message) in bad {
        let err = client.create(spec).await.unwrap_err();
        let e = err.agent_error().expect("an agent error").clone();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
        assert!(e.message.contains(message), "{}", e.message);
    }
    // Through spawn, which dials the three streams while the create is on
    // its way: the same refusal, the dialled connections are dropped
    // unattached, and the agent serves on.
    for _ in 0..20 {
        let err = run(&client, rlimit("RLIMIT_BOGUS", 1, 1), Some(b"in".to_vec()))
            .await
            .unwrap_err();
        assert_eq!(
            err.agent_error().map(|e| e.code),
            Some(ErrorCode::InvalidRequest),
            "{err}"
        );
    }
    let out = run(&client, sh("echo fine"), None).await.unwrap();
    assert_eq!(out.stdout_str(), "fine\n");
    assert_serving(&agent).await;
}

fn seccomp_rule(names: &[&str], action: &str, errno_ret: Option<u32>) -> agent_proto::SeccompRule {
    agent_proto::SeccompRule {
        names: names.iter().map(|s| s.to_string()).collect(),
        action: action.into(),
        errno_ret,
        args: vec![],
    }
}

#[tokio::test]
async fn seccomp_filters() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = agent.dir.path().join("seccomp");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();

    // Allow everything but mkdir, which fails with EPERM.
    let spec = ProcessSpec {
        seccomp: Some(Box::new(agent_proto::Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            architectures: names(&["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
            syscalls: vec![seccomp_rule(&["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", Some(1))],
            ..Default::default()
        })),
        ..sh(&format!(
            "touch {d}/file && mkdir {d}/x; echo mkdir=$?; grep '^Seccomp:' /proc/self/status"
        ))
    };
    let out = run(&client, spec, None).await.unwrap();
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("Operation not permitted"),
        "{}",
        out.stderr_str()
    );
    assert!(out.stdout_str().contains("mkdir=1"), "{}", out.stdout_str());
    assert!(out.stdout_str().contains("Seccomp:\t2"), "{}", out.stdout_str());
    assert!(dir.join("file").exists() && !dir.join("x").exists());

    // Deny by default, with an allow-list just big enough for `sh -c 'echo ok'`.
    const SH: [&str; 30] = [
        "access",
        "arch_prctl",
        "brk",
        "close",
        "execve",
        "exit_group",
        "fcntl",
        "futex",
        "getcwd",
        "getegid",
        "geteuid",
        "getgid",
        "getpid",
        "getppid",
        "getrandom",
        "getuid",
        "mmap",
        "mprotect",
        "munmap",
        "newfstatat",
        "openat",
        "pread64",
        "prlimit64",
        "read",
        "rseq",
        "rt_sigaction",
        "rt_sigprocmask",
        "set_robust_list",
        "set_tid_address",
        "write",
    ];
    let allow_list = |extra: &[&str]| agent_proto::Seccomp {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(38), // ENOSYS
        syscalls: vec![seccomp_rule(
            &SH.iter().chain(extra).copied().collect::<Vec<_>>(),
            "SCMP_ACT_ALLOW",
            None,
        )],
        ..Default::default()
    };
    // Without no_new_privs the filter is installed before the working
    // directory is changed, so chdir must be allowed too (as with runc).
    let spec = ProcessSpec {
        seccomp: Some(Box::new(allow_list(&["chdir"]))),
        ..sh("echo ok")
    };
    let out = run(&client, spec, None).await.unwrap();
    assert_eq!(
        (out.status.code, out.stdout_str().as_str()),
        (Some(0), "ok\n"),
        "{}",
        out.stderr_str()
    );
    let spec = ProcessSpec {
        seccomp: Some(Box::new(allow_list(&[]))),
        ..sh("echo ok")
    };
    let err = run(&client, spec, None).await.unwrap_err();
    let e = err.agent_error().expect("an agent error").clone();
    assert_eq!(e.code, ErrorCode::ExecFailed);
    assert!(
        e.message
            .contains("cannot change to working directory \"/\": Function not implemented"),
        "{}",
        e.message
    );
    // With no_new_privs it comes last: only execve goes through it.
    let spec = ProcessSpec {
        seccomp: Some(Box::new(allow_list(&[]))),
        no_new_privileges: true,
        ..sh("echo ok; cd /tmp || echo denied")
    };
    let out = run(&client, spec, None).await.unwrap();
    assert_eq!(out.stdout_str(), "ok\ndenied\n", "{}", out.stderr_str());

    // An argument rule: personality(0xffffffff) (a query) is allowed,
    // any other personality is refused.
    let spec = ProcessSpec {
        seccomp: Some(Box::new(agent_proto::Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![
                agent_proto::SeccompRule {
                    args: vec![agent_proto::SeccompArg {
                        index: 0,
                        value: 0xffff_ffff,
                        value_two: 0,
                        op: "SCMP_CMP_EQ".into(),
                    }],
                    ..seccomp_rule(&["personality"], "SCMP_ACT_ALLOW", None)
                },
                seccomp_rule(&["personality"], "SCMP_ACT_ERRNO", Some(1)),
            ],
            ..Default::default()
        })),
        ..sh("setarch x86_64 --addr-no-randomize true; echo setarch=$?; cat /proc/self/personality")
    };
    let out = run(&client, spec, None).await.unwrap();
    assert!(out.stdout_str().contains("setarch=1"), "{}", out.stdout_str());
    assert!(
        out.stderr_str().contains("Operation not permitted"),
        "{}",
        out.stderr_str()
    );
    assert_serving(&agent).await;
}

#[tokio::test]
async fn bad_seccomp_profiles_are_refused_by_name() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let profile = |default: &str, rule: agent_proto::SeccompRule| ProcessSpec {
        seccomp: Some(Box::new(agent_proto::Seccomp {
            default_action: default.into(),
            syscalls: vec![rule],
            ..Default::default()
        })),
        ..sh("true")
    };
    let bad = [
        (
            profile("SCMP_ACT_ALLOW", seccomp_rule(&["mkdir", ""], "SCMP_ACT_ERRNO", None)),
            "syscalls[0] names the empty string, not a syscall",
        ),
        (
            profile("SCMP_ACT_ALLOW", seccomp_rule(&["mkdir"], "SCMP_ACT_NOTIFY", None)),
            "SCMP_ACT_NOTIFY in syscalls[0].action: vminitd has no seccomp agent to notify",
        ),
        (
            profile("SCMP_ACT_MAYBE", seccomp_rule(&["mkdir"], "SCMP_ACT_ERRNO", None)),
            "unknown action \"SCMP_ACT_MAYBE\" in default_action",
        ),
        (
            profile(
                "SCMP_ACT_ALLOW",
                agent_proto::SeccompRule {
                    args: vec![agent_proto::SeccompArg {
                        index: 0,
                        value: 1,
                        value_two: 0,
                        op: "SCMP_CMP_ABOUT".into(),
                    }],
                    ..seccomp_rule(&["personality"], "SCMP_ACT_ERRNO", None)
                },
            ),
            "unknown comparison \"SCMP_CMP_ABOUT\" in syscalls[0].args[0]",
        ),
    ];
    for (spec, message) in bad {
        let err = client.create(spec).await.unwrap_err();
        let e = err.agent_error().expect("an agent error").clone();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
        assert!(e.message.contains(message), "{}", e.message);
    }
    assert_serving(&agent).await;
}

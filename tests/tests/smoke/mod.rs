//! The smoke tests that podman's and docker's tests share: each runs the
//! same commands on the same image with the engine's runc and with
//! vminitd, and checks what a user sees.

use std::time::Duration;

use vminitd_tests::engines::{describe, free_port, http_get, on_terminal, text, Engine, Runtime, IMAGE, INDEX_HTML};

/// Each named test, once with runc (`NAME::runc`) and once with vminitd
/// (`NAME::vminitd`), on ENGINE.
macro_rules! with_each_runtime {
    ($engine:ty: $($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn runc() {
                crate::smoke::$name::<$engine>(vminitd_tests::engines::Runtime::Runc)
            }

            #[test]
            fn vminitd() {
                crate::smoke::$name::<$engine>(vminitd_tests::engines::Runtime::Vminitd)
            }
        }
    )*};
}
pub(crate) use with_each_runtime;

/// `podman --runtime vminitd-runtime run --rm IMG echo hi` (`docker run
/// --runtime vminitd ...`) prints hi and exits 0;
/// the container's kernel is the host's under runc and the guest's under
/// vminitd.
pub fn echo_hi_and_the_kernel<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    let out = engine.run_naming_the_runtime(&["--rm", IMAGE, "echo", "hi"]);
    assert_eq!(text(&out.stdout), "hi\n", "{}", describe(&out));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let version = engine.ok(&["run", "--rm", IMAGE, "cat", "/proc/version"]);
    let host = std::fs::read_to_string("/proc/version").unwrap();
    match runtime {
        Runtime::Runc => assert_eq!(version, host),
        Runtime::Vminitd => {
            assert_ne!(version, host, "the container runs on the host's kernel");
            assert!(
                version.starts_with("Linux version 6.1."),
                "not the guest's kernel: {version}"
            );
        }
    }
    engine.finish();
}

/// `run` exits as the container's process did: its status, 127 for a
/// program that is not there; one killed by signal N exits 128+N.
pub fn exit_codes<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    let img = IMAGE;
    let status = |args: &[&str]| engine.run(args).status.code();
    assert_eq!(status(&["run", "--rm", img, "sh", "-c", "exit 3"]), Some(3));
    assert_eq!(status(&["run", "--rm", img, "false"]), Some(1));
    let missing = engine.run(&["run", "--rm", img, "no-such-program"]);
    assert_eq!(missing.status.code(), Some(127), "{}", describe(&missing));
    // Killed by a signal (PID 1 of its namespace ignores its own).
    engine.ok(&["run", "-d", "--name", "sleeper", img, "sleep", "1000"]);
    engine.ok(&["kill", "--signal", "KILL", "sleeper"]);
    assert_eq!(engine.ok(&["wait", "sleeper"]).trim(), "137");
    assert_eq!(engine.inspect("sleeper", "{{.State.ExitCode}}"), "137");
    engine.ok(&["rm", "sleeper"]);
    // `--rm` left nothing.
    assert_eq!(engine.ok(&["ps", "-aq"]), "");
    engine.finish();
}

/// `-e`, `-w` and `-u` (a number and a name from the image's
/// `/etc/passwd`), and the image's own `PATH`.
pub fn environment_directory_and_user<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    let img = IMAGE;
    let out = engine.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hello there",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        img,
        "sh",
        "-c",
        "echo \"$GREETING\"; pwd; id -u; id -g; echo $PATH",
    ]);
    assert_eq!(out, "hello there\n/tmp\n1000\n1000\n/usr/sbin:/usr/bin:/sbin:/bin\n");
    let out = engine.ok(&["run", "--rm", "-u", "app", img, "sh", "-c", "id -un; echo $HOME"]);
    assert_eq!(out, "app\n/home/app\n");
    engine.finish();
}

/// `run -it`: the container's process gets a terminal (through conmon's
/// console socket) of the caller's window size, and what is typed reaches
/// it.
pub fn a_terminal_with_its_window_size<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    let mut cmd = engine.command();
    cmd.args(["run", "--rm", "-it", IMAGE, "sh", "-c"]);
    // The engine sets the size once the process has started (docker's
    // client a moment later): until then the terminal is 0x0.
    cmd.arg(concat!(
        "tty >/dev/null && echo on a terminal; ",
        "for i in $(seq 1 100); do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != '0 0' ] && break; sleep 0.1; done; ",
        "echo \"size $s\"; echo ready; read line; echo \"got $line\"; exit 4"
    ));
    let run = on_terminal(cmd, 31, 97, "ready", b"typed words\r", Duration::from_secs(120));
    assert!(run.screen.contains("on a terminal"), "screen: {:?}", run.screen);
    assert!(
        run.screen.contains("size 31 97"),
        "window size not passed: {:?}",
        run.screen
    );
    assert!(
        run.screen.contains("got typed words"),
        "input not relayed: {:?}",
        run.screen
    );
    assert_eq!(run.status.code(), Some(4), "screen: {:?}", run.screen);
    engine.finish();
}

/// `run -d`, then `ps` (Up), `logs`, `exec` (its output and status),
/// `stop` (SIGTERM, which the process handles), `ps -a` (Exited (0)),
/// `wait`, `rm`.
pub fn detached_logs_exec_stop_and_rm<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    let script = "echo started; trap 'echo stopping; exit 0' TERM; while true; do sleep 0.2; done";
    let id = engine.ok(&["run", "-d", "--name", "box", IMAGE, "sh", "-c", script]);
    assert_eq!(id.trim().len(), 64, "run -d prints the id: {id:?}");
    let up = vminitd_tests::eventually(Duration::from_secs(30), || {
        engine.run(&["logs", "box"]).stdout == b"started\n"
    });
    assert!(up, "logs: {}", describe(&engine.run(&["logs", "box"])));
    let status = engine.ok(&["ps", "--filter", "name=box", "--format", "{{.Names}} {{.Status}}"]);
    assert!(status.starts_with("box Up"), "ps: {status:?}");

    let out = engine.run(&["exec", "-e", "N=6", "box", "sh", "-c", "echo $((N * 7)); exit 5"]);
    assert_eq!(text(&out.stdout), "42\n", "{}", describe(&out));
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        engine.ok(&["exec", "-w", "/www", "box", "cat", "index.html"]),
        INDEX_HTML
    );

    engine.ok(&["stop", "-t", "10", "box"]);
    assert_eq!(engine.ok(&["wait", "box"]).trim(), "0");
    let status = engine.ok(&["ps", "-a", "--filter", "name=box", "--format", "{{.Status}}"]);
    assert!(status.starts_with("Exited (0)"), "ps -a: {status:?}");
    assert_eq!(engine.ok(&["logs", "box"]), "started\nstopping\n");
    engine.ok(&["rm", "box"]);
    assert_eq!(engine.ok(&["ps", "-aq"]), "");
    engine.finish();
}

/// `-v` of a host directory read-write (each side sees the other's
/// writes) and read-only (a write fails), of a named volume (kept from one
/// container to the next), and of a single file.
pub fn volumes_and_binds<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    let img = IMAGE;
    let data = engine.path().join("shared");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("from-host"), "written on the host\n").unwrap();
    let rw = format!("{}:/data", data.display());
    let out = engine.ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        img,
        "sh",
        "-c",
        "cat /data/from-host; echo written inside > /data/from-container",
    ]);
    assert_eq!(out, "written on the host\n");
    assert_eq!(
        std::fs::read_to_string(data.join("from-container")).unwrap(),
        "written inside\n"
    );

    let ro = format!("{}:/data:ro", data.display());
    let out = engine.run(&[
        "run",
        "--rm",
        "-v",
        &ro,
        img,
        "sh",
        "-c",
        "cat /data/from-host && echo x > /data/new",
    ]);
    assert_eq!(text(&out.stdout), "written on the host\n", "{}", describe(&out));
    assert_ne!(out.status.code(), Some(0), "a write to a read-only bind succeeded");
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        describe(&out)
    );
    assert!(!data.join("new").exists());

    engine.ok(&["volume", "create", "keep"]);
    engine.ok(&[
        "run",
        "--rm",
        "-v",
        "keep:/keep",
        img,
        "sh",
        "-c",
        "echo kept > /keep/note",
    ]);
    assert_eq!(
        engine.ok(&["run", "--rm", "-v", "keep:/keep", img, "cat", "/keep/note"]),
        "kept\n"
    );

    let file = engine.path().join("greeting.conf");
    std::fs::write(&file, "greeting = hello\n").unwrap();
    let bind = format!("{}:/etc/greeting.conf:ro", file.display());
    assert_eq!(
        engine.ok(&["run", "--rm", "-v", &bind, img, "cat", "/etc/greeting.conf"]),
        "greeting = hello\n"
    );
    engine.finish();
}

/// `-p 127.0.0.1:PORT:80` publishes the container's web server, fetched
/// from the host.
pub fn a_published_port<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    engine.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, IMAGE, "httpd", "-f", "-p", "80", "-h", "/www",
    ]);
    engine.track_netns("web");
    let body = http_get(port, "/index.html", Duration::from_secs(60));
    assert_eq!(body.as_deref(), Ok(INDEX_HTML));
    engine.ok(&["rm", "-f", "web"]);
    engine.finish();
}

/// Two containers on one user network: the client reaches the server by
/// its name (podman's aardvark-dns, docker's embedded DNS), at the address
/// the engine gave it.
pub fn two_containers_by_name_on_a_network<E: Engine>(runtime: Runtime) {
    let mut engine = E::start(runtime);
    let (net, prefix) = engine.network("backend");
    engine.ok(&[
        "run",
        "-d",
        "--name",
        "server",
        "--network",
        &net,
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    engine.track_netns("server");
    let address = engine.inspect(
        "server",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
    );
    assert!(
        address.starts_with(&prefix),
        "server's address {address:?} is not on {prefix}0/24"
    );
    let fetch = "for i in $(seq 1 50); do wget -qO- http://server/ && exit 0; sleep 0.2; done; exit 1";
    let out = engine.run(&["run", "--rm", "--network", &net, IMAGE, "sh", "-c", fetch]);
    assert_eq!(text(&out.stdout), INDEX_HTML, "{}", describe(&out));
    let out = engine.run(&[
        "run",
        "--rm",
        "--network",
        &net,
        IMAGE,
        "sh",
        "-c",
        "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'",
    ]);
    assert!(
        text(&out.stdout).starts_with(&format!("inet {prefix}")),
        "{}",
        describe(&out)
    );
    engine.ok(&["rm", "-f", "server"]);
    engine.finish();
}

/// `--network none`: the container sees loopback alone, up, and reaches
/// nothing beyond it (here the host's loopback, where a server listens).
pub fn no_network_but_loopback<E: Engine>(runtime: Runtime) {
    let engine = E::start(runtime);
    // A server on the host's loopback, which a VM with NAT would reach
    // at 10.0.2.2: it answers every connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = std::io::Write::write_all(&mut stream, b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nreached\n");
        }
    });
    let script = format!(
        "ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -4 route | wc -l; \
         wget -q -T 2 -O- http://10.0.2.2:{port}/ 2>/dev/null || echo unreachable"
    );
    let out = engine.run(&["run", "--rm", "--network", "none", IMAGE, "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "lo\nunknown\n0\nunreachable\n", "{}", describe(&out));
    engine.finish();
}

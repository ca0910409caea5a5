//! Networking of real micro-VMs: NAT to a service on the host's loopback,
//! published ports, the guest's hosts and resolver files, networks of both
//! drivers, and clear errors for bad settings. Traffic stays on this
//! machine: the only host services the guests reach are ones these tests
//! start, on 127.0.0.1 or on a bridge they made.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vminitd_tests::vmshim_bin;

fn vmshim(args: &[&str]) -> std::process::Output {
    Command::new(vmshim_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn nat_reaches_a_service_on_the_hosts_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_http_once(listener, "hello from the host\n");
    let url = format!("http://host.vminitd.internal:{port}/greeting");
    let out = vmshim(&["run", "--", "wget", "-q", "-O", "-", &url]);
    assert_eq!(text(&out.stdout), "hello from the host\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert!(server.join().unwrap().0.starts_with("GET /greeting "));
}

#[test]
fn a_published_port_answers_the_host() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mapping = format!("{port}:8000");
    let mut vm = Command::new(vmshim_bin())
        .args(["run", "-p", &mapping, "--", "sh", "-c"])
        .arg("mkdir -p /srv && echo published > /srv/index.html && echo ready && exec httpd -f -p 8000 -h /srv")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(vm.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let body = http_get(
        ("127.0.0.1", port),
        "index.html",
        Instant::now() + Duration::from_secs(20),
    );
    assert!(body.ends_with("published\n"), "{body}");
    // SAFETY: signals our own child.
    unsafe { libc::kill(vm.id() as i32, libc::SIGTERM) };
    let status = vm.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn hosts_resolver_and_hostname() {
    let out = vmshim(&[
        "run",
        "--name",
        "web1",
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/hosts /etc/resolv.conf; ip -4 addr show | grep inet; ip route",
    ]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "web1");
    assert!(s.contains("127.0.0.1\tlocalhost"), "{s}");
    assert!(s.contains("\tweb1"), "{s}");
    assert!(s.contains("10.0.2.2\thost.vminitd.internal"), "{s}");
    assert!(s.contains("nameserver 10.0.2.3"), "{s}");
    assert!(s.contains("inet 10.0.2.15/24"), "{s}");
    assert!(s.contains("default via 10.0.2.2"), "{s}");

    let out = vmshim(&[
        "run",
        "--no-network",
        "--",
        "sh",
        "-c",
        "ip -4 addr show | grep -c inet",
    ]);
    assert_eq!(text(&out.stdout).trim(), "1", "only loopback: {}", text(&out.stderr));
}

#[test]
fn bad_network_settings_are_clear_errors() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = vmshim(&["run", "-p", &format!("{port}:80"), "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("already in use"), "{}", text(&out.stderr));
    for bad in ["80", "1:2/sctp", "70000:80"] {
        let out = vmshim(&["run", "-p", bad, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(text(&out.stderr).contains(bad), "{bad}: {}", text(&out.stderr));
    }
}

/// vmshim with a private network state directory.
fn vmshim_in(state: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(vmshim_bin());
    cmd.args(args).env("VMSHIM_STATE_DIR", state).stdin(Stdio::null());
    cmd
}

#[test]
fn two_vms_on_one_network_talk_both_ways_by_name() {
    let state = vminitd_tests::TempDir::new("netstate");
    let out = vmshim_in(
        state.path(),
        &["network", "create", "backend", "--subnet", "10.123.7.0/24"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The server answers what it receives, reversed, and says what it got.
    let mut server = vmshim_in(
        state.path(),
        &[
            "run",
            "--network",
            "backend",
            "--name",
            "db",
            "--ip",
            "10.123.7.10",
            "--",
            "sh",
            "-c",
        ],
    )
    .arg("echo ready; nc -l -p 7000 -e sh -c 'read line; echo \"db got: $line\"; echo \"$line\" | rev'")
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    let mut server_out = BufReader::new(server.stdout.take().unwrap());
    server_out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");

    let out = vmshim_in(state.path(), &["run", "--network", "backend", "--name", "web", "--", "sh", "-c"])
        .arg("grep -w db /etc/hosts; for i in 1 2 3 4 5 6 7 8 9 10; do echo hello-from-web | nc db 7000 && exit 0; sleep 0.3; done; exit 1")
        .output()
        .unwrap();
    let client_said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{client_said} {}", text(&out.stderr));
    assert!(
        client_said.contains("10.123.7.10\tdb"),
        "the name resolves: {client_said}"
    );
    assert!(
        client_said.contains("db got: hello-from-web"),
        "web → db: {client_said}"
    );
    assert!(client_said.contains("bew-morf-olleh"), "db → web: {client_said}");
    let _ = server.wait();

    let ls = vmshim_in(state.path(), &["network", "ls"]).output().unwrap();
    let ls = text(&ls.stdout);
    assert!(ls.starts_with("NAME      DRIVER   SUBNET"), "{ls}");
    assert!(ls.contains("backend   switch   10.123.7.0/24   running"), "{ls}");
    let rm = vmshim_in(state.path(), &["network", "rm", "backend"]).output().unwrap();
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    assert!(
        !state.path().join("networks/backend").exists(),
        "nothing left of the network"
    );
}

#[test]
fn bad_network_definitions_leave_nothing_half_made() {
    let state = vminitd_tests::TempDir::new("netbad");
    let run = |args: &[&str]| vmshim_in(state.path(), args).output().unwrap();
    assert!(run(&["network", "create", "a", "--subnet", "10.124.0.0/16"])
        .status
        .success());
    for (args, needle) in [
        (&["network", "create", "b", "--subnet", "10.124.5.0/24"][..], "overlap"),
        (
            &["network", "create", "b", "--subnet", "10.124.5.7/24"][..],
            "host bits",
        ),
        (
            &["network", "create", "b", "--subnet", "300.1.2.0/24"][..],
            "300.1.2.0/24",
        ),
        (
            &["network", "create", "b", "--subnet", "10.0.2.0/24"][..],
            "10.0.2.0/24",
        ),
        (&["network", "create", "a"][..], "exists"),
        (&["network", "create", "bad/name"][..], "bad/name"),
        (&["network", "rm", "nope"][..], "nope"),
        (&["run", "--network", "nope", "--", "true"][..], "nope"),
        (
            &["run", "--network", "a", "--ip", "10.99.0.5", "--", "true"][..],
            "10.99.0.5",
        ),
    ] {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.to_lowercase().contains(needle), "{args:?}: {err}");
    }
    let names: Vec<String> = std::fs::read_dir(state.path().join("networks"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a"], "only the good network exists");
    assert!(run(&["network", "rm", "a"]).status.success());
}

/// Whether this test runs as root; if not, says why it does nothing.
fn root_or_note(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("note: {test} needs root (bridge networks make network devices); skipped");
    }
    root
}

/// The host's network devices whose name starts with `prefix`.
fn host_devices(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Deletes bridge `vmbr-*` when dropped, if a failed test left it.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let sys = std::path::Path::new("/sys/class/net").join(&self.0);
        if self.0.starts_with("vmbr-") && sys.join("bridge").is_dir() {
            let _ = Command::new("ip").args(["link", "del", "dev", &self.0]).status();
        }
    }
}

/// `GET /PATH` over HTTP/1.0 to `addr`, retried until `deadline`.
/// Answers one HTTP request on `listener` with `body`; returns the request
/// line and the peer's address.
fn serve_http_once(listener: TcpListener, body: &'static str) -> std::thread::JoinHandle<(String, String)> {
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut request = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut request)
            .unwrap();
        write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        (request, peer.ip().to_string())
    })
}

/// GETs `path` from `addr`, retrying until `deadline`; the whole answer.
fn http_get(addr: (&str, u16), path: &str, deadline: Instant) -> String {
    loop {
        let attempt = TcpStream::connect_timeout(
            &format!("{}:{}", addr.0, addr.1).parse().unwrap(),
            Duration::from_secs(2),
        )
        .and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(c, "GET /{path} HTTP/1.0\r\n\r\n")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        });
        match attempt {
            Ok(s) if s.contains("200 OK") => return s,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("{}:{} never answered: {other:?}", addr.0, addr.1),
        }
    }
}

#[test]
fn a_bridge_network_joins_vms_and_the_host() {
    if !root_or_note("a_bridge_network_joins_vms_and_the_host") {
        return;
    }
    let state = vminitd_tests::TempDir::new("netbridge");
    // A name of its own: bridges are the host's, not the state directory's.
    let name = format!("b{:x}", std::process::id());
    let _cleanup = BridgeGuard(format!("vmbr-{name}"));
    let out = vmshim_in(
        state.path(),
        &[
            "network",
            "create",
            &name,
            "--driver",
            "bridge",
            "--subnet",
            "10.123.9.0/24",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("networks").join(&name).join("network.json")).unwrap())
            .unwrap();
    assert_eq!(config["driver"], "bridge");
    let bridge = config["bridge"].as_str().unwrap().to_owned();
    assert_eq!(bridge, format!("vmbr-{name}"));
    let sys = std::path::Path::new("/sys/class/net").join(&bridge);
    assert!(sys.join("bridge").is_dir(), "{bridge} is a bridge");
    let addr = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &bridge])
        .output()
        .unwrap();
    assert!(
        text(&addr.stdout).contains("inet 10.123.9.1/24"),
        "{}",
        text(&addr.stdout)
    );

    // A service of the host on the bridge's address, for the VMs.
    let listener = TcpListener::bind("10.123.9.1:0").unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let host_service = serve_http_once(listener, "the host\n");

    // db serves HTTP to the host, then answers one nc client, reversed.
    let mut server = vmshim_in(
        state.path(),
        &[
            "run",
            "--network",
            &name,
            "--name",
            "db",
            "--ip",
            "10.123.9.10",
            "--",
            "sh",
            "-c",
        ],
    )
    .arg(
        "mkdir -p /srv && echo served-by-db > /srv/index.html && httpd -p 8080 -h /srv && echo ready; \
         nc -l -p 7000 -e sh -c 'read line; echo \"db got: $line\"; echo \"$line\" | rev'",
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    let mut server_out = BufReader::new(server.stdout.take().unwrap());
    server_out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");

    // db's tap is on the bridge while it runs.
    let tap = "vmtap-0a7b090a";
    let master = std::fs::read_link(format!("/sys/class/net/{tap}/master")).unwrap();
    assert_eq!(master.file_name().unwrap().to_string_lossy(), bridge);

    // The host reaches db at its address.
    let page = http_get(
        ("10.123.9.10", 8080),
        "index.html",
        Instant::now() + Duration::from_secs(20),
    );
    assert!(page.ends_with("served-by-db\n"), "{page}");

    let out = vmshim_in(
        state.path(),
        &["run", "--network", &name, "--name", "web", "--", "sh", "-c"],
    )
    .arg(format!(
        "grep -w db /etc/hosts; wget -qO- http://10.123.9.1:{host_port}/; \
             for i in 1 2 3 4 5 6 7 8 9 10; do echo hello-from-web | nc db 7000 && exit 0; sleep 0.3; done; exit 1"
    ))
    .output()
    .unwrap();
    let client_said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{client_said} {}", text(&out.stderr));
    assert!(
        client_said.contains("10.123.9.10\tdb"),
        "the name resolves: {client_said}"
    );
    assert!(client_said.contains("the host\n"), "web → host: {client_said}");
    assert_eq!(host_service.join().unwrap().1, "10.123.9.2", "web came over the bridge");
    assert!(
        client_said.contains("db got: hello-from-web"),
        "web → db: {client_said}"
    );
    assert!(client_said.contains("bew-morf-olleh"), "db → web: {client_said}");
    assert_eq!(server.wait().unwrap().code(), Some(0));

    let ls = vmshim_in(state.path(), &["network", "ls"]).output().unwrap();
    let ls = text(&ls.stdout);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [name.as_str(), "bridge", "10.123.9.0/24", &bridge, "0"]),
        "{ls}"
    );
    assert_eq!(
        host_devices("vmtap-"),
        Vec::<String>::new(),
        "each VM's tap went with it"
    );
    let rm = vmshim_in(state.path(), &["network", "rm", &name]).output().unwrap();
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    assert!(!sys.exists(), "the bridge is gone");
    let show = Command::new("ip").args(["link", "show", &bridge]).output().unwrap();
    assert!(!show.status.success());
    assert!(!state.path().join("networks").join(&name).exists());
}

#[test]
fn bad_bridge_networks_leave_no_bridge() {
    if !root_or_note("bad_bridge_networks_leave_no_bridge") {
        return;
    }
    let state = vminitd_tests::TempDir::new("netbadbridge");
    let run = |args: &[&str]| vmshim_in(state.path(), args).output().unwrap();
    assert!(run(&["network", "create", "a", "--subnet", "10.126.0.0/16"])
        .status
        .success());
    let name = format!("c{:x}", std::process::id());
    let bridge = format!("vmbr-{name}");
    let _cleanup = BridgeGuard(bridge.clone());
    for (args, needle) in [
        (vec!["network", "create", "bad/name", "--driver", "bridge"], "bad/name"),
        (
            vec![
                "network",
                "create",
                &name,
                "--driver",
                "bridge",
                "--subnet",
                "10.126.5.0/24",
            ],
            "overlaps 10.126.0.0/16 of network \"a\"",
        ),
        (
            vec![
                "network",
                "create",
                &name,
                "--driver",
                "bridge",
                "--subnet",
                "10.127.0.9/24",
            ],
            "host bits",
        ),
        (vec!["network", "create", "a", "--driver", "bridge"], "exists"),
    ] {
        let out = run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Without CAP_NET_ADMIN: a clear error, before anything is made.
    if Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let out = Command::new("setpriv")
            .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin"])
            .arg(vmshim_bin())
            .args(["network", "create", &name, "--driver", "bridge"])
            .env("VMSHIM_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains("needs root (CAP_NET_ADMIN"), "{err}");
    }
    let out = run(&["network", "create", &name, "--driver", "tap"]);
    assert_eq!(out.status.code(), Some(2), "an unknown driver is a usage error");
    assert!(
        text(&out.stderr).contains("possible values: switch, bridge"),
        "{}",
        text(&out.stderr)
    );

    assert!(
        !std::path::Path::new("/sys/class/net").join(&bridge).exists(),
        "no bridge left"
    );
    let names: Vec<String> = std::fs::read_dir(state.path().join("networks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, ["a"], "only the good network exists");
    assert!(run(&["network", "rm", "a"]).status.success());
}

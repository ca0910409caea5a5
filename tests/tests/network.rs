//! Networking of real micro-VMs: NAT to a service on the host's loopback,
//! published ports, the guest's hosts and resolver files, and clear errors
//! for bad settings. Traffic stays on this machine: the only host service
//! the guests reach is one this test starts on 127.0.0.1.

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
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut request)
            .unwrap();
        let body = "hello from the host\n";
        write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        request
    });
    let url = format!("http://host.vminitd.internal:{port}/greeting");
    let out = vmshim(&["run", "--", "wget", "-q", "-O", "-", &url]);
    assert_eq!(text(&out.stdout), "hello from the host\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert!(server.join().unwrap().starts_with("GET /greeting "));
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        });
        match attempt {
            Ok(s) if s.contains("200 OK") => break s,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("the published port never answered: {other:?}"),
        }
    };
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
    assert!(text(&ls.stdout).contains("10.123.7.0/24"), "{}", text(&ls.stdout));
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

//! A container's network namespace is its VM's network: the namespace a
//! spec names by path (as podman's netavark, CNI set it up), or the new
//! one its pid lives in, which a `prestart` hook wires through
//! `/proc/PID/ns/net` (as docker's libnetwork does). The guest's NIC takes
//! the namespace's veth's MAC, addresses, routes and MTU, and the host
//! reaches the container at the address the namespace gave it.
//!
//! As root only (the namespaces and veth pairs are made with `ip`, as a
//! network stack makes them; vmshim runs no `ip` or `tc`). Each test's
//! addresses are in a /24 of 10.213.0.0/16 of its own, on a veth pair it
//! makes; nothing else is sent anywhere.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use vminitd_tests::{vmshim_bin, TempDir};

/// Whether the test can run: root, with `ip` (scripts/setup.sh installs
/// iproute2). A machine without them fails the test, saying which is
/// missing, rather than passing it unchecked.
fn root_with_ip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(root, "these tests make network namespaces and taps: they need root");
    assert!(
        ip,
        "these tests need `ip` (iproute2) to wire network namespaces as a runtime does"
    );
    true
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of the test's (`ip netns add`), deleted on drop
/// with the veth pair it holds.
struct Netns {
    name: String,
    /// The host's end of the pair, when there is one.
    host_end: Option<String>,
}

impl Netns {
    /// An empty namespace: loopback only, as `--network none` has.
    fn empty(tag: &str) -> Netns {
        let name = format!("vmshim-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        Netns { name, host_end: None }
    }

    /// A namespace as netavark leaves it for subnet 10.213.`net`.0/24:
    /// `eth0` (MAC `0a:58:0a:d5:NET:02`, MTU 1400, `.2/24`, default route
    /// through `.1`, and 172.31.0.0/16 through `.1`), the pair's other end
    /// on the host with `.1/24`.
    fn wired(tag: &str, net: u8) -> Netns {
        let mut ns = Netns::empty(tag);
        let host_end = format!("vmt{}{tag}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["link", "del", &host_end]).output();
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        ns.host_end = Some(host_end.clone());
        ip(&["addr", "add", &format!("10.213.{net}.1/24"), "dev", &host_end]);
        ip(&["link", "set", &host_end, "mtu", "1400", "up"]);
        let mac = format!("0a:58:0a:d5:{net:02x}:02");
        let n = ns.name.clone();
        ip(&["-n", &n, "link", "set", "eth0", "address", &mac, "mtu", "1400", "up"]);
        ip(&["-n", &n, "addr", "add", &format!("10.213.{net}.2/24"), "dev", "eth0"]);
        ip(&["-n", &n, "route", "add", "default", "via", &format!("10.213.{net}.1")]);
        ip(&[
            "-n",
            &n,
            "route",
            "add",
            "172.31.0.0/16",
            "via",
            &format!("10.213.{net}.1"),
        ]);
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS`'s output.
    fn show(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.name]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The namespace's `tc qdisc` list of `eth0`.
    fn qdiscs(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "tc", "qdisc", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(end) = &self.host_end {
            let _ = Command::new("ip").args(["link", "del", end]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A subnet per test, per run: 10.213.N.0/24.
fn subnet(offset: u8) -> u8 {
    ((std::process::id() % 60) as u8) * 4 + offset
}

/// A `runc spec` busybox bundle running `script`, changed by `edit`.
fn bundle(dir: &Path, name: &str, script: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let b = vminitd_tests::runc_bundle(dir, name, &["sh", "-c", script], &["PATH=/bin:/sbin"]);
    let path = b.join("config.json");
    let mut spec: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut spec);
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    b
}

/// Sets the spec's network namespace's path.
fn network_path(spec: &mut Value, path: &Path) {
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = json!(path);
        }
    }
}

/// What the guest prints of its network, then it serves `hello` on port
/// 8080.
const SHOW_AND_SERVE: &str = "ls /sys/class/net; \
    for i in /sys/class/net/eth*; do cat $i/address $i/mtu; done; \
    ip addr | grep 'inet '; ip route; echo ---; \
    echo hello > /dev/shm/i; exec httpd -f -p 8080 -h /dev/shm";

fn runtime(root: &Path, args: &[&str]) -> Output {
    Command::new(vmshim_bin())
        .arg("runtime")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim runtime")
}

/// `create` and `start` of `bundle` as `id`, its output into `out`; the
/// container's pid.
fn run(root: &Path, bundle: &Path, id: &str, out: &Path) -> u32 {
    let pid_file = out.with_extension("pid");
    let log = fs::File::create(out).unwrap();
    let status = Command::new(vmshim_bin())
        .arg("runtime")
        .arg("--root")
        .arg(root)
        .args(["create", "--bundle"])
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success(), "create: {}", fs::read_to_string(out).unwrap());
    let started = runtime(root, &["start", id]);
    assert!(
        started.status.success(),
        "start: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    fs::read_to_string(&pid_file).unwrap().parse().unwrap()
}

/// The guest's report, once it has printed it.
fn report(out: &Path) -> String {
    assert!(
        vminitd_tests::eventually(Duration::from_secs(60), || fs::read_to_string(out)
            .unwrap()
            .contains("---")),
        "{}",
        fs::read_to_string(out).unwrap()
    );
    fs::read_to_string(out).unwrap()
}

/// `GET /i` from the container's httpd at `address`, from the host.
fn fetch(address: &str) -> String {
    let addr: SocketAddr = format!("{address}:8080").parse().unwrap();
    let mut last = String::new();
    for _ in 0..100 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                stream.write_all(b"GET /i HTTP/1.0\r\n\r\n").unwrap();
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if let Some((_, body)) = answer.split_once("\r\n\r\n") {
                    return body.to_owned();
                }
                last = answer;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no answer from {addr}: {last}");
}

/// Stops and deletes container `id`.
fn finish(root: &Path, id: &str) {
    let _ = runtime(root, &["kill", id, "KILL"]);
    let deleted = runtime(root, &["delete", "--force", id]);
    assert!(
        deleted.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );
}

#[test]
fn a_container_keeps_the_address_its_namespace_gave_it() {
    if !root_with_ip() {
        return;
    }
    let t = TempDir::new("netns-path");
    let root = t.path().join("root");
    let net = subnet(0);
    let ns = Netns::wired("p", net);
    let b = bundle(t.path(), "b", SHOW_AND_SERVE, |spec| network_path(spec, &ns.path()));
    let out = t.path().join("out");
    run(&root, &b, "n1", &out);
    let seen = report(&out);
    let mac = format!("0a:58:0a:d5:{net:02x}:02");
    for wanted in [
        "eth0\nlo\n".to_owned(),
        format!("{mac}\n1400\n"),
        format!("inet 10.213.{net}.2/24"),
        format!("default via 10.213.{net}.1 dev eth0"),
        format!("172.31.0.0/16 via 10.213.{net}.1 dev eth0"),
    ] {
        assert!(seen.contains(&wanted), "{wanted:?} not in what the guest sees:\n{seen}");
    }
    assert!(!seen.contains("10.0.2.15"), "no NAT interface:\n{seen}");
    // From the host, through the veth, the namespace's redirects, the tap
    // and QEMU.
    assert_eq!(fetch(&format!("10.213.{net}.2")), "hello\n");
    // The namespace's interface is redirected to the tap while the VM
    // runs, and its own settings are untouched.
    assert!(ns.qdiscs().contains("ingress"), "{}", ns.qdiscs());
    assert!(ns.show(&["link"]).contains("vmtap0"), "{}", ns.show(&["link"]));
    assert!(ns
        .show(&["addr", "show", "eth0"])
        .contains(&format!("10.213.{net}.2/24")));

    // One VM per namespace: a second container there is refused, naming
    // the interface another VM holds.
    let second = runtime(&root, &["create", "--bundle", b.to_str().unwrap(), "n2"]);
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("interface eth0 already has an ingress qdisc"), "{err}");
    assert!(!root.join("n2").exists());

    finish(&root, "n1");
    // Given back as it was: no redirect, no tap.
    assert!(!ns.qdiscs().contains("ingress"), "{}", ns.qdiscs());
    assert!(!ns.show(&["link"]).contains("vmtap"), "{}", ns.show(&["link"]));
}

#[test]
fn a_namespace_with_only_loopback_gives_a_vm_with_only_loopback() {
    if !root_with_ip() {
        return;
    }
    let t = TempDir::new("netns-none");
    let root = t.path().join("root");
    let script = "ls /sys/class/net; ip addr | grep 'inet '; echo ---";
    // --network none: a namespace of the caller's with only lo.
    let ns = Netns::empty("none");
    let b = bundle(t.path(), "b", script, |spec| network_path(spec, &ns.path()));
    let out = t.path().join("out");
    run(&root, &b, "l1", &out);
    assert_eq!(report(&out), "lo\n    inet 127.0.0.1/8 scope host lo\n---\n");
    finish(&root, "l1");
    // A stock runc spec, a new namespace that no hook wires: the same.
    let b = bundle(t.path(), "b2", script, |_| {});
    let out = t.path().join("out2");
    run(&root, &b, "l2", &out);
    assert_eq!(report(&out), "lo\n    inet 127.0.0.1/8 scope host lo\n---\n");
    finish(&root, "l2");
}

/// docker's order: the spec asks for a new network namespace; libnetwork's
/// `prestart` hook finds it through the pid in the state it is given
/// (`/proc/PID/ns/net`), moves a veth end there and sets it up; the VM
/// takes what it set up.
#[test]
fn a_prestart_hook_wires_the_namespace_as_libnetwork_does() {
    if !root_with_ip() {
        return;
    }
    let t = TempDir::new("netns-hook");
    let root = t.path().join("root");
    let net = subnet(1);
    let host_end = format!("vmh{}", std::process::id() % 100_000);
    let seen_pid = t.path().join("hook.pid");
    let hook = t.path().join("libnetwork-setkey.sh");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\n\
             pid=$(tr -d ' \\n' | sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/')\n\
             echo $pid > {seen}\n\
             ip link add {host_end} type veth peer name eth0 netns $pid\n\
             ip addr add 10.213.{net}.1/24 dev {host_end}\n\
             ip link set {host_end} up\n\
             nsenter --net=/proc/$pid/ns/net sh -c 'ip link set eth0 up && \
             ip addr add 10.213.{net}.2/24 dev eth0 && ip route add default via 10.213.{net}.1'\n",
            seen = seen_pid.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let b = bundle(t.path(), "b", SHOW_AND_SERVE, |spec| {
        spec["hooks"] = json!({"prestart": [{
            "path": hook,
            "args": ["libnetwork-setkey"],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        }]});
    });
    let out = t.path().join("out");
    let pid = run(&root, &b, "h1", &out);
    assert_eq!(fs::read_to_string(&seen_pid).unwrap().trim(), pid.to_string());
    let seen = report(&out);
    assert!(seen.contains("eth0\nlo\n"), "{seen}");
    assert!(seen.contains(&format!("inet 10.213.{net}.2/24")), "{seen}");
    assert!(seen.contains(&format!("default via 10.213.{net}.1 dev eth0")), "{seen}");
    assert_eq!(fetch(&format!("10.213.{net}.2")), "hello\n");
    finish(&root, "h1");
    // The namespace was the pid's: gone with it, and the veth pair too.
    assert!(
        vminitd_tests::eventually(Duration::from_secs(5), || !Command::new("ip")
            .args(["link", "show", &host_end])
            .output()
            .unwrap()
            .status
            .success()),
        "{host_end} outlived the container"
    );
}

#[test]
fn namespace_paths_that_cannot_be_the_vms_network_are_refused() {
    if !root_with_ip() {
        return;
    }
    let t = TempDir::new("netns-bad");
    let root = t.path().join("root");
    for (i, (path, message)) in [
        (
            "/nonexistent/netns",
            "cannot open the network namespace /nonexistent/netns",
        ),
        ("/proc/self/ns/ipc", "/proc/self/ns/ipc is not a network namespace"),
        // `create`'s own, the host's: its interfaces are not the VM's to take.
        (
            "/proc/self/ns/net",
            "/proc/self/ns/net is vmshim's own network namespace",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("b{i}");
        let b = bundle(t.path(), &name, "true", |spec| network_path(spec, Path::new(path)));
        let out = runtime(&root, &["create", "--bundle", b.to_str().unwrap(), "x1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(message), "{message:?} not in {err}");
        assert!(!root.join("x1").exists(), "nothing left of {path}");
    }
}

/// A name server on 127.0.0.11:53 of the namespace, as docker's embedded
/// DNS listens there: it answers every A query with 10.9.8.7, and answers
/// a name that starts with `slow` after 3 s.
const LOOPBACK_DNS: &str = r#"
import socketserver, struct, time
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        i = 12
        while data[i] != 0:
            i += data[i] + 1
        question = data[12:i + 5]
        if data[13:13 + data[12]].startswith(b"slow"):
            time.sleep(3)
        qtype = struct.unpack("!H", data[i + 1:i + 3])[0]
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 9, 8, 7]) if qtype == 1 else b""
        header = data[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1 if answer else 0, 0, 0)
        sock.sendto(header + question + answer, self.client_address)
socketserver.ThreadingUDPServer.daemon_threads = True
socketserver.ThreadingUDPServer(("127.0.0.11", 53), Handler).serve_forever()
"#;

/// Docker's embedded DNS lives on the namespace's loopback, out of the
/// guest's reach: the container's `/etc/resolv.conf` (a bind mount of a
/// host file, as docker's) names 127.0.0.11, and the guest relays its
/// queries to the name server there. A flood of 150 lookups that the
/// server holds for 3 s each leaves the relay answering afterwards and the
/// agent serving.
#[test]
fn a_name_server_on_the_namespaces_loopback_answers_through_the_relay() {
    root_with_ip();
    let t = TempDir::new("netns-dns");
    let root = t.path().join("root");
    let ns = Netns::wired("d", subnet(3));
    ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", LOOPBACK_DNS])
        .stdin(Stdio::null())
        .spawn()
        .expect("run python3 (podman-compose, which scripts/setup.sh installs, brings it)");
    let resolv = t.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 127.0.0.11\noptions ndots:0\n").unwrap();
    // Each lookup that must answer is tried up to five times, a second
    // apart: the server (a python3 started just before) may still be
    // starting on a loaded machine, and a lost datagram is retried as a
    // resolver would.
    let script =
        "lookup() { for try in 1 2 3 4 5; do nslookup $1 2>&1 | grep '^Address: 10' && return; sleep 1; done; }; \
        lookup web.example; \
        for i in $(seq 150); do nslookup slow$i.example >/dev/null 2>&1 & done; wait; \
        lookup after.example; echo ---; exec sleep 600";
    let b = bundle(t.path(), "b", script, |spec| {
        network_path(spec, &ns.path());
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/etc/resolv.conf", "type": "bind", "source": resolv, "options": ["rbind", "ro"]
        }));
    });
    let out = t.path().join("out");
    run(&root, &b, "dns1", &out);
    let seen = report(&out);
    let exec = runtime(&root, &["exec", "dns1", "echo", "alive"]);
    let _ = server.kill();
    let _ = server.wait();
    finish(&root, "dns1");
    assert_eq!(seen, "Address: 10.9.8.7\nAddress: 10.9.8.7\n---\n");
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "alive\n",
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
}

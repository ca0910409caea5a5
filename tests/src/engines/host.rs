//! What the engine tests do and check on the host: subnets of their own,
//! free ports, HTTP from the host, a command on a terminal, and what an
//! engine left behind.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the subnets' leases are kept: one file per taken subnet, holding
/// the pid of the test process that took it.
const LEASES: &str = "/tmp/vminitd-test-subnets";

/// A /24 of `10.123.0.0/16` and a bridge name, taken for one engine's
/// network while a test runs, so that tests running side by side (and
/// other test binaries) never share a bridge or an address; given back
/// when dropped.
pub struct Subnet {
    n: u8,
    lease: PathBuf,
}

impl Subnet {
    /// The first free one (a lease whose process is gone is free).
    pub fn take() -> Subnet {
        std::fs::create_dir_all(LEASES).expect("create the subnet leases' directory");
        let start = (std::process::id() % 200) as u8;
        for i in 0..250u16 {
            let n = 2 + ((u16::from(start) + i) % 250) as u8;
            let lease = Path::new(LEASES).join(n.to_string());
            let taken = OpenOptions::new().write(true).create_new(true).open(&lease);
            let mut file = match taken {
                Ok(file) => file,
                Err(_) => {
                    let holder = std::fs::read_to_string(&lease).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if !alive && holder.trim() != "" {
                        let _ = std::fs::remove_file(&lease);
                    }
                    continue;
                }
            };
            let subnet = Subnet { n, lease };
            if Path::new("/sys/class/net").join(subnet.bridge()).exists() {
                // Someone else's, leased or not: leave the lease taken
                // until this test ends and try the next one.
                std::mem::forget(subnet);
                continue;
            }
            file.write_all(std::process::id().to_string().as_bytes())
                .expect("write the lease");
            return subnet;
        }
        panic!("no free subnet in 10.123.2.0 - 10.123.251.0 (leases in {LEASES})");
    }

    /// N.
    pub fn n(&self) -> u8 {
        self.n
    }

    /// `10.123.N.0/24`.
    pub fn cidr(&self) -> String {
        format!("10.123.{}.0/24", self.n)
    }

    /// The gateway (the bridge's own address): `10.123.N.1`.
    pub fn gateway(&self) -> String {
        format!("10.123.{}.1", self.n)
    }

    /// The address prefix every address of this subnet starts with.
    pub fn prefix(&self) -> String {
        format!("10.123.{}.", self.n)
    }

    /// The bridge's name: `vmtN`.
    pub fn bridge(&self) -> String {
        format!("vmt{}", self.n)
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lease);
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on at the moment.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The body of `GET PATH` from `127.0.0.1:PORT`, tried until it answers
/// with a 200 or `timeout` passes (a server in a container takes a while
/// to start); the last failure otherwise.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = (|| -> Result<String, String> {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| format!("send: {e}"))?;
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).map_err(|e| format!("read: {e}"))?;
            let answer = String::from_utf8_lossy(&answer).into_owned();
            match answer.split_once("\r\n\r\n") {
                Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => Ok(body.to_owned()),
                _ => Err(format!("answer: {answer:?}")),
            }
        })();
        match attempt {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A command run on a terminal of its own: what the terminal showed and
/// how it exited.
pub struct TerminalRun {
    /// Everything written to the terminal (the echo of the input too).
    pub screen: String,
    /// The command's status.
    pub status: ExitStatus,
}

/// Runs `cmd` as the session leader of a new pseudo-terminal of
/// `rows`x`cols` (its stdin, stdout, stderr and controlling terminal),
/// types `input` once `ready` shows on the screen (at once when it is
/// empty), and reads the screen until the command exits or `timeout`
/// passes (then it is killed).
pub fn on_terminal(
    mut cmd: Command,
    rows: u16,
    cols: u16,
    ready: &str,
    input: &[u8],
    timeout: Duration,
) -> TerminalRun {
    let (master, slave) = openpty(rows, cols);
    let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
    cmd.stdin(stdio(&slave)).stdout(stdio(&slave)).stderr(stdio(&slave));
    // SAFETY: between fork and exec the child only calls setsid and ioctl,
    // both async-signal-safe, on its own descriptor 0.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn on the terminal");
    drop(slave);
    let mut reader = std::fs::File::from(master.try_clone().expect("dup the master"));
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the last holder of the slave is gone.
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut writer = std::fs::File::from(master);
    let deadline = Instant::now() + timeout;
    let mut screen = Vec::new();
    let mut typed = input.is_empty();
    if typed {
        let _ = writer.write_all(input);
    }
    let status = loop {
        while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(50)) {
            screen.extend_from_slice(&bytes);
        }
        if !typed && String::from_utf8_lossy(&screen).contains(ready) {
            let _ = writer.write_all(input);
            typed = true;
        }
        if let Some(status) = child.try_wait().expect("wait for the command") {
            while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
                screen.extend_from_slice(&bytes);
            }
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait for the killed command");
        }
    };
    TerminalRun {
        screen: String::from_utf8_lossy(&screen).into_owned(),
        status,
    }
}

fn openpty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the out-pointers are valid for writes; no name buffer or
    // termios is passed, and the window size outlives the call.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded, so both are open descriptors that nothing
    // else owns.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// What an engine left on the host after its cleanup, below its scratch
/// directory, on its bridges and subnets: each a line that names it.
#[derive(Default)]
pub struct Leftovers(pub Vec<String>);

impl Leftovers {
    /// Mounts below `dir` (a container's root, a volume, a namespace's
    /// file, a shm).
    pub fn mounts_below(&mut self, dir: &Path) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = format!("{}/", dir.display());
        for line in mountinfo.lines() {
            if let Some(point) = line.split(' ').nth(4) {
                if point.starts_with(&prefix) {
                    self.0.push(format!("mount {point}"));
                }
            }
        }
    }

    /// Processes whose command line names `dir` (conmon, a runtime, an
    /// instance daemon, QEMU, aardvark-dns, a daemon), other than this
    /// process.
    pub fn processes_naming(&mut self, dir: &Path) {
        let needle = dir.to_string_lossy().into_owned();
        for (pid, cmdline) in processes() {
            if cmdline.contains(&needle) && pid != std::process::id() {
                self.0.push(format!("process {pid}: {cmdline}"));
            }
        }
    }

    /// Network devices named `name`.
    pub fn link(&mut self, name: &str) {
        if Path::new("/sys/class/net").join(name).exists() {
            self.0.push(format!("network device {name}"));
        }
    }

    /// Interfaces with an IPv4 address starting with `prefix`.
    pub fn addresses(&mut self, prefix: &str) {
        if let Ok(out) = Command::new("ip").args(["-o", "-4", "addr", "show"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.contains(&format!("inet {prefix}")) {
                    self.0.push(format!("address: {line}"));
                }
            }
        }
    }

    /// iptables rules (filter and nat) that mention an address starting
    /// with `prefix`.
    pub fn iptables_rules(&mut self, prefix: &str) {
        for table in ["filter", "nat"] {
            if let Ok(out) = Command::new("iptables").args(["-w", "-t", table, "-S"]).output() {
                for rule in String::from_utf8_lossy(&out.stdout).lines() {
                    if rule.contains(prefix) {
                        self.0.push(format!("iptables -t {table}: {rule}"));
                    }
                }
            }
        }
    }

    /// The named files (network namespaces' bind mounts, sockets).
    pub fn paths(&mut self, paths: &[PathBuf]) {
        for path in paths {
            if std::fs::symlink_metadata(path).is_ok() {
                self.0.push(format!("{}", path.display()));
            }
        }
    }
}

/// Every process's pid and command line (arguments joined by spaces).
pub fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some((pid, cmdline.trim_end().to_owned()))
        })
        .collect()
}

/// Kills (SIGKILL) the processes whose command line names `dir`, and
/// lazily unmounts what is mounted below it, deepest first: the last
/// resort of an engine's cleanup, after its own has run.
pub fn sweep(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for (pid, cmdline) in processes() {
        if cmdline.contains(&needle) && pid != std::process::id() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    let mut found = Leftovers::default();
    found.mounts_below(dir);
    let mut points: Vec<String> = found
        .0
        .iter()
        .filter_map(|m| m.strip_prefix("mount ").map(str::to_owned))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount")
            .args(["-l", &point])
            .stderr(Stdio::null())
            .status();
    }
}

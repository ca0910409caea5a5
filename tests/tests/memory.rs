//! A VM's memory: what the guest frees goes back to the host (free page
//! reporting), the balloon resizes a running VM (`vmshim update
//! --memory`), and `vmshim stats` shows where the memory is. Each test has
//! a state directory and one detached VM of its own.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vminitd_tests::{vmshim_bin, TempDir};

const MIB: u64 = 1 << 20;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A detached VM of a state directory of its own, stopped when dropped.
struct Vm {
    state: TempDir,
    name: &'static str,
}

impl Vm {
    fn start(name: &'static str, memory_mib: u32) -> Vm {
        let vm = Vm {
            state: TempDir::new(name),
            name,
        };
        let out = vm.vmshim(&["run", "-d", "--name", name, "--memory", &memory_mib.to_string()]);
        assert!(out.status.success(), "run -d: {}", text(&out.stderr));
        vm
    }

    fn vmshim(&self, args: &[&str]) -> Output {
        Command::new(vmshim_bin())
            .args(args)
            .env("VMSHIM_STATE_DIR", self.state.path())
            .stdin(Stdio::null())
            .output()
            .expect("run vmshim")
    }

    /// A shell command in the VM; its stdout.
    fn sh(&self, script: &str) -> String {
        let out = self.vmshim(&["exec", self.name, "--", "sh", "-c", script]);
        assert!(out.status.success(), "{script}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// The guest's `MemTotal`, in bytes, as a process in it reads it.
    fn mem_total(&self) -> u64 {
        let line = self.sh("head -1 /proc/meminfo");
        let kib: u64 = line
            .strip_prefix("MemTotal:")
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"));
        kib * 1024
    }

    /// `vmshim stats NAME --format json`: the VM's one line.
    fn stats(&self) -> Value {
        let out = self.vmshim(&["stats", self.name, "--format", "json"]);
        assert!(out.status.success(), "stats: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{stdout}");
        let line: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["name"], self.name);
        line["memory"].clone()
    }

    /// The instance's record (`instance.json`).
    fn record(&self) -> Value {
        let path = self
            .state
            .path()
            .join("instances")
            .join(self.name)
            .join("instance.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.vmshim(&["stop", self.name]);
    }
}

fn bytes(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a byte count: {v}"))
}

/// QEMU's resident set, from the host's own `/proc`.
fn qemu_rss(vm: &Vm) -> u64 {
    let pid = vm.record()["vm_pids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "qemu")
        .map(|p| p[1].as_u64().unwrap())
        .expect("a qemu pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn memory_a_guest_frees_leaves_the_hosts_qemu() {
    let vm = Vm::start("fpr", 512);
    let idle_rss = qemu_rss(&vm);
    // 200 MiB written to a file of the guest's /tmp (memory: the root's
    // writable layer is a tmpfs), then removed.
    vm.sh("dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>/dev/null && sync");
    let peak_rss = qemu_rss(&vm);
    let peak_ram = bytes(&vm.stats()["host"]["guest_ram_bytes"]);
    assert!(
        peak_rss >= idle_rss + 190 * MIB,
        "idle {idle_rss}, with the file {peak_rss}"
    );
    assert!(peak_ram >= 200 * MIB, "the memfd holds the file's pages: {peak_ram}");
    vm.sh("rm /tmp/fill");
    // The guest reports the freed blocks about 2 s later, and QEMU
    // discards them: from its resident set and from the memfd.
    let freed = Instant::now();
    let mut rss = peak_rss;
    while rss > peak_rss - 180 * MIB && freed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        rss = qemu_rss(&vm);
    }
    assert!(
        rss <= peak_rss - 180 * MIB,
        "QEMU's RSS went from {} MiB idle to {} MiB with the file, and is {} MiB {:?} after the guest freed it",
        idle_rss >> 20,
        peak_rss >> 20,
        rss >> 20,
        freed.elapsed()
    );
    let ram = bytes(&vm.stats()["host"]["guest_ram_bytes"]);
    assert!(
        ram <= peak_ram - 180 * MIB,
        "the memfd: {peak_ram} with the file, {ram} after"
    );
}

#[test]
fn the_balloon_resizes_a_running_vm() {
    let vm = Vm::start("balloon", 512);
    let booted = vm.mem_total();
    let out = vm.vmshim(&["update", "balloon", "--memory", "128m"]);
    assert_eq!(out.status.code(), Some(0), "update: {}", text(&out.stderr));
    // The balloon holds 384 MiB: the guest's MemTotal is that much less,
    // to the page.
    assert_eq!(vm.mem_total(), booted - 384 * MIB);
    let balloon = &vm.stats()["balloon"];
    assert_eq!(
        (bytes(&balloon["vm_bytes"]), bytes(&balloon["actual_bytes"])),
        (512 * MIB, 128 * MIB),
        "{balloon}"
    );
    assert_eq!(bytes(&balloon["inflated_bytes"]), 384 * MIB);
    // The workloads' cgroup was sized for the smaller guest, the agent's
    // headroom (16 MiB) left out.
    let workloads = bytes(&vm.stats()["guest"]["workloads"]["max_bytes"]);
    assert_eq!(workloads, booted - 384 * MIB - 16 * MIB);
    // The guest lives with it: 64 MiB more of its memory in a file is fine.
    vm.sh("dd if=/dev/zero of=/tmp/f bs=1M count=64 2>/dev/null && rm /tmp/f");

    // Back to what it booted with.
    let out = vm.vmshim(&["update", "balloon", "--memory", "512"]);
    assert_eq!(out.status.code(), Some(0), "update: {}", text(&out.stderr));
    assert_eq!(vm.mem_total(), booted);
    let workloads = bytes(&vm.stats()["guest"]["workloads"]["max_bytes"]);
    // (A sixteenth for the agent; the kernel keeps limits in pages.)
    assert_eq!(workloads, (booted - booted / 16) & !4095);

    // Past what it booted with, or below what a VM needs: refused, the VM
    // as it was.
    let out = vm.vmshim(&["update", "balloon", "--memory", "1g"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("1024 MiB: more than the 512 MiB the VM booted with"),
        "{}",
        text(&out.stderr)
    );
    let out = vm.vmshim(&["update", "balloon", "--memory", "32m"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("32 MiB: a VM needs at least 64 MiB"),
        "{}",
        text(&out.stderr)
    );
    let out = vm.vmshim(&["update", "balloon", "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--memory \"lots\": not a size"),
        "{}",
        text(&out.stderr)
    );
    let out = vm.vmshim(&["update", "nosuch", "--memory", "128"]);
    assert!(
        text(&out.stderr).contains("no instance \"nosuch\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(vm.mem_total(), booted);
}

#[test]
fn vmshim_stats_shows_the_guest_the_balloon_and_the_host() {
    let vm = Vm::start("figures", 256);
    let m = vm.stats();
    // The guest's figures are the guest's own.
    let total = bytes(&m["guest"]["total_bytes"]);
    assert_eq!(total, vm.mem_total());
    let (used, cache, free) = (
        bytes(&m["guest"]["used_bytes"]),
        bytes(&m["guest"]["cache_bytes"]),
        bytes(&m["guest"]["free_bytes"]),
    );
    assert_eq!(used + cache + free, total, "{m}");
    assert!(used > 0 && free > 128 * MIB, "an idle guest: {m}");
    let workloads = &m["guest"]["workloads"];
    assert!(bytes(&workloads["max_bytes"]) < total, "{m}");
    // No balloon yet.
    assert_eq!(bytes(&m["balloon"]["vm_bytes"]), 256 * MIB);
    assert_eq!(bytes(&m["balloon"]["inflated_bytes"]), 0);
    // The host's: the daemon and the VM's processes, by the pids the
    // instance records; QEMU holds the guest RAM that was touched.
    let record = vm.record();
    let processes = m["host"]["processes"].as_array().unwrap();
    let roles: Vec<(&str, u64)> = processes
        .iter()
        .map(|p| (p["role"].as_str().unwrap(), p["pid"].as_u64().unwrap()))
        .collect();
    assert_eq!(roles[0], ("vmshim", record["pid"].as_u64().unwrap()));
    for entry in record["vm_pids"].as_array().unwrap() {
        assert!(
            roles.contains(&(entry[0].as_str().unwrap(), entry[1].as_u64().unwrap())),
            "{entry} in {roles:?}"
        );
    }
    for p in processes {
        assert!(
            bytes(&p["pss_bytes"]) > 0 && bytes(&p["pss_bytes"]) <= bytes(&p["rss_bytes"]),
            "{p}"
        );
    }
    let sum: u64 = processes.iter().map(|p| bytes(&p["rss_bytes"])).sum();
    assert_eq!(bytes(&m["host"]["rss_bytes"]), sum);
    let ram = bytes(&m["host"]["guest_ram_bytes"]);
    assert!(ram > 4 * MIB && ram <= 256 * MIB, "{m}");

    // The table: a header and the VM's row.
    let out = vm.vmshim(&["stats"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MEM USAGE / LIMIT",
            "CACHE",
            "FREE",
            "BALLOON",
            "HOST RSS",
            "HOST PSS",
            "GUEST RAM ON HOST"
        ],
        "{table}"
    );
    assert!(lines[1].starts_with("figures "), "{table}");
    assert!(lines[1].contains("MiB / "), "{table}");

    // --watch: a table every --interval, one after another on a pipe.
    let mut watch = Command::new(vmshim_bin())
        .args(["stats", "--watch", "--interval", "0.2"])
        .env("VMSHIM_STATE_DIR", vm.state.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    watch.kill().unwrap();
    let out = watch.wait_with_output().unwrap();
    let tables = text(&out.stdout).matches("MEM USAGE / LIMIT").count();
    assert!(tables >= 2, "{}", text(&out.stdout));

    let out = vm.vmshim(&["stats", "nosuch"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no instance \"nosuch\""),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_agent_outside_a_vm_has_no_workloads_to_resize() {
    let agent = vminitd_tests::NamespacedAgent::start().await;
    let client = agent.client().await;
    let err = client.resize_workloads(256 * MIB).await.unwrap_err();
    let body = err.agent_error().expect("the agent's answer");
    assert_eq!(body.code, agent_proto::ErrorCode::InvalidState, "{body:?}");
    assert_eq!(
        body.message,
        "the agent has no workloads' cgroup (it is not the init of a VM)"
    );
}

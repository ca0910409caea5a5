//! Host files in the guest: `vmshim run -v` of directories (read-write and
//! read-only) and of a single file, writes seen both ways while the VM
//! runs, a `vmshim runtime` container whose spec binds host paths (the
//! files podman and docker bind: hosts, resolv.conf, hostname,
//! .containerenv, a /dev/shm directory, a secret), `run --bundle -v`,
//! a detached VM that keeps its share, bad `-v` values refused by name,
//! and the host's mount table untouched throughout.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use vminitd_tests::{eventually, runc_bundle, vmshim_bin, TempDir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn vmshim(args: &[&str]) -> Output {
    Command::new(vmshim_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim")
}

/// The lines of the host's mount table that name `dir` (a source bound
/// under it, or a mount point in it) or a VM's share directory.
fn mounts_naming(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir) || l.contains("/shares"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn run_v_shares_directories_and_a_file_both_ways() {
    let t = TempDir::new("shares-run");
    let (rw, ro, file) = (t.path().join("rw"), t.path().join("ro"), t.path().join("single.txt"));
    fs::create_dir_all(&rw).unwrap();
    fs::create_dir_all(ro.join("sub")).unwrap();
    fs::write(rw.join("in.txt"), "from the host\n").unwrap();
    fs::write(ro.join("sub/r.txt"), "read only\n").unwrap();
    fs::write(&file, "a single file\n").unwrap();
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    // The guest reads what the host put there, writes, checks that the
    // read-only share refuses, then waits for the host's answer (a new
    // file, and a change to one it has read) and appends to the file share.
    let script = r#"
        cat /data/in.txt /ro/sub/r.txt /etc/single.txt
        echo "from the guest" > /data/guest.txt
        echo x > /ro/new.txt || echo "ro: refused"
        echo x >> /ro/sub/r.txt || echo "ro file: refused"
        until [ -e /data/answer.txt ]; do sleep 0.05; done
        cat /data/answer.txt
        until grep -q changed /data/in.txt; do sleep 0.05; done
        cat /data/in.txt
        echo "appended in the guest" >> /etc/single.txt
        stat -c '%s' /etc/single.txt
    "#;
    let rw_v = format!("{}:/data", rw.display());
    let ro_v = format!("{}:/ro:ro", ro.display());
    let file_v = format!("{}:/etc/single.txt", file.display());
    let mut child = Command::new(vmshim_bin())
        .args(["run", "-v", &rw_v, "-v", &ro_v, "-v", &file_v, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The guest's write is on the host while the VM runs.
    let seen = eventually(Duration::from_secs(60), || {
        fs::read_to_string(rw.join("guest.txt")).is_ok_and(|s| s == "from the guest\n")
    });
    let during = mounts_naming(t.path());
    fs::write(rw.join("answer.txt"), "the host answers\n").unwrap();
    fs::write(rw.join("in.txt"), "changed on the host\n").unwrap();
    let mut stderr = String::new();
    let mut stdout = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    assert!(seen, "the guest's write never reached the host; stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let appended = "a single file\nappended in the guest\n";
    assert_eq!(
        stdout,
        format!(
            "from the host\nread only\na single file\nro: refused\nro file: refused\n\
             the host answers\nchanged on the host\n{}\n",
            appended.len()
        ),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert_eq!(fs::read_to_string(&file).unwrap(), appended);
    assert!(!ro.join("new.txt").exists());
    assert_eq!(fs::read_to_string(ro.join("sub/r.txt")).unwrap(), "read only\n");
    // The host's mount table: nothing of the shares, during or after.
    assert_eq!(during, Vec::<String>::new());
    assert_eq!(mounts_naming(t.path()), Vec::<String>::new());
    let after = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line_set = |s: &str| s.lines().map(str::to_owned).collect::<std::collections::BTreeSet<_>>();
    let added: Vec<_> = line_set(&after).difference(&line_set(&before)).cloned().collect();
    assert!(
        added.iter().all(|l| !l.contains("virtiofs") && !l.contains("vmshim")),
        "{added:?}"
    );
}

#[test]
fn a_bad_volume_is_refused_by_name() {
    let t = TempDir::new("shares-bad");
    let missing = t.path().join("not-there");
    let dir = t.path().display().to_string();
    for (volume, named) in [
        (format!("{}:/data", missing.display()), missing.display().to_string()),
        (
            format!("{dir}:data"),
            "the guest path \"data\" is not absolute".to_owned(),
        ),
        (format!("{dir}:/data:rx"), "unknown option \"rx\"".to_owned()),
        (format!("{dir}:/data:ro:z"), "HOST:GUEST".to_owned()),
    ] {
        let out = vmshim(&["run", "-v", &volume, "--", "true"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{volume}: {stderr}");
        assert!(
            stderr.contains(&named) && stderr.contains(&volume),
            "{volume}: {stderr}"
        );
    }
}

/// A `runc spec` bundle whose mounts bind host paths the way podman's and
/// docker's specs do; returns the bundle.
fn bundle_binding_host_files(t: &TempDir, script: &str) -> std::path::PathBuf {
    let host = t.path().join("host");
    fs::create_dir_all(host.join("data")).unwrap();
    fs::create_dir_all(host.join("shm")).unwrap();
    fs::write(host.join("data/in.txt"), "volume data\n").unwrap();
    fs::write(host.join("hosts"), "127.0.0.1 localhost\n10.88.0.7 web\n").unwrap();
    fs::write(host.join("resolv.conf"), "nameserver 10.88.0.1\n").unwrap();
    fs::write(host.join("hostname"), "web\n").unwrap();
    fs::write(host.join(".containerenv"), "engine=\"podman-4.3.1\"\n").unwrap();
    fs::write(host.join("secret"), "s3cret\n").unwrap();
    let bundle = runc_bundle(t.path(), "bundle", &["sh", "-c", script], &["PATH=/bin:/sbin"]);
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let bind = |dest: &str, source: &str, options: &[&str]| {
        serde_json::json!({
            "destination": dest,
            "type": "bind",
            "source": host.join(source),
            "options": options,
        })
    };
    let mounts = spec["mounts"].as_array_mut().unwrap();
    // podman's /dev/shm is a bind of a host directory, in place of runc's tmpfs.
    let shm = mounts.iter().position(|m| m["destination"] == "/dev/shm").unwrap();
    mounts[shm] = bind("/dev/shm", "shm", &["bind", "rprivate", "nosuid", "noexec", "nodev"]);
    mounts.extend([
        bind("/data", "data", &["rbind", "rw"]),
        bind("/etc/hosts", "hosts", &["bind", "rprivate"]),
        bind("/etc/resolv.conf", "resolv.conf", &["bind", "rprivate"]),
        bind("/etc/hostname", "hostname", &["bind", "rprivate"]),
        bind("/run/.containerenv", ".containerenv", &["bind", "rprivate"]),
        bind("/run/secrets/db", "secret", &["bind", "ro"]),
    ]);
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    bundle
}

#[test]
fn a_runtime_container_binds_host_directories_and_files() {
    let t = TempDir::new("shares-runtime");
    let script = r#"
        cat /data/in.txt /etc/hosts /etc/resolv.conf /etc/hostname /run/.containerenv /run/secrets/db
        echo "from the container" > /data/out.txt
        echo "shm" > /dev/shm/seg && cat /dev/shm/seg
        echo x > /run/secrets/db || echo "secret: refused"
        grep -E -c ' (/etc/hosts|/data|/run/secrets/db) ' /proc/self/mountinfo
    "#;
    let bundle = bundle_binding_host_files(&t, script);
    let root = t.path().join("root");
    let before = mounts_naming(t.path());
    let out = Command::new(vmshim_bin())
        .args(["runtime", "--root"])
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg("binds")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout,
        "volume data\n127.0.0.1 localhost\n10.88.0.7 web\nnameserver 10.88.0.1\nweb\n\
         engine=\"podman-4.3.1\"\ns3cret\nshm\nsecret: refused\n3\n",
        "stderr: {stderr}"
    );
    let host = t.path().join("host");
    assert_eq!(
        fs::read_to_string(host.join("data/out.txt")).unwrap(),
        "from the container\n"
    );
    assert_eq!(fs::read_to_string(host.join("shm/seg")).unwrap(), "shm\n");
    assert_eq!(fs::read_to_string(host.join("secret")).unwrap(), "s3cret\n");
    assert_eq!(mounts_naming(t.path()), before);

    // The same bundle under `vmshim run --bundle`, with a -v of its own
    // bound after the spec's mounts.
    let extra = t.path().join("extra");
    fs::create_dir_all(&extra).unwrap();
    fs::write(extra.join("x.txt"), "extra volume\n").unwrap();
    let extra_v = format!("{}:/extra:ro", extra.display());
    let bundle_s = bundle.display().to_string();
    let script = "cat /extra/x.txt /etc/hostname; touch /extra/y || echo extra: refused; echo again >> /data/out.txt";
    let out = vmshim(&["run", "--bundle", &bundle_s, "-v", &extra_v, "--", "sh", "-c", script]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "extra volume\nweb\nextra: refused\n", "stderr: {stderr}");
    assert_eq!(
        fs::read_to_string(host.join("data/out.txt")).unwrap(),
        "from the container\nagain\n"
    );
}

#[test]
fn a_detached_vm_keeps_its_share_while_it_runs() {
    let t = TempDir::new("shares-detached");
    let state = t.path().join("state");
    let data = t.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f.txt"), "first\n").unwrap();
    let with_state = |args: &[&str]| {
        Command::new(vmshim_bin())
            .args(args)
            .env("VMSHIM_STATE_DIR", &state)
            .stdin(Stdio::null())
            .output()
            .expect("run vmshim")
    };
    let v = format!("{}:/data", data.display());
    let out = with_state(&["run", "-d", "--name", "keep", "-v", &v]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exec = |script: &str| with_state(&["exec", "keep", "--", "sh", "-c", script]);
    let out = exec("cat /data/f.txt; echo from-exec > /data/e.txt");
    assert_eq!(text(&out.stdout), "first\n", "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(data.join("e.txt")).unwrap(), "from-exec\n");
    fs::write(data.join("f.txt"), "second, from the host\n").unwrap();
    let out = exec("until grep -q second /data/f.txt; do sleep 0.05; done; cat /data/f.txt");
    assert_eq!(text(&out.stdout), "second, from the host\n", "{}", text(&out.stderr));
    // virtiofsd is one of the VM's processes while it runs.
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(state.join("instances/keep/instance.json")).unwrap()).unwrap();
    let daemon = record["vm_pids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "virtiofsd")
        .and_then(|p| p[1].as_u64())
        .unwrap_or_else(|| panic!("no virtiofsd in {record}"));
    assert!(Path::new(&format!("/proc/{daemon}")).exists());
    let out = with_state(&["stop", "keep"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        eventually(Duration::from_secs(10), || !Path::new(&format!("/proc/{daemon}/exe"))
            .exists()),
        "virtiofsd outlived its VM"
    );
    assert_eq!(mounts_naming(t.path()), Vec::<String>::new());
}

/// Root in the guest, as an attacker: it mounts the share's tag itself
/// (no guest bind's `ro` in the way), writes to every file and directory
/// it finds there, remounts the read-only bind read-write and writes
/// again, and plants links in the read-write share. On the host, nothing
/// but the read-write directory changes, nothing beside the shares is ever
/// seen, and the links are links in that directory, not a way out.
#[test]
fn root_in_the_guest_reaches_only_the_shared_paths_and_writes_no_read_only_one() {
    let t = TempDir::new("shares-hostile");
    let (rw, ro) = (t.path().join("rw"), t.path().join("ro"));
    fs::create_dir_all(&rw).unwrap();
    fs::create_dir_all(ro.join("sub")).unwrap();
    fs::write(ro.join("r.txt"), "read only\n").unwrap();
    fs::write(ro.join("sub/s.txt"), "read only too\n").unwrap();
    fs::write(t.path().join("secret.txt"), "beside the shares\n").unwrap();
    let script = r#"
        mkdir -p /mnt/share && mount -t virtiofs vmshim /mnt/share && echo "mounted the tag"
        grep -rqs "beside the shares" /mnt/share /data /ro && echo "SECRET SEEN"
        find /mnt/share /ro -type d | while read d; do touch "$d/planted" 2>/dev/null && echo "wrote in $d"; done
        find /mnt/share /ro -type f | while read f; do echo x >> "$f" 2>/dev/null && echo "appended to $f"; done
        mount -o remount,rw /ro 2>/dev/null
        echo x > /ro/new.txt 2>/dev/null && echo "remounted: WROTE"
        echo x >> /ro/r.txt 2>/dev/null && echo "remounted: APPENDED"
        ln -s ../secret.txt /data/up.txt; cat /data/up.txt 2>/dev/null
        ln -s /proc/1/root /data/root
        echo done
    "#;
    let rw_v = format!("{}:/data", rw.display());
    let ro_v = format!("{}:/ro:ro", ro.display());
    let out = vmshim(&["run", "-v", &rw_v, "-v", &ro_v, "--", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "mounted the tag\ndone\n",
        "stderr: {}",
        text(&out.stderr)
    );
    // The read-only directory, byte for byte; nothing new beside the shares.
    let mut names: Vec<String> = fs::read_dir(&ro)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["r.txt", "sub"]);
    assert_eq!(fs::read_dir(ro.join("sub")).unwrap().count(), 1);
    assert_eq!(fs::read_to_string(ro.join("r.txt")).unwrap(), "read only\n");
    assert_eq!(fs::read_to_string(ro.join("sub/s.txt")).unwrap(), "read only too\n");
    assert_eq!(
        fs::read_to_string(t.path().join("secret.txt")).unwrap(),
        "beside the shares\n"
    );
    // The links are the guest's, planted as links in the host directory.
    assert_eq!(fs::read_link(rw.join("up.txt")).unwrap(), Path::new("../secret.txt"));
    assert_eq!(fs::read_link(rw.join("root")).unwrap(), Path::new("/proc/1/root"));
}

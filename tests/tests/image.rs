//! `vmshim run --image` and `--bundle` in real VMs: an image built with
//! umoci (layers, a whiteout, an opaque directory, a config), a hostile
//! hand-made layer, and OCI runtime bundles.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vminitd_tests::TempDir;

fn vmshim_run(args: &[&str]) -> Output {
    vminitd_tests::vmshim_with_input(&[&["run"], args].concat(), b"")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sh(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup.sh installs umoci and runc)"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
}

fn umoci(args: &[&str]) {
    sh(Command::new("umoci").args(args));
}

/// A busybox tree copied into `dest` (which may exist).
fn busybox_into(scratch: &Path, dest: &Path) {
    let tree = scratch.join("busybox-tree");
    host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &tree).expect("busybox tree");
    fs::create_dir_all(dest).unwrap();
    sh(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", tree.display()))
        .arg(dest));
}

#[test]
fn image_layers_whiteouts_and_config() {
    let t = TempDir::new("image");
    let (layout, bundle) = (t.path().join("layout"), t.path().join("unpacked"));
    let (l, image) = (layout.to_str().unwrap(), format!("{}:t", layout.display()));
    umoci(&["init", "--layout", l]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let root = bundle.join("rootfs");
    busybox_into(t.path(), &root);
    fs::create_dir_all(root.join("data/sub")).unwrap();
    fs::create_dir_all(root.join("srv")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/srv:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\napp:x:1001:\n").unwrap();
    fs::write(root.join("etc/gone"), "lower").unwrap();
    fs::write(root.join("data/old"), "lower").unwrap();
    fs::write(root.join("data/sub/deep"), "lower").unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    // Upper layers: a whiteout, and /data made opaque with new contents.
    umoci(&["insert", "--image", &image, "--whiteout", "/etc/gone"]);
    let upper = t.path().join("upper-data");
    fs::create_dir(&upper).unwrap();
    fs::write(upper.join("new"), "upper\n").unwrap();
    umoci(&[
        "insert",
        "--image",
        &image,
        "--opaque",
        upper.to_str().unwrap(),
        "/data",
    ]);
    let script = r#"echo "cwd=$(pwd) id=$(id -u):$(id -g) A=$A B=$B"; ls -A /data; test -e /etc/gone && echo gone-still-there; true"#;
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.cmd",
        "sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        script,
        "--config.env",
        "A=image",
        "--config.env",
        "B=image",
        "--config.workingdir",
        "/srv",
        "--config.user",
        "app",
    ]);

    // The image's Cmd, Env, WorkingDir and User; the layers' whiteouts.
    let out = vmshim_run(&["--image", &image]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("cwd=/srv id=1000:1001 A=image B=image\nnew\n", Some(0)),
        "{}",
        text(&out.stderr)
    );

    // A command replaces Cmd; -e overrides Env by key; -u and -w win.
    let out = vmshim_run(&[
        "--image",
        &image,
        "-e",
        "A=user",
        "-u",
        "0:0",
        "-w",
        "/data",
        "--",
        "sh",
        "-c",
        r#"echo "A=$A B=$B $(id -u) $(pwd)"; cat new"#,
    ]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("A=user B=image 0 /data\nupper\n", Some(0)),
        "{}",
        text(&out.stderr)
    );

    // Detached: the image's root filesystem and defaults serve `exec` too.
    let state = t.path().join("state");
    let vmshim_in_state = |args: &[&str]| {
        std::process::Command::new(vminitd_tests::vmshim_bin())
            .args(args)
            .env("VMSHIM_STATE_DIR", &state)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = vmshim_in_state(&["run", "-d", "--name", "imgbox", "--image", &image, "--", "sleep", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = vmshim_in_state(&[
        "exec",
        "imgbox",
        "--",
        "sh",
        "-c",
        "cat /data/new; test -e /etc/gone || echo whited-out",
    ]);
    assert_eq!(text(&out.stdout), "upper\nwhited-out\n", "{}", text(&out.stderr));
    let out = vmshim_in_state(&["stop", "imgbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// An image layout of one manifest, tagged `t`, with these layers (tars).
fn write_layout(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8], media_type: &str| {
        let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        fs::write(blobs.join(&hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    };
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Cmd": ["true"]}});
    let config = blob(
        &serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json",
    );
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| blob(l, "application/vnd.oci.image.layer.v1.tar"))
        .collect();
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers});
    let mut desc = blob(
        &serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A tar with raw (unchecked) names: (name, symlink target or file data, is symlink).
fn hostile_tar(entries: &[(&str, &str, bool)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        let body = if *link {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_link_name(data).unwrap();
            &b""[..]
        } else {
            data.as_bytes()
        };
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_layers_are_refused_before_anything_boots() {
    let t = TempDir::new("image-hostile");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let escape = hostile_tar(&[("../../../../../../../../../../escape", "x", false)]);
    let through = hostile_tar(&[("evil", outside.to_str().unwrap(), true), ("evil/planted", "x", false)]);
    for (tag, layer, entry) in [("dotdot", escape, "escape"), ("symlink", through, "evil/planted")] {
        let layout = t.path().join(tag);
        write_layout(&layout, &[layer]);
        let out = vmshim_run(&["--image", &format!("{}:t", layout.display()), "--", "true"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(stderr.contains(entry) && stderr.contains("refused"), "{stderr}");
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
    assert!(!Path::new("/escape").exists());
}

/// A stock `runc spec` bundle (busybox root) runs with `vmshim run
/// --bundle` as `vmshim runtime` runs it: a container of vminitd's engine,
/// with the spec's read-only root, hostname, `/dev/mqueue`, cgroup and
/// read-only paths; its output and exit status are the command's.
#[test]
fn a_stock_runc_spec_bundle_runs_as_a_container() {
    let t = TempDir::new("bundle-stock");
    let script = r#"echo "$(hostname) $(id -u) $PWD"; touch /x 2>/dev/null || echo read-only root; grep -E ' /(proc/sys|dev/mqueue|sys/fs/cgroup) ' /proc/mounts | cut -d' ' -f2,3; exit 3"#;
    let bundle = vminitd_tests::runc_bundle(t.path(), "stock", &["sh", "-c", script], &["PATH=/bin:/sbin"]);
    let out = vmshim_run(&["--bundle", bundle.to_str().unwrap()]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        (
            "runc 0 /\nread-only root\n/dev/mqueue mqueue\n/sys/fs/cgroup cgroup2\n/proc/sys proc\n",
            Some(3)
        ),
        "{}",
        text(&out.stderr)
    );
}

/// A command after `--` replaces the bundle's `process.args`; `-e`, `-w`,
/// `-u` and `-i` change its process as they change an image's; a program
/// that is not there exits 127, as in a shell.
#[test]
fn a_command_replaces_the_bundles_args_and_flags_its_process() {
    let t = TempDir::new("bundle-args");
    let bundle = vminitd_tests::runc_bundle(
        t.path(),
        "args",
        &["sh", "-c", "echo its own args; exit 9"],
        &["PATH=/bin:/sbin", "GREETING=bundle"],
    );
    let b = bundle.to_str().unwrap();
    let out = vmshim_run(&["--bundle", b]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("its own args\n", Some(9))
    );
    let out = vmshim_run(&[
        "--bundle",
        b,
        "-e",
        "GREETING=flag",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "--",
        "sh",
        "-c",
        r#"echo "$GREETING $PWD $(id -u):$(id -g) $PATH"; exit 5"#,
    ]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("flag /tmp 1000:1000 /bin:/sbin\n", Some(5)),
        "{}",
        text(&out.stderr)
    );
    let out = vminitd_tests::vmshim_with_input(&["run", "-i", "--bundle", b, "--", "cat"], b"piped\n");
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("piped\n", Some(0)));
    let out = vmshim_run(&["--bundle", b, "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-program"), "{}", text(&out.stderr));
}

/// `run -d --bundle`: the bundle's container is the instance's main
/// process (its output in the instance's log, its command in `ps`), and
/// the VM stops when it exits.
#[test]
fn a_detached_vm_runs_its_bundles_container_as_its_main_process() {
    let t = TempDir::new("bundle-detached");
    let state = t.path().join("state");
    let bundle = vminitd_tests::runc_bundle(
        t.path(),
        "main",
        &["sh", "-c", "echo bundle-main; sleep 600"],
        &["PATH=/bin"],
    );
    let vmshim = |args: &[&str]| {
        Command::new(vminitd_tests::vmshim_bin())
            .args(args)
            .env("VMSHIM_STATE_DIR", &state)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run vmshim")
    };
    let b = bundle.to_str().unwrap();
    let out = vmshim(&["run", "-d", "--name", "bx", "--bundle", b]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("bx\n", Some(0)),
        "{}",
        text(&out.stderr)
    );
    let ps = text(&vmshim(&["ps"]).stdout);
    assert!(ps.contains("sh -c echo bundle-main; sleep 600"), "{ps}");
    let log = state.join("instances/bx/log");
    assert!(
        vminitd_tests::eventually(Duration::from_secs(10), || fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("\nbundle-main\n"))),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    // The container's process runs in the VM beside what exec starts.
    let out = vmshim(&[
        "exec",
        "bx",
        "--",
        "sh",
        "-c",
        "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -c 'sleep 600'",
    ]);
    assert_eq!(text(&out.stdout), "1\n", "{}", text(&out.stderr));
    assert!(vmshim(&["stop", "bx"]).status.success());

    // A command replaces its args; when it exits, the VM stops.
    let out = vmshim(&["run", "-d", "--name", "by", "--bundle", b, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        vminitd_tests::eventually(Duration::from_secs(30), || !state.join("instances/by").exists()),
        "the VM outlived its main process"
    );
    assert_eq!(text(&vmshim(&["ps"]).stdout).lines().count(), 1, "only the header");
}

/// A bundle changed by hand: its process (user, environment, directory,
/// hostname, the stock capabilities, rlimits and `noNewPrivileges`) is
/// what the process sees; a field the VM's agent cannot carry is refused
/// before anything boots, named.
#[test]
fn bundles_run_their_process_and_refuse_what_the_agent_cannot_carry() {
    let t = TempDir::new("bundle");
    let bundle = t.path().join("bundle");
    busybox_into(t.path(), &bundle.join("rootfs"));
    sh(Command::new("runc").args(["spec", "--bundle"]).arg(&bundle));
    let b = bundle.to_str().unwrap();

    // The spec's process runs, with the stock capabilities
    // (CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE: 0x20000420; the
    // ambient ones are not inheritable, so left out, as runc does), NOFILE
    // 1024 and no_new_privs.
    let mut spec: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!([
        "sh",
        "-c",
        r#"echo "$(pwd) $(id -u):$(id -g) $GREETING $(cat /proc/sys/kernel/hostname)"; grep -E 'CapEff|CapBnd|CapAmb|NoNewPrivs' /proc/self/status; ulimit -n"#
    ]);
    spec["process"]["env"] = json!(["PATH=/bin:/sbin", "GREETING=hello"]);
    spec["process"]["cwd"] = json!("/tmp");
    spec["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    spec["hostname"] = json!("bundlebox");
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = vmshim_run(&["--bundle", b]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        (
            "/tmp 1000:1000 hello bundlebox\nCapEff:\t0000000000000000\nCapBnd:\t0000000020000420\n\
             CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n1024\n",
            Some(0)
        ),
        "{}",
        text(&out.stderr)
    );

    // What the agent cannot carry, and what names the host, is named.
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]});
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "ipc", "path": "/proc/1/ns/ipc"}));
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = vmshim_run(&["--bundle", b]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    for field in [
        "linux.seccomp.flags",
        "(\"/proc/1/ns/ipc\": a namespace of the host cannot be joined from a VM)",
    ] {
        assert!(stderr.contains(field), "{field} not named in: {stderr}");
    }
    // A bind mount of a host socket cannot reach a VM: named.
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"});
    spec["linux"]["namespaces"].as_array_mut().unwrap().pop();
    let socket = t.path().join("host.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/run/host.sock", "type": "bind", "source": socket, "options": ["bind"]}));
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = vmshim_run(&["--bundle", b]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("only a directory or a regular file can reach a VM"),
        "{stderr}"
    );
}

#[test]
fn a_run_without_a_command_or_an_image_is_an_error() {
    let out = vmshim_run(&[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("CMD"), "{}", text(&out.stderr));
}

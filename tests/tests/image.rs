//! `vmshim run --image` and `--bundle` in real VMs: an image built with
//! umoci (layers, a whiteout, an opaque directory, a config), a hostile
//! hand-made layer, and OCI runtime bundles.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

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

#[test]
fn bundles_run_their_process_and_refuse_what_the_vm_cannot_honour() {
    let t = TempDir::new("bundle");
    let bundle = t.path().join("bundle");
    busybox_into(t.path(), &bundle.join("rootfs"));
    // The stock `runc spec` asks for a read-only root, masked paths, ...:
    // refused. Its capabilities, rlimits and noNewPrivileges are honoured.
    sh(Command::new("runc").args(["spec", "--bundle"]).arg(&bundle));
    let b = bundle.to_str().unwrap();
    let out = vmshim_run(&["--bundle", b]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    for field in ["root.readonly", "linux.maskedPaths", "/dev/mqueue"] {
        assert!(stderr.contains(field), "{field} not named in: {stderr}");
    }
    assert!(!stderr.contains("process."), "{stderr}");

    // Without them, the spec's process runs, with the stock capabilities
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
    spec["root"] = json!({"path": "rootfs"});
    spec["linux"] = json!({"namespaces": spec["linux"]["namespaces"].clone()});
    let defaults = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"];
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| defaults.contains(&m["destination"].as_str().unwrap_or("")));
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

    // One unsupported field is named.
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/notify.sock"});
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = vmshim_run(&["--bundle", b]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("linux.seccomp.listenerPath"), "{stderr}");
}

#[test]
fn a_run_without_a_command_or_an_image_is_an_error() {
    let out = vmshim_run(&[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("CMD"), "{}", text(&out.stderr));
}

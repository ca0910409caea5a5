//! The tests' image: Debian's static busybox with a user, a group, a web
//! root and a home, one layer, written as a docker-archive tar that both
//! `podman load` and `docker load` take (no registry is reached); and, for
//! containerd's CRI service, the same layer as an OCI archive beside a
//! pause image made of it.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// The image's name once loaded.
pub const IMAGE: &str = "localhost/vminitd-busybox:latest";

/// What the image's web root serves at `/`.
pub const INDEX_HTML: &str = "hello from the web service\n";

/// Writes the image as a docker-archive tar at `path`: `manifest.json`
/// naming the config and the layer, the config (amd64, `PATH`, `sh` as its
/// command), and the layer.
pub fn write_image_archive(path: &Path) {
    let layer = layer();
    let layer_digest = hex(&Sha256::digest(&layer));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "vminitd-tests: busybox-static"}],
    });
    let config = serde_json::to_vec(&config).expect("image config");
    let config_name = format!("{}.json", hex(&Sha256::digest(&config)));
    let layer_name = format!("{layer_digest}/layer.tar");
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [IMAGE],
        "Layers": [layer_name],
    }]);
    let mut archive = tar::Builder::new(Vec::new());
    add_file(&mut archive, &config_name, &config, 0o644);
    add_dir(&mut archive, &format!("{layer_digest}/"), 0o755);
    add_file(&mut archive, &layer_name, &layer, 0o644);
    add_file(
        &mut archive,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
        0o644,
    );
    let bytes = archive.into_inner().expect("image archive");
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&bytes))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The layer: `/bin/busybox` and a link for each of its applets, `/etc`'s
/// users (root, `app` 1000:1000, nobody) and groups, `/tmp` (1777),
/// `/home/app`, and `/www/index.html`.
fn layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static, from `make setup`)");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut layer = tar::Builder::new(Vec::new());
    for dir in [
        "bin/", "dev/", "etc/", "home/", "proc/", "root/", "run/", "sys/", "usr/", "var/", "www/",
    ] {
        add_dir(&mut layer, dir, 0o755);
    }
    add_dir(&mut layer, "tmp/", 0o1777);
    add_dir(&mut layer, "home/app/", 0o755);
    add_file(&mut layer, "bin/busybox", &busybox, 0o755);
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        add_link(&mut layer, &format!("bin/{applet}"), "busybox");
    }
    add_link(&mut layer, "usr/bin", "../bin");
    add_link(&mut layer, "usr/sbin", "../bin");
    add_link(&mut layer, "sbin", "bin");
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    add_file(&mut layer, "etc/passwd", passwd.as_bytes(), 0o644);
    add_file(
        &mut layer,
        "etc/group",
        b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
        0o644,
    );
    add_file(&mut layer, "www/index.html", INDEX_HTML.as_bytes(), 0o644);
    layer.into_inner().expect("image layer")
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn add_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut h, path, data).expect("tar entry");
}

fn add_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut h, path, std::io::empty()).expect("tar entry");
}

fn add_link(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, path, target).expect("tar entry");
}

/// The pause image of the CRI tests' pods (containerd's `sandbox_image`):
/// the busybox layer, its command `sleep inf`, which sleeps until a signal
/// ends it (containerd stops a sandbox with SIGKILL).
pub const PAUSE_IMAGE: &str = "localhost/vminitd-pause:latest";

/// Writes an OCI image layout archive at `path` (`oci-layout`,
/// `index.json`, `blobs/sha256/`) that holds [`IMAGE`] and [`PAUSE_IMAGE`],
/// which share the one layer; each manifest in the index is named with
/// containerd's `io.containerd.image.name` annotation, which `ctr image
/// import` names the image by.
pub fn write_oci_archive(path: &Path) {
    let layer = layer();
    let layer_digest = hex(&Sha256::digest(&layer));
    let mut archive = tar::Builder::new(Vec::new());
    add_file(&mut archive, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    add_dir(&mut archive, "blobs/", 0o755);
    add_dir(&mut archive, "blobs/sha256/", 0o755);
    add_file(&mut archive, &format!("blobs/sha256/{layer_digest}"), &layer, 0o644);
    let mut manifests = Vec::new();
    for (name, cmd) in [(IMAGE, vec!["sh"]), (PAUSE_IMAGE, vec!["sleep", "inf"])] {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "vminitd-tests: busybox-static"}],
        });
        let config = serde_json::to_vec(&config).expect("image config");
        let config_digest = hex(&Sha256::digest(&config));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer.len(),
            }],
        });
        let manifest = serde_json::to_vec(&manifest).expect("image manifest");
        let manifest_digest = hex(&Sha256::digest(&manifest));
        add_file(&mut archive, &format!("blobs/sha256/{config_digest}"), &config, 0o644);
        add_file(
            &mut archive,
            &format!("blobs/sha256/{manifest_digest}"),
            &manifest,
            0o644,
        );
        let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    add_file(&mut archive, "index.json", &serde_json::to_vec(&index).unwrap(), 0o644);
    let bytes = archive.into_inner().expect("image archive");
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&bytes))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

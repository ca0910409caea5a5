//! Hand-made OCI image layouts for the tests.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub(super) const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(super) const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Writes `bytes` as a blob of the layout at `dir`; its descriptor.
pub(super) fn blob(dir: &Path, bytes: &[u8], media_type: &str) -> Value {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    fs::write(blobs.join(&hex), bytes).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// An image layout at `dir` of one manifest, tagged `t`, with these layers
/// (bytes and media type); the layers' descriptors.
pub(super) fn write_layout(dir: &Path, layers: &[(&[u8], &str)]) -> Vec<Value> {
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Cmd": ["true"]}});
    let config = blob(
        dir,
        &serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json",
    );
    let layers: Vec<Value> = layers.iter().map(|(l, t)| blob(dir, l, t)).collect();
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers});
    let mut desc = blob(
        dir,
        &serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "t"});
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    layers
}

/// A tar of regular files and directories (a name ending in `/`), with
/// these modes.
pub(super) fn tar(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, mode, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(match name.ends_with('/') {
            true => tar::EntryType::Directory,
            false => tar::EntryType::Regular,
        });
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

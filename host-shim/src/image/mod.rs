//! Root filesystems and process defaults from OCI images and bundles.
//!
//! * [`unpack_image`]: an OCI image layout (`skopeo copy ... oci:DIR:TAG`,
//!   `umoci`) → the manifest for a tag (through an image index to
//!   linux/amd64), every blob checked against its sha256 digest, the layers
//!   applied in order with their whiteouts into a tree cached by manifest
//!   digest, and the image config's process defaults.
//! * [`load_bundle`]: an OCI runtime bundle (`config.json` + root
//!   directory) → its root directory and process; a spec that asks for
//!   anything a vminitd VM does not honour is refused, naming the fields.
//! * [`container_spec`]: a bundle's whole spec as the agent's container
//!   spec (`vmshim runtime`), for an agent on this host or in a VM.
//! * [`ProcessDefaults`]: what either gives the process, under the user's
//!   flags (`docker run` rules: a command replaces `Cmd`, `-e` overrides
//!   `Env` by key, `-w` and `-u` replace `WorkingDir` and `User`).

mod bundle;
mod layer;
mod layout;
mod process;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use bundle::PROCESS_FIELDS;
pub use bundle::{container_spec, load_bundle, resources_from_json, Bundle, RootPlacement};
pub use layer::{apply_layer, LayerError, Skipped};
pub use layout::{ImageRef, Layout};
pub use process::ProcessDefaults;

/// Why an image or bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: not an OCI image layout ({detail})", layout.display())]
    NotALayout { layout: PathBuf, detail: String },
    #[error("{}: {what} is not valid JSON for its type: {detail}", layout.display())]
    BadJson {
        layout: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{}: no image tagged {tag:?}; tags: {}", layout.display(), tags.join(", "))]
    NoSuchTag {
        layout: PathBuf,
        tag: String,
        tags: Vec<String>,
    },
    #[error("{}: {count} images, name one with DIR:TAG; tags: {}", layout.display(), tags.join(", "))]
    AmbiguousTag {
        layout: PathBuf,
        count: usize,
        tags: Vec<String>,
    },
    #[error("{}: the image index {index} has no linux/amd64 manifest", layout.display())]
    NoPlatform { layout: PathBuf, index: String },
    #[error("{}: blob {digest}: {detail}", layout.display())]
    BadBlob {
        layout: PathBuf,
        digest: String,
        detail: String,
    },
    #[error("{}: {what} has media type {media_type}, which vmshim cannot read", layout.display())]
    UnsupportedMediaType {
        layout: PathBuf,
        what: String,
        media_type: String,
    },
    #[error("layer {digest}: {source}")]
    Layer { digest: String, source: LayerError },
    #[error("image user {user:?}: {detail}")]
    User { user: String, detail: String },
    #[error("{}: {detail}", path.display())]
    BadBundle { path: PathBuf, detail: String },
    #[error(
        "{}: the spec asks for what a vminitd VM does not honour yet: {}",
        path.display(),
        fields.join("; ")
    )]
    UnsupportedSpec { path: PathBuf, fields: Vec<String> },
}

/// A closure that wraps an I/O error with what was being done, and where.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An image unpacked: its tree, the process defaults from its config, and
/// the device nodes its layers held (not created).
#[derive(Debug)]
pub struct Unpacked {
    /// The manifest's digest (`sha256:...`), which names the tree.
    pub manifest_digest: String,
    /// The extracted root filesystem.
    pub tree: PathBuf,
    pub defaults: ProcessDefaults,
    /// Entries that were not created, on a first extraction only.
    pub skipped: Vec<Skipped>,
}

/// Unpacks the image `image` names into `CACHE/image-<manifest hex>/`,
/// unless it is already there, and reads its process defaults.
///
/// The tree is built under a temporary name beside it and renamed into
/// place, so a tree there is complete.
pub fn unpack_image(image: &ImageRef, cache_dir: &Path) -> Result<Unpacked, ImageError> {
    let layout = Layout::open(&image.dir)?;
    let manifest = layout.manifest(image.tag.as_deref())?;
    let config = layout.config(&manifest)?;
    let hex = manifest.digest.strip_prefix("sha256:").unwrap_or(&manifest.digest);
    let tree = cache_dir.join(format!("image-{hex}"));
    let mut skipped = Vec::new();
    if !tree.is_dir() {
        fs::create_dir_all(cache_dir).map_err(io_err("creating", cache_dir))?;
        let tmp = temp_sibling(&tree);
        let built = (|| {
            fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
            for layer in &manifest.layers {
                skipped.extend(layout.apply_layer(layer, &tmp)?);
            }
            fs::rename(&tmp, &tree).or_else(|e| {
                // Another vmshim finished the same tree first: use it.
                if tree.is_dir() {
                    Ok(())
                } else {
                    Err(io_err("renaming", &tree)(e))
                }
            })
        })();
        if tmp.exists() {
            let _ = fs::remove_dir_all(&tmp);
        }
        built?;
    }
    let defaults = ProcessDefaults::from_image_config(&config, &tree)?;
    Ok(Unpacked {
        manifest_digest: manifest.digest,
        tree,
        defaults,
        skipped,
    })
}

/// A hidden name beside `dest`, unique to this process and moment.
fn temp_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dest.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()))
}

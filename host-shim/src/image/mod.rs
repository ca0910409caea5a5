//! Root filesystems and process defaults from OCI images and bundles.
//!
//! * [`unpack_image`]: an OCI image layout (`skopeo copy ... oci:DIR:TAG`,
//!   `umoci`) → the manifest for a tag (through an image index to
//!   linux/amd64), every blob checked against its sha256 digest, the layers
//!   applied in order with their whiteouts into a tree cached by manifest
//!   digest, and the image config's process defaults. The cache directory
//!   is private (0700): the trees in it hold the image's set-user-ID
//!   binaries, for the guest only. An image unpacks to at most [`Limits`].
//! * [`container_spec`], [`Bundle`]: an OCI runtime bundle (`config.json`
//!   and its root directory), its whole spec translated once as the
//!   agent's container spec, for an agent on this host or in a VM (`vmshim
//!   runtime`, `vmshim run --bundle`); what the agent cannot carry is
//!   refused, naming the fields.
//! * [`ProcessDefaults`]: what an image gives the process; [`under_flags`]:
//!   the user's flags over an image's or a bundle's process (`docker run`
//!   rules: a command replaces `Cmd` or `args`, `-e` overrides `Env` by
//!   key, `-w` and `-u` replace `WorkingDir` and `User`).

mod bundle;
mod layer;
mod layout;
mod process;
#[cfg(test)]
mod testing;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::rootfs::private_dir;

pub use bundle::{container_spec, resources_from_json, Bundle, RootPlacement};
pub(crate) use bundle::{process_spec, unsupported_process_fields};
pub use layer::{apply_layer, Budget, LayerError, Limits, Skipped};
pub use layout::{ImageRef, Layout};
pub use process::{under_flags, ProcessDefaults};

/// Why an image or bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the layout, the cache or the bundle could not be read or
    /// made.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading`, `creating`, `renaming`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The directory has no `oci-layout` and `index.json` that say it is
    /// an OCI image layout.
    #[error("{}: not an OCI image layout ({detail})", layout.display())]
    NotALayout {
        /// The directory.
        layout: PathBuf,
        /// What is missing or wrong.
        detail: String,
    },
    /// An index, manifest or config that does not parse as its type.
    #[error("{}: {what} is not valid JSON for its type: {detail}", layout.display())]
    BadJson {
        /// The layout.
        layout: PathBuf,
        /// Which document (`index.json`, `manifest sha256:...`).
        what: String,
        /// Where and why it does not parse.
        detail: String,
    },
    /// No image of the layout has the tag asked for.
    #[error("{}: no image tagged {tag:?}; tags: {}", layout.display(), tags.join(", "))]
    NoSuchTag {
        /// The layout.
        layout: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags it has.
        tags: Vec<String>,
    },
    /// No tag given, and the layout holds more than one image.
    #[error("{}: {count} images, name one with DIR:TAG; tags: {}", layout.display(), tags.join(", "))]
    AmbiguousTag {
        /// The layout.
        layout: PathBuf,
        /// How many images it holds.
        count: usize,
        /// Their tags.
        tags: Vec<String>,
    },
    /// An image index with no manifest for this machine.
    #[error("{}: the image index {index} has no linux/amd64 manifest", layout.display())]
    NoPlatform {
        /// The layout.
        layout: PathBuf,
        /// The index's digest.
        index: String,
    },
    /// A blob that is missing, of the wrong size, or whose content is not
    /// its digest.
    #[error("{}: blob {digest}: {detail}", layout.display())]
    BadBlob {
        /// The layout.
        layout: PathBuf,
        /// The blob's digest, as its descriptor gives it.
        digest: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A manifest, config or layer of a media type vmshim does not read.
    #[error("{}: {what} has media type {media_type}, which vmshim cannot read", layout.display())]
    UnsupportedMediaType {
        /// The layout.
        layout: PathBuf,
        /// Which descriptor.
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// A layer that could not be applied.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer's digest.
        digest: String,
        /// Why.
        source: LayerError,
    },
    /// The image config's `User` names a user or group the image's
    /// `/etc/passwd` or `/etc/group` does not have.
    #[error("image user {user:?}: {detail}")]
    User {
        /// `User`, as the config gives it.
        user: String,
        /// Which name was not found.
        detail: String,
    },
    /// A bundle's `config.json` that cannot be read, or is not a runtime
    /// spec (a value of the wrong type is named by its place).
    #[error("{}: {detail}", path.display())]
    BadBundle {
        /// The `config.json` (or `linux.resources` document).
        path: PathBuf,
        /// What is wrong, and where.
        detail: String,
    },
    /// A runtime spec that asks for what the agent cannot carry, or (for a
    /// VM) for the host's files or namespaces.
    #[error(
        "{}: the spec asks for what a vminitd VM does not honour yet: {}",
        path.display(),
        fields.join("; ")
    )]
    UnsupportedSpec {
        /// The `config.json`.
        path: PathBuf,
        /// Every such field, in document order, each with why.
        fields: Vec<String>,
    },
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
    /// What its config gives the process.
    pub defaults: ProcessDefaults,
    /// Entries that were not created, on a first extraction only.
    pub skipped: Vec<Skipped>,
}

/// Unpacks the image `image` names into `CACHE/image-<manifest hex>/`,
/// unless it is already there, and reads its process defaults; the image
/// may unpack to the default [`Limits`].
pub fn unpack_image(image: &ImageRef, cache_dir: &Path) -> Result<Unpacked, ImageError> {
    unpack_image_with(image, cache_dir, Limits::default())
}

/// [`unpack_image`] within `limits`.
///
/// The cache directory is made private first (0700, ours, or refused).
/// The tree is built under a temporary name beside the result, inside it,
/// and renamed into place, so a tree there is complete; its root is 0755,
/// whatever the umask: it is the guest's `/`.
pub fn unpack_image_with(image: &ImageRef, cache_dir: &Path, limits: Limits) -> Result<Unpacked, ImageError> {
    let layout = Layout::open(&image.dir)?;
    let manifest = layout.manifest(image.tag.as_deref())?;
    let config = layout.config(&manifest)?;
    // A full sha256, checked to be 64 hex digits when the manifest was read.
    let hex = manifest.digest.strip_prefix("sha256:").unwrap_or(&manifest.digest);
    private_dir(cache_dir).map_err(io_err("making private", cache_dir))?;
    let tree = cache_dir.join(format!("image-{hex}"));
    let mut skipped = Vec::new();
    if !tree.is_dir() {
        let tmp = temp_sibling(&tree);
        let budget = Budget::new(limits);
        let built = (|| {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .map_err(io_err("creating", &tmp))?;
            for layer in &manifest.layers {
                skipped.extend(layout.apply_layer(layer, &tmp, &budget)?);
            }
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                .map_err(io_err("setting the mode of", &tmp))?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::testing::{gzip, tar, write_layout, TAR, TAR_GZIP};
    use super::*;
    use crate::test_dir::TestDir;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn image(dir: &Path) -> ImageRef {
        ImageRef {
            dir: dir.to_path_buf(),
            tag: Some("t".into()),
        }
    }

    /// The cache above an unpacked tree is 0700, whatever the umask: its
    /// set-user-ID binaries and its shadow file are the guest's alone.
    #[test]
    fn trees_are_unpacked_in_a_private_cache_under_their_full_digest() {
        let _umask = crate::rootfs::Umask::set(0o022);
        let t = TestDir::new("image-private");
        let layer = tar(&[
            ("bin/", 0o755, b""),
            ("bin/su", 0o4755, b"su"),
            ("etc/shadow", 0o600, b"root:x"),
        ]);
        write_layout(&t.path().join("layout"), &[(&layer, TAR)]);
        let cache = t.path().join("build/cache");
        let unpacked = unpack_image(&image(&t.path().join("layout")), &cache).unwrap();
        let hex = unpacked.manifest_digest.strip_prefix("sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        assert_eq!(unpacked.tree, cache.join(format!("image-{hex}")));
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&unpacked.tree), 0o755, "the guest's / is 0755");
        assert_eq!(mode(&unpacked.tree.join("bin/su")), 0o4755);
        assert_eq!(mode(&unpacked.tree.join("etc/shadow")), 0o600);
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1, "a temporary was left behind");
    }

    /// 8 MiB of zeros gzip to about 8 KiB; under a 1 MiB limit the image
    /// is refused, naming the layer and the limit, and nothing is left.
    #[test]
    fn a_gzip_bomb_is_refused_naming_the_layer_and_the_limit() {
        let t = TestDir::new("image-bomb");
        let bomb = gzip(&tar(&[("zeros", 0o644, &vec![0; 8 << 20])]));
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let layers = write_layout(&t.path().join("layout"), &[(&bomb, TAR_GZIP)]);
        let digest = layers[0]["digest"].as_str().unwrap();
        let cache = t.path().join("cache");
        let limits = Limits {
            bytes: 1 << 20,
            ..Limits::default()
        };
        let err = unpack_image_with(&image(&t.path().join("layout")), &cache, limits).unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(
                &err,
                ImageError::Layer {
                    source: LayerError::TooLarge { .. },
                    ..
                }
            ),
            "{shown}"
        );
        assert!(shown.contains(digest) && shown.contains("1 MiB"), "{shown}");
        assert_eq!(
            fs::read_dir(&cache).unwrap().count(),
            0,
            "a partial tree was left behind"
        );
        // Under the default limits the same image unpacks.
        unpack_image(&image(&t.path().join("layout")), &cache).unwrap();
    }
}

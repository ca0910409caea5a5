//! An OCI image layout on disk: `oci-layout`, `index.json`, and
//! content-addressed blobs under `blobs/sha256/`, each checked against its
//! digest and size before it is used.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use sha2::{Digest as _, Sha256};

use super::layer::{apply_layer, Compression, Skipped};
use super::{io_err, ImageError};

/// The annotation that names a manifest's tag in `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// `DIR[:TAG]`, as `--image` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub dir: PathBuf,
    pub tag: Option<String>,
}

impl std::str::FromStr for ImageRef {
    type Err = String;

    /// The tag is what follows the last `:` when no `/` follows it.
    fn from_str(s: &str) -> Result<ImageRef, String> {
        let (dir, tag) = match s.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => (dir, Some(tag)),
            _ => (s, None),
        };
        if tag == Some("") {
            return Err(format!("{s:?}: empty tag after ':'"));
        }
        Ok(ImageRef {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_owned),
        })
    }
}

/// A manifest picked for a tag: its digest, config and layers.
#[derive(Debug)]
pub struct Manifest {
    pub digest: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image layout directory.
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Checks `DIR/oci-layout` and opens the layout.
    pub fn open(dir: &Path) -> Result<Layout, ImageError> {
        let marker = dir.join("oci-layout");
        let text = fs::read(&marker).map_err(|e| ImageError::NotALayout {
            layout: dir.to_path_buf(),
            detail: format!("cannot read oci-layout: {e}"),
        })?;
        let version = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned));
        match version.as_deref() {
            Some(v) if v.starts_with("1.") => Ok(Layout { dir: dir.to_path_buf() }),
            _ => Err(ImageError::NotALayout {
                layout: dir.to_path_buf(),
                detail: format!("oci-layout has imageLayoutVersion {version:?}, expected 1.x"),
            }),
        }
    }

    /// The manifest tagged `tag` (or the only one), through an image index
    /// to the linux/amd64 manifest.
    pub fn manifest(&self, tag: Option<&str>) -> Result<Manifest, ImageError> {
        let index_path = self.dir.join("index.json");
        let bytes = fs::read(&index_path).map_err(io_err("reading", &index_path))?;
        let index: ImageIndex = self.parse("index.json", &bytes)?;
        let entries = index.manifests();
        let tags: Vec<String> = entries.iter().filter_map(ref_name).map(str::to_owned).collect();
        let picked = match tag {
            Some(tag) => entries
                .iter()
                .find(|d| ref_name(d) == Some(tag))
                .ok_or_else(|| ImageError::NoSuchTag {
                    layout: self.dir.clone(),
                    tag: tag.to_owned(),
                    tags: tags.clone(),
                })?,
            None => match entries.as_slice() {
                [only] => only,
                _ => {
                    return Err(ImageError::AmbiguousTag {
                        layout: self.dir.clone(),
                        count: entries.len(),
                        tags,
                    })
                }
            },
        };
        self.follow(picked, 0)
    }

    /// Follows `desc` to an image manifest: itself, or the linux/amd64
    /// entry of the index it names.
    fn follow(&self, desc: &Descriptor, depth: u32) -> Result<Manifest, ImageError> {
        let media_type = desc.media_type().to_string();
        let digest = desc.digest().to_string();
        if INDEX_TYPES.contains(&media_type.as_str()) && depth < 4 {
            let index: ImageIndex = self.parse(&digest, &self.blob(desc)?)?;
            let amd64 = index.manifests().iter().find(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
            });
            return match amd64 {
                Some(d) => self.follow(d, depth + 1),
                None => Err(ImageError::NoPlatform {
                    layout: self.dir.clone(),
                    index: digest,
                }),
            };
        }
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(ImageError::UnsupportedMediaType {
                layout: self.dir.clone(),
                what: format!("manifest {digest}"),
                media_type,
            });
        }
        let manifest: ImageManifest = self.parse(&digest, &self.blob(desc)?)?;
        Ok(Manifest {
            digest,
            config: manifest.config().clone(),
            layers: manifest.layers().clone(),
        })
    }

    /// The image config of `manifest`.
    pub fn config(&self, manifest: &Manifest) -> Result<ImageConfiguration, ImageError> {
        self.parse(manifest.config.digest().as_ref(), &self.blob(&manifest.config)?)
    }

    /// Applies one layer blob onto `root` (checked first, then read again
    /// to extract: a corrupt blob changes nothing).
    pub fn apply_layer(&self, desc: &Descriptor, root: &Path) -> Result<Vec<Skipped>, ImageError> {
        let digest = desc.digest().to_string();
        let media_type = desc.media_type().to_string();
        let compression = Compression::of_media_type(&media_type).ok_or_else(|| ImageError::UnsupportedMediaType {
            layout: self.dir.clone(),
            what: format!("layer {digest}"),
            media_type: media_type.clone(),
        })?;
        let path = self.verified_blob_path(desc)?;
        let file = File::open(&path).map_err(io_err("opening", &path))?;
        apply_layer(file, compression, root).map_err(|source| ImageError::Layer { digest, source })
    }

    /// A small blob's bytes, checked.
    fn blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let path = self.verified_blob_path(desc)?;
        fs::read(&path).map_err(io_err("reading", &path))
    }

    /// The path of `desc`'s blob, once its size and sha256 match.
    fn verified_blob_path(&self, desc: &Descriptor) -> Result<PathBuf, ImageError> {
        let digest = desc.digest().to_string();
        let bad = |detail: String| ImageError::BadBlob {
            layout: self.dir.clone(),
            digest: digest.clone(),
            detail,
        };
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .ok_or_else(|| bad("only sha256 digests (64 lower-case hex digits) are supported".into()))?;
        let path = self.dir.join("blobs/sha256").join(hex);
        let mut file = File::open(&path).map_err(|e| bad(format!("cannot open {}: {e}", path.display())))?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file.by_ref(), &mut HashWriter(&mut hasher))
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        if size != desc.size() {
            return Err(bad(format!("{size} bytes, the descriptor says {}", desc.size())));
        }
        let actual: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if actual != hex {
            return Err(bad(format!("content has sha256:{actual}: the blob is corrupt")));
        }
        Ok(path)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::BadJson {
            layout: self.dir.clone(),
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }
}

fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

/// Feeds what is written into a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        let r: ImageRef = "/a/b:latest".parse().unwrap();
        assert_eq!((r.dir, r.tag), (PathBuf::from("/a/b"), Some("latest".into())));
        let r: ImageRef = "./x".parse().unwrap();
        assert_eq!((r.dir, r.tag), (PathBuf::from("./x"), None));
        let r: ImageRef = "a:b/c".parse().unwrap();
        assert_eq!((r.dir, r.tag), (PathBuf::from("a:b/c"), None));
        assert!("dir:".parse::<ImageRef>().is_err());
    }
}

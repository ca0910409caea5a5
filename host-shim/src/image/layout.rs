//! An OCI image layout on disk: `oci-layout`, `index.json`, and
//! content-addressed blobs under `blobs/sha256/`, each checked against its
//! digest and size. A blob is opened once and checked on the bytes read
//! from that descriptor: a small one (JSON) before it is parsed, a layer
//! as it is extracted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use sha2::{Digest as _, Sha256};

use super::layer::{apply_layer, Budget, Compression, Skipped};
use super::{io_err, ImageError};

/// The largest index, manifest or config read (they are read whole).
const MAX_JSON_BLOB: u64 = 16 << 20;

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
    /// The OCI image layout's directory.
    pub dir: PathBuf,
    /// The `org.opencontainers.image.ref.name` to run; `None`: the
    /// layout's only image.
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

    /// Applies one layer blob onto `root`, counting it against `budget`.
    ///
    /// The blob is read once, from the one descriptor it is opened as, and
    /// hashed as it is extracted; what the tar stream leaves unread is read
    /// after it, so the digest and size are checked over every byte. A blob
    /// that does not match is an error whatever the extraction made of it,
    /// and what it wrote is for the caller to discard ([`super::unpack_image`]
    /// builds under a temporary name).
    pub fn apply_layer(&self, desc: &Descriptor, root: &Path, budget: &Budget) -> Result<Vec<Skipped>, ImageError> {
        let digest = desc.digest().to_string();
        let media_type = desc.media_type().to_string();
        let compression = Compression::of_media_type(&media_type).ok_or_else(|| ImageError::UnsupportedMediaType {
            layout: self.dir.clone(),
            what: format!("layer {digest}"),
            media_type: media_type.clone(),
        })?;
        let mut blob = self.open_blob(desc)?;
        let applied = apply_layer(&mut blob, compression, root, budget);
        blob.finish()?;
        applied.map_err(|source| ImageError::Layer { digest, source })
    }

    /// A small blob's bytes (an index, a manifest, a config), checked.
    fn blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if desc.size() > MAX_JSON_BLOB {
            return Err(self.bad_blob(
                desc,
                format!(
                    "the descriptor says {} bytes, over the {} MiB taken for JSON",
                    desc.size(),
                    MAX_JSON_BLOB >> 20
                ),
            ));
        }
        let mut blob = self.open_blob(desc)?;
        let mut bytes = Vec::with_capacity(desc.size() as usize);
        let read = blob.read_to_end(&mut bytes);
        blob.finish()?;
        read.map_err(|e| self.bad_blob(desc, format!("cannot read {}: {e}", blob.path.display())))?;
        Ok(bytes)
    }

    /// Opens `desc`'s blob, once, for a [`BlobReader`] to check as it reads.
    fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader, ImageError> {
        let digest = desc.digest().to_string();
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .ok_or_else(|| {
                self.bad_blob(
                    desc,
                    "only sha256 digests (64 lower-case hex digits) are supported".into(),
                )
            })?;
        let path = self.dir.join("blobs/sha256").join(hex);
        // O_NONBLOCK: a FIFO planted there is refused below, not waited on.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| self.bad_blob(desc, format!("cannot open {}: {e}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| self.bad_blob(desc, format!("cannot inspect {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(self.bad_blob(desc, format!("{} is not a regular file", path.display())));
        }
        Ok(BlobReader {
            file,
            path,
            layout: self.dir.clone(),
            digest,
            size: desc.size(),
            hasher: Sha256::new(),
            read: 0,
            verdict: None,
        })
    }

    fn bad_blob(&self, desc: &Descriptor, detail: String) -> ImageError {
        ImageError::BadBlob {
            layout: self.dir.clone(),
            digest: desc.digest().to_string(),
            detail,
        }
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

/// A blob read from the one descriptor it was opened as, hashed on the
/// way: at its end (or at a byte past the size its descriptor gives) the
/// size and digest are checked, and a mismatch is a read error. So what a
/// reader got is what was checked, whatever happens to the path meanwhile.
struct BlobReader {
    file: File,
    path: PathBuf,
    layout: PathBuf,
    digest: String,
    /// The size the descriptor gives.
    size: u64,
    hasher: Sha256,
    read: u64,
    /// Set at the end of the blob: `Err` says what did not match.
    verdict: Option<Result<(), String>>,
}

impl BlobReader {
    /// Reads what is left and gives the verdict on the whole blob.
    fn finish(&mut self) -> Result<(), ImageError> {
        if self.verdict.is_none() {
            let drained = io::copy(self, &mut io::sink());
            if let (Err(e), None) = (drained, &self.verdict) {
                self.verdict = Some(Err(format!("cannot read {}: {e}", self.path.display())));
            }
        }
        match self.verdict.clone() {
            Some(Ok(())) => Ok(()),
            Some(Err(detail)) => Err(ImageError::BadBlob {
                layout: self.layout.clone(),
                digest: self.digest.clone(),
                detail,
            }),
            None => unreachable!("a drained reader has its verdict"),
        }
    }

    fn judge(&mut self, detail: Option<String>) -> io::Result<()> {
        let verdict = match detail {
            Some(d) => Err(d),
            None => Ok(()),
        };
        self.verdict = Some(verdict.clone());
        verdict.map_err(|d| io::Error::new(io::ErrorKind::InvalidData, format!("blob {}: {d}", self.digest)))
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(verdict) = &self.verdict {
            return match verdict {
                Ok(()) => Ok(0),
                Err(d) => Err(io::Error::new(io::ErrorKind::InvalidData, d.clone())),
            };
        }
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte past the declared size shows a blob that is longer.
        let left = self.size - self.read;
        let want = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = loop {
            match self.file.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n as u64 > left {
            let detail = format!("more than the {} bytes the descriptor says", self.size);
            self.judge(Some(detail))?;
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if n == 0 {
            let actual: String = std::mem::take(&mut self.hasher)
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let detail = if self.read != self.size {
                Some(format!("{} bytes, the descriptor says {}", self.read, self.size))
            } else if Some(actual.as_str()) != self.digest.strip_prefix("sha256:") {
                Some(format!("content has sha256:{actual}: the blob is corrupt"))
            } else {
                None
            };
            self.judge(detail)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{tar, write_layout, TAR};
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::FileExt;

    /// A layout of one layer holding `a` = "one"; the layer's descriptor
    /// and blob path.
    fn one_layer(t: &TestDir) -> (Layout, Descriptor, PathBuf) {
        let dir = t.path().join("layout");
        let layers = write_layout(&dir, &[(&tar(&[("a", 0o644, b"one")]), TAR)]);
        let desc: Descriptor = serde_json::from_value(layers[0].clone()).unwrap();
        let hex = desc.digest().to_string().strip_prefix("sha256:").unwrap().to_owned();
        let path = dir.join("blobs/sha256").join(hex);
        (Layout::open(&dir).unwrap(), desc, path)
    }

    /// What is read is what was opened: a blob renamed over after the
    /// open changes nothing read.
    #[test]
    fn a_blob_is_read_from_the_descriptor_it_was_opened_as() {
        let t = TestDir::new("layout-same-fd");
        let (layout, desc, path) = one_layer(&t);
        let mut blob = layout.open_blob(&desc).unwrap();
        let other = tar(&[("a", 0o644, b"two")]);
        let swap = t.path().join("swap");
        fs::write(&swap, &other).unwrap();
        fs::rename(&swap, &path).unwrap();
        let mut bytes = Vec::new();
        blob.read_to_end(&mut bytes).unwrap();
        blob.finish().unwrap();
        assert_eq!(bytes, tar(&[("a", 0o644, b"one")]));
    }

    /// A blob written over in place while it is read is caught at its end,
    /// and the layer is refused as corrupt, not applied.
    #[test]
    fn a_blob_changed_while_read_is_refused() {
        let t = TestDir::new("layout-changed");
        let (layout, desc, path) = one_layer(&t);
        let mut blob = layout.open_blob(&desc).unwrap();
        let mut first = [0u8; 512];
        blob.read_exact(&mut first).unwrap();
        let mut other = tar(&[("a", 0o644, b"two")]);
        other.truncate(fs::metadata(&path).unwrap().len() as usize);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&other, 0)
            .unwrap();
        let err = blob.finish().unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");

        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        let err = layout.apply_layer(&desc, &root, &Budget::default()).unwrap_err();
        assert!(matches!(err, ImageError::BadBlob { .. }), "{err}");
    }

    #[test]
    fn blobs_of_the_wrong_size_or_kind_are_refused() {
        let t = TestDir::new("layout-size");
        let (layout, desc, path) = one_layer(&t);
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        let good = fs::read(&path).unwrap();
        for (bytes, says) in [
            (&good[..good.len() - 1], "bytes, the descriptor says"),
            (&[&good[..], b"x"].concat()[..], "more than"),
        ] {
            fs::write(&path, bytes).unwrap();
            let err = layout.apply_layer(&desc, &root, &Budget::default()).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        // A FIFO would block a reader for ever: refused at once.
        fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = layout.apply_layer(&desc, &root, &Budget::default()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

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

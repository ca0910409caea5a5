//! How much one image may unpack to: bytes of tar stream after
//! decompression, and entries, summed over all its layers.
//!
//! The bytes are counted as the decompressor yields them, before the tar
//! reader sees them, so every byte the applier handles is counted: file
//! data, headers, long names, and the data of entries it skips. A gzip
//! bomb stops at the limit, whatever its ratio (deflate's own ceiling is
//! about 1032:1, so a ratio check would only restate this limit).

use std::cell::Cell;
use std::io::{self, Read};

/// The limits of one image's extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of uncompressed tar stream, all layers together.
    pub bytes: u64,
    /// Tar entries, all layers together.
    pub entries: u64,
}

impl Default for Limits {
    /// 16 GiB and a million entries: past any image a micro-VM runs.
    fn default() -> Limits {
        Limits {
            bytes: 16 << 30,
            entries: 1_000_000,
        }
    }
}

/// What an image's layers have used of its [`Limits`] so far; one per
/// image, passed to each layer in turn.
#[derive(Debug, Default)]
pub struct Budget {
    limits: Limits,
    bytes: Cell<u64>,
    entries: Cell<u64>,
    /// Set when a read was refused for the byte limit.
    exhausted: Cell<bool>,
}

/// A limit that was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// [`Limits::bytes`], whose value it carries.
    Bytes(u64),
    /// [`Limits::entries`], whose value it carries.
    Entries(u64),
}

impl Budget {
    /// A budget of `limits`, none of it used.
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            ..Budget::default()
        }
    }

    /// `reader`, counted against the byte limit.
    pub(super) fn meter<R: Read>(&self, reader: R) -> Metered<'_, R> {
        Metered {
            inner: reader,
            budget: self,
        }
    }

    /// Counts one more entry.
    pub(super) fn entry(&self) -> Result<(), Exceeded> {
        let n = self.entries.get() + 1;
        if n > self.limits.entries {
            return Err(Exceeded::Entries(self.limits.entries));
        }
        self.entries.set(n);
        Ok(())
    }

    /// The byte limit, if a read was refused for it.
    pub(super) fn exhausted(&self) -> Option<Exceeded> {
        self.exhausted.get().then_some(Exceeded::Bytes(self.limits.bytes))
    }
}

/// A reader whose bytes count against a [`Budget`]; past its limit a read
/// fails, and the budget remembers why.
pub(super) struct Metered<'a, R> {
    inner: R,
    budget: &'a Budget,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.limits.bytes - self.budget.bytes.get();
        // One byte past what is left tells a stream that ends exactly at
        // the limit from one that goes on.
        let want = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > left {
            self.budget.exhausted.set(true);
            return Err(io::Error::other(format!(
                "more than {} after decompression",
                size(self.budget.limits.bytes)
            )));
        }
        self.budget.bytes.set(self.budget.bytes.get() + n as u64);
        Ok(n)
    }
}

/// A byte count as people write it: `16 GiB`, `64 KiB`, `1000 bytes`.
pub(super) fn size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_past_the_byte_limit_and_entries_past_theirs() {
        let budget = Budget::new(Limits { bytes: 10, entries: 2 });
        let mut out = Vec::new();
        budget.meter(&[1u8; 6][..]).read_to_end(&mut out).unwrap();
        assert_eq!(budget.exhausted(), None);
        // 4 bytes left: 4 more are fine, a fifth is not.
        budget.meter(&[1u8; 4][..]).read_to_end(&mut out).unwrap();
        let err = budget.meter(&[1u8; 1][..]).read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("10 bytes"), "{err}");
        assert_eq!(budget.exhausted(), Some(Exceeded::Bytes(10)));
        assert_eq!(out.len(), 10);

        assert_eq!((budget.entry(), budget.entry()), (Ok(()), Ok(())));
        assert_eq!(budget.entry(), Err(Exceeded::Entries(2)));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(16 << 30), "16 GiB");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(size(3 << 19), "1536 KiB");
    }
}

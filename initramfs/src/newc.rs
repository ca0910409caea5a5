//! The `newc` cpio format ("SVR4 portable, no CRC", magic `070701`): the
//! format the Linux kernel unpacks into its initial rootfs.
//!
//! An archive is a sequence of members, each laid out as
//!
//! ```text
//! +--------------------+---------------------+---------+------+---------+
//! | header (110 bytes) | name + NUL          | pad to 4 | data | pad to 4 |
//! +--------------------+---------------------+---------+------+---------+
//! ```
//!
//! and ends with a member named `TRAILER!!!`. The header is ASCII: the magic,
//! then thirteen fields of eight hexadecimal digits each, in this order:
//!
//! | offset | field       | meaning                                        |
//! |-------:|-------------|------------------------------------------------|
//! |      0 | `c_magic`   | `070701`                                       |
//! |      6 | `c_ino`     | inode number                                   |
//! |     14 | `c_mode`    | file type and permission bits (`st_mode`)      |
//! |     22 | `c_uid`     | owner                                          |
//! |     30 | `c_gid`     | group                                          |
//! |     38 | `c_nlink`   | link count                                     |
//! |     46 | `c_mtime`   | modification time, seconds since 1970          |
//! |     54 | `c_filesize`| data length (the link target for a symlink)    |
//! |     62 | `c_devmajor`| device holding the file                        |
//! |     70 | `c_devminor`|                                                |
//! |     78 | `c_rdevmajor`| device a node stands for (char/block nodes)   |
//! |     86 | `c_rdevminor`|                                               |
//! |     94 | `c_namesize`| name length, counting its terminating NUL      |
//! |    102 | `c_check`   | always 0 for `070701`                          |
//!
//! This module only encodes; what goes into each field is decided by
//! [`crate::Archive`].

/// The magic that opens every `newc` header.
pub const MAGIC: &[u8; 6] = b"070701";

/// Length of the fixed header: the magic and thirteen 8-digit fields.
pub const HEADER_LEN: usize = 6 + 13 * 8;

/// Name of the member that ends an archive.
pub const TRAILER_NAME: &str = "TRAILER!!!";

/// Header and name, and data, are each padded with NULs to this alignment.
pub const ALIGN: usize = 4;

/// File type bits of `c_mode` (the values of `<sys/stat.h>`).
pub const S_IFDIR: u32 = 0o040_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;
/// Block device.
pub const S_IFBLK: u32 = 0o060_000;

/// NUL bytes to copy padding from; never more than `ALIGN - 1` are needed.
pub const ZEROS: [u8; ALIGN] = [0; ALIGN];

/// The numeric fields of one member's header. `c_namesize` is derived from
/// the name and `c_check` is always zero, so neither is stored here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl Header {
    /// The header of the `TRAILER!!!` member: every field zero but `nlink`,
    /// as the kernel's own `gen_init_cpio` writes it.
    pub fn trailer() -> Self {
        Header {
            nlink: 1,
            ..Header::default()
        }
    }

    /// Encodes the header followed by `name`, its terminating NUL and the
    /// padding that aligns the data after it. The result's length is always
    /// a multiple of [`ALIGN`].
    ///
    /// Fields are written as upper-case hex, as `gen_init_cpio` does; readers
    /// (the kernel, GNU cpio) accept either case.
    ///
    /// # Panics
    ///
    /// If `name` is longer than `u32::MAX - 1` bytes. Archive paths are
    /// checked against `PATH_MAX` long before they get here.
    pub fn encode(&self, name: &str) -> Vec<u8> {
        let namesize = name.len() + 1;
        let namesize_field = u32::try_from(namesize).expect("archive names are bounded by PATH_MAX");
        let fields = [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.dev_major,
            self.dev_minor,
            self.rdev_major,
            self.rdev_minor,
            namesize_field,
            0, // c_check: only the `070702` (CRC) variant uses it.
        ];

        let unpadded = HEADER_LEN + namesize;
        let mut out = Vec::with_capacity(unpadded + padding(unpadded));
        out.extend_from_slice(MAGIC);
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(&ZEROS[..padding(unpadded)]);
        out
    }
}

/// The number of NUL bytes that bring `len` up to the next multiple of
/// [`ALIGN`].
pub fn padding(len: usize) -> usize {
    len.next_multiple_of(ALIGN) - len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular file `init`, 5 bytes, mode 0755, root-owned, inode 1:
    /// every field written out by hand from the table in the module docs.
    #[test]
    fn header_matches_hand_computed_bytes() {
        let header = Header {
            ino: 1,
            mode: S_IFREG | 0o755, // 0o100755 = 0x81ED
            nlink: 1,
            filesize: 5,
            ..Header::default()
        };
        let expected: Vec<u8> = [
            "070701",   // c_magic
            "00000001", // c_ino
            "000081ED", // c_mode
            "00000000", // c_uid
            "00000000", // c_gid
            "00000001", // c_nlink
            "00000000", // c_mtime
            "00000005", // c_filesize
            "00000000", // c_devmajor
            "00000000", // c_devminor
            "00000000", // c_rdevmajor
            "00000000", // c_rdevminor
            "00000005", // c_namesize: "init" + NUL
            "00000000", // c_check
            "init\0",   // name
            "\0",       // 110 + 5 = 115 bytes, padded to 116
        ]
        .concat()
        .into_bytes();

        let encoded = header.encode("init");
        assert_eq!(encoded.len(), 116);
        assert_eq!(String::from_utf8_lossy(&encoded), String::from_utf8_lossy(&expected));
        assert_eq!(encoded, expected);
    }

    /// `/dev/console`, c 5 1, mode 0600, owned by 1000:100, mtime 1700000000:
    /// the device number goes to `rdev`, never to `dev`.
    #[test]
    fn device_header_puts_numbers_in_rdev() {
        let header = Header {
            ino: 0x2a,
            mode: S_IFCHR | 0o600, // 0o020600 = 0x2180
            uid: 1000,             // 0x3E8
            gid: 100,              // 0x64
            nlink: 1,
            mtime: 1_700_000_000, // 0x6553F100
            rdev_major: 5,
            rdev_minor: 1,
            ..Header::default()
        };
        let expected = [
            "070701",
            "0000002A",
            "00002180",
            "000003E8",
            "00000064",
            "00000001",
            "6553F100",
            "00000000",
            "00000000",
            "00000000",
            "00000005",
            "00000001",
            "0000000C", // "dev/console" + NUL = 12
            "00000000",
            "dev/console\0",
            "\0\0", // 110 + 12 = 122, padded to 124
        ]
        .concat();
        assert_eq!(String::from_utf8(header.encode("dev/console")).unwrap(), expected);
    }

    #[test]
    fn trailer_is_all_zero_but_nlink() {
        let expected = [
            "070701",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000001",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "0000000B", // "TRAILER!!!" + NUL = 11
            "00000000",
            "TRAILER!!!\0",
            "\0\0\0", // 110 + 11 = 121 bytes, padded to 124
        ]
        .concat();
        assert_eq!(
            String::from_utf8(Header::trailer().encode(TRAILER_NAME)).unwrap(),
            expected
        );
    }

    #[test]
    fn padding_reaches_the_next_multiple_of_four() {
        let expected = [0, 3, 2, 1, 0, 3, 2, 1, 0];
        for (len, pad) in expected.into_iter().enumerate() {
            assert_eq!(padding(len), pad, "padding({len})");
        }
    }

    #[test]
    fn encoded_header_and_name_are_always_aligned() {
        for name_len in 1..=12 {
            let name = "n".repeat(name_len);
            let encoded = Header::default().encode(&name);
            assert_eq!(encoded.len() % ALIGN, 0, "name of {name_len} bytes");
            // Exactly the header, the name, its NUL, and less than ALIGN of padding.
            let unpadded = HEADER_LEN + name_len + 1;
            assert!(encoded.len() >= unpadded && encoded.len() < unpadded + ALIGN);
            assert!(encoded[unpadded - 1..].iter().all(|&b| b == 0));
        }
    }
}

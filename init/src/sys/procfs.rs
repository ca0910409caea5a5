//! Small readers of `/proc/PID/...` shared by several steps.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The parent pid in a `/proc/PID/stat` line: the second field after the
/// command name, which is in parentheses and may contain anything.
pub fn parse_stat_ppid(stat: &str) -> Option<i32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// The parent of `pid`, as the mounted proc sees it.
pub fn parent_of(pid: i32) -> Option<i32> {
    parse_stat_ppid(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The pids whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(ppid))
        .collect()
}

/// The identity (device, inode) of a namespace file such as
/// `/proc/self/ns/mnt`; `None` where it cannot be seen.
pub fn namespace_id(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The mount points listed in a `/proc/PID/mountinfo` text.
pub fn mountinfo_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape_octal(field))))
        .collect()
}

/// Undoes mountinfo's `\NNN` octal escapes (space, tab, newline, backslash).
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ppid() {
        assert_eq!(parse_stat_ppid("42 (sh) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_stat_ppid("43 (a) b) c) R 1 43"), Some(1));
        assert_eq!(parse_stat_ppid("garbage"), None);
        let me = std::process::id() as i32;
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        assert_eq!(parent_of(me), Some(parent));
        assert!(children_of(parent).contains(&me));
        assert_eq!(
            namespace_id("/proc/self/ns/mnt"),
            namespace_id(&format!("/proc/{me}/ns/mnt"))
        );
        assert!(namespace_id("/proc/self/ns/mnt").is_some());
    }

    #[test]
    fn mountinfo_parsing() {
        let text = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 1 0:22 / /sys rw,nosuid shared:2 - sysfs sysfs rw
40 23 0:33 / /mnt/with\\040space rw - tmpfs tmpfs rw
41 23 0:34 / /back\\134slash rw - tmpfs tmpfs rw
";
        let points = mountinfo_mount_points(text);
        assert_eq!(
            points,
            [
                PathBuf::from("/proc"),
                PathBuf::from("/sys"),
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/back\\slash")
            ]
        );
        assert_eq!(unescape_octal("a\\011b\\"), b"a\tb\\");
    }
}

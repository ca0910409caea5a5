//! What `vmshim runtime` keeps of a container (`ROOT/ID/state.json`) and
//! what it reports: runc's state JSON.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use agent_proto::ContainerStatus;

use super::hooks::HostHooks;
use super::RuntimeError;

/// The OCI runtime spec version the state JSON follows.
pub const OCI_VERSION: &str = "1.0.2";

/// `ROOT/ID/state.json`: written whole when the container is created, read
/// by every later command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The container's id.
    pub id: String,
    /// The bundle directory, absolute.
    pub bundle: PathBuf,
    /// The bundle's root filesystem on the host, absolute.
    pub rootfs: PathBuf,
    /// When it was created: nanoseconds since the Unix epoch, host clock.
    pub created_unix_ns: u64,
    /// The spec's annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The bundle's hooks that run on the host.
    #[serde(default, skip_serializing_if = "HostHooks::is_empty")]
    pub hooks: HostHooks,
}

/// A container's state as `runc state` prints it (the OCI state, plus
/// runc's `rootfs`, `created` and `owner`), fields in runc's order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct State {
    /// The OCI runtime spec version the state follows ([`OCI_VERSION`]).
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// The host pid of the VM's QEMU while the container is created or
    /// running (the container's process is in the VM: it has no host pid);
    /// 0 once stopped.
    pub pid: u32,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The bundle directory, absolute.
    pub bundle: String,
    /// The bundle's root filesystem on the host, absolute.
    pub rootfs: String,
    /// RFC 3339, nanoseconds, UTC.
    pub created: String,
    /// The spec's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The owner's user name; empty (as runc reports it for a container of
    /// the user running it).
    pub owner: String,
}

impl State {
    pub(crate) fn new(record: &Record, status: ContainerStatus, pid: u32) -> State {
        State {
            oci_version: OCI_VERSION.to_owned(),
            id: record.id.clone(),
            pid,
            status: status.name().to_owned(),
            bundle: record.bundle.to_string_lossy().into_owned(),
            rootfs: record.rootfs.to_string_lossy().into_owned(),
            created: rfc3339_nanos(record.created_unix_ns),
            annotations: record.annotations.clone(),
            owner: String::new(),
        }
    }
}

/// `ROOT/ID/state.json`.
pub(super) fn record_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// The record in container directory `dir`; `None` when there is none.
pub(super) fn read_record(dir: &Path) -> Result<Option<Record>, RuntimeError> {
    let path = record_path(dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RuntimeError::Corrupt {
                path,
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RuntimeError::Io {
            what: "read",
            path,
            source,
        }),
    }
}

/// Writes the record into `dir` whole: a 0600 temporary file renamed into
/// place.
pub(super) fn write_record(dir: &Path, record: &Record) -> Result<(), RuntimeError> {
    let json = serde_json::to_vec_pretty(record).expect("a record serializes");
    Ok(crate::private::write_private_atomically(&record_path(dir), &json)?)
}

/// Writes `pid` to `path` whole as runc writes its `--pid-file`: a new
/// `.NAME` beside it (`O_EXCL`, mode 0666 less the umask), renamed into
/// place. The file is the caller's, where the caller wants it.
pub(super) fn write_pid_file(path: &Path, pid: u32) -> Result<(), RuntimeError> {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    let tmp = path.with_file_name(name);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| f.write_all(pid.to_string().as_bytes()));
    let renamed = written.and_then(|()| fs::rename(&tmp, path));
    renamed.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        RuntimeError::Io {
            what: "write",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// `unix_ns` as Go's `time.RFC3339Nano` in UTC, as runc prints times:
/// `2006-01-02T15:04:05.999999999Z`, trailing zeros of the fraction
/// dropped (and the dot with them).
pub fn rfc3339_nanos(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        s.push('.');
        s.push_str(fraction.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn times_as_go_prints_them() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(rfc3339_nanos(1_700_000_000_120_000_000), "2023-11-14T22:13:20.12Z");
        assert_eq!(
            rfc3339_nanos(4_102_444_799_000_000_001),
            "2099-12-31T23:59:59.000000001Z"
        );
    }

    #[test]
    fn state_json_in_runcs_order() {
        let mut record = Record {
            id: "c".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created_unix_ns: 1_700_000_000_000_000_000,
            annotations: BTreeMap::new(),
            hooks: HostHooks::default(),
        };
        let json = serde_json::to_string(&State::new(&record, ContainerStatus::Running, 42)).unwrap();
        assert_eq!(
            json,
            r#"{"ociVersion":"1.0.2","id":"c","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2023-11-14T22:13:20Z","owner":""}"#
        );
        record.annotations.insert("a".into(), "1".into());
        let json = serde_json::to_string(&State::new(&record, ContainerStatus::Stopped, 0)).unwrap();
        assert!(
            json.contains(r#""created":"2023-11-14T22:13:20Z","annotations":{"a":"1"},"owner":"""#),
            "{json}"
        );
    }

    #[test]
    fn records_round_trip_whole() {
        let t = TestDir::new("runtime-record");
        assert_eq!(read_record(t.path()).unwrap(), None);
        let record = Record {
            id: "c".into(),
            bundle: "/b".into(),
            rootfs: "/b/r".into(),
            created_unix_ns: 5,
            annotations: [("k".to_owned(), "v".to_owned())].into(),
            hooks: HostHooks {
                poststop: vec![agent_proto::Hook {
                    path: "/bin/true".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        write_record(t.path(), &record).unwrap();
        assert_eq!(read_record(t.path()).unwrap(), Some(record));
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::write(record_path(t.path()), "{").unwrap();
        assert!(matches!(read_record(t.path()), Err(RuntimeError::Corrupt { .. })));
    }

    #[test]
    fn records_are_private_under_umask_0_and_pid_files_as_runcs() {
        use crate::private::tests::{mode, under_umask_0};
        if !under_umask_0("runtime::state::tests::records_are_private_under_umask_0_and_pid_files_as_runcs") {
            return;
        }
        let t = TestDir::new("runtime-record-mode");
        // (Made 0777 under umask 0: a directory in it would be refused.)
        std::fs::set_permissions(t.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let dir = crate::private::ensure_private_dir(&t.path().join("c1")).unwrap();
        let record = Record {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/r".into(),
            created_unix_ns: 5,
            annotations: BTreeMap::new(),
            hooks: HostHooks::default(),
        };
        write_record(dir.path(), &record).unwrap();
        assert_eq!(mode(&record_path(dir.path())), 0o600);
        // The pid file is the caller's: 0666 less the umask, as runc's.
        let pid = t.path().join("c1.pid");
        write_pid_file(&pid, 42).unwrap();
        assert_eq!(mode(&pid), 0o666);
        assert_eq!(std::fs::read_to_string(&pid).unwrap(), "42");
        assert!(!t.path().join(".c1.pid").exists());
        // A record's place taken by a link: the link is replaced, its
        // target untouched.
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::remove_file(record_path(dir.path())).unwrap();
        std::os::unix::fs::symlink(&victim, record_path(dir.path())).unwrap();
        write_record(dir.path(), &record).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(read_record(dir.path()).unwrap(), Some(record));
    }
}

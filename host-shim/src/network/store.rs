//! Networks on disk, the bottom of the network module: one directory each
//! under `$STATE/networks/`, made in a temporary directory and renamed into
//! place, so a network is either whole or absent; locks that keep
//! concurrent vmshims from stepping on each other. Directories are 0700 and
//! files 0600 ([`crate::private`]).
//!
//! This module knows the files, not what runs on them: the switch daemon
//! ([`super::daemon`]), bridges ([`super::bridge`]) and leases
//! ([`super::lease`]) are built on it, and [`super::networks`] puts them
//! together.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::error::{check_name, io_err, NetworkError};
use super::links::{BRIDGE_PREFIX, MAX_IFNAME};
use super::process::Owner;
use super::subnet::Subnet;
use crate::private::{ensure_private_dir, PrivateDir};

/// The longest path a Unix socket address holds (108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// How a network carries the VMs' frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A userspace switch daemon on a Unix socket; no root needed.
    #[default]
    Switch,
    /// A Linux bridge with a tap device per VM; needs CAP_NET_ADMIN.
    Bridge,
}

impl Driver {
    /// The driver's name, as `--driver` takes it and `network.json` holds it.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Switch => "switch",
            Driver::Bridge => "bridge",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Driver {
    type Err = String;

    fn from_str(s: &str) -> Result<Driver, String> {
        match s {
            "switch" => Ok(Driver::Switch),
            "bridge" => Ok(Driver::Bridge),
            _ => Err(format!("unknown network driver {s:?}: expected switch or bridge")),
        }
    }
}

/// What `network.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Network {
    /// The network's name, which is also its directory's.
    pub name: String,
    /// The addresses its VMs lease from.
    pub subnet: Subnet,
    /// Files written before there were drivers have none: a switch.
    #[serde(default)]
    pub driver: Driver,
    /// The bridge device of a bridge network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

/// A network as `vmshim network ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkInfo {
    /// The network's name.
    pub name: String,
    /// The addresses its VMs lease from.
    pub subnet: Subnet,
    /// How it carries frames.
    pub driver: Driver,
    /// The bridge device of a bridge network.
    pub bridge: Option<String>,
    /// Whether its switch accepts connections; for a bridge network,
    /// whether its bridge exists.
    pub switch_running: bool,
    /// How many VMs hold a lease on it.
    pub members: usize,
}

/// The networks of one state directory, as files.
#[derive(Debug, Clone)]
pub(super) struct Store {
    state_dir: PathBuf,
}

/// The files of one network.
pub(super) struct NetDir(PathBuf);

impl NetDir {
    /// The network's directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `network.json`: the [`Network`].
    pub fn config(&self) -> PathBuf {
        self.0.join("network.json")
    }
    /// `lock`: `flock`ed while leases, the switch or taps change.
    pub fn lock(&self) -> PathBuf {
        self.0.join("lock")
    }
    /// `switch.sock`: where the switch listens.
    pub fn socket(&self) -> PathBuf {
        self.0.join("switch.sock")
    }
    /// `switch.pid`: the switch daemon's pid.
    pub fn pid(&self) -> PathBuf {
        self.0.join("switch.pid")
    }
    /// `switch.log`: the switch daemon's stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.0.join("switch.log")
    }
    /// `leases/`: one file per leased address.
    pub fn leases(&self) -> PathBuf {
        self.0.join("leases")
    }
}

/// An exclusive `flock`, released when dropped (the file is closed).
pub(super) struct Flock(#[allow(dead_code)] File);

/// A network directory written out of sight (`.tmp-PID-N`): put in place
/// by [`Staged::commit`], removed if dropped first.
pub(super) struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
}

impl Staged {
    /// Renames the directory into place: the network exists from now on.
    pub fn commit(self) -> Result<(), NetworkError> {
        // Dropped on return: the directory is removed if the rename failed.
        fs::rename(&self.tmp, &self.dest).map_err(io_err("rename into place", &self.dest))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.tmp.exists() {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// The directory of a process that died halfway through creating or
/// removing a network (`.tmp-PID-N`, `.rm-PID-N`).
pub(super) struct Leftover {
    path: PathBuf,
    /// What its `network.json` says, if it has a readable one.
    pub network: Option<Network>,
}

impl Leftover {
    /// Deletes it.
    pub fn remove(self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

impl Store {
    /// The default state directory: `$VMSHIM_STATE_DIR`, else
    /// `$XDG_STATE_HOME/vmshim`, else `$HOME/.local/state/vmshim`.
    pub fn from_env() -> Result<Store, NetworkError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = var("VMSHIM_STATE_DIR")
            .or_else(|| {
                var("XDG_STATE_HOME")
                    .filter(|d| d.is_absolute())
                    .map(|d| d.join("vmshim"))
            })
            .or_else(|| var("HOME").map(|h| h.join(".local/state/vmshim")))
            .ok_or(NetworkError::NoStateDir)?;
        Ok(Store::at(dir))
    }

    /// The networks of state directory `state_dir` (made absolute: the
    /// switch daemon runs in `/`).
    pub fn at(state_dir: impl Into<PathBuf>) -> Store {
        let dir = state_dir.into();
        Store {
            state_dir: std::path::absolute(&dir).unwrap_or(dir),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `$STATE/networks`.
    fn root(&self) -> PathBuf {
        self.state_dir.join("networks")
    }

    /// The files of network `name` (which need not exist).
    pub fn dir(&self, name: &str) -> NetDir {
        NetDir(self.root().join(name))
    }

    /// Whether network `name`'s directory exists (whole or being removed).
    pub fn exists(&self, name: &str) -> bool {
        fs::symlink_metadata(self.dir(name).path()).is_ok()
    }

    /// Makes the state directory and `networks/` in it, private, if they
    /// are not there.
    pub fn ensure_root(&self) -> Result<(), NetworkError> {
        ensure_private_dir(&self.state_dir)?.ensure_dir("networks")?;
        Ok(())
    }

    /// The configuration of network `name`.
    pub fn get(&self, name: &str) -> Result<Network, NetworkError> {
        check_name("network", name)?;
        let path = self.dir(name).config();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetworkError::UnknownNetwork { name: name.to_owned() })
            }
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let network: Network = serde_json::from_slice(&text).map_err(|e| NetworkError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let detail = if network.name != name {
            Some(format!("it names network {:?}", network.name))
        } else {
            match (network.driver, &network.bridge) {
                (Driver::Switch, None) => None,
                (Driver::Switch, Some(_)) => Some("a switch network names a bridge".to_owned()),
                (Driver::Bridge, Some(b)) if b.starts_with(BRIDGE_PREFIX) && b.len() <= MAX_IFNAME => None,
                (Driver::Bridge, b) => Some(format!(
                    "a bridge network needs a bridge named {BRIDGE_PREFIX}*, of at most {MAX_IFNAME} bytes, not {b:?}"
                )),
            }
        };
        match detail {
            Some(detail) => Err(NetworkError::Corrupt { path, detail }),
            None => Ok(network),
        }
    }

    /// Every network's configuration, by name; networks that vanish while
    /// being read are left out.
    pub fn read_all(&self) -> Result<Vec<Network>, NetworkError> {
        let root = self.root();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read", &root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name("network", &name).is_err() {
                continue; // .tmp-*, .rm-*, and anything else not ours
            }
            match self.get(&name) {
                Ok(n) => out.push(n),
                Err(NetworkError::UnknownNetwork { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Holds `$STATE/networks.lock`: creating and removing networks.
    pub fn lock_global(&self) -> Result<Flock, NetworkError> {
        let path = self.state_dir.join("networks.lock");
        let file = PrivateDir::open(&self.state_dir)?.open_append("networks.lock")?;
        flock(&file).map_err(io_err("lock", &path))?;
        Ok(Flock(file))
    }

    /// Holds the lock of network `name` (leases, its switch) and returns
    /// its configuration. A network removed while we waited is unknown.
    pub fn lock_network(&self, name: &str) -> Result<(Flock, Network), NetworkError> {
        check_name("network", name)?;
        let path = self.dir(name).lock();
        let unknown = || NetworkError::UnknownNetwork { name: name.to_owned() };
        loop {
            let file = match fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
                Err(e) => return Err(io_err("open", path)(e)),
            };
            flock(&file).map_err(io_err("lock", &path))?;
            // The lock counts only if the file is still the network's: the
            // network may have been removed (and made again) meanwhile.
            let held = file.metadata().map_err(io_err("stat", &path))?;
            match fs::metadata(&path) {
                Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {
                    return Ok((Flock(file), self.get(name)?));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
                Err(e) => return Err(io_err("stat", path)(e)),
            }
        }
    }

    /// Writes the whole directory of `network` out of sight, to be put in
    /// place with [`Staged::commit`]. Call with the global lock held.
    pub fn stage(&self, network: &Network) -> Result<Staged, NetworkError> {
        let root = self.root();
        let name = format!(".tmp-{}-{}", std::process::id(), unique());
        let staged = Staged {
            tmp: root.join(&name),
            dest: self.dir(&network.name).0,
        };
        let dir = PrivateDir::open(&root)?.create_dir(&name)?;
        dir.create_dir("leases")?;
        dir.create_file("lock")?;
        let mut json = serde_json::to_vec_pretty(network).expect("a Network serializes");
        json.push(b'\n');
        dir.create_file("network.json")?
            .write_all(&json)
            .map_err(io_err("write", dir.join("network.json")))?;
        Ok(staged)
    }

    /// Takes network `name`'s directory out of sight at once, then deletes
    /// it: a crash halfway leaves a [`Leftover`].
    pub fn delete(&self, name: &str) -> Result<(), NetworkError> {
        let dir = self.dir(name);
        let doomed = self.root().join(format!(".rm-{}-{}", std::process::id(), unique()));
        fs::rename(dir.path(), &doomed).map_err(io_err("remove", dir.path()))?;
        fs::remove_dir_all(&doomed).map_err(io_err("remove", &doomed))
    }

    /// The `.tmp-PID-*` and `.rm-PID-*` directories of processes that
    /// died halfway through creating or removing a network. Call with the
    /// global lock held.
    pub fn leftovers(&self) -> Vec<Leftover> {
        let Ok(entries) = fs::read_dir(self.root()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix(".tmp-").or_else(|| n.strip_prefix(".rm-")))
            else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse().ok()) else {
                continue;
            };
            if (Owner { pid, started: None }).alive() {
                continue;
            }
            let network = fs::read(entry.path().join("network.json"))
                .ok()
                .and_then(|json| serde_json::from_slice::<Network>(&json).ok());
            out.push(Leftover {
                path: entry.path(),
                network,
            });
        }
        out
    }
}

/// Refuses a socket path too long for a Unix socket address.
pub(super) fn check_socket_path(path: &Path) -> Result<(), NetworkError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(NetworkError::SocketPathTooLong {
            path: path.to_owned(),
            len,
        });
    }
    Ok(())
}

/// A number unique within this process, for temporary names.
pub(super) fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Takes an exclusive `flock` on `file`, waiting as long as it takes.
fn flock(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor this File owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::process::dead_pid;
    use crate::test_dir::TestDir;

    fn network(name: &str, subnet: &str) -> Network {
        Network {
            name: name.to_owned(),
            subnet: subnet.parse().unwrap(),
            driver: Driver::Switch,
            bridge: None,
        }
    }

    /// A store in a fresh state directory.
    fn store(tag: &str) -> (TestDir, Store) {
        let dir = TestDir::new(tag);
        let store = Store::at(dir.path());
        store.ensure_root().unwrap();
        (dir, store)
    }

    /// The hidden entries of `networks/`.
    fn hidden(store: &Store) -> Vec<String> {
        fs::read_dir(store.root())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn a_network_directory_is_whole_or_absent() {
        let (dir, store) = store("staged");
        let a = network("a", "10.89.0.0/24");
        // Staged and dropped: nothing is left.
        drop(store.stage(&a).unwrap());
        assert_eq!(hidden(&store), Vec::<String>::new());
        assert!(matches!(store.get("a"), Err(NetworkError::UnknownNetwork { .. })));
        // Staged and committed: the network, whole.
        store.stage(&a).unwrap().commit().unwrap();
        assert_eq!(store.get("a").unwrap(), a);
        let on_disk = dir.path().join("networks/a");
        let json: serde_json::Value = serde_json::from_slice(&fs::read(on_disk.join("network.json")).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "a", "subnet": "10.89.0.0/24", "driver": "switch"})
        );
        assert!(on_disk.join("leases").is_dir() && on_disk.join("lock").is_file());
        // A second directory of that name is not renamed over the first.
        let again = network("a", "10.89.1.0/24");
        assert!(store.stage(&again).unwrap().commit().is_err());
        assert_eq!(store.get("a").unwrap(), a);
        assert_eq!(hidden(&store), Vec::<String>::new());
        store.stage(&network("b", "10.89.1.0/24")).unwrap().commit().unwrap();
        let names: Vec<String> = store.read_all().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["a", "b"]);
        store.delete("a").unwrap();
        assert!(!on_disk.exists() && !store.exists("a") && store.exists("b"));
        assert_eq!(hidden(&store), Vec::<String>::new());
    }

    #[test]
    fn files_without_a_driver_are_switch_networks() {
        let (dir, store) = store("nodriver");
        store.stage(&network("old", "10.89.0.0/24")).unwrap().commit().unwrap();
        let config = dir.path().join("networks/old/network.json");
        fs::write(&config, r#"{"name": "old", "subnet": "10.89.0.0/24"}"#).unwrap();
        let old = store.get("old").unwrap();
        assert_eq!((old.driver, old.bridge), (Driver::Switch, None));
        assert_eq!(store.read_all().unwrap()[0].driver, Driver::Switch);
        for (json, detail) in [
            (
                r#"{"name": "old", "subnet": "10.89.0.0/24", "driver": "bridge"}"#,
                "None",
            ),
            (
                r#"{"name": "old", "subnet": "10.89.0.0/24", "driver": "bridge", "bridge": "eth0"}"#,
                "\"eth0\"",
            ),
            (
                r#"{"name": "old", "subnet": "10.89.0.0/24", "bridge": "vmbr-old"}"#,
                "a switch network names a bridge",
            ),
            (
                r#"{"name": "old", "subnet": "10.89.0.0/24", "driver": "tap"}"#,
                "unknown variant",
            ),
            (
                r#"{"name": "new", "subnet": "10.89.0.0/24"}"#,
                "it names network \"new\"",
            ),
        ] {
            fs::write(&config, json).unwrap();
            let err = store.get("old").unwrap_err();
            assert!(
                matches!(&err, NetworkError::Corrupt { .. }) && err.to_string().contains(detail),
                "{json}: {err}"
            );
        }
        assert_eq!("bridge".parse::<Driver>(), Ok(Driver::Bridge));
        assert_eq!(Driver::Switch.to_string(), "switch");
        assert!("tap"
            .parse::<Driver>()
            .unwrap_err()
            .contains("expected switch or bridge"));
    }

    #[test]
    fn leftovers_are_those_of_dead_processes() {
        let (_dir, store) = store("leftovers");
        let root = store.root();
        let dead = dead_pid();
        fs::create_dir_all(root.join(format!(".tmp-{dead}-0/leases"))).unwrap();
        let json = serde_json::to_vec(&network("half", "10.89.5.0/24")).unwrap();
        fs::write(root.join(format!(".tmp-{dead}-0/network.json")), json).unwrap();
        fs::create_dir_all(root.join(format!(".rm-{dead}-0"))).unwrap();
        let mine = root.join(format!(".tmp-{}-999999", std::process::id()));
        fs::create_dir_all(&mine).unwrap();
        let mut found: Vec<(PathBuf, Option<String>)> = store
            .leftovers()
            .into_iter()
            .map(|l| (l.path.clone(), l.network.as_ref().map(|n| n.name.clone())))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                (root.join(format!(".rm-{dead}-0")), None),
                (root.join(format!(".tmp-{dead}-0")), Some("half".to_owned())),
            ]
        );
        for leftover in store.leftovers() {
            leftover.remove();
        }
        assert_eq!(hidden(&store), [format!(".tmp-{}-999999", std::process::id())]);
    }

    #[test]
    fn socket_paths_fit_a_socket_address() {
        check_socket_path(Path::new(&"/".repeat(MAX_SOCKET_PATH))).unwrap();
        let err = check_socket_path(Path::new(&"/".repeat(MAX_SOCKET_PATH + 1))).unwrap_err();
        assert!(
            matches!(err, NetworkError::SocketPathTooLong { len: 108, .. }),
            "{err:?}"
        );
    }
}

//! Networks on disk: one directory each under `$STATE/networks/`, made in a
//! temporary directory and renamed into place, so a network is either whole
//! or absent; locks that keep concurrent vmshims from stepping on each other.
//! Directories are 0700 and files 0600 ([`crate::private`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::bridge::{BRIDGE_PREFIX, MAX_IFNAME};
use super::daemon::{self, Launcher};
use super::links::{IpCommand, LinkKind, Links};
use super::process::Owner;
use super::subnet::Subnet;
use super::{check_name, io_err, NetworkError};
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
    pub name: String,
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
    pub name: String,
    pub subnet: Subnet,
    pub driver: Driver,
    /// The bridge device of a bridge network.
    pub bridge: Option<String>,
    /// Whether its switch accepts connections; for a bridge network,
    /// whether its bridge exists.
    pub switch_running: bool,
    /// How many VMs hold a lease on it.
    pub members: usize,
}

/// The networks of one state directory.
#[derive(Debug, Clone)]
pub struct Networks {
    state_dir: PathBuf,
    pub(super) launcher: Launcher,
    /// The host's network devices (bridge networks).
    pub(super) links: Arc<dyn Links>,
}

/// The files of one network.
pub(super) struct NetDir(PathBuf);

impl NetDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn config(&self) -> PathBuf {
        self.0.join("network.json")
    }
    pub fn lock(&self) -> PathBuf {
        self.0.join("lock")
    }
    pub fn socket(&self) -> PathBuf {
        self.0.join("switch.sock")
    }
    pub fn pid(&self) -> PathBuf {
        self.0.join("switch.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("switch.log")
    }
    pub fn leases(&self) -> PathBuf {
        self.0.join("leases")
    }
}

/// An exclusive `flock`, released when dropped (the file is closed).
pub(super) struct Flock(#[allow(dead_code)] File);

impl Networks {
    /// The default state directory: `$VMSHIM_STATE_DIR`, else
    /// `$XDG_STATE_HOME/vmshim`, else `$HOME/.local/state/vmshim`.
    pub fn from_env() -> Result<Networks, NetworkError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = var("VMSHIM_STATE_DIR")
            .or_else(|| {
                var("XDG_STATE_HOME")
                    .filter(|d| d.is_absolute())
                    .map(|d| d.join("vmshim"))
            })
            .or_else(|| var("HOME").map(|h| h.join(".local/state/vmshim")))
            .ok_or(NetworkError::NoStateDir)?;
        Ok(Networks::at(dir))
    }

    /// The networks of state directory `state_dir` (made absolute: the
    /// switch daemon runs in `/`).
    pub fn at(state_dir: impl Into<PathBuf>) -> Networks {
        let dir = state_dir.into();
        Networks {
            state_dir: std::path::absolute(&dir).unwrap_or(dir),
            launcher: Launcher::Program(None),
            links: Arc::new(IpCommand),
        }
    }

    /// Starts switches with `program` (a vmshim binary) rather than the
    /// one found beside this executable, in `$VMSHIM_BIN` or in PATH.
    pub fn with_switch_program(mut self, program: impl Into<PathBuf>) -> Networks {
        self.launcher = Launcher::Program(Some(program.into()));
        self
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn root(&self) -> PathBuf {
        self.state_dir.join("networks")
    }

    pub(super) fn dir(&self, name: &str) -> NetDir {
        NetDir(self.root().join(name))
    }

    /// Creates network `name` with `subnet` (default: the first free
    /// 10.89.N.0/24): starts its switch, or makes its bridge. On any error
    /// nothing is left.
    pub fn create(&self, name: &str, subnet: Option<&str>, driver: Driver) -> Result<Network, NetworkError> {
        check_name("network", name)?;
        let wanted = subnet.map(str::parse::<Subnet>).transpose()?;
        if let Some((range, why)) = wanted.and_then(|s| s.reserved_overlap()) {
            return Err(NetworkError::Reserved {
                subnet: wanted.expect("checked above"),
                range,
                why,
            });
        }
        if driver == Driver::Bridge {
            self.check_may_admin(|| "a network with the bridge driver".to_owned())?;
        }
        let root = self.root();
        ensure_private_dir(&self.state_dir)?.ensure_dir("networks")?;
        let network = {
            let _global = self.lock_global()?;
            self.sweep_leftovers(&root);
            let dest = self.dir(name);
            if fs::symlink_metadata(dest.path()).is_ok() {
                return Err(NetworkError::Exists { name: name.to_owned() });
            }
            if driver == Driver::Switch {
                check_socket_path(&dest.socket())?;
            }
            let others = self.read_all()?;
            let subnet = match wanted {
                Some(subnet) => {
                    if let Some(other) = others.iter().find(|o| o.subnet.overlaps(&subnet)) {
                        return Err(NetworkError::Overlap {
                            subnet,
                            other: other.name.clone(),
                            other_subnet: other.subnet,
                        });
                    }
                    subnet
                }
                None => self.default_subnet(&others, driver)?,
            };
            let bridge = match driver {
                Driver::Bridge => Some(self.plan_bridge(name, subnet, &others)?),
                Driver::Switch => None,
            };
            let network = Network {
                name: name.to_owned(),
                subnet,
                driver,
                bridge,
            };
            // The directory is made out of sight, and names the bridge
            // before it exists: if we die before the rename, the next
            // create sweeps both.
            let tmp = root.join(format!(".tmp-{}-{}", std::process::id(), unique()));
            let mut made = populate(&tmp, &network);
            if let (Ok(()), Some(bridge)) = (&made, &network.bridge) {
                made = self.add_bridge(bridge, subnet);
            }
            let made = made.and_then(|()| {
                fs::rename(&tmp, dest.path()).map_err(|e| {
                    if let Some(bridge) = &network.bridge {
                        let _ = self.delete_bridge(bridge);
                    }
                    io_err("rename into place", dest.path())(e)
                })
            });
            if let Err(e) = made {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
            network
        };
        if driver == Driver::Bridge {
            return Ok(network);
        }
        if let Err(e) = self.ensure_switch(name) {
            // A network that cannot switch is no network; a VM that leased
            // an address in the meantime keeps it (remove refuses).
            let _ = self.remove(name);
            return Err(e);
        }
        Ok(network)
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<NetworkInfo>, NetworkError> {
        let mut out = Vec::new();
        for network in self.read_all()? {
            let dir = self.dir(&network.name);
            let switch_running = match &network.bridge {
                Some(bridge) => self.links.kind(bridge) == Some(LinkKind::Bridge),
                None => daemon::accepts(&dir.socket()),
            };
            out.push(NetworkInfo {
                switch_running,
                members: self.live_leases(&dir)?.len(),
                name: network.name,
                subnet: network.subnet,
                driver: network.driver,
                bridge: network.bridge,
            });
        }
        Ok(out)
    }

    /// Stops the switch of network `name` (or deletes its bridge, and any
    /// tap left of a VM that died) and deletes the network; refused while a
    /// VM holds a lease on it.
    pub fn remove(&self, name: &str) -> Result<(), NetworkError> {
        check_name("network", name)?;
        let dir = self.dir(name);
        if fs::symlink_metadata(dir.path()).is_err() {
            return Err(NetworkError::UnknownNetwork { name: name.to_owned() });
        }
        let _global = self.lock_global()?;
        let (_lock, config) = self.lock_network(name)?;
        let live = self.sweep_leases(&dir)?;
        if !live.is_empty() {
            return Err(NetworkError::InUse {
                name: name.to_owned(),
                members: live
                    .into_iter()
                    .map(|(ip, r)| super::Member { name: r.name, ip })
                    .collect(),
            });
        }
        if let Some(bridge) = &config.bridge {
            self.check_may_admin(|| format!("removing bridge network {name:?}"))?;
            self.sweep_taps(&config, &live)?;
            self.delete_bridge(bridge)?;
        }
        self.stop_switch(name);
        // Out of sight at once, then deleted: a crash halfway leaves a
        // hidden directory the next create sweeps.
        let doomed = self.root().join(format!(".rm-{}-{}", std::process::id(), unique()));
        fs::rename(dir.path(), &doomed).map_err(io_err("remove", dir.path()))?;
        fs::remove_dir_all(&doomed).map_err(io_err("remove", &doomed))
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
    fn read_all(&self) -> Result<Vec<Network>, NetworkError> {
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
    fn lock_global(&self) -> Result<Flock, NetworkError> {
        let path = self.state_dir.join("networks.lock");
        let file = PrivateDir::open(&self.state_dir)?.open_append("networks.lock")?;
        flock(&file).map_err(io_err("lock", &path))?;
        Ok(Flock(file))
    }

    /// Holds the lock of network `name` (leases, its switch) and returns
    /// its configuration. A network removed while we waited is unknown.
    pub(super) fn lock_network(&self, name: &str) -> Result<(Flock, Network), NetworkError> {
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
}

/// Writes a whole network directory at `tmp`: directories 0700, files
/// 0600, none of them through a link.
fn populate(tmp: &Path, network: &Network) -> Result<(), NetworkError> {
    let (root, name) = match (tmp.parent(), tmp.file_name().and_then(|n| n.to_str())) {
        (Some(root), Some(name)) => (root, name),
        _ => return Err(io_err("create", tmp)(io::ErrorKind::InvalidInput.into())),
    };
    let dir = PrivateDir::open(root)?.create_dir(name)?;
    dir.create_dir("leases")?;
    dir.create_file("lock")?;
    let mut json = serde_json::to_vec_pretty(network).expect("a Network serializes");
    json.push(b'\n');
    dir.create_file("network.json")?
        .write_all(&json)
        .map_err(io_err("write", dir.join("network.json")))
}

impl Networks {
    /// The first 10.89.N.0/24 that overlaps no network in `others` (and,
    /// for a bridge, none of the host's routes but its default route).
    fn default_subnet(&self, others: &[Network], driver: Driver) -> Result<Subnet, NetworkError> {
        let routes = match driver {
            Driver::Bridge => self.links.routes(),
            Driver::Switch => Vec::new(),
        };
        (0..=255u8)
            .map(|n| Subnet::new([10, 89, n, 0].into(), 24).expect("a valid /24"))
            .find(|s| {
                !others.iter().any(|o| o.subnet.overlaps(s))
                    && !routes
                        .iter()
                        .any(|r| r.prefix_len > 0 && s.overlaps_range(r.destination, r.prefix_len))
            })
            .ok_or(NetworkError::NoFreeSubnet)
    }

    /// Removes `.tmp-PID-*` and `.rm-PID-*` directories of processes that
    /// died halfway through creating or removing a network, and the bridge
    /// a half-made network names if no network has it. Call with the
    /// global lock held.
    fn sweep_leftovers(&self, root: &Path) {
        let Ok(entries) = fs::read_dir(root) else { return };
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
            let half_made = fs::read(entry.path().join("network.json"))
                .ok()
                .and_then(|json| serde_json::from_slice::<Network>(&json).ok());
            if let Some(bridge) = half_made.and_then(|n| n.bridge) {
                let others = self.read_all().unwrap_or_default();
                if !others.iter().any(|o| o.bridge.as_ref() == Some(&bridge)) {
                    let _ = self.delete_bridge(&bridge);
                }
            }
            let _ = fs::remove_dir_all(entry.path());
        }
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
pub(super) mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    /// Networks in a fresh state directory whose switches run on threads
    /// of this process.
    pub fn networks(tag: &str) -> (TestDir, Networks) {
        let dir = TestDir::new(tag);
        let mut networks = Networks::at(dir.path());
        networks.launcher = Launcher::InProcess;
        (dir, networks)
    }

    fn names(networks: &Networks) -> Vec<(String, String)> {
        let list = networks.list().unwrap();
        list.into_iter().map(|n| (n.name, n.subnet.to_string())).collect()
    }

    #[test]
    fn create_list_remove() {
        let (dir, networks) = networks("crud");
        assert_eq!(networks.list().unwrap(), vec![]);
        let a = networks.create("a", None, Driver::Switch).unwrap();
        assert_eq!(a.subnet.to_string(), "10.89.0.0/24");
        let b = networks.create("b", Some("192.168.50.0/24"), Driver::Switch).unwrap();
        assert_eq!(b.subnet.to_string(), "192.168.50.0/24");
        let c = networks.create("c", None, Driver::Switch).unwrap();
        assert_eq!(c.subnet.to_string(), "10.89.1.0/24");

        let list = networks.list().unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.iter().all(|n| n.switch_running && n.members == 0), "{list:?}");
        assert_eq!(
            names(&networks),
            [("a", "10.89.0.0/24"), ("b", "192.168.50.0/24"), ("c", "10.89.1.0/24")]
                .map(|(n, s)| (n.to_owned(), s.to_owned()))
        );
        let on_disk = dir.path().join("networks/a");
        let json: serde_json::Value = serde_json::from_slice(&fs::read(on_disk.join("network.json")).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "a", "subnet": "10.89.0.0/24", "driver": "switch"})
        );
        assert!(on_disk.join("leases").is_dir() && on_disk.join("lock").is_file());

        assert!(
            matches!(networks.create("a", None, Driver::Switch), Err(NetworkError::Exists { name }) if name == "a")
        );
        networks.remove("a").unwrap();
        assert!(!on_disk.exists());
        assert!(matches!(networks.remove("a"), Err(NetworkError::UnknownNetwork { name }) if name == "a"));
        assert!(matches!(networks.get("a"), Err(NetworkError::UnknownNetwork { .. })));
        // The freed default subnet is the first free one again.
        assert_eq!(
            networks.create("d", None, Driver::Switch).unwrap().subnet.to_string(),
            "10.89.0.0/24"
        );
        assert_eq!(names(&networks).len(), 3);
        // Nothing hidden left behind.
        let hidden: Vec<_> = fs::read_dir(dir.path().join("networks"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "{hidden:?}");
    }

    #[test]
    fn files_without_a_driver_are_switch_networks() {
        let (dir, networks) = networks("nodriver");
        networks.create("old", None, Driver::Switch).unwrap();
        let config = dir.path().join("networks/old/network.json");
        fs::write(&config, r#"{"name": "old", "subnet": "10.89.0.0/24"}"#).unwrap();
        let old = networks.get("old").unwrap();
        assert_eq!((old.driver, old.bridge), (Driver::Switch, None));
        assert_eq!(networks.list().unwrap()[0].driver, Driver::Switch);
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
        ] {
            fs::write(&config, json).unwrap();
            let err = networks.get("old").unwrap_err();
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
    fn bad_names_and_subnets_leave_nothing() {
        let (dir, networks) = networks("bad");
        for bad in ["", "../x", ".x", "a/b", "a b"] {
            assert!(
                matches!(
                    networks.create(bad, None, Driver::Switch),
                    Err(NetworkError::BadName { .. })
                ),
                "{bad:?}"
            );
            assert!(
                matches!(networks.remove(bad), Err(NetworkError::BadName { .. })),
                "{bad:?}"
            );
        }
        let err = networks.create("x", Some("10.1.2.5/24"), Driver::Switch).unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.1.2.5/24 has host bits set; did you mean 10.1.2.0/24?"
        );
        let err = networks.create("x", Some("10.0.0.0/16"), Driver::Switch).unwrap_err();
        assert!(matches!(err, NetworkError::Reserved { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("10.0.2.0/24, the NAT network QEMU user networking"),
            "{err}"
        );
        let err = networks.create("x", Some("127.0.0.0/24"), Driver::Switch).unwrap_err();
        assert!(err.to_string().contains("127.0.0.0/8"), "{err}");
        // Too long for a socket address under this state directory.
        let long = "n".repeat(64);
        let err = networks.create(&long, None, Driver::Switch).unwrap_err();
        assert!(
            matches!(err, NetworkError::SocketPathTooLong { len, .. } if len > 107),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("over the 107 a Unix socket address holds"),
            "{err}"
        );
        assert!(!dir.path().join("networks").join(&long).exists());
        assert_eq!(networks.list().unwrap(), vec![]);
    }

    #[test]
    fn overlapping_subnets_are_refused() {
        let (_dir, networks) = networks("overlap");
        networks.create("wide", Some("172.20.0.0/16"), Driver::Switch).unwrap();
        let err = networks
            .create("narrow", Some("172.20.5.0/24"), Driver::Switch)
            .unwrap_err();
        match &err {
            NetworkError::Overlap {
                subnet,
                other,
                other_subnet,
            } => {
                assert_eq!(subnet.to_string(), "172.20.5.0/24");
                assert_eq!(other, "wide");
                assert_eq!(other_subnet.to_string(), "172.20.0.0/16");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "subnet 172.20.5.0/24 overlaps 172.20.0.0/16 of network \"wide\""
        );
        // A default subnet steps around a user's choice.
        networks.create("mine", Some("10.89.0.0/23"), Driver::Switch).unwrap();
        assert_eq!(
            networks
                .create("auto", None, Driver::Switch)
                .unwrap()
                .subnet
                .to_string(),
            "10.89.2.0/24"
        );
    }

    #[test]
    fn concurrent_creates_get_distinct_default_subnets() {
        let (_dir, networks) = networks("concurrent-create");
        let subnets: Vec<Subnet> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let networks = &networks;
                    s.spawn(move || networks.create(&format!("n{i}"), None, Driver::Switch).unwrap().subnet)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut distinct = subnets.clone();
        distinct.sort_by_key(|s| u32::from(s.network()));
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "{subnets:?}");
        assert_eq!(distinct.last().unwrap().to_string(), "10.89.7.0/24");
    }

    #[test]
    fn leftovers_of_dead_processes_are_swept() {
        let (dir, networks) = networks("leftovers");
        let root = dir.path().join("networks");
        let dead = crate::network::process::dead_pid();
        fs::create_dir_all(root.join(format!(".tmp-{dead}-0/leases"))).unwrap();
        fs::create_dir_all(root.join(format!(".rm-{dead}-0"))).unwrap();
        let mine = root.join(format!(".tmp-{}-999999", std::process::id()));
        fs::create_dir_all(&mine).unwrap();
        networks.create("x", None, Driver::Switch).unwrap();
        let left: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(mine.exists());
    }
}

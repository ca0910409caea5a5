//! [`Networks`]: every operation on the networks of one state directory,
//! each a sequence of steps from the modules below it: the files
//! ([`super::store`]), the switch daemon ([`super::daemon`]), bridges and
//! taps ([`super::bridge`]) and leases ([`super::lease`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bridge;
use super::daemon::{Launcher, SwitchDaemon};
use super::error::{check_name, Member, NetworkError};
use super::lease::{self, Lease, PortBackend};
use super::links::{IpCommand, LinkKind, Links};
use super::process::Owner;
use super::store::{check_socket_path, Driver, Network, NetworkInfo, Store};
use super::subnet::Subnet;
use super::switch::accepts;

/// The networks of one state directory.
#[derive(Debug, Clone)]
pub struct Networks {
    /// Their files.
    store: Store,
    /// How their switches are started.
    launcher: Launcher,
    /// The host's network devices (bridge networks).
    links: Arc<dyn Links>,
}

impl Networks {
    /// The networks of the default state directory: `$VMSHIM_STATE_DIR`,
    /// else `$XDG_STATE_HOME/vmshim`, else `$HOME/.local/state/vmshim`.
    pub fn from_env() -> Result<Networks, NetworkError> {
        Ok(Networks::with_store(Store::from_env()?))
    }

    /// The networks of state directory `state_dir` (made absolute: the
    /// switch daemon runs in `/`).
    pub fn at(state_dir: impl Into<PathBuf>) -> Networks {
        Networks::with_store(Store::at(state_dir))
    }

    fn with_store(store: Store) -> Networks {
        Networks {
            store,
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

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.store.state_dir()
    }

    /// The switch daemon of network `name`.
    fn switch<'a>(&'a self, name: &'a str) -> SwitchDaemon<'a> {
        SwitchDaemon::new(self.store.state_dir(), name, self.store.dir(name))
    }

    /// Creates network `name` with `subnet` (default: the first free
    /// 10.89.N.0/24): starts its switch, or makes its bridge. On any error
    /// nothing is left.
    pub fn create(&self, name: &str, subnet: Option<&str>, driver: Driver) -> Result<Network, NetworkError> {
        check_name("network", name)?;
        let wanted = subnet.map(str::parse::<Subnet>).transpose()?;
        if let Some(subnet) = wanted {
            if let Some((range, why)) = subnet.reserved_overlap() {
                return Err(NetworkError::Reserved { subnet, range, why });
            }
        }
        if driver == Driver::Bridge {
            bridge::check_may_admin(&*self.links, || "a network with the bridge driver".to_owned())?;
        }
        self.store.ensure_root()?;
        let network = {
            let _global = self.store.lock_global()?;
            self.sweep_leftovers();
            if self.store.exists(name) {
                return Err(NetworkError::Exists { name: name.to_owned() });
            }
            if driver == Driver::Switch {
                check_socket_path(&self.store.dir(name).socket())?;
            }
            let others = self.store.read_all()?;
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
                Driver::Bridge => Some(bridge::plan_bridge(&*self.links, name, subnet, &others)?),
                Driver::Switch => None,
            };
            let network = Network {
                name: name.to_owned(),
                subnet,
                driver,
                bridge,
            };
            // The directory is made out of sight, and names the bridge
            // before it exists: if we die before it is in place, the next
            // create sweeps both.
            let staged = self.store.stage(&network)?;
            if let Some(bridge) = &network.bridge {
                bridge::add_bridge(&*self.links, bridge, subnet)?;
            }
            if let Err(e) = staged.commit() {
                if let Some(bridge) = &network.bridge {
                    let _ = bridge::delete_bridge(&*self.links, bridge);
                }
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
        for network in self.store.read_all()? {
            let dir = self.store.dir(&network.name);
            let switch_running = match &network.bridge {
                Some(bridge) => self.links.kind(bridge) == Some(LinkKind::Bridge),
                None => accepts(&dir.socket()),
            };
            out.push(NetworkInfo {
                switch_running,
                members: lease::live_leases(&dir)?.len(),
                name: network.name,
                subnet: network.subnet,
                driver: network.driver,
                bridge: network.bridge,
            });
        }
        Ok(out)
    }

    /// The configuration of network `name`.
    pub fn get(&self, name: &str) -> Result<Network, NetworkError> {
        self.store.get(name)
    }

    /// Stops the switch of network `name` (or deletes its bridge, and any
    /// tap left of a VM that died) and deletes the network; refused while a
    /// VM holds a lease on it.
    pub fn remove(&self, name: &str) -> Result<(), NetworkError> {
        check_name("network", name)?;
        if !self.store.exists(name) {
            return Err(NetworkError::UnknownNetwork { name: name.to_owned() });
        }
        let _global = self.store.lock_global()?;
        let (_lock, config) = self.store.lock_network(name)?;
        let live = lease::sweep_leases(&self.store.dir(name))?;
        if !live.is_empty() {
            return Err(NetworkError::InUse {
                name: name.to_owned(),
                members: live.into_iter().map(|(ip, r)| Member { name: r.name, ip }).collect(),
            });
        }
        if let Some(bridge) = &config.bridge {
            bridge::check_may_admin(&*self.links, || format!("removing bridge network {name:?}"))?;
            bridge::sweep_taps(&*self.links, &config, &live)?;
            bridge::delete_bridge(&*self.links, bridge)?;
        }
        self.switch(name).stop();
        self.store.delete(name)
    }

    /// Makes sure the switch of `network` is running and returns its socket:
    /// if the socket does not accept a connection, (re)starts the daemon and
    /// waits until it does (5 seconds at most). Blocks meanwhile.
    pub fn ensure_switch(&self, network: &str) -> Result<PathBuf, NetworkError> {
        let (_lock, config) = self.store.lock_network(network)?;
        if config.driver != Driver::Switch {
            return Err(NetworkError::NoSwitch {
                name: network.to_owned(),
            });
        }
        self.switch(network).ensure(&self.launcher)
    }

    /// Leases an address on `network` for the VM `owner_name`, held by
    /// this process: `requested`, or the lowest free one from .2 up (.1 is
    /// the gateway: the host's address on a bridge). The switch is running
    /// when this returns; on a bridge network, the VM's tap is made and on
    /// the bridge (which is made again if it is gone).
    pub fn lease(&self, network: &str, owner_name: &str, requested: Option<Ipv4Addr>) -> Result<Lease, NetworkError> {
        self.lease_for(network, owner_name, requested, Owner::current())
    }

    /// [`Networks::lease`], held by `owner`.
    fn lease_for(
        &self,
        network: &str,
        owner_name: &str,
        requested: Option<Ipv4Addr>,
        owner: Owner,
    ) -> Result<Lease, NetworkError> {
        check_name("VM", owner_name)?;
        let (_lock, config) = self.store.lock_network(network)?;
        if config.bridge.is_some() {
            bridge::check_may_admin(&*self.links, || {
                format!("joining bridge network {network:?} (through a tap device)")
            })?;
        }
        let dir = self.store.dir(network);
        let live = lease::sweep_leases(&dir)?;
        if let Some((ip, _)) = live.iter().find(|(_, r)| r.name.eq_ignore_ascii_case(owner_name)) {
            return Err(NetworkError::NameTaken {
                network: network.to_owned(),
                name: owner_name.to_owned(),
                ip: *ip,
            });
        }
        let ip = lease::choose_address(network, config.subnet, &live, requested, |r| r.name.clone())?;
        let backend = match config.bridge {
            Some(_) => PortBackend::Tap {
                ifname: bridge::tap_name(ip),
            },
            None => PortBackend::Switch { socket: dir.socket() },
        };
        let mut lease = Lease::write(&dir, network, owner_name, ip, config.subnet, owner, backend)?;
        // Dropping the lease on error gives the address back.
        match &config.bridge {
            None => {
                self.switch(network).ensure(&self.launcher)?;
            }
            Some(_) => {
                let bridge = bridge::ensure_bridge(&*self.links, &config, &dir.config())?;
                bridge::sweep_taps(&*self.links, &config, &live)?;
                lease.attach_tap(bridge::plug_tap(&self.links, bridge, ip)?);
            }
        }
        Ok(lease)
    }

    /// The VMs on `network` now, by address. Takes no lock.
    pub fn members(&self, network: &str) -> Result<Vec<Member>, NetworkError> {
        self.store.get(network)?;
        let live = lease::live_leases(&self.store.dir(network))?;
        Ok(live.into_iter().map(|(ip, r)| Member { name: r.name, ip }).collect())
    }

    /// The switch daemon's body (`vmshim network serve NAME`): serves the
    /// network's socket until SIGTERM or SIGINT, or until the socket is
    /// removed (the network deleted by hand); then removes its socket and
    /// pid file.
    pub async fn serve(&self, name: &str) -> Result<(), NetworkError> {
        check_name("network", name)?;
        let network = self.store.get(name)?;
        if network.driver != Driver::Switch {
            return Err(NetworkError::NoSwitch { name: name.to_owned() });
        }
        self.switch(name).serve(&network).await
    }

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

    /// Removes the directories of processes that died halfway through
    /// creating or removing a network, and the bridge a half-made network
    /// names if no network has it. Call with the global lock held.
    fn sweep_leftovers(&self) {
        for leftover in self.store.leftovers() {
            if let Some(bridge) = leftover.network.as_ref().and_then(|n| n.bridge.as_ref()) {
                let others = self.store.read_all().unwrap_or_default();
                if !others.iter().any(|o| o.bridge.as_ref() == Some(bridge)) {
                    let _ = bridge::delete_bridge(&*self.links, bridge);
                }
            }
            leftover.remove();
        }
    }
}

#[cfg(test)]
mod bridge_tests;
#[cfg(test)]
mod tests;

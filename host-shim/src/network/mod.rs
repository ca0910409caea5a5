//! Virtual networks that join VMs to each other, with one of two drivers.
//!
//! **switch** (the default; no root needed): the network is a small
//! Ethernet switch on a Unix socket; a VM joins it through QEMU's `stream`
//! netdev, which carries every Ethernet frame as a 4-byte big-endian length
//! followed by the frame. Each VM's port is bound to the MAC and IPv4
//! address it leased: frames from any other source are dropped
//! (the `switch` module):
//!
//! ```text
//! -netdev stream,id=switch,server=off,addr.type=unix,addr.path=SWITCH_SOCKET
//! -device virtio-net-device,netdev=switch,mac=02:56:4d:..
//! ```
//!
//! No multicast, no TAP device, no root: traffic never leaves the switch.
//!
//! **bridge** (root, or CAP_NET_ADMIN): the network is a Linux bridge
//! holding the subnet's gateway address, so the host reaches the VMs at
//! their addresses; each VM joins it through a tap device of its own
//! (the `bridge` module):
//!
//! ```text
//! -netdev tap,id=switch,ifname=vmtap-0a590002,script=no,downscript=no
//! -device virtio-net-device,netdev=switch,mac=02:56:4d:..
//! ```
//!
//! State lives in `$VMSHIM_STATE_DIR/networks/NAME/` (the state directory is
//! `${XDG_STATE_HOME:-$HOME/.local/state}/vmshim` by default):
//!
//! | file | what |
//! |---|---|
//! | `network.json` | `{"name": .., "subnet": "10.89.0.0/24", "driver": "switch"}`, and `"bridge": "vmbr-.."` for a bridge network (a file without `driver` is a switch network) |
//! | `lock` | `flock`ed by whoever changes leases, starts the switch or makes taps |
//! | `switch.sock`, `switch.pid`, `switch.log` | the switch daemon (its log rotated to `switch.log.1` at `$VMSHIM_LOG_MAX_SIZE`) |
//! | `leases/<ip>` | `{"name": .., "pid": .., "started": .., "mac": ..}`: one VM each |
//!
//! The state directory, `networks/` and every directory in it are 0700, and
//! every file (the socket too) 0600, whatever the umask; a state directory
//! that is a link, another user's, or that others may write to is refused
//! ([`crate::PrivateError`]).
//!
//! `$STATE/networks.lock` serialises creating and removing networks, so two
//! networks never get overlapping subnets.
//!
//! * [`create`], [`list`], [`remove`]: networks.
//! * [`lease()`], [`members`]: addresses for VMs, and who is on a network.
//! * [`ensure_switch`]: the switch daemon, started when missing.
//! * [`serve_switch`]: the switch itself, each port bound to its VM's
//!   lease.
//! * [`HostsFile`]: a guest's `/etc/hosts`, kept current with the network.
//!
//! The free functions use the default state directory; [`Networks::at`]
//! picks another (tests, host runtimes with their own state).
//!
//! The modules, each importing only those below it:
//!
//! | module | what |
//! |---|---|
//! | `hosts` | a guest's `/etc/hosts` entries |
//! | `networks` | [`Networks`]: every operation, as steps of the modules below |
//! | `daemon` | the switch daemon: started, stopped, served; detached daemons |
//! | `switch` | the switch: ports, frames, forwarding |
//! | `binding` | what a port may send as, from the lease of its QEMU |
//! | `lease` | lease files, addresses, MACs |
//! | `bridge` | the bridge driver: bridges and taps |
//! | `store` | networks on disk: directories, `network.json`, locks |
//! | `links` | the host's network devices (`ip`), and their names |
//! | `subnet` | IPv4 subnets |
//! | `process` | whether a process named in a file still runs |
//! | `error` | [`NetworkError`], the names networks and VMs may have |
//!
//! QEMU 7.2's stream netdev does not reconnect: a VM keeps its network only
//! while the switch that was running when it booted keeps running. That is
//! why [`remove`] refuses a network with VMs on it, and why the switch runs
//! as a daemon of its own rather than inside any one vmshim.

mod binding;
mod bridge;
pub(crate) mod daemon;
mod error;
mod hosts;
mod lease;
mod links;
mod networks;
pub(crate) mod process;
mod store;
mod subnet;
mod switch;

use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use error::{check_name, Member, NetworkError, NAME_RULE};
pub use hosts::{HostsError, HostsFile};
pub use lease::{format_mac, mac_for, Lease, PortBackend};
pub use networks::Networks;
pub use store::{Driver, Network, NetworkInfo};
pub use subnet::{Subnet, SubnetError};
pub use switch::serve_switch;

/// Creates network `name` with `subnet` (default: the first free
/// 10.89.N.0/24): starts its switch, or makes its bridge.
pub fn create(name: &str, subnet: Option<&str>, driver: Driver) -> Result<Network, NetworkError> {
    Networks::from_env()?.create(name, subnet, driver)
}

/// Every network, by name.
pub fn list() -> Result<Vec<NetworkInfo>, NetworkError> {
    Networks::from_env()?.list()
}

/// Stops the switch of network `name` (or deletes its bridge) and deletes
/// it; refused while VMs are on it.
pub fn remove(name: &str) -> Result<(), NetworkError> {
    Networks::from_env()?.remove(name)
}

/// Makes sure the switch of `network` is running; returns its socket.
/// Blocks for up to 5 seconds while a switch starts.
pub fn ensure_switch(network: &str) -> Result<PathBuf, NetworkError> {
    Networks::from_env()?.ensure_switch(network)
}

/// Leases an address on `network` for the VM `owner_name`, owned by this
/// process: `requested`, or the lowest free one. The switch is running (or
/// the VM's tap is on the bridge) when this returns; dropping the [`Lease`]
/// gives the address back (and deletes the tap).
pub fn lease(network: &str, owner_name: &str, requested: Option<Ipv4Addr>) -> Result<Lease, NetworkError> {
    Networks::from_env()?.lease(network, owner_name, requested)
}

/// The VMs on `network` now, by address.
pub fn members(network: &str) -> Result<Vec<Member>, NetworkError> {
    Networks::from_env()?.members(network)
}

//! The guest's `/etc/hosts` on a vmshim network: the host, and every VM on
//! the network by name, kept current as VMs come and go. Whoever holds a
//! VM on a network (`vmshim run`, an instance daemon) runs this beside it.

use std::time::Duration;

use agent_proto::{HostEntry, NetworkConfig, Op};

use super::error::NetworkError;
use super::networks::Networks;
use crate::client::{Client, ClientError};
use crate::vm::net::{HOST_ALIAS, NAT_HOST};

/// How often the VMs of a network are looked up again.
const HOSTS_REFRESH: Duration = Duration::from_millis(250);

/// Why the guest's hosts entries could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// The network's leases could not be read.
    #[error("cannot list the VMs of the network: {0}")]
    Members(#[from] NetworkError),
    /// The agent refused the entries, or could not be reached.
    #[error("cannot send the guest its /etc/hosts entries: {0}")]
    Agent(#[from] ClientError),
}

/// The entries last sent to one guest.
#[derive(Default)]
pub struct HostsFile {
    sent: Option<Vec<HostEntry>>,
}

impl HostsFile {
    /// Sends the entries for `network` if they changed since the last time.
    pub async fn refresh(&mut self, client: &Client, networks: &Networks, network: &str) -> Result<(), HostsError> {
        let mut entries = vec![HostEntry {
            address: NAT_HOST.to_string(),
            names: vec![HOST_ALIAS.to_owned()],
        }];
        for member in networks.members(network)? {
            entries.push(HostEntry {
                address: member.ip.to_string(),
                names: vec![member.name],
            });
        }
        if self.sent.as_ref() != Some(&entries) {
            let config = NetworkConfig {
                hosts: Some(entries.clone()),
                ..Default::default()
            };
            client.call::<()>(Op::ConfigureNetwork(config)).await?;
            self.sent = Some(entries);
        }
        Ok(())
    }

    /// Refreshes until cancelled; a failed look-up is retried next time.
    pub async fn keep_current(
        &mut self,
        client: &Client,
        networks: &Networks,
        network: &str,
    ) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(HOSTS_REFRESH).await;
            let _ = self.refresh(client, networks, network).await;
        }
    }
}

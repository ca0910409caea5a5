//! PID 1's own work: the boot of the guest and its end. The settings
//! (`config.rs`), stdio and arguments (`console.rs`), dying and powering
//! off (`fatal.rs`), the kernel's filesystems (`mounts.rs`), the agent's
//! protection from its workloads (`protect.rs`), the memory it frees
//! reported to the host in small blocks (`memory.rs`), the processes' root
//! filesystem (`rootfs.rs`), the host's share of files (`shares.rs`),
//! the network (`network.rs`) and the name servers it relays to the host
//! (`dns_relay.rs`), the guest's figures (`stats.rs`) and the
//! orderly end (`shutdown.rs`); `boot.rs` runs the start, step by step.
//!
//! A sibling of the container engine: neither imports the other. What the
//! guest's boot decides for processes and containers (their root
//! filesystem's status, the defaults their children start from) goes
//! down to the process and child layers, where both read it.

pub mod boot;
pub(crate) mod config;
pub(crate) mod console;
pub(crate) mod dns_relay;
pub(crate) mod fatal;
pub(crate) mod memory;
pub(crate) mod mounts;
pub(crate) mod network;
pub(crate) mod protect;
pub(crate) mod rootfs;
pub(crate) mod shares;
pub(crate) mod shutdown;
pub(crate) mod stats;

//! vminitd: the PID 1 and agent of a vminitd micro-VM, as a library in
//! layers. Each layer imports only from the layers below it (the
//! `layers` test of the workspace checks it):
//!
//! ```text
//! rpc        the agent: accept loop, sessions, access, errors on the wire
//! guest      PID 1's boot and end      container  the OCI container engine
//! process    the agent's processes: table, start, stdio, reaper
//! child      between fork and exec: spawn, root, namespaces, setup, security
//! sys        descriptors, /proc, terminals, rtnetlink, the boot clock, the log
//! ```
//!
//! `guest` and `container` are siblings: neither imports the other. The
//! binary (`main.rs`) only hands its C arguments to [`main`]; the start
//! reads top to bottom in `guest::boot::boot` and `rpc::serve`.

#[macro_use]
pub mod sys;

pub mod child;
pub mod container;
pub(crate) mod guest;
pub mod process;
pub(crate) mod rpc;

use std::ffi::{c_char, c_int};

use guest::{console, fatal};
use sys::timeline::Timeline;

/// The whole of vminitd: the boot, the runtime, the agent serving until
/// the shutdown, which ends the process (or the machine).
///
/// # Safety
/// `argc` and `argv` as the C start-up code passes them to `main`.
pub unsafe fn main(argc: c_int, argv: *const *const c_char) -> ! {
    let timeline = Timeline::entered();
    // SAFETY: the caller passes main's valid argc/argv.
    let args = unsafe { console::args_from_c(argc, argv) };
    let booted = guest::boot::boot(timeline, args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal::die(&format_args!("cannot start the async runtime: {e}")));
    match runtime.block_on(rpc::serve(booted)) {}
}

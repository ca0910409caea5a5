//! The `vminitd` binary: the library's [`vminitd::main`] behind a C `main`.
//!
//! vminitd brings its own C `main` (`no_main`): the Rust start-up code would
//! abort when fds 0-2 are closed and `/dev/null` is missing, which an init
//! must instead repair (see `guest/console.rs`).

#![no_main]

use std::ffi::{c_char, c_int};

/// The C entry point.
#[no_mangle]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: the C start-up code passes `main` a valid argc/argv.
    unsafe { vminitd::main(argc, argv) }
}

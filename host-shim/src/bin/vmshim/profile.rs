//! `vmshim profile`: a boot profile written by `vmshim run --profile=FILE`,
//! as a table, or two of them side by side.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use host_shim::profile::{compare, Profile};

#[derive(Args)]
pub struct ProfileArgs {
    /// A trace written by `vmshim run --profile=FILE`.
    #[arg(value_name = "TRACE")]
    trace: PathBuf,
    /// A second trace: each phase's time in both, the difference, and the
    /// phase and the kernel initcalls that grew.
    #[arg(value_name = "OTHER")]
    other: Option<PathBuf>,
}

pub fn run(args: ProfileArgs) -> Result<u8> {
    let first = read(&args.trace)?;
    match &args.other {
        None => print!("{}", first.table()),
        Some(other) => {
            let second = read(other)?;
            println!("A: {}\nB: {}", args.trace.display(), other.display());
            print!("{}", compare::compare(&first, &second));
        }
    }
    Ok(0)
}

/// The profile in the trace at `path`.
fn read(path: &Path) -> Result<Profile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
    Profile::from_chrome_trace(&json).with_context(|| format!("{}", path.display()))
}

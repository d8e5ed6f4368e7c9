//! Ctrl-C and SIGTERM as a flag, so that a measurement stops its load and its guards' `Drop`
//! stop every process it started. A second signal ends the bench at once; processes it started
//! then die with it (`PR_SET_PDEATHSIG`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use signal_hook::consts::{SIGINT, SIGTERM};

/// A flag set by the first SIGINT or SIGTERM.
///
/// # Errors
/// The handlers cannot be installed.
pub fn flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The second signal, with the flag already set, exits.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

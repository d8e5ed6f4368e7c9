//! Ctrl-C: the first stops the command between two chunks of data, so that a download keeps
//! its `.part` file and ferry can say how to resume it; on the command line a second one ends
//! ferry at once (a wait for a server's reply can last as long as `--timeout`, or longer while a
//! server hashes a large file).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::SIGINT;
use signal_hook::iterator::Signals;

use ferry_client::exit;

/// Sets `flag` on each Ctrl-C, from a thread of its own. With `second_ends_ferry`, a Ctrl-C
/// while `flag` is still set puts the terminal back and exits with status 130.
///
/// # Errors
/// The signal handler could not be installed.
pub fn catch(flag: Arc<AtomicBool>, second_ends_ferry: bool) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT])?;
    std::thread::Builder::new().name("ferry-ctrl-c".into()).spawn(move || {
        for _ in signals.forever() {
            if flag.swap(true, Ordering::SeqCst) && second_ends_ferry {
                crate::terminal::restore();
                eprintln!("\nferry: interrupted twice; stopping at once");
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    })?;
    Ok(())
}

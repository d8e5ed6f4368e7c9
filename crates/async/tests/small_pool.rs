//! The async engine on a runtime whose blocking pool has only four threads. The engine's design
//! says no pool thread ever waits — for a client, or for a hash permit (`[SEC-3]`) — so a small
//! pool must serve as well as tokio's default of 512; with the default, a bug that parks pool
//! threads only shows under hundreds of clients.

use ferry_testkit::{Handle, ANY_LOOPBACK_PORT};

/// Pool threads: more than the one hash the case below allows at once, far fewer than its
/// waiting GETs.
const POOL: usize = 4;

fn start_small_pool(settings: ferry_core::Settings) -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-async")
        .max_blocking_threads(POOL)
        .build()?;
    let running = ferry_async::spawn_on(rt, settings, ANY_LOOPBACK_PORT)?;
    Ok(Handle::new(running.addr, running.server.clone(), move || running.wait()))
}

#[test]
fn gets_waiting_for_a_hash_do_not_hold_up_other_clients() {
    ferry_testkit::suite::gets_waiting_for_a_hash_do_not_hold_up_other_clients(start_small_pool);
}

//! The server integration suite (ferry-testkit) against the async engine: the same cases as the
//! blocking engine's, changing only the engine.

fn start(settings: ferry_core::Settings) -> std::io::Result<ferry_testkit::Handle> {
    let running = ferry_async::spawn(settings, ferry_testkit::ANY_LOOPBACK_PORT)?;
    Ok(ferry_testkit::Handle::new(running.addr, running.server.clone(), move || running.wait()))
}

ferry_testkit::server_suite!(start);

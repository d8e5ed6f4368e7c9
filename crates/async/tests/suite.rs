//! The server integration suite (ferry-testkit) against the async engine: the same cases as the
//! blocking engine's, changing only the engine. Clients use its plain listener; the TLS cases
//! use the TLS listener it opens beside it.

fn start(settings: ferry_core::Settings) -> std::io::Result<ferry_testkit::Handle> {
    let tls = Some((ferry_testkit::ANY_LOOPBACK_PORT, ferry_testkit::tls::server_config()));
    let running = ferry_async::spawn_with(ferry_async::runtime(0)?, settings, ferry_testkit::ANY_LOOPBACK_PORT, tls)?;
    let (plain, tls) = (running.addr, running.tls_addr);
    Ok(ferry_testkit::Handle::new(plain, running.server.clone(), move || running.wait()).listeners(plain, tls))
}

ferry_testkit::server_suite!(start);

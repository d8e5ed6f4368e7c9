//! The server integration suite against the blocking engine's TLS listener (PROTOCOL.md § 18):
//! every case, each connection inside TLS.

fn start(settings: ferry_core::Settings) -> std::io::Result<ferry_testkit::Handle> {
    ferry_testkit::tls::use_tls();
    let tls = Some((ferry_testkit::ANY_LOOPBACK_PORT, ferry_testkit::tls::server_config()));
    let running = ferry_blocking::spawn_with(settings, ferry_testkit::ANY_LOOPBACK_PORT, tls)?;
    let (plain, tls) = (running.addr, running.tls_addr.expect("a TLS listener"));
    Ok(ferry_testkit::Handle::new(tls, running.server.clone(), move || running.wait()).listeners(plain, Some(tls)))
}

ferry_testkit::server_suite!(start);

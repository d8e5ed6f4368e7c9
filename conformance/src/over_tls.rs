//! A run with every case over TLS (`conformance run --over-tls`, or `--tls` without a plain
//! address): the relay the cases connect to ([`crate::tls_relay`]), what a case may ask about it
//! ([`Relayed`]), and the line that says so in every report format.

use std::net::SocketAddr;
use std::time::Duration;

use crate::case::TlsTarget;
use crate::tls_relay::{Directory, RelayError, TlsRelay, Upstream};

/// What a case of a run over TLS may need to know about the relay.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The server's plain listener, when the run was given one: the one check that needs a plain
    /// port (a TLS ClientHello sent to it, in `tls.wrong-port`) uses it.
    pub plain: Option<SocketAddr>,
    /// Which address the server sees for each relayed connection.
    pub directory: Directory,
}

/// Starts the relay to `tls` (after one TLS connection proved it reachable, its certificate and
/// ALPN right); `timeout` bounds each connect and handshake. The relay, and what the run's
/// [`TlsTarget::relayed`] becomes.
///
/// # Errors
/// The client configuration cannot be made (the CA file), or [`TlsRelay::start`] fails.
pub fn start(tls: &TlsTarget, plain: Option<SocketAddr>, timeout: Duration) -> Result<(TlsRelay, Relayed), String> {
    let config = ferry_tls::client_config(&tls.trust).map_err(|e| e.to_string())?;
    let name = ferry_tls::server_name(&tls.sni).map_err(|e| e.to_string())?;
    let relay = TlsRelay::start(Upstream { addr: tls.addr, config, name, timeout })
        .map_err(|e: RelayError| format!("over TLS: {e}"))?;
    let relayed = Relayed { plain, directory: relay.directory() };
    Ok((relay, relayed))
}

/// How the report says that the run was over TLS.
fn transport(tls: &TlsTarget) -> String {
    format!("TLS 1.3 to {} (certificate checked for {}), every case through the suite's relay", tls.addr, tls.sni)
}

/// The text report of a run over TLS: the transport on its first line.
pub fn mark_text(report: &str, tls: &TlsTarget) -> String {
    format!("over {}\n\n{report}", transport(tls))
}

/// The JSON report of a run over TLS: a `"transport"` member beside the others.
pub fn mark_json(report: &str, tls: &TlsTarget) -> String {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str::<serde_json::Value>(report) else {
        return report.to_owned();
    };
    fields.insert(
        "transport".into(),
        serde_json::json!({ "tls": tls.addr.to_string(), "sni": tls.sni, "over_tls": true, "summary": transport(tls) }),
    );
    serde_json::to_string_pretty(&serde_json::Value::Object(fields)).unwrap_or_else(|_| report.to_owned())
}

/// The JUnit report of a run over TLS: the suite's name says it, and a property gives the
/// details.
pub fn mark_junit(report: &str, tls: &TlsTarget) -> String {
    const SUITE: &str = "<testsuite name=\"ferry-conformance\"";
    let Some(start) = report.find(SUITE) else { return report.to_owned() };
    let Some(end) = report[start..].find('>').map(|i| start + i + 1) else { return report.to_owned() };
    let detail = transport(tls).replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "{}<testsuite name=\"ferry-conformance over TLS\"{}\n<properties><property name=\"transport\" value=\"{detail}\"/></properties>{}",
        &report[..start],
        &report[start + SUITE.len()..end],
        &report[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> TlsTarget {
        TlsTarget {
            addr: "127.0.0.1:9443".parse().unwrap(),
            trust: ferry_tls::Trust::WebPki,
            sni: "localhost".into(),
            relayed: None,
        }
    }

    #[test]
    fn every_report_format_says_the_run_was_over_tls() {
        let text = mark_text("PASS x\n", &tls());
        assert!(text.starts_with("over TLS 1.3 to 127.0.0.1:9443 (certificate checked for localhost)"), "{text}");
        assert!(text.ends_with("PASS x\n"));
        let json: serde_json::Value =
            serde_json::from_str(&mark_json(r#"{"seed": 3, "cases": []}"#, &tls())).expect("still JSON");
        assert_eq!(json["transport"]["over_tls"], true);
        assert_eq!(json["transport"]["tls"], "127.0.0.1:9443");
        assert_eq!(json["seed"], 3);
        let junit = mark_junit(
            "<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"ferry-conformance\" tests=\"1\">\n  <testcase/>\n</testsuite></testsuites>\n",
            &tls(),
        );
        assert!(
            junit.contains("<testsuite name=\"ferry-conformance over TLS\" tests=\"1\">\n<properties><property name=\"transport\" value=\"TLS 1.3 to 127.0.0.1:9443"),
            "{junit}"
        );
        assert!(junit.ends_with("</properties>\n  <testcase/>\n</testsuite></testsuites>\n"), "{junit}");
    }
}

//! Who may use the API and the console when no admin token is set: programs on this
//! machine, not a web page the operator happens to have open.
//!
//! Without `admin_token` lockstep listens on loopback only (`config.rs` refuses anything
//! else), so its callers are local. A browser is the one local client that acts for
//! someone else: a page on another site can send it a POST (a "simple" cross-origin
//! request needs no preflight), and a host name that first resolves to the attacker and
//! then to 127.0.0.1 (DNS rebinding) makes such a page same-origin with us, able to read
//! the console and its form token. Two checks close both:
//!
//! - the `Host` a request names must be a loopback name or address (`localhost`,
//!   `127.0.0.0/8`, `[::1]`): a rebound name is not;
//! - a request that changes something (any method but GET and HEAD) and carries an
//!   `Origin` must come from this server's own origin, `http://{Host}`.
//!
//! Programs (curl, the CLI, a channel's tunnel) send no `Origin`. Webhooks are not
//! checked here: they are signed, and a tunnel forwards them under its own host name.

use std::net::IpAddr;

use hyper::header::{HOST, ORIGIN};
use hyper::{HeaderMap, Method, StatusCode};

use super::error::ApiError;

/// Refuses a request a browser made for another site (see the module doc).
pub fn check(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let host = text(HOST);
    if let Some(host) = host {
        if !is_loopback_host(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_local",
                format!(
                    "Host {host:?} is not this machine's loopback: without an admin_token only \
                     local callers are served (a proxy or another name needs admin_token set)"
                ),
            ));
        }
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    match (text(ORIGIN), host) {
        (None, _) => Ok(()),
        (Some(origin), Some(host)) if origin == format!("http://{host}") => Ok(()),
        (Some(origin), _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!(
                "a request from the web page at {origin:?} is refused: without an admin_token \
                 only this server's own pages may change anything"
            ),
        )),
    }
}

/// `localhost`, a loopback IPv4 address or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:7700`: the address is inside the brackets.
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn local_hosts_pass_and_rebound_names_do_not() {
        for host in [
            "127.0.0.1:7700",
            "localhost:7700",
            "LOCALHOST",
            "[::1]:7700",
            "127.1.2.3",
        ] {
            assert!(
                check(&Method::GET, &headers(&[("host", host)])).is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example:7700",
            "10.0.0.1:7700",
            "[::2]:7700",
            "localhost.evil.example",
        ] {
            let err = check(&Method::GET, &headers(&[("host", host)])).unwrap_err();
            assert_eq!(err.code, "host_not_local", "{host}");
        }
        // No Host at all (HTTP/1.0): a program, served.
        assert!(check(&Method::POST, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn a_change_from_another_origin_is_refused_and_our_own_pages_pass() {
        let host = ("host", "127.0.0.1:7700");
        assert!(check(&Method::POST, &headers(&[host])).is_ok());
        assert!(check(
            &Method::POST,
            &headers(&[host, ("origin", "http://127.0.0.1:7700")])
        )
        .is_ok());
        for origin in [
            "https://evil.example",
            "null",
            "http://127.0.0.1:7701",
            "http://localhost:7700",
        ] {
            let err = check(&Method::POST, &headers(&[host, ("origin", origin)])).unwrap_err();
            assert_eq!(err.code, "cross_origin", "{origin}");
        }
        // Reading is not changing: a page elsewhere cannot read the answer anyway.
        assert!(check(
            &Method::GET,
            &headers(&[host, ("origin", "https://evil.example")])
        )
        .is_ok());
    }
}

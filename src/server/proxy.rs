//! The client's address behind trusted reverse proxies (`[server] trusted_proxies`).
//!
//! A request from a trusted proxy has its `ConnectInfo` replaced, before any route sees it,
//! by the right-most address of its `Forwarded` (RFC 7239; preferred) or `X-Forwarded-For`
//! header that is not itself a trusted proxy. Every later use of the client address (token
//! IP ranges, per-address upload caps, refusal throttles, the audit log) then sees the
//! client, not the proxy. A request from anywhere else keeps its peer address, whatever
//! headers it sends: only a proxy we trust may tell us who the client is.

use crate::server::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The client of a request that arrived from `peer`.
pub fn client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain: Vec<Option<IpAddr>> = if headers.contains_key("forwarded") {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(forwarded_for)
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().parse::<IpAddr>().ok())
            .collect()
    };
    // From the right: each trusted hop passes the word on; the first untrusted one is the
    // client. Something unreadable ("unknown", an obfuscated name) ends the walk at the last
    // hop we trust.
    let mut current = peer;
    for hop in chain.into_iter().rev() {
        match hop {
            Some(a) if is_trusted(&a) => current = a,
            Some(a) => return a.to_canonical(),
            None => return current,
        }
    }
    current
}

/// The `for=` address of one `Forwarded` element, if it names one.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let v = value.trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        // "[2001:db8::1]:4711" or "[2001:db8::1]"
        return rest.split(']').next()?.parse().ok();
    }
    // "192.0.2.43" or "192.0.2.43:4711"
    v.split(':').next()?.parse().ok()
}

/// Middleware: rewrites `ConnectInfo` for requests from trusted proxies.
pub async fn real_client(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let trusted = &app.settings.server.trusted_proxies;
    if !trusted.is_empty() {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied()
        {
            let ip = client(peer.ip().to_canonical(), req.headers(), trusted);
            if ip != peer.ip().to_canonical() {
                req.extensions_mut()
                    .insert(ConnectInfo(SocketAddr::new(ip, 0)));
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = h(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            client(ip("198.51.100.1"), &xff, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client(ip("10.1.2.3"), &xff, &trusted), ip("203.0.113.7"));
        assert_eq!(client(ip("10.1.2.3"), &h(&[]), &trusted), ip("10.1.2.3"));
        assert_eq!(client(ip("10.1.2.3"), &xff, &[]), ip("10.1.2.3"));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = ip("10.0.0.1");
        // A client who forges the left of the header gains nothing.
        let forged = h(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.0.0.9")]);
        assert_eq!(client(peer, &forged, &trusted), ip("203.0.113.7"));
        // Two headers read as one list, in order.
        let two = h(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        assert_eq!(client(peer, &two, &trusted), ip("203.0.113.8"));
        // Every hop trusted: the left-most.
        let all = h(&[("x-forwarded-for", "10.9.9.9, 10.0.0.9")]);
        assert_eq!(client(peer, &all, &trusted), ip("10.9.9.9"));
        // Unreadable: the last trusted hop.
        let junk = h(&[("x-forwarded-for", "1.2.3.4, nonsense, 10.0.0.9")]);
        assert_eq!(client(peer, &junk, &trusted), ip("10.0.0.9"));
    }

    #[test]
    fn forwarded_is_read_before_x_forwarded_for() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = ip("10.0.0.1");
        let both = h(&[
            (
                "forwarded",
                "for=198.51.100.2;proto=https, for=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(client(peer, &both, &trusted), ip("2001:db8:cafe::17"));
        let v4 = h(&[("forwarded", "for=\"192.0.2.43:80\";by=10.0.0.1")]);
        assert_eq!(client(peer, &v4, &trusted), ip("192.0.2.43"));
        let unknown = h(&[("forwarded", "for=unknown")]);
        assert_eq!(client(peer, &unknown, &trusted), peer);
    }
}

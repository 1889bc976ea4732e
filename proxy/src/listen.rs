//! Binding the proxy's listeners, for both address families.
//!
//! - `[::]:P` (the default inbound and admin address) is one dual-stack socket: IPv6, and
//!   IPv4 as v4-mapped addresses (which [`canonical`] turns back into IPv4 before anything
//!   looks at them). On a host without IPv6 it falls back to `0.0.0.0:P`.
//! - `127.0.0.1:P` with a fixed port (the default outbound) also binds `[::1]:P` where the
//!   host has IPv6 loopback: ip6tables REDIRECTs an IPv6 pod's outbound traffic there. The
//!   outbound listener never listens beyond loopback — it sends with this workload's
//!   identity.
//! - Any other address binds exactly what it says.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tokio::net::TcpListener;

/// The listeners for `addr` (see the module docs), each with an accept queue of
/// `backlog`. The first is the one `addr` names (or its IPv4 fallback).
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<Vec<TcpListener>> {
    let ip = addr.ip();
    if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return match listen(addr, backlog) {
            Err(e) if no_ipv6(&e) => {
                tracing::info!(%addr, "no IPv6 on this host; listening on IPv4 only");
                Ok(vec![listen(
                    SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()),
                    backlog,
                )?])
            }
            other => Ok(vec![other?]),
        };
    }
    let mut listeners = vec![listen(addr, backlog)?];
    if ip == IpAddr::V4(Ipv4Addr::LOCALHOST) && addr.port() != 0 {
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port());
        match listen(v6, backlog) {
            Ok(l) => listeners.push(l),
            Err(e) if no_ipv6(&e) => tracing::debug!(%v6, "no IPv6 loopback; not listening there"),
            Err(e) => return Err(e),
        }
    }
    Ok(listeners)
}

/// The address as IPv4 if it is a v4-mapped IPv6 address (from a dual-stack socket).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A listener on exactly `addr` (SO_REUSEADDR, as `TcpListener::bind` sets it; an IPv6
/// wildcard accepts IPv4 too). `TCP_NODELAY` is set on the listening socket: Linux
/// copies it into every connection the listener accepts, which saves a `setsockopt` per
/// connection (the proxy writes whole responses and records; Nagle would only delay
/// them).
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        socket2::SockRef::from(&socket).set_only_v6(false)?;
    }
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The error says the host has no IPv6 (disabled, or no such address).
fn no_ipv6(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable
        || e.raw_os_error() == Some(nix::errno::Errno::EAFNOSUPPORT as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ipv6_wildcard_is_dual_stack() {
        let ls = bind("[::]:0".parse().unwrap(), 16).unwrap();
        assert_eq!(ls.len(), 1);
        let port = ls[0].local_addr().unwrap().port();
        for client in ["127.0.0.1", "::1"] {
            let ip: IpAddr = client.parse().unwrap();
            let c = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
            let (_, peer) = ls[0].accept().await.unwrap();
            assert_eq!(canonical(peer).ip(), ip, "{client}");
            assert_eq!(canonical(peer), canonical(c.local_addr().unwrap()));
        }
    }

    #[tokio::test]
    async fn fixed_ipv4_loopback_also_listens_on_ipv6_loopback() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ls = bind(SocketAddr::from(([127, 0, 0, 1], port)), 16).unwrap();
        let addrs: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(
            addrs,
            [
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port))
            ]
        );
        // Port 0 (tests) and other addresses bind exactly one listener.
        assert_eq!(bind("127.0.0.1:0".parse().unwrap(), 16).unwrap().len(), 1);
        assert_eq!(bind("[::1]:0".parse().unwrap(), 16).unwrap().len(), 1);
    }

    /// Every form of listener hands out connections with Nagle off, inherited from the
    /// listening socket (the accept loop no longer sets it per connection).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut listeners = bind("[::]:0".parse().unwrap(), 16).unwrap();
        listeners.extend(bind(SocketAddr::from(([127, 0, 0, 1], port)), 16).unwrap());
        listeners.extend(bind("127.0.0.1:0".parse().unwrap(), 16).unwrap());
        assert!(listeners.len() >= 3);
        for l in &listeners {
            let addr = l.local_addr().unwrap();
            // The dual-stack wildcard over both families (or its IPv4 fallback on a host
            // without IPv6); any other listener on its own address.
            let clients: &[IpAddr] = match addr.ip() {
                IpAddr::V6(ip) if ip.is_unspecified() => &[
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
                IpAddr::V4(ip) if ip.is_unspecified() => &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                ip => &[ip],
            };
            for ip in clients {
                let _c = tokio::net::TcpStream::connect((*ip, addr.port()))
                    .await
                    .unwrap();
                let (accepted, _) = l.accept().await.unwrap();
                assert!(accepted.nodelay().unwrap(), "{addr} from {ip}");
            }
        }
    }

    #[test]
    fn v4_mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3:80".parse().unwrap());
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}

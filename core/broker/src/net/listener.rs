//! Binding the listening sockets before any core starts.
//!
//! Every core gets its own `SO_REUSEPORT` socket on the same address, so the kernel spreads new
//! connections over the cores. Port 0 is bound once on core 0's socket and the others join
//! that port. A fixed port is first probed without `SO_REUSEPORT`: two reuseport sockets could
//! silently share a port with another broker, the probe turns that into `AddrInUse`.
//!
//! `::` is dual-stack (`IPV6_V6ONLY` off), as nginx, Apache and most servers bind it, so
//! `--bind ::` serves IPv4 clients too (they appear as IPv4-mapped addresses, turned back into
//! plain IPv4 by [`canonical_peer`]). Any other IPv6 address is IPv6 only. A dual-stack `::`
//! and `0.0.0.0` on one port therefore conflict, as they do for those servers.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(!addr.ip().is_unspecified())?;
    }
    Ok(s)
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket(addr)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies the listener's
    // socket state): one system call per listener instead of one per connection, which was
    // 2.5 % of a core's time in a connection storm.
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    // A deep backlog: a connect storm must not overflow it (SYNs dropped at the backlog are
    // retried by the client only after a second); the kernel caps it at somaxconn.
    s.listen(4096)?;
    Ok(s.into())
}

/// A peer address as users write it: an IPv4 client of a dual-stack socket is reported as
/// `::ffff:a.b.c.d`; this gives `a.b.c.d` back (logs, hooks, per-source limits).
pub(crate) fn canonical_peer(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => peer,
        },
        v4 => v4,
    }
}

/// Binds `cores` sockets to `addr` (one per core) and returns them; all share one port.
pub(crate) fn bind(addr: SocketAddr, cores: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        let probe = socket(addr)?;
        probe.bind(&addr.into())?;
        drop(probe);
    }
    let first = bind_reuseport(addr)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..cores {
        all.push(bind_reuseport(bound)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_one_port_for_all_cores() {
        let ls = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }

    #[test]
    fn accepted_sockets_have_no_delay() {
        use socket2::SockRef;
        let ls = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let _client = std::net::TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        ls[0].set_nonblocking(false).unwrap();
        let (accepted, _) = ls[0].accept().unwrap();
        assert!(SockRef::from(&accepted).tcp_nodelay().unwrap());
    }

    #[test]
    fn mapped_peers_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().unwrap();
        assert_eq!(canonical_peer(mapped), "10.1.2.3:5000".parse().unwrap());
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(canonical_peer(v6), v6);
    }

    #[test]
    fn a_taken_port_is_addr_in_use() {
        let ls = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let err = bind(ls[0].local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}

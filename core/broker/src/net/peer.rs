//! [`PackedPeer`]: a connection's peer address as every connection keeps it, idle ones for
//! days: 19 bytes at byte alignment (they fill the padding beside the connection's small
//! fields) instead of the 32 of an `Option<SocketAddr>`. The IPv6 flow label and scope id are
//! not kept: the address is for logs, hooks and source limits, which read the IP and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A peer address, or none (an in-process connection).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackedPeer {
    ip: [u8; 16],
    port: [u8; 2],
    /// 0: none, 4 or 6: the family.
    family: u8,
}

impl PackedPeer {
    pub(crate) fn new(peer: Option<SocketAddr>) -> Self {
        let mut ip = [0u8; 16];
        let family = match peer.map(|p| p.ip()) {
            None => 0,
            Some(IpAddr::V4(v4)) => {
                ip[..4].copy_from_slice(&v4.octets());
                4
            }
            Some(IpAddr::V6(v6)) => {
                ip = v6.octets();
                6
            }
        };
        let port = peer.map_or(0, |p| p.port()).to_le_bytes();
        PackedPeer { ip, port, family }
    }

    pub(crate) fn get(&self) -> Option<SocketAddr> {
        let ip = match self.family {
            4 => IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(self.ip)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, u16::from_le_bytes(self.port)))
    }
}

const _: () = assert!(std::mem::size_of::<PackedPeer>() == 19);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_back_as_they_went_in() {
        for peer in [None, Some("10.1.2.3:1883"), Some("[2001:db8::7]:65535")] {
            let addr: Option<SocketAddr> = peer.map(|p| p.parse().unwrap());
            assert_eq!(PackedPeer::new(addr).get(), addr);
        }
    }
}

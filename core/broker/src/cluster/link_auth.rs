//! Link authentication: a challenge both ways, signed with HMAC-SHA-256 under the cluster
//! secret, so a link is up only between two nodes that both hold the secret.
//!
//! The accepting node sends a random challenge `s` in its Hello; the dialing node answers with
//! its own challenge `c` and `HMAC(secret, "client" | s | c | dialer | acceptor)`; the
//! accepting node checks it and answers `HMAC(secret, "server" | c | s | acceptor | dialer)`,
//! which the dialing node checks. Fresh challenges on both sides make a recorded exchange
//! useless for a later link, the role label keeps one side's MAC from being replayed as the
//! other's, and the names bind the link to the two nodes that claim it.

use super::frame::Bytes32;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which side of the link signs.
#[derive(Clone, Copy)]
pub enum Role {
    /// The node that dialed.
    Dialer,
    /// The node that accepted.
    Acceptor,
}

/// The link's two challenges and two names, as the handshake saw them.
pub struct Exchange<'a> {
    /// The acceptor's challenge (in Hello).
    pub acceptor_nonce: &'a Bytes32,
    /// The dialer's challenge (in Auth).
    pub dialer_nonce: &'a Bytes32,
    /// The dialing node's name.
    pub dialer: &'a str,
    /// The accepting node's name.
    pub acceptor: &'a str,
}

fn mac_for(secret: &[u8], role: Role, x: &Exchange<'_>) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    let (label, first, second, a, b) = match role {
        Role::Dialer => (
            b"uringmq-link-v1 client".as_slice(),
            x.acceptor_nonce,
            x.dialer_nonce,
            x.dialer,
            x.acceptor,
        ),
        Role::Acceptor => (
            b"uringmq-link-v1 server".as_slice(),
            x.dialer_nonce,
            x.acceptor_nonce,
            x.acceptor,
            x.dialer,
        ),
    };
    mac.update(label);
    mac.update(first);
    mac.update(second);
    for name in [a, b] {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") sign differently.
        mac.update(&(name.len() as u32).to_be_bytes());
        mac.update(name.as_bytes());
    }
    mac
}

/// `role`'s signature of the exchange.
pub fn sign(secret: &[u8], role: Role, x: &Exchange<'_>) -> Bytes32 {
    mac_for(secret, role, x).finalize().into_bytes().into()
}

/// Whether `mac` is `role`'s signature of the exchange (compared in constant time).
pub fn verify(secret: &[u8], role: Role, x: &Exchange<'_>, mac: &Bytes32) -> bool {
    mac_for(secret, role, x).verify_slice(mac).is_ok()
}

/// A fresh random challenge.
pub fn nonce() -> Bytes32 {
    let mut n = [0; 32];
    rand::Rng::fill(&mut rand::rng(), &mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_and_role_verify() {
        let (s, c) = (nonce(), nonce());
        let x = Exchange {
            acceptor_nonce: &s,
            dialer_nonce: &c,
            dialer: "a",
            acceptor: "b",
        };
        let secret = b"0123456789abcdef";
        let mac = sign(secret, Role::Dialer, &x);
        assert!(verify(secret, Role::Dialer, &x, &mac));
        assert!(!verify(b"0123456789abcdeF", Role::Dialer, &x, &mac));
        assert!(!verify(secret, Role::Acceptor, &x, &mac));
        let swapped = Exchange {
            dialer: "b",
            acceptor: "a",
            ..x
        };
        assert!(!verify(secret, Role::Dialer, &swapped, &mac));
        assert_ne!(s, c, "challenges are random");
    }
}

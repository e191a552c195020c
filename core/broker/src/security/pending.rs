//! Caps on authentications in progress (waiting for or running on a hook thread), per
//! listener (`max_pending_auth`) and per client IP address (`max_pending_auth_per_address`),
//! so that one address, or one flooded listener, cannot fill the hook threads' queue and delay
//! everyone else's login. Shared by all cores: an atomic per listener and a sharded map per
//! address, touched only by a CONNECT (or AUTH step) that needs a blocking check, never per
//! message. Mosquitto has no equivalent; the codes follow MQTT 5's meaning of each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use uringmq_codec::ReasonCode;

const SHARDS: usize = 16;

/// The counters of one broker.
pub(crate) struct PendingAuth {
    /// Fixed at start: one counter per listener name.
    listeners: HashMap<String, AtomicUsize>,
    per_listener: usize,
    per_address: usize,
    addresses: [Mutex<HashMap<IpAddr, usize>>; SHARDS],
}

/// Which cap a CONNECT ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// Its listener has `max_pending_auth` in progress.
    Listener,
    /// Its address has `max_pending_auth_per_address` in progress.
    Address,
}

impl Full {
    /// The CONNACK code: the listener as a whole is busy (0x89 Server busy); one address
    /// connects faster than it is served (0x9F Connection rate exceeded). Both are 3 (Server
    /// unavailable) for a 3.x client, the encoder maps them.
    pub(crate) fn reason_code(self) -> ReasonCode {
        match self {
            Full::Listener => ReasonCode::SERVER_BUSY,
            Full::Address => ReasonCode::CONNECTION_RATE_EXCEEDED,
        }
    }
}

/// One authentication in progress; its counts go down when it is dropped.
pub(crate) struct Admitted<'a> {
    pending: &'a PendingAuth,
    listener: Option<&'a AtomicUsize>,
    address: Option<IpAddr>,
}

impl PendingAuth {
    /// Counters for these listener names; a cap of 0 is no cap.
    pub(crate) fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        per_listener: usize,
        per_address: usize,
    ) -> Self {
        PendingAuth {
            listeners: names
                .into_iter()
                .map(|n| (n.to_owned(), AtomicUsize::new(0)))
                .collect(),
            per_listener,
            per_address,
            addresses: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    /// Counts one more authentication on `listener` from `peer`, unless a cap is reached.
    pub(crate) fn admit(&self, listener: &str, peer: Option<IpAddr>) -> Result<Admitted<'_>, Full> {
        let counter = self
            .listeners
            .get(listener)
            .filter(|_| self.per_listener > 0);
        if let Some(c) = counter {
            let cap = self.per_listener;
            c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .map_err(|_| Full::Listener)?;
        }
        let mut admitted = Admitted {
            pending: self,
            listener: counter,
            address: None,
        };
        if let Some(ip) = peer.filter(|_| self.per_address > 0) {
            let mut shard = lock(self.shard(ip));
            let n = shard.entry(ip).or_insert(0);
            if *n >= self.per_address {
                return Err(Full::Address); // `admitted` gives the listener's count back.
            }
            *n += 1;
            admitted.address = Some(ip);
        }
        Ok(admitted)
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(ip);
        &self.addresses[(h as usize) % SHARDS]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.listener {
            c.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(ip) = self.address {
            let mut shard = lock(self.pending.shard(ip));
            if let Some(n) = shard.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    // No entry for an address with nothing in progress: the map stays as
                    // large as the authentications under way.
                    shard.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_listener_and_per_address_and_releases_on_drop() {
        let p = PendingAuth::new(["a", "b"], 3, 2);
        let ip = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
        let one = p.admit("a", ip(1)).unwrap();
        let two = p.admit("a", ip(1)).unwrap();
        assert_eq!(p.admit("a", ip(1)).err(), Some(Full::Address));
        assert_eq!(p.admit("b", ip(1)).err(), Some(Full::Address));
        let three = p.admit("a", ip(2)).unwrap();
        assert_eq!(p.admit("a", ip(3)).err(), Some(Full::Listener));
        // A refusal for the address gave the listener's slot back.
        assert_eq!(p.listeners["a"].load(Ordering::Acquire), 3);
        assert!(
            p.admit("b", ip(3)).is_ok(),
            "other listeners are not affected"
        );
        drop((one, two, three));
        assert_eq!(p.listeners["a"].load(Ordering::Acquire), 0);
        assert!(p.addresses.iter().all(|s| lock(s).is_empty()));
        // No cap, and clients with no address (in-process) or an unknown listener.
        let open = PendingAuth::new(["a"], 0, 0);
        let many: Vec<_> = (0..100).map(|_| open.admit("a", ip(1)).unwrap()).collect();
        assert_eq!(many.len(), 100);
        assert!(p.admit("gone", None).is_ok());
    }
}

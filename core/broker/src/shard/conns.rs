//! The connections of one core by id: the sweep, the stop and the hibernation poller find
//! them here. A connection registers when its task starts and unregisters when it ends; its
//! id is also its key in the hibernation epoll set, so ids are never reused.
//!
//! A connection parked as a compact record (`conn/parked.rs`) is not here: its session's sink
//! holds it, and its key in the epoll set is its session key tagged with [`PARKED_KEY`]. It
//! comes back here, with a new id, when [`Shard::revive`] builds its `Conn` again; every path
//! that needs the `Conn` of a session (a delivery, a takeover, a kick, keep-alive expiry, the
//! stop, the poller) goes through `revive`.

use super::{Entry, Shard, Sink, State};
use crate::conn::{CloseReason, Conn};
use std::collections::HashMap;
use std::rc::Rc;

/// Set in a hibernation epoll key that is a session key (a compact parked connection), not a
/// connection id. Connection ids count up from 2 on each core and session keys carry the core
/// id in bits 48..63, so neither reaches this bit (cores are CPUs: far fewer than 2^15).
pub(crate) const PARKED_KEY: u64 = 1 << 63;

/// This core's live connections.
pub(crate) struct Conns {
    map: HashMap<u64, Rc<Conn>, ahash::RandomState>,
    /// The last id given out.
    last: u64,
}

impl Conns {
    pub(super) fn new() -> Self {
        Conns {
            map: HashMap::default(),
            last: 1,
        }
    }

    /// An id for a new connection (unique on this core for the core's life).
    pub(super) fn new_id(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    pub(super) fn insert(&mut self, id: u64, conn: Rc<Conn>) {
        self.map.insert(id, conn);
    }

    pub(super) fn remove(&mut self, id: u64) {
        self.map.remove(&id);
        crate::table::shrink_table(&mut self.map);
    }

    /// The connection with `id`, if it is still registered.
    pub(crate) fn get(&self, id: u64) -> Option<Rc<Conn>> {
        self.map.get(&id).cloned()
    }

    /// Every connection, for a walk that may not hold the core's state borrowed.
    pub(crate) fn all(&self) -> Vec<Rc<Conn>> {
        self.map.values().cloned().collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Rc<Conn>> {
        self.map.values()
    }

    /// Takes every connection out, at the end of the core (see `run.rs`).
    pub(super) fn take_all(&mut self) -> HashMap<u64, Rc<Conn>, ahash::RandomState> {
        std::mem::take(&mut self.map)
    }
}

impl Shard {
    /// The connection of session `key` (`Sink::Conn`), its `Conn` built again first if it is
    /// parked as a compact record; None for a session without a connection.
    pub(crate) fn revive(&self, key: u64) -> Option<Rc<Conn>> {
        let mut st = self.st.borrow_mut();
        let State {
            sessions, conns, ..
        } = &mut *st;
        let e = sessions.get_mut(key)?;
        self.revive_entry(e, key, conns)
    }

    /// [`Shard::revive`] for a caller that holds the core's state.
    pub(crate) fn revive_entry(
        &self,
        e: &mut Entry,
        key: u64,
        conns: &mut Conns,
    ) -> Option<Rc<Conn>> {
        let parked = match std::mem::replace(&mut e.sink, Sink::Offline(0)) {
            Sink::Parked(p) => p,
            other => {
                let conn = match &other {
                    Sink::Conn(c) => Some(c.clone()),
                    _ => None,
                };
                e.sink = other;
                return conn;
            }
        };
        // None only while the core is dropped; the record closes its socket.
        let core = self.me.upgrade()?;
        let id = conns.new_id();
        let conn = (*parked).revive(core, id, key, &e.s);
        conns.insert(id, conn.clone());
        e.sink = Sink::Conn(conn.clone());
        Some(conn)
    }

    /// The connection a hibernation epoll event names (a connection id, or a session key
    /// tagged [`PARKED_KEY`]).
    pub(crate) fn conn_for_event(&self, key: u64) -> Option<Rc<Conn>> {
        if key & PARKED_KEY != 0 {
            return self.revive(key & !PARKED_KEY);
        }
        self.st.borrow().conns.get(key)
    }

    /// Turns a detached connection into a compact record held by its session's sink
    /// (`conn/parked.rs`); true when it did. `conn` is the sweep's reference: besides it, only
    /// the connection map and the sink may hold the `Conn`, which is freed when it returns.
    pub(crate) fn compact_conn(&self, conn: Rc<Conn>) -> bool {
        let Some(key) = conn.session() else {
            return false;
        };
        if self.stopping.get() || Rc::strong_count(&conn) != 3 {
            return false;
        }
        let mut st = self.st.borrow_mut();
        let State {
            sessions, conns, ..
        } = &mut *st;
        let Some(e) = sessions.get_mut(key) else {
            return false;
        };
        if !matches!(&e.sink, Sink::Conn(c) if Rc::ptr_eq(c, &conn)) {
            return false;
        }
        let Some(parked) = conn.compact(PARKED_KEY | key) else {
            return false;
        };
        e.sink = Sink::Parked(parked);
        conns.remove(conn.id());
        true
    }

    /// Builds every compact parked connection's `Conn` again (the stop, hibernation failing).
    pub(crate) fn revive_all(&self) {
        for key in self.parked_keys(|_| true) {
            self.revive(key);
        }
    }

    /// Closes the compact parked connections whose keep-alive ran out (1.5x), as the sweep
    /// closes any other connection: revived, then killed.
    pub(crate) fn expire_parked(&self, now_ms: u32) {
        for key in self.parked_keys(|p| p.keep_alive_expired(now_ms)) {
            if let Some(conn) = self.revive(key) {
                conn.kill(CloseReason::KeepAlive);
            }
        }
    }

    /// The keys of the sessions whose connection is a compact record that `f` picks.
    fn parked_keys(&self, f: impl Fn(&crate::conn::Parked) -> bool) -> Vec<u64> {
        let st = self.st.borrow();
        st.sessions
            .iter_keyed()
            .filter_map(|(key, e)| match &e.sink {
                Sink::Parked(p) if f(p) => Some(key),
                _ => None,
            })
            .collect()
    }
}

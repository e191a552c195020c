//! The connections of one core by id: the sweep, the stop and the hibernation poller find
//! them here. A connection registers when its task starts and unregisters when it ends; its
//! id is also its key in the hibernation epoll set, so ids are never reused.

use crate::conn::Conn;
use std::collections::HashMap;
use std::rc::Rc;

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

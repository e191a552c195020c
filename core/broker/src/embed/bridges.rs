//! The embedding API of bridges: add and remove them on a running broker, read their state.

use super::broker::API_TIMEOUT;
use crate::api::ApiError;
use crate::bridge::BridgeState;
use crate::config::BridgeConfig;
use crate::mesh::{ApiCmd, MeshMsg};
use crate::Broker;

impl Broker {
    /// Starts a bridge on a running broker (on the next core in turn); returns once its local
    /// subscriptions are in place, without waiting for the remote. Errors: a bad setting or
    /// a name in use ([`ApiError::InvalidOption`]).
    pub fn add_bridge(&self, bridge: BridgeConfig) -> Result<(), ApiError> {
        if !self.is_running() {
            return Err(ApiError::NotRunning);
        }
        bridge
            .validate()
            .map_err(|e| ApiError::InvalidOption(e.to_string()))?;
        let core = self.shared.bridges.next_core(self.shared.cores());
        let (reply, rx) = std::sync::mpsc::channel();
        self.shared.mailboxes[usize::from(core)]
            .push(MeshMsg::Api(ApiCmd::BridgeAdd(Box::new(bridge), reply)));
        rx.recv_timeout(API_TIMEOUT)
            .map_err(|_| ApiError::Timeout)?
            .map_err(ApiError::InvalidOption)
    }

    /// Stops bridge `name` (configured or added); its queued messages are dropped. Returns
    /// whether it existed.
    pub fn remove_bridge(&self, name: &str) -> Result<bool, ApiError> {
        if !self.is_running() {
            return Err(ApiError::NotRunning);
        }
        let Some(core) = self.shared.bridges.core_of(name) else {
            return Ok(false);
        };
        let (reply, rx) = std::sync::mpsc::channel();
        self.shared.mailboxes[usize::from(core)]
            .push(MeshMsg::Api(ApiCmd::BridgeRemove(name.to_owned(), reply)));
        rx.recv_timeout(API_TIMEOUT).map_err(|_| ApiError::Timeout)
    }

    /// Every bridge's state: connected, queued, sent, received, dropped.
    pub fn bridges(&self) -> Vec<BridgeState> {
        self.shared.bridges.states()
    }
}

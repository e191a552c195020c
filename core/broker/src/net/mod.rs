//! The network edge below the cores: listener endpoints (name, transport, TLS/WebSocket
//! settings, connection limit; `endpoint.rs`), binding listening sockets (`listener.rs`),
//! io_uring set-up (`uring.rs`), per-source connection rates (`source_rates.rs`), publish-rate
//! debts of closed connections (`publish_debts.rs`), the packed peer address a connection
//! keeps (`peer.rs`) and the coarse clock and log throttle the
//! cores share (`clock.rs`). Nothing here knows a shard or a connection: the accept loop and
//! the TLS/WebSocket adapters driven by a connection live in `conn/`.

mod clock;
mod endpoint;
pub(crate) mod listener;
pub(crate) mod peer;
mod publish_debts;
mod source_rates;
pub(crate) mod uring;

pub(crate) use clock::{millis, LogThrottle, TICK};
pub(crate) use endpoint::{endpoints, Endpoint, Slot};
pub(crate) use publish_debts::PublishDebts;
pub(crate) use source_rates::SourceRates;

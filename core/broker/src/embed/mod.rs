//! The embedding API the binary and the Python bindings share: [`Broker`] (`broker.rs`),
//! starting it (`start.rs`), in-process subscriptions (`subscription.rs`), bridges added and
//! removed at run time (`bridges.rs`), reloading
//! (`reload.rs`) and logging set-up (`logging.rs`). Above every other module: nothing in the
//! crate imports it.

mod bridges;
mod broker;
mod logging;
mod reload;
mod start;

mod subscription;

pub use broker::Broker;
pub use logging::{init_logging, init_logging_background};
pub use start::BrokerBuilder;
pub use subscription::{RecvError, Subscription};

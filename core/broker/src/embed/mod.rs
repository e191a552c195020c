//! The embedding API the binary and the Python bindings share: [`Broker`] (`broker.rs`),
//! starting it (`start.rs`), in-process subscriptions (`subscription.rs`), reloading
//! (`reload.rs`) and logging set-up (`logging.rs`). Above every other module: nothing in the
//! crate imports it.

mod broker;
mod logging;
mod reload;
mod start;
mod subscription;

pub use broker::Broker;
pub use logging::{init_logging, init_logging_background};
pub use subscription::{RecvError, Subscription};

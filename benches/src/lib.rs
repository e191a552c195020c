//! Benchmark support, and the `uringmq-load` load generator.
//!
//! The load generator speaks MQTT 3.1.1 and 5.0 to any broker on this machine, thread-per-core on
//! monoio with one batched write per connection per loop turn, so that the broker, not the
//! generator, sets the numbers. See `BENCHMARKS.md` at the repository root.
#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod conn;
pub mod group;
pub mod net;
pub mod null_broker;
pub mod procfs;
pub mod readbuf;
pub mod report;
pub mod run;
pub mod scenario;
pub mod seq;
pub mod signal;
pub mod stamp;
pub mod stats;
pub mod wire;
pub mod workers;

#[cfg(test)]
mod wire_vs_codec;

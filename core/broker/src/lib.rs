//! uringmq: the broker.
#![warn(missing_docs)]

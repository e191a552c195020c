//! The MQTT session state machine: pure and deterministic (time is an argument), no I/O.
#![warn(missing_docs)]

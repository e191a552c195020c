//! The end-to-end tests: the broker over real sockets, driven by real clients. One test binary
//! (the broker is compiled and linked once), one module per area; a new test file is one `mod`
//! line below. Test names are `module::test`, e.g. `cargo test -p uringmq-tests -- takeover::`.

/// The binary's allocator, so the embedded brokers run on what production runs on (its
/// long-lived heap included, `core/broker/src/alloc.rs`).
#[global_allocator]
static GLOBAL: uringmq::Allocator = uringmq::Allocator;

mod support;

mod auth;
mod auth_hooks;
mod basic;
mod bridge;
mod cluster;
mod cluster_directory;
mod cluster_routing;
mod cluster_store;
mod cluster_takeover;
mod embed;
mod hibernate;
mod jwt;
mod large_payloads;
mod malformed;
mod net;
mod ops;
mod persistence;
mod retained;
mod session_move;
mod sessions;
mod shared;
mod slow;
mod takeover;
mod tls;
mod v5;
mod wills;
mod ws;

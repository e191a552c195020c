//! The session's packet rules, tested through [`harness::Pair`]: a client and its session in
//! memory, no sockets and no clock of their own. End-to-end tests keep what needs a socket
//! (the broker turning a violation into DISCONNECT, routing to other clients).

mod acks;
mod connection;
mod harness;
mod publish;

//! Who may connect and what they may touch, wired into the broker: the anonymous policy per
//! listener (`anonymous.rs`), the password file, the JWT keys and the ACL file (`files.rs`) and
//! the embedder's hooks composed into one authenticator (the hook first, for every client, then
//! the password file, then the anonymous policy) and one authoriser (the ACL file first, then
//! the hook) in `chain.rs`; SCRAM-SHA-256 over the password file (`scram.rs`); the hook threads
//! that run slow checks off the cores (`hook_threads.rs`) and the caps on logins waiting for
//! them (`pending.rs`).
//!
//! A `[[listener]]` may have its own password file and ACL file; each check looks up the files
//! of the client's listener (falling back per key to the global ones). Files are held behind an
//! `ArcSwap`, so SIGHUP swaps in freshly read files without a lock on the per-message path.
//!
//! Nothing here knows a connection: running these checks for a CONNECT, an AUTH exchange or a
//! will is the connection's part (`conn/login.rs`, `conn/reauth.rs`, `conn/will_auth.rs`).

mod anonymous;
mod chain;
mod files;
mod hook_threads;
mod pending;
mod scram;
#[cfg(test)]
mod tests;

pub(crate) use chain::Security;
pub(crate) use files::{NO_LISTENER, NO_LISTENER_INDEX};
pub(crate) use hook_threads::{HookError, HookPool};
pub(crate) use pending::{Admitted, Full, PendingAuth};

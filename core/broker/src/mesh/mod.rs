//! The mesh: how cores talk. Owns the messages and the per-core lock-free inbound queue
//! (`messages.rs`), the takeover request a session answers through, and the global client-id
//! registry (`registry.rs`, touched only on CONNECT and session end), and the queues between
//! the cores and the cluster thread (`cluster.rs`). A leaf below the cores:
//! what a core does with each message is in `shard/inbox.rs`, and how a session moves between
//! cores in `shard/moves.rs`.

pub(crate) mod cluster;
mod messages;
mod registry;

pub(crate) use messages::{
    ApiCmd, ApiSink, EventFd, ExportReply, ImportError, ImportReply, Mailbox, MeshMsg, PersistMsg,
    TakeoverReq, Target, FROM_NODE,
};
pub(crate) use registry::{core_of, leaves_node, Registry, FULL, LEAVING, REGISTRY_CHUNK};

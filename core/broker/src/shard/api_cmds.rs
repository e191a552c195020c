//! In-process API commands from `Broker` (`ApiCmd`) handled on a core.

use super::stats::add;
use super::FULL;
use super::{Shard, Sink};
use crate::api::{ApiError, ClientSummary};
use crate::conn::CloseReason;
use crate::mesh::{ApiCmd, ApiSink};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use uringmq_codec::{Protocol, RetainHandling};
use uringmq_session::{Message, Negotiated, Session, SubOptions};
use uringmq_topic::SharedFilter;

impl Shard {
    pub(super) fn handle_api(self: &Rc<Self>, cmd: ApiCmd) {
        match cmd {
            ApiCmd::Publish(msg, applied) => {
                self.api_publish(&msg);
                if let Some(applied) = applied {
                    // Every core's replica hears of it before the caller goes on (FIFO).
                    self.flush_mesh();
                    let _ = applied.send(());
                }
            }
            ApiCmd::Subscribe {
                filter,
                opts,
                sink,
                reply,
            } => {
                let key = self.api_subscribe(&filter, opts, sink);
                // The caller may publish next: our interest must be on its way first.
                self.flush_mesh();
                let _ = reply.send(key.ok_or_else(|| ApiError::Session(FULL.to_owned())));
            }
            ApiCmd::Unsubscribe { session } => self.end_session(session),
            ApiCmd::Clients(reply) => {
                let _ = reply.send(self.client_summaries());
            }
            ApiCmd::Kick {
                session,
                with_will,
                reply,
            } => {
                let _ = reply.send(self.kick(session, with_will));
            }
            ApiCmd::Sys(msgs) => self.publish_sys(msgs),
            ApiCmd::BridgeAdd(cfg, reply) => {
                let _ = reply.send(crate::bridge::add(self, *cfg));
            }
            ApiCmd::BridgeRemove(name, reply) => {
                let _ = reply.send(crate::bridge::remove(self, &name));
            }
            ApiCmd::Import(session, reply) => {
                let r = self.import_offline(*session);
                // Its interest is on its way to every core before the caller goes on.
                self.flush_mesh();
                reply(r);
            }
            ApiCmd::Export {
                id,
                clean_start,
                reply,
            } => {
                let taken = self.take_away(&id, clean_start);
                monoio::spawn(async move {
                    let image = taken.await.ok().flatten();
                    reply(image.as_ref().map(crate::store::image::encode));
                });
            }
            ApiCmd::Snapshot(reply) => {
                self.refresh_gauges();
                let _ = reply.send(self.id);
            }
        }
    }

    /// A message from `Broker::publish`: retained and routed like a client's PUBLISH.
    fn api_publish(self: &Rc<Self>, msg: &Arc<Message>) {
        add(&self.stats().messages_in, 1);
        add(&self.stats().publish_bytes_in, msg.payload.len() as u64);
        self.accept(msg);
    }

    /// An in-process subscription: a session of its own on this core, delivering to `sink`,
    /// with the retained messages of `filter` first. Returns its key (None: this core holds
    /// the most sessions it can).
    fn api_subscribe(
        self: &Rc<Self>,
        filter: &str,
        opts: SubOptions,
        sink: Arc<ApiSink>,
    ) -> Option<u64> {
        let key = self.new_key()?;
        let n = Negotiated::in_process(format!("$api-{key:x}"), u16::MAX);
        let mut s = Session::new(&n, Protocol::V5, 0, 0);
        let _ = s.subs.insert(filter, opts, Default::default());
        self.install_session(key, Box::new(s), Sink::Api(sink));
        let shared = matches!(SharedFilter::parse(filter), Ok(Some(_)));
        // The subscription is always new, so "send if new" sends too [MQTT-3.3.1-10].
        if !shared && opts.retain_handling != RetainHandling::DoNotSend {
            self.send_retained(key, filter, &opts);
        }
        Some(key)
    }

    /// Closes the connection of session `session` (`Broker::disconnect`); false if it has none.
    fn kick(&self, session: u64, with_will: bool) -> bool {
        let conn = self.revive(session);
        if let Some(c) = &conn {
            c.kill(CloseReason::Kicked { will: with_will });
        }
        conn.is_some()
    }

    /// This core's connected clients (sessions with a live connection).
    fn client_summaries(&self) -> Vec<ClientSummary> {
        let st = self.st.borrow();
        st.sessions
            .iter()
            .filter_map(|e| match &e.sink {
                Sink::Conn(c) => Some(summary(&c.listener, c.peer(), &e.s)),
                Sink::Parked(p) => Some(summary(p.listener(), p.peer(), &e.s)),
                _ => None,
            })
            .collect()
    }
}

/// What `Broker::clients` and the disconnect hook tell about one connection.
pub(super) fn summary(listener: &str, peer: Option<SocketAddr>, s: &Session) -> ClientSummary {
    ClientSummary {
        client_id: s.client_id.to_string(),
        username: s.username().map(str::to_owned),
        listener: listener.to_owned(),
        peer,
        // The session's protocol is its connection's (`Session::attach`).
        protocol: s.protocol,
        connected_since: s.connected_since(),
    }
}

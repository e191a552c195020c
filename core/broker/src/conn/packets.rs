//! A connected client's packets (PUBLISH and its acks, PINGREQ, DISCONNECT) handled on its core.
//! The rules are the session's (`uringmq_session::inbound`): these handlers hand it the packet,
//! the broker's limits and the time, write the reply it returns, route the message, and turn a
//! `Violation` into the connection's end (DISCONNECT with its reason code in v5).

use crate::conn::{CloseReason, Conn};
use crate::shard::{add, Entry, Shard};
use std::rc::Rc;
use std::time::Instant;
use tracing::debug;
use uringmq_auth::{Access, AclFile};
use uringmq_codec::{Disconnect, Packet, Publish};
use uringmq_session::{Origin, Received, Route, Session, Violation};

impl Shard {
    /// Whether the authoriser lets session `s` (with its token's ACL rules) do `access` on
    /// `topic`.
    pub(super) fn allows(
        &self,
        conn: &Conn,
        s: &Session,
        acl: Option<&AclFile>,
        access: Access,
        topic: &str,
    ) -> bool {
        match &self.shared.authorizer {
            None => true,
            // Blocking authorisers are asked on a hook thread before the packet gets here
            // (`pre`); without their answer, the access is denied.
            Some(a) if a.is_blocking() => false,
            Some(a) => {
                let mut info = crate::conn::session_info(s, acl, &conn.listener);
                info.peer = conn.peer();
                a.authorize(&info, access, topic)
            }
        }
    }

    /// Handles one packet of a connected client. `pre` carries decisions of a blocking
    /// authoriser (one per PUBLISH topic or SUBSCRIBE filter), asked before on a hook thread.
    pub(crate) fn handle_packet(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        packet: Packet,
        pre: Option<Vec<bool>>,
    ) -> Result<(), CloseReason> {
        match packet {
            Packet::Publish(p) => self.on_publish(
                conn,
                key,
                p,
                pre.map(|v| v.first().copied().unwrap_or(false)),
            ),
            Packet::PubAck(a) => {
                let ok = self.with_session(key, |s| s.handle_puback(&a).is_ok());
                if !ok {
                    debug!(pid = a.packet_id, "PUBACK for unknown packet id ignored");
                }
                self.pump(key);
                Ok(())
            }
            Packet::PubRec(a) => {
                match self.with_session(key, |s| s.handle_pubrec(&a)) {
                    Some(rel) => conn.send_packet(&rel),
                    // The exchange ended: the window has room.
                    None => self.pump(key),
                }
                Ok(())
            }
            Packet::PubRel(a) => {
                if let Some(comp) = self.with_session(key, |s| Some(s.handle_pubrel(&a))) {
                    conn.send_packet(&comp);
                }
                Ok(())
            }
            Packet::PubComp(a) => {
                let _ = self.with_session(key, |s| s.handle_pubcomp(&a).is_ok());
                self.pump(key);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(conn, key, s, pre),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, key, u),
            Packet::PingReq => {
                conn.send_packet(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(key, d),
            Packet::Connect(_) => Err(Violation::SecondConnect.into()),
            Packet::Auth(_) => Err(Violation::AuthWithoutMethod.into()),
            other => Err(Violation::ServerPacket(other.packet_type()).into()),
        }
    }

    pub(super) fn with_session<T: Default>(
        &self,
        key: u64,
        f: impl FnOnce(&mut Session) -> T,
    ) -> T {
        let mut st = self.st.borrow_mut();
        st.sessions
            .get_mut(key)
            .map(|e| f(&mut e.s))
            .unwrap_or_default()
    }

    fn on_disconnect(&self, key: u64, d: Disconnect) -> Result<(), CloseReason> {
        let limits = &self.shared.limits;
        // Without a session there is no will: `false` changes nothing then.
        let will = self.with_session(key, |s| Some(s.handle_disconnect(&d, limits)));
        Err(CloseReason::Disconnect {
            will: will.transpose()?.unwrap_or(false),
        })
    }

    /// A PUBLISH: the session checks it and says what to acknowledge and what to route. `pre`
    /// is a blocking authoriser's verdict, asked on a hook thread.
    fn on_publish(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        key: u64,
        p: Publish,
        pre: Option<bool>,
    ) -> Result<(), CloseReason> {
        add(&self.stats().messages_in, 1);
        add(&self.stats().publish_bytes_in, p.payload.len() as u64);
        let origin = Origin {
            core: self.id,
            session: key,
        };
        let Received { ack, route } = {
            let mut st = self.st.borrow_mut();
            let Some(Entry { s, token_acl, .. }) = st.sessions.get_mut(key) else {
                return Ok(());
            };
            let acl = token_acl.as_deref();
            let authorize = |s: &Session, topic: &str| {
                pre.unwrap_or_else(|| self.allows(conn, s, acl, Access::Publish, topic))
            };
            s.handle_publish(p, origin, &self.shared.limits, Instant::now(), authorize)?
        };
        match route {
            Route::Message(msg) => {
                self.accept(&msg);
            }
            Route::Denied => debug!(key, "PUBLISH not authorised: dropped"),
            Route::Duplicate => {}
        }
        if let Some(ack) = ack {
            conn.send_packet(&ack);
        }
        Ok(())
    }
}

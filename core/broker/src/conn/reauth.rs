//! MQTT 5 enhanced authentication after CONNECT: the AUTH exchange and re-authentication.

use super::login::{off_core, refused, Owned};
use crate::conn::{CloseReason, Conn};
use crate::shard::{add, Shard};
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use tracing::info;
use uringmq_auth::{AclFile, AuthState, AuthStep, DenyReason, EnhancedAuthenticator};
use uringmq_codec::{
    Auth, AuthProperties, ByteStr, ConnAckProperties, Connect, Packet, Protocol, ReasonCode,
};

/// The outcome of a successful authentication: of an enhanced exchange, the Authentication
/// Method and the server's final data for CONNACK and the authenticator that
/// re-authentication will use; of a JWT, its ACL rules.
#[derive(Default)]
pub(crate) struct Granted {
    pub(super) exchange: Option<(ByteStr, Option<Bytes>, Arc<dyn EnhancedAuthenticator>)>,
    /// The ACL rules of the client's token, kept with its session.
    pub(super) acl: Option<Arc<AclFile>>,
}

impl Granted {
    pub(super) fn new(
        method: ByteStr,
        data: Option<Vec<u8>>,
        auth: Arc<dyn EnhancedAuthenticator>,
    ) -> Self {
        Granted {
            exchange: Some((method, data.map(Bytes::from), auth)),
            acl: None,
        }
    }

    /// The ACL rules the session keeps (`Entry::token_acl`).
    pub(crate) fn token_acl(&mut self) -> Option<Arc<AclFile>> {
        self.acl.take()
    }

    /// Puts the method and the server's final data into CONNACK [MQTT-4.12.0-5], and returns
    /// what the connection keeps for re-authentication (none without enhanced auth).
    pub(crate) fn apply(self, props: &mut ConnAckProperties) -> Option<Box<Exchange>> {
        let (method, data, authenticator) = self.exchange?;
        props.authentication_method = Some(method.clone());
        props.authentication_data = data;
        Some(Box::new(Exchange::Established {
            method,
            authenticator,
        }))
    }
}

/// Where a connection's enhanced authentication stands (none for most connections).
pub(crate) enum Exchange {
    /// The server sent AUTH 0x18 and waits for the client's AUTH: before CONNACK (with the
    /// parked CONNECT), or during a re-authentication (`connect` is `None`).
    Pending {
        connect: Option<Box<Connect>>,
        method: ByteStr,
        state: AuthState,
        authenticator: Arc<dyn EnhancedAuthenticator>,
    },
    /// The exchange succeeded; CONNECT is being completed.
    Done(Granted),
    /// Connected with enhanced authentication: the client may re-authenticate with the same
    /// method [MQTT-4.12.1-1].
    Established {
        method: ByteStr,
        authenticator: Arc<dyn EnhancedAuthenticator>,
    },
}

/// Where an AUTH packet took the exchange: its next step and what it needs to go on.
struct Stepped {
    /// The parked CONNECT (an exchange before CONNACK), or None (a re-authentication).
    connect: Option<Box<Connect>>,
    method: ByteStr,
    authenticator: Arc<dyn EnhancedAuthenticator>,
    step: AuthStep,
    state: AuthState,
}

fn protocol(why: &str) -> CloseReason {
    CloseReason::Protocol(ReasonCode::PROTOCOL_ERROR.0, why.into())
}

/// Handles an AUTH packet: the next step of the exchange before CONNACK, or a
/// re-authentication (0x19, then its steps) after it [MQTT-4.12.1-1]. `Ok(Some(connect))`
/// means the exchange before CONNACK succeeded and the CONNECT can be completed.
pub(crate) async fn on_auth(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    a: Auth,
) -> Result<Option<Box<Connect>>, CloseReason> {
    let ex = conn.exchange.take();
    let stepped = match ex.map(|b| *b) {
        Some(Exchange::Pending {
            connect,
            method,
            state,
            authenticator,
        }) => {
            let s = Stepped {
                connect,
                method,
                authenticator,
                step: AuthStep::Fail,
                state,
            };
            continue_exchange(core, conn, a, s).await?
        }
        Some(Exchange::Established {
            method,
            authenticator,
        }) => restart_exchange(core, conn, a, method, authenticator).await?,
        _ => {
            return Err(protocol(
                "[MQTT-4.12.0-7] AUTH on a connection that did not authenticate with an authentication method",
            ))
        }
    };
    apply_step(core, conn, stepped).await
}

/// The client's answer in an exchange under way: the authenticator's next step.
async fn continue_exchange(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    a: Auth,
    mut s: Stepped,
) -> Result<Stepped, CloseReason> {
    if a.reason_code != ReasonCode::CONTINUE_AUTHENTICATION {
        return Err(protocol(
            "[MQTT-4.12.0-3] AUTH answering the server's AUTH must continue the exchange (0x18)",
        ));
    }
    if a.properties.authentication_method.as_deref() != Some(&s.method) {
        return Err(protocol(
            "[MQTT-4.12.0-5] AUTH must carry the authentication method of CONNECT",
        ));
    }
    let data = a.properties.authentication_data;
    let auth = s.authenticator.clone();
    let mut state = std::mem::replace(&mut s.state, AuthState::none());
    let answer = off_core(core, conn, s.authenticator.is_blocking(), move || {
        let step = auth.step(&mut state, data.as_deref());
        (step, state)
    })
    .await;
    (s.step, s.state) = answer.unwrap_or((AuthStep::Fail, AuthState::none()));
    Ok(s)
}

/// A re-authentication after CONNACK: the exchange starts over with the session's identity.
async fn restart_exchange(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    a: Auth,
    method: ByteStr,
    authenticator: Arc<dyn EnhancedAuthenticator>,
) -> Result<Stepped, CloseReason> {
    if a.reason_code != ReasonCode::RE_AUTHENTICATE {
        return Err(protocol(
            "[MQTT-4.12.1-1] AUTH after CONNACK must start a re-authentication (0x19)",
        ));
    }
    if a.properties.authentication_method.as_deref() != Some(&method) {
        return Err(protocol(
            "[MQTT-4.12.1-1] re-authentication must use the authentication method of CONNECT",
        ));
    }
    let data = a.properties.authentication_data;
    let owned = Owned::connected(core, conn);
    let auth = authenticator.clone();
    let answer = off_core(core, conn, authenticator.is_blocking(), move || {
        auth.start(&owned.info(), data.as_deref())
    })
    .await;
    let (step, state) = answer.unwrap_or((AuthStep::Fail, AuthState::none()));
    Ok(Stepped {
        connect: None,
        method,
        authenticator,
        step,
        state,
    })
}

/// Acts on the step: AUTH to continue, the CONNECT completed or AUTH 0x00 on success, a
/// refusal or DISCONNECT 0x87 on failure.
async fn apply_step(
    core: &Rc<Shard>,
    conn: &Rc<Conn>,
    s: Stepped,
) -> Result<Option<Box<Connect>>, CloseReason> {
    let Stepped {
        connect,
        method,
        authenticator,
        step,
        state,
    } = s;
    match step {
        AuthStep::Continue(data) => {
            send_auth(
                conn,
                ReasonCode::CONTINUE_AUTHENTICATION,
                &method,
                Some(data),
            );
            conn.exchange.set(Some(Box::new(Exchange::Pending {
                connect,
                method,
                state,
                authenticator,
            })));
            Ok(None)
        }
        AuthStep::Success(data) => match connect {
            Some(connect) => {
                let granted = Granted::new(method, data, authenticator);
                conn.exchange.set(Some(Box::new(Exchange::Done(granted))));
                Ok(Some(connect))
            }
            None => {
                // Re-authenticated: AUTH 0x00 Success, and the client may do it again.
                send_auth(conn, ReasonCode::SUCCESS, &method, data);
                conn.exchange.set(Some(Box::new(Exchange::Established {
                    method,
                    authenticator,
                })));
                Ok(None)
            }
        },
        AuthStep::Fail => match connect {
            Some(connect) => {
                let id = connect.client_id.to_string();
                Err(refused(core, conn, Protocol::V5, DenyReason::NotAuthorized, &id).await)
            }
            None => Err(reauth_failed(core, conn).await),
        },
    }
}

/// A failed re-authentication: counted, logged, delayed like a refused CONNECT, then the
/// connection ends with DISCONNECT 0x87 Not authorized [MQTT-4.12.1-2].
async fn reauth_failed(core: &Rc<Shard>, conn: &Rc<Conn>) -> CloseReason {
    add(&core.stats().auth_failures, 1);
    let client_id = conn.client_id.get().cloned();
    info!(client_id = ?client_id.as_deref(), peer = ?conn.peer(), listener = %conn.listener, "re-authentication failed");
    let delay = core.shared.security.failure_delay;
    if !delay.is_zero() {
        monoio::time::sleep(delay).await;
    }
    CloseReason::Protocol(
        ReasonCode::NOT_AUTHORIZED.0,
        "[MQTT-4.12.1-2] re-authentication failed".into(),
    )
}

/// AUTH with a reason code, the method and the server's data [MQTT-4.12.0-5].
pub(super) fn send_auth(
    conn: &Conn,
    reason_code: ReasonCode,
    method: &ByteStr,
    data: Option<Vec<u8>>,
) {
    let auth = Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: data.map(Bytes::from),
            ..Default::default()
        },
    };
    conn.send_packet(&Packet::Auth(auth));
}

//! CONNECT negotiation: client identifier rules, session expiry, keep-alive, the limits each
//! side announces, and the CONNACK properties that tell the client what was decided.

use crate::flow;
use crate::keepalive::{self, KeepAlive};
use crate::limits::Limits;
use uringmq_codec::{ConnAckProperties, Connect, LastWill, Protocol, ReasonCode};
use uringmq_topic::check_max_levels;

/// What was agreed for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The client identifier in use (possibly assigned).
    pub client_id: String,
    /// Whether the broker assigned it [MQTT-3.2.2-16].
    pub assigned: bool,
    /// Clean start (v5) / clean session (3.x).
    pub clean_start: bool,
    /// Session Expiry Interval in seconds; u32::MAX never expires. 3.x: clean session -> 0,
    /// else never (Mosquitto's default without `persistent_client_expiration`).
    pub session_expiry: u32,
    /// Keep-alive in effect.
    pub keep_alive: KeepAlive,
    /// Outbound in-flight window.
    pub outbound_window: u16,
    /// The client's Maximum Packet Size.
    pub client_max_packet: Option<u32>,
    /// Outbound topic aliases allowed (0 = none).
    pub client_alias_max: u16,
    /// Will Delay Interval in seconds.
    pub will_delay: u32,
    /// v5 Request Problem Information (default true): whether reason strings may be sent.
    pub problem_information: bool,
    /// Whether the session expiry was lowered and CONNACK must say so.
    session_expiry_changed: bool,
}

/// The CONNECT is refused with this CONNACK reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectRefused {
    /// The CONNACK reason code (mapped to a 3.x return code when needed).
    pub reason: ReasonCode,
    /// Why, naming the rule.
    pub message: &'static str,
}

/// Decides the connection's parameters, or refuses the CONNECT (its client identifier, an
/// authentication method nobody handles, a will the broker cannot honour). `assign_id` makes a
/// new client identifier when the client sent an empty one and may get one.
pub fn negotiate(
    c: &Connect,
    limits: &Limits,
    assign_id: impl FnOnce() -> String,
) -> Result<Negotiated, ConnectRefused> {
    let v5 = c.protocol.is_v5();
    let (client_id, assigned) = if c.client_id.is_empty() {
        match c.protocol {
            // 3.1 requires 1-23 characters.
            Protocol::V3_1 => {
                return Err(ConnectRefused {
                    reason: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    message: "[MQTT 3.1 §3.1] empty client identifier",
                })
            }
            Protocol::V3_1_1 if !c.clean_start => {
                return Err(ConnectRefused {
                    reason: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    message: "[MQTT-3.1.3-8] empty client identifier requires clean session",
                })
            }
            _ => (assign_id(), true),
        }
    } else {
        (c.client_id.as_str().to_owned(), false)
    };
    if v5 && c.properties.authentication_method.is_some() {
        // Enhanced authentication is not configured: [MQTT-4.12.0-1] answer 0x8C.
        return Err(ConnectRefused {
            reason: ReasonCode::BAD_AUTHENTICATION_METHOD,
            message: "[MQTT-4.12.0-1] authentication method not supported",
        });
    }
    if let Some(will) = &c.will {
        check_will(will, limits)?;
    }
    let requested_expiry = if v5 {
        c.properties.session_expiry_interval.unwrap_or(0)
    } else if c.clean_start {
        0
    } else {
        u32::MAX
    };
    let session_expiry = requested_expiry.min(limits.max_session_expiry);
    let p = &c.properties;
    Ok(Negotiated {
        client_id,
        assigned,
        clean_start: c.clean_start,
        session_expiry,
        keep_alive: keepalive::negotiate(c.keep_alive, limits.max_keepalive, v5),
        outbound_window: flow::outbound_window(p.receive_maximum, limits.max_inflight),
        client_max_packet: p.maximum_packet_size,
        client_alias_max: if limits.outbound_topic_aliases {
            p.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
        will_delay: c
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0),
        problem_information: p.request_problem_information.unwrap_or(true),
        session_expiry_changed: v5 && session_expiry != requested_expiry,
    })
}

/// Refuses a will the broker cannot honour (v5 [MQTT-3.2.2-12] [MQTT-3.2.2-13]; 3.x gets the
/// CONNACK return code the encoder maps these to) or whose topic it would refuse in a PUBLISH
/// (0x90 [§3.2.2.2]).
fn check_will(will: &LastWill, limits: &Limits) -> Result<(), ConnectRefused> {
    let (reason, message) = if will.qos as u8 > limits.max_qos {
        (
            ReasonCode::QOS_NOT_SUPPORTED,
            "[MQTT-3.2.2-12] will QoS above Maximum QoS",
        )
    } else if will.retain && !limits.retain_available {
        (
            ReasonCode::RETAIN_NOT_SUPPORTED,
            "[MQTT-3.2.2-13] will retain not supported",
        )
    } else if will.topic.len() > limits.max_topic_length
        || check_max_levels(&will.topic, limits.max_topic_levels).is_err()
    {
        (
            ReasonCode::TOPIC_NAME_INVALID,
            "[§3.2.2.2] will topic over the broker's topic limits",
        )
    } else {
        return Ok(());
    };
    Err(ConnectRefused { reason, message })
}

impl Negotiated {
    /// The parameters of an in-process session (the embedding API's subscriptions): no
    /// keep-alive, no expiry, no limits of its own.
    pub fn in_process(client_id: String, window: u16) -> Negotiated {
        Negotiated {
            client_id,
            assigned: false,
            clean_start: true,
            session_expiry: 0,
            keep_alive: KeepAlive {
                secs: 0,
                server_override: None,
            },
            outbound_window: window,
            client_max_packet: None,
            client_alias_max: 0,
            will_delay: 0,
            problem_information: true,
            session_expiry_changed: false,
        }
    }

    /// The v5 CONNACK properties announcing the broker's limits and what it decided.
    pub fn connack_properties(&self, limits: &Limits) -> ConnAckProperties {
        ConnAckProperties {
            session_expiry_interval: self.session_expiry_changed.then_some(self.session_expiry),
            receive_maximum: (limits.max_inflight != u16::MAX).then_some(limits.max_inflight),
            maximum_qos: (limits.max_qos < 2).then_some(limits.max_qos),
            retain_available: (!limits.retain_available).then_some(false),
            maximum_packet_size: Some(limits.max_packet_size),
            assigned_client_identifier: self.assigned.then(|| self.client_id.as_str().into()),
            topic_alias_maximum: (limits.topic_alias_maximum > 0)
                .then_some(limits.topic_alias_maximum),
            server_keep_alive: self.keep_alive.server_override,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uringmq_codec::ConnectProperties;

    fn limits() -> Limits {
        Limits {
            max_keepalive: 100,
            max_session_expiry: 3600,
            max_inflight: 20,
            max_packet_size: 1 << 20,
            topic_alias_maximum: 10,
            max_qos: 2,
            retain_available: true,
            outbound_topic_aliases: true,
            max_topic_levels: 8,
            max_topic_length: 100,
        }
    }

    fn connect(protocol: Protocol, id: &str, clean: bool) -> Connect {
        Connect {
            protocol,
            clean_start: clean,
            keep_alive: 30,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    #[test]
    fn empty_client_id_rules() {
        let l = limits();
        let err = negotiate(&connect(Protocol::V3_1_1, "", false), &l, || "x".into()).unwrap_err();
        assert_eq!(err.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        let ok = negotiate(&connect(Protocol::V3_1_1, "", true), &l, || "gen".into()).unwrap();
        assert_eq!((ok.client_id.as_str(), ok.assigned), ("gen", true));
        let v5 = negotiate(&connect(Protocol::V5, "", false), &l, || "gen5".into()).unwrap();
        assert!(v5.assigned);
        let props = v5.connack_properties(&l);
        assert_eq!(props.assigned_client_identifier.as_deref(), Some("gen5"));
        assert!(negotiate(&connect(Protocol::V3_1, "", true), &l, || "x".into()).is_err());
    }

    #[test]
    fn session_expiry_by_version() {
        let l = limits();
        let v3 = |clean| negotiate(&connect(Protocol::V3_1_1, "a", clean), &l, String::new);
        assert_eq!(v3(true).unwrap().session_expiry, 0);
        // 3.x persistent sessions are not capped by a v5 interval... but by the broker's max.
        assert_eq!(v3(false).unwrap().session_expiry, 3600);
        let mut c = connect(Protocol::V5, "a", false);
        c.properties.session_expiry_interval = Some(u32::MAX);
        let n = negotiate(&c, &l, String::new).unwrap();
        assert_eq!(n.session_expiry, 3600);
        assert_eq!(n.connack_properties(&l).session_expiry_interval, Some(3600));
        c.properties.session_expiry_interval = Some(10);
        let n = negotiate(&c, &l, String::new).unwrap();
        assert_eq!(n.connack_properties(&l).session_expiry_interval, None);
    }

    #[test]
    fn limits_are_announced() {
        let l = limits();
        let mut c = connect(Protocol::V5, "a", true);
        c.keep_alive = 500;
        c.properties.receive_maximum = Some(5);
        c.properties.topic_alias_maximum = Some(3);
        let n = negotiate(&c, &l, String::new).unwrap();
        assert_eq!(n.outbound_window, 5);
        assert_eq!(n.client_alias_max, 3);
        assert_eq!(n.keep_alive.secs, 100);
        let p = n.connack_properties(&l);
        assert_eq!(p.server_keep_alive, Some(100));
        assert_eq!(p.receive_maximum, Some(20));
        assert_eq!(p.topic_alias_maximum, Some(10));
    }

    #[test]
    fn enhanced_auth_is_refused_without_a_method() {
        let mut c = connect(Protocol::V5, "a", true);
        c.properties.authentication_method = Some("SCRAM".into());
        let err = negotiate(&c, &limits(), String::new).unwrap_err();
        assert_eq!(err.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    }
}

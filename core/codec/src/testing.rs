//! Proptest strategies for valid packets, and what a packet looks like after a trip through an
//! MQTT 3.x encoding (v5-only fields dropped or mapped). Test-only.

use crate::varint::VARINT_MAX;
use crate::*;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use smallvec::SmallVec;

/// Any UTF-8 string without U+0000 (includes multi-byte characters).
pub(crate) fn text() -> impl Strategy<Value = ByteStr> {
    "[ -~é€😀]{0,10}".prop_map(ByteStr::from)
}

/// A valid topic name: non-empty, no wildcards.
pub(crate) fn topic() -> impl Strategy<Value = ByteStr> {
    "[a-z0-9/é€]{1,10}".prop_map(ByteStr::from)
}

/// A non-empty topic filter (wildcards allowed; never a shared subscription).
fn filter() -> impl Strategy<Value = ByteStr> {
    "[a-z0-9/+#]{1,10}".prop_map(ByteStr::from)
}

pub(crate) fn bin() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn user() -> impl Strategy<Value = UserProperties> {
    vec((text(), text()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn reason() -> impl Strategy<Value = ReasonCode> {
    any::<u8>().prop_map(ReasonCode)
}

fn nonzero16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn nonzero32() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn ack_props() -> impl Strategy<Value = AckProperties> {
    (of(text()), user()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

pub(crate) fn publish_props() -> impl Strategy<Value = PublishProperties> {
    (
        of(0u8..=1),
        of(any::<u32>()),
        of(nonzero16()),
        of(topic()),
        of(bin()),
        user(),
        vec(1..=VARINT_MAX, 0..3),
        of(text()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, up, si, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: SmallVec::from_vec(si),
            content_type: ct,
        })
}

/// A valid PUBLISH; sometimes with an empty topic and a topic alias (5.0).
pub(crate) fn publish() -> impl Strategy<Value = Publish> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        pid(),
        publish_props(),
        vec(any::<u8>(), 0..40),
    )
        .prop_map(|(dup, qos, retain, topic, pid, properties, payload)| {
            let aliased = properties.topic_alias.is_some() && topic.len() % 3 == 0;
            Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic: if aliased { ByteStr::new() } else { topic },
                packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
                properties,
                payload: payload.into(),
            }
        })
}

fn will() -> impl Strategy<Value = LastWill> {
    let props = (
        of(any::<u32>()),
        of(0u8..=1),
        of(any::<u32>()),
        of(text()),
        of(topic()),
        of(bin()),
        user(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        });
    (topic(), bin(), qos(), any::<bool>(), props).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    )
}

fn connect() -> impl Strategy<Value = Connect> {
    let props = (
        of(any::<u32>()),
        of(nonzero16()),
        of(nonzero32()),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        user(),
        of(text()),
        of(bin()),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, up, am, ad)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                // Data without a method is a Protocol Error (section 3.1.2.11.10).
                authentication_data: ad.filter(|_| am.is_some()),
                authentication_method: am,
            },
        );
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        of(will()),
        of(text()),
        of(bin()),
        props,
    )
        .prop_map(
            |(clean_start, keep_alive, client_id, will, username, password, properties)| Connect {
                protocol: Protocol::V5,
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            },
        )
}

fn connack() -> impl Strategy<Value = ConnAck> {
    let a = (
        of(any::<u32>()),
        of(nonzero16()),
        of(0u8..=1),
        of(any::<bool>()),
        of(nonzero32()),
        of(text()),
    );
    let b = (
        of(any::<u16>()),
        of(text()),
        user(),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
    );
    let c = (
        of(any::<u16>()),
        of(text()),
        of(text()),
        of(text()),
        of(bin()),
    );
    (any::<bool>(), reason(), a, b, c).prop_map(|(sp, rc, a, b, c)| ConnAck {
        session_present: sp,
        reason_code: rc,
        properties: ConnAckProperties {
            session_expiry_interval: a.0,
            receive_maximum: a.1,
            maximum_qos: a.2,
            retain_available: a.3,
            maximum_packet_size: a.4,
            assigned_client_identifier: a.5,
            topic_alias_maximum: b.0,
            reason_string: b.1,
            user_properties: b.2,
            wildcard_subscription_available: b.3,
            subscription_identifiers_available: b.4,
            shared_subscription_available: b.5,
            server_keep_alive: c.0,
            response_information: c.1,
            server_reference: c.2,
            authentication_method: c.3,
            authentication_data: c.4,
        },
    })
}

fn ack() -> impl Strategy<Value = Ack> {
    (pid(), reason(), ack_props()).prop_map(|(packet_id, reason_code, properties)| Ack {
        packet_id,
        reason_code,
        properties,
    })
}

fn options() -> impl Strategy<Value = SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh).prop_map(|(qos, no_local, rap, rh)| {
        SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: rap,
            retain_handling: rh,
        }
    })
}

/// Any valid packet for MQTT 5.0 (see [`for_v3`] for the 3.x view of it).
pub(crate) fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect().prop_map(|c| Packet::Connect(Box::new(c))),
        connack().prop_map(Packet::ConnAck),
        publish().prop_map(Packet::Publish),
        ack().prop_map(Packet::PubAck),
        ack().prop_map(Packet::PubRec),
        ack().prop_map(Packet::PubRel),
        ack().prop_map(Packet::PubComp),
        (
            pid(),
            of(1..=VARINT_MAX),
            user(),
            vec((filter(), options()), 1..4)
        )
            .prop_map(|(packet_id, si, up, filters)| Packet::Subscribe(Subscribe {
                packet_id,
                properties: SubscribeProperties {
                    subscription_identifier: si,
                    user_properties: up
                },
                filters,
            })),
        (pid(), ack_props(), vec(reason(), 1..4)).prop_map(
            |(packet_id, properties, reason_codes)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    properties,
                    reason_codes,
                })
            }
        ),
        (pid(), user(), vec(filter(), 1..4)).prop_map(|(packet_id, up, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: UnsubscribeProperties {
                    user_properties: up,
                },
                filters,
            })
        }),
        (pid(), ack_props(), vec(reason(), 0..4)).prop_map(
            |(packet_id, properties, reason_codes)| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    properties,
                    reason_codes,
                })
            }
        ),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        (reason(), of(any::<u32>()), of(text()), user(), of(text())).prop_map(
            |(rc, sei, rs, up, sr)| {
                Packet::Disconnect(Disconnect {
                    reason_code: rc,
                    properties: DisconnectProperties {
                        session_expiry_interval: sei,
                        reason_string: rs,
                        user_properties: up,
                        server_reference: sr,
                    },
                })
            }
        ),
        (reason(), of(text()), of(bin()), of(text()), user()).prop_map(|(rc, am, ad, rs, up)| {
            Packet::Auth(Auth {
                reason_code: rc,
                properties: AuthProperties {
                    authentication_method: am,
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties: up,
                },
            })
        }),
    ]
}

/// A 3.x test case from a 5.0 packet: (what to encode, what decoding must give). The input keeps
/// its 5.0 fields (the encoder must drop them) but is made encodable: a CONNECT names `proto`
/// and has no password without a user name [MQTT-3.1.2-22]; a PUBLISH relying on a topic alias
/// has no 3.x form. `None` when there is no 3.x form.
pub(crate) fn v3_case(p: &Packet, proto: Protocol) -> Option<(Packet, Packet)> {
    let mut input = p.clone();
    match &mut input {
        Packet::Connect(c) => {
            c.protocol = proto;
            if c.username.is_none() {
                c.password = None;
            }
        }
        Packet::Publish(x) if x.topic.is_empty() => return None,
        _ => {}
    }
    let expected = for_v3(&input, proto)?;
    Some((input, expected))
}

/// What `p` decodes to after being encoded for MQTT 3.x `proto`: properties and 5.0-only fields
/// take their defaults, codes map to what 3.x can say. `None` for AUTH (not in 3.x).
pub(crate) fn for_v3(p: &Packet, proto: Protocol) -> Option<Packet> {
    let mut p = p.clone();
    match &mut p {
        Packet::Connect(c) => {
            c.properties = Default::default();
            if let Some(w) = &mut c.will {
                w.properties = Default::default();
            }
        }
        Packet::ConnAck(c) => {
            c.properties = Default::default();
            c.reason_code = ReasonCode::from_v3_connack(c.reason_code.to_v3_connack());
            c.session_present &= proto != Protocol::V3_1;
        }
        Packet::Publish(x) => x.properties = Default::default(),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            *a = Ack::new(a.packet_id);
        }
        Packet::Subscribe(s) => {
            s.properties = Default::default();
            for (_, o) in &mut s.filters {
                *o = SubscriptionOptions {
                    qos: o.qos,
                    ..Default::default()
                };
            }
        }
        Packet::SubAck(s) => {
            s.properties = Default::default();
            for c in &mut s.reason_codes {
                if c.0 > 2 {
                    *c = ReasonCode::V3_SUBACK_FAILURE;
                }
            }
        }
        Packet::Unsubscribe(u) => u.properties = Default::default(),
        Packet::UnsubAck(u) => {
            *u = UnsubAck {
                packet_id: u.packet_id,
                ..Default::default()
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => *d = Disconnect::default(),
        Packet::Auth(_) => return None,
    }
    Some(p)
}

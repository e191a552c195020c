//! Codec micro-benchmarks: decode and encode of CONNECT, PUBLISH (16 B, 1 KiB, 64 KiB payloads;
//! MQTT 3.1.1 and 5.0) and SUBSCRIBE, plus `PublishHead::write` against a full `encode` (the
//! per-subscriber cost of fan-out). Throughput is one packet per iteration, so criterion reports
//! packets per second.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use uringmq_codec::*;

const PROTOCOLS: [(Protocol, &str); 2] = [(Protocol::V3_1_1, "v3.1.1"), (Protocol::V5, "v5")];
const PAYLOADS: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (65536, "64KiB")];

fn connect(protocol: Protocol) -> Packet {
    let mut properties = ConnectProperties::default();
    if protocol.is_v5() {
        properties.session_expiry_interval = Some(3600);
        properties.receive_maximum = Some(100);
        properties.maximum_packet_size = Some(1 << 20);
    }
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "sensor-0042-building-7".into(),
        will: Some(LastWill {
            topic: "devices/sensor-0042/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some("sensor".into()),
        password: Some(Bytes::from_static(b"secret-password")),
        properties,
    }))
}

fn publish(protocol: Protocol, payload_len: usize) -> Publish {
    let mut properties = PublishProperties::default();
    if protocol.is_v5() {
        properties.message_expiry_interval = Some(60);
        properties.payload_format_indicator = Some(0);
    }
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "building/7/floor/3/room/12/temperature".into(),
        packet_id: 4242,
        properties,
        payload: Bytes::from(vec![0xa5; payload_len]),
    }
}

fn subscribe(protocol: Protocol) -> Packet {
    let mut properties = SubscribeProperties::default();
    if protocol.is_v5() {
        properties.subscription_identifier = Some(7);
    }
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties,
        filters: vec![
            ("building/7/+/temperature".into(), opts),
            ("building/7/alarms/#".into(), opts),
            ("devices/sensor-0042/cmd".into(), opts),
        ],
    })
}

fn encoded(p: &Packet, protocol: Protocol) -> Bytes {
    let mut out = BytesMut::new();
    encode(p, protocol, &mut out).unwrap();
    out.freeze()
}

/// Decodes from a buffer holding one packet; the refill copy (a memcpy of the packet, as a
/// socket read would do) is part of the measured loop, so large payloads show the copy cost.
fn bench_decode(c: &mut Criterion, group_name: &str, cases: &[(String, Protocol, Bytes)]) {
    let mut g = c.benchmark_group(group_name);
    g.throughput(Throughput::Elements(1));
    for (name, protocol, wire) in cases {
        g.bench_with_input(BenchmarkId::from_parameter(name), wire, |b, wire| {
            let mut d = Decoder::with_protocol(*protocol, u32::MAX);
            let mut buf = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                buf.extend_from_slice(wire);
                black_box(d.decode(&mut buf).unwrap().unwrap());
            });
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion, group_name: &str, cases: &[(String, Protocol, Packet)]) {
    let mut g = c.benchmark_group(group_name);
    g.throughput(Throughput::Elements(1));
    for (name, protocol, packet) in cases {
        g.bench_with_input(BenchmarkId::from_parameter(name), packet, |b, packet| {
            let mut out = BytesMut::with_capacity(encoded_len(packet, *protocol).unwrap());
            b.iter(|| {
                out.clear();
                encode(black_box(packet), *protocol, &mut out).unwrap();
                black_box(&out);
            });
        });
    }
    g.finish();
}

fn cases() -> Vec<(String, Protocol, Packet)> {
    let mut v = Vec::new();
    for (proto, pname) in PROTOCOLS {
        v.push((format!("connect/{pname}"), proto, connect(proto)));
        for (len, lname) in PAYLOADS {
            v.push((
                format!("publish-{lname}/{pname}"),
                proto,
                Packet::Publish(publish(proto, len)),
            ));
        }
        v.push((format!("subscribe/{pname}"), proto, subscribe(proto)));
    }
    v
}

fn decode_benches(c: &mut Criterion) {
    let wires: Vec<_> = cases()
        .into_iter()
        .map(|(n, proto, p)| (n, proto, encoded(&p, proto)))
        .collect();
    bench_decode(c, "decode", &wires);
}

fn encode_benches(c: &mut Criterion) {
    bench_encode(c, "encode", &cases());
}

/// Per-subscriber cost of fan-out: patching a pre-encoded head vs encoding the whole PUBLISH.
/// Both write only the head plus payload into a reused buffer.
fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan-out");
    g.throughput(Throughput::Elements(1));
    for (proto, pname) in PROTOCOLS {
        for (len, lname) in [(16, "16B"), (1024, "1KiB")] {
            let p = publish(proto, len);
            let head = PublishHead::encode(&p, proto).unwrap();
            let mut out = BytesMut::with_capacity(head.packet_len());
            g.bench_function(format!("head-write-{lname}/{pname}"), |b| {
                let mut pid = 0u16;
                b.iter(|| {
                    pid = pid.wrapping_add(1).max(1);
                    out.clear();
                    head.write(pid, false, &mut out);
                    out.extend_from_slice(&p.payload);
                    black_box(&out);
                });
            });
            let mut packet = Packet::Publish(p.clone());
            g.bench_function(format!("full-encode-{lname}/{pname}"), |b| {
                let mut pid = 0u16;
                b.iter(|| {
                    pid = pid.wrapping_add(1).max(1);
                    if let Packet::Publish(p) = &mut packet {
                        p.packet_id = pid;
                    }
                    out.clear();
                    encode(&packet, proto, &mut out).unwrap();
                    black_box(&out);
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decode_benches, encode_benches, fan_out);
criterion_main!(benches);

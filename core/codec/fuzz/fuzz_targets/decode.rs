//! Arbitrary bytes into a server-side decoder (protocol learnt from CONNECT) and a 5.0 client
//! decoder. Must never panic; every packet decoded must re-encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use uringmq_codec::{encode, Decoder, Packet, Protocol};

fn run(mut d: Decoder, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let proto = d.protocol().unwrap_or(Protocol::V3_1_1);
        let packet = match d.decode(&mut buf) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => return,
        };
        let proto = match &packet {
            Packet::Connect(c) => c.protocol,
            _ => proto,
        };
        let mut out = BytesMut::new();
        encode(&packet, proto, &mut out).expect("a decoded packet re-encodes");
        let again = Decoder::with_protocol(proto, u32::MAX).decode(&mut out);
        assert_eq!(
            again,
            Ok(Some(packet)),
            "re-encoded packet decodes to itself"
        );
        assert!(out.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    run(Decoder::new(1 << 20), data);
    run(Decoder::with_protocol(Protocol::V5, 1 << 20), data);
});

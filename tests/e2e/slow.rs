//! A subscriber that stops reading never slows the others: QoS 0 beyond its outbound limit is
//! dropped (counted), QoS 1 waits in its bounded session queue.

use crate::support::*;
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

#[test]
fn a_stalled_subscriber_does_not_slow_others() {
    stalled_subscribers(8 * 1024, 512);
}

/// The same with payloads the broker queues shared rather than copied (at least 16 KiB, see
/// core/broker/src/out_queue.rs): the outbound limit counts them too.
#[test]
fn a_stalled_subscriber_of_large_payloads_does_not_slow_others() {
    stalled_subscribers(64 * 1024, 256);
}

/// Publishes `count` payloads of `len` bytes to one fast and two stalled readers.
fn stalled_subscribers(len: usize, count: usize) {
    let b = broker_with(|c| {
        c.max_outbound_bytes = 16 * 1024;
        c.max_queued_messages = 10;
    });
    let mut stalled = Client::connect(b.local_addr(), Protocol::V5, "stalled");
    stalled.subscribe("firehose", QoS::AtLeastOnce);
    let mut stalled0 = Client::connect(b.local_addr(), Protocol::V5, "stalled0");
    stalled0.subscribe("firehose", QoS::AtMostOnce);
    let mut fast = Client::connect(b.local_addr(), Protocol::V5, "fast");
    fast.subscribe("firehose", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    let payload = vec![7u8; len];
    // 4 MB or more: far beyond the socket buffers of the stalled readers.
    for _ in 0..count {
        p.publish_with(publish("firehose", &payload, QoS::AtLeastOnce, false));
        let m = fast.recv_publish();
        assert_eq!(m.payload.len(), payload.len());
    }
    let st = b.stats();
    assert!(
        st.dropped_qos0 > 0,
        "QoS 0 to the stalled readers dropped: {st:?}"
    );
    assert!(
        st.dropped_queue_full > 0,
        "QoS 1 beyond the queue bound dropped: {st:?}"
    );
    // The stalled QoS 1 reader still gets what fit, in order, once it reads.
    let mut n = 0;
    while let Some(Packet::Publish(m)) = stalled.recv_within(Duration::from_secs(1)) {
        stalled.ack(&m);
        n += 1;
    }
    assert!(n > 0);
}

/// A client that sends PINGREQs and never reads its PINGRESPs: the broker stops reading from
/// it once its replies pile up, so TCP pushes back and the broker's memory stays bounded; the
/// core meanwhile serves its other clients; and once the client reads again, every PINGREQ it
/// sent is answered.
#[test]
fn a_client_that_sends_without_reading_is_pushed_back() {
    // One core: the flooder and the others share it.
    let b = broker_with(|c| {
        c.cores = 1;
        c.max_outbound_bytes = 64 * 1024;
    });
    let mut flooder = Client::connect(b.local_addr(), Protocol::V5, "flooder");
    let mut pings = bytes::BytesMut::new();
    for _ in 0..8192 {
        encode(&Packet::PingReq, Protocol::V5, &mut pings).expect("encode");
    }
    // Without push-back the broker reads all of this and queues as much in replies.
    const LIMIT: usize = 256 * 1024 * 1024;
    let stream = flooder.stream();
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut written = 0usize;
    let mut at = 0usize;
    while written < LIMIT {
        match stream.write(&pings[at..]) {
            Ok(n) => {
                written += n;
                at = (at + n) % pings.len();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("the flooder was disconnected: {e}"),
        }
    }
    // What the flooder can write before it blocks, with push-back: the broker's receive and
    // send buffers, the flooder's own two (every PINGREQ read becomes a PINGRESP on its way
    // back), and the queue the broker holds. Far below LIMIT, which a broker that keeps
    // reading accepts in full.
    let bound = 2 * (tcp_buffer_max("tcp_rmem") + tcp_buffer_max("tcp_wmem")) + 2 * 64 * 1024;
    assert!(
        bound < LIMIT / 2,
        "this host's TCP buffers are too large for this test"
    );
    assert!(
        written < bound,
        "the broker kept reading from a client that does not read: {written} bytes"
    );
    // The core still serves others.
    let mut sub = Client::connect(b.local_addr(), Protocol::V5, "sub");
    sub.subscribe("t", QoS::AtLeastOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("t", b"still here", QoS::AtLeastOnce, false);
    assert_eq!(&sub.recv_publish().payload[..], b"still here");
    sub.ping();
    // The flooder reads again: a PINGRESP for every PINGREQ, none lost, then one more. The
    // rest is written from another thread while this one reads: the broker reads no more until
    // the flooder has taken some of its replies.
    let stream = flooder.stream();
    stream.set_write_timeout(None).unwrap();
    let mut tail = Vec::new();
    if written % 2 == 1 {
        tail.push(pings[at]);
    }
    let mut last = bytes::BytesMut::new();
    encode(&Packet::PingReq, Protocol::V5, &mut last).expect("encode");
    tail.extend_from_slice(&last);
    written += tail.len();
    let mut w = stream.try_clone().unwrap();
    let tail_writer = std::thread::spawn(move || w.write_all(&tail));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = 0usize;
    while answered < written {
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed after {answered} of {written} bytes of PINGRESP"),
            Ok(n) => {
                // PINGRESP is D0 00: even offsets of the whole stream hold D0, odd ones 00.
                let ok = buf[..n].iter().enumerate().all(|(i, &b)| {
                    b == if (answered + i).is_multiple_of(2) {
                        0xD0
                    } else {
                        0
                    }
                });
                assert!(ok, "only PINGRESPs");
                answered += n;
            }
            Err(e) => panic!("{answered} of {written} bytes of PINGRESP, then {e}"),
        }
    }
    tail_writer
        .join()
        .unwrap()
        .expect("the last PINGREQs were written");
    assert_eq!(answered, written);
}

/// The largest size the kernel gives a TCP socket buffer (`net.ipv4.tcp_rmem` / `tcp_wmem`).
fn tcp_buffer_max(name: &str) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(32 * 1024 * 1024)
}

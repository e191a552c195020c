//! A subscriber that stops reading never slows the others: QoS 0 beyond its outbound limit is
//! dropped (counted), QoS 1 waits in its bounded session queue.

use std::time::Duration;
use uringmq_tests::*;

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

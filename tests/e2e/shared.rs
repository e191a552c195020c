//! `$share/group/filter`: balanced over members on all cores; a member that leaves has its
//! unacknowledged QoS 1 messages redelivered to another member.

use crate::support::*;

#[test]
fn messages_are_balanced_over_members() {
    let b = broker();
    let mut members: Vec<Client> = (0..4)
        .map(|i| {
            let mut c = Client::connect(b.local_addr(), Protocol::V5, &format!("m{i}"));
            c.subscribe("$share/g/work/+", QoS::AtLeastOnce);
            c
        })
        .collect();
    let mut ordinary = Client::connect(b.local_addr(), Protocol::V3_1_1, "ordinary");
    ordinary.subscribe("work/+", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    for i in 0..40u8 {
        p.publish("work/a", &[i], QoS::AtLeastOnce, false);
    }
    let mut total = 0;
    for m in &mut members {
        let mut n = 0;
        while let Some(Packet::Publish(x)) = m.recv_within(QUIET) {
            m.ack(&x);
            n += 1;
        }
        assert!(n >= 5, "each member gets a fair share, got {n}");
        total += n;
    }
    assert_eq!(total, 40, "each message to exactly one member");
    for _ in 0..40 {
        ordinary.recv_publish();
    }
}

#[test]
fn unacknowledged_messages_of_a_leaving_member_go_to_another() {
    let b = broker();
    let mut a = Client::connect(b.local_addr(), Protocol::V5, "a");
    a.subscribe("$share/g/job", QoS::AtLeastOnce);
    let mut c = Client::connect(b.local_addr(), Protocol::V5, "c");
    c.subscribe("$share/g/job", QoS::AtLeastOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    for i in 0..6u8 {
        p.publish("job", &[i], QoS::AtLeastOnce, false);
    }
    // `a` takes its messages without acknowledging them, then leaves.
    let mut taken = Vec::new();
    while let Some(Packet::Publish(x)) = a.recv_within(QUIET) {
        taken.push(x.payload[0]);
    }
    drop(a);
    let mut got = Vec::new();
    while let Some(Packet::Publish(x)) = c.recv_within(std::time::Duration::from_secs(1)) {
        c.ack(&x);
        got.push(x.payload[0]);
    }
    got.sort();
    assert_eq!(
        got,
        (0..6).collect::<Vec<u8>>(),
        "c got its own and a's unacknowledged ones (a had {taken:?})"
    );
}

#[test]
fn v3_clients_can_share_too() {
    let b = broker();
    let mut a = Client::connect(b.local_addr(), Protocol::V3_1_1, "a");
    a.subscribe("$share/g/v3", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V3_1_1, "p");
    p.publish("v3", b"x", QoS::AtMostOnce, false);
    a.recv_publish();
}

#[test]
fn invalid_share_filters_are_refused() {
    let b = broker();
    let mut a = Client::connect(b.local_addr(), Protocol::V5, "a");
    let o = SubscriptionOptions::default();
    let codes = a.subscribe_with(
        &[("$share/g+/x", o), ("$share//x", o), ("$share/g", o)],
        Default::default(),
    );
    assert!(
        codes.iter().all(|c| *c == ReasonCode::TOPIC_FILTER_INVALID),
        "{codes:?}"
    );
}

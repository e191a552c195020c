//! The embedding API: in-process publish/subscribe (with the MQTT 5 subscription options),
//! the in-process publish authorised like a PUBLISH (ACL file, hook, `$SYS/`), clients(),
//! disconnect() with and without the will, the disconnect hook, stats, several brokers in one
//! process, and 100 start/stop cycles without leaking threads, fds or ports.

use crate::support::*;
use std::time::Duration;
use uringmq::{InjectedMessage, RecvError};

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn in_process_subscribe_and_publish() {
    let b = broker();
    let sub = b.subscribe("api/+", QoS::AtLeastOnce).unwrap();
    // A client on either core reaches it once subscribe() returned.
    for i in 0..4 {
        let mut c = Client::connect(b.local_addr(), Protocol::V5, &format!("c{i}"));
        c.publish("api/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false);
    }
    let mut got: Vec<String> = (0..4)
        .map(|_| String::from_utf8(sub.recv_timeout(Some(WAIT)).unwrap().payload.to_vec()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3"]);
    // And an injected message reaches clients.
    let mut c = Client::connect(b.local_addr(), Protocol::V3_1_1, "listener");
    c.subscribe("other/in", QoS::AtLeastOnce);
    b.publish(InjectedMessage {
        topic: "other/in".into(),
        payload: "hi".into(),
        qos: QoS::AtLeastOnce,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(&c.recv_publish().payload[..], b"hi");
    assert!(b
        .publish(InjectedMessage {
            topic: "bad/#".into(),
            ..Default::default()
        })
        .is_err());
    assert!(b.subscribe("bad/#/x", QoS::AtMostOnce).is_err());
    assert_eq!(
        sub.recv_timeout(Some(Duration::from_millis(50)))
            .unwrap_err(),
        RecvError::Timeout
    );
    sub.close();
    b.publish(InjectedMessage {
        topic: "api/x".into(),
        payload: "late".into(),
        ..Default::default()
    })
    .unwrap();
    c.ping();
    assert!(sub.try_recv().is_none());
}

#[test]
fn event_fd_becomes_readable() {
    let b = broker();
    let sub = b.subscribe("ev", QoS::AtMostOnce).unwrap();
    b.publish(InjectedMessage {
        topic: "ev".into(),
        payload: "x".into(),
        ..Default::default()
    })
    .unwrap();
    let mut pfd = libc_pollfd(sub.event_fd());
    assert_eq!(poll_one(&mut pfd, 5000), 1);
    assert!(sub.recv_timeout(Some(WAIT)).is_ok());
    sub.clear_ready();
    assert_eq!(poll_one(&mut pfd, 0), 0, "cleared");
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn libc_pollfd(fd: i32) -> PollFd {
    PollFd {
        fd,
        events: 1,
        revents: 0,
    }
}

extern "C" {
    fn poll(fds: *mut PollFd, n: u64, timeout: i32) -> i32;
}

fn poll_one(p: &mut PollFd, timeout: i32) -> i32 {
    // SAFETY: one valid pollfd.
    unsafe { poll(p as *mut PollFd, 1, timeout) }
}

#[test]
fn retained_messages_reach_in_process_subscriptions() {
    let b = broker();
    b.publish(InjectedMessage {
        topic: "keep".into(),
        payload: "v".into(),
        retain: true,
        ..Default::default()
    })
    .unwrap();
    let sub = b.subscribe("keep", QoS::AtMostOnce).unwrap();
    let d = sub.recv_timeout(Some(WAIT)).unwrap();
    assert!(d.retain);
    assert_eq!(&d.payload[..], b"v");
}

#[test]
fn several_brokers_and_restarts_do_not_leak() {
    // Warm up once (lazy statics, logging) before counting.
    drop(broker());
    let threads = count("/proc/self/task");
    let fds = count("/proc/self/fd");
    let other = broker();
    for i in 0..100 {
        let mut b = broker();
        assert_ne!(b.local_addr().port(), other.local_addr().port());
        if i % 10 == 0 {
            let mut c = Client::connect(b.local_addr(), Protocol::V5, "x");
            c.ping();
        }
        b.stop();
    }
    drop(other);
    // Other tests of this binary run in parallel: allow their brokers, not a leak per cycle.
    let grown_threads = count("/proc/self/task").saturating_sub(threads);
    let grown_fds = count("/proc/self/fd").saturating_sub(fds);
    assert!(grown_threads < 20, "threads grew by {grown_threads}");
    assert!(grown_fds < 50, "fds grew by {grown_fds}");
}

#[test]
fn stats_count_traffic() {
    let b = broker();
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "s");
    s.subscribe("st", QoS::AtMostOnce);
    let mut p = Client::connect(b.local_addr(), Protocol::V5, "p");
    p.publish("st", b"x", QoS::AtMostOnce, false);
    s.recv_publish();
    let st = b.stats();
    assert_eq!(st.connections, 2);
    assert_eq!(st.sessions, 2);
    assert_eq!(st.subscriptions, 1);
    assert!(st.messages_in >= 1 && st.messages_out >= 1);
    assert!(st.bytes_in > 0 && st.bytes_out > 0);
}

#[test]
fn injected_messages_keep_their_order() {
    // [MQTT-4.6.0-6]: messages of one publisher arrive in the order sent.
    let b = broker();
    let sub = b.subscribe("order", QoS::AtLeastOnce).unwrap();
    let mut c = Client::connect(b.local_addr(), Protocol::V5, "c");
    c.subscribe("order", QoS::AtLeastOnce);
    for i in 0..50u8 {
        b.publish(InjectedMessage {
            topic: "order".into(),
            payload: vec![i].into(),
            qos: QoS::AtLeastOnce,
            ..Default::default()
        })
        .unwrap();
    }
    for i in 0..50u8 {
        assert_eq!(sub.recv_timeout(Some(WAIT)).unwrap().payload[0], i);
        assert_eq!(c.recv_publish().payload[0], i);
    }
}

#[test]
fn stop_closes_in_process_subscriptions() {
    let mut b = broker();
    let sub = b.subscribe("bye/#", QoS::AtMostOnce).unwrap();
    // A socket client with a live connection too, so the core has connection state to drop.
    let _c = Client::connect(b.local_addr(), Protocol::V5, "still-here");
    b.stop();
    // A consumer blocked on the subscription learns that the broker is gone instead of
    // waiting forever.
    assert_eq!(
        sub.recv_timeout(Some(Duration::from_secs(5))).unwrap_err(),
        RecvError::Closed
    );
}

#[test]
fn clients_disconnect_and_the_disconnect_hook() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let hooks = uringmq::Hooks {
        on_disconnect: Some(std::sync::Arc::new(
            move |c: uringmq::ClientSummary, why| {
                let _ = tx.lock().unwrap().send((c.client_id, why));
            },
        )),
        ..Default::default()
    };
    let b = Broker::builder(config()).hooks(hooks).start().unwrap();
    // Clients on both cores are listed, with their protocol level.
    let mut a = Client::connect(b.local_addr(), Protocol::V5, "a");
    let _b = Client::connect(b.local_addr(), Protocol::V3_1_1, "b");
    let mut listed: Vec<(String, Protocol)> = b
        .clients()
        .unwrap()
        .into_iter()
        .map(|c| (c.client_id, c.protocol))
        .collect();
    listed.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        listed,
        [("a".into(), Protocol::V5), ("b".into(), Protocol::V3_1_1)]
    );
    // A kick: DISCONNECT 0x98 to a v5 client, and the hook is told why.
    assert!(b.disconnect("a", false).unwrap());
    a.expect_disconnect(Some(ReasonCode::ADMINISTRATIVE_ACTION));
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        ("a".into(), "administrative_action")
    );
    assert!(!b.disconnect("a", false).unwrap());
    assert_eq!(b.clients().unwrap().len(), 1);
}

#[test]
fn in_process_subscription_options() {
    let b = broker();
    let retained = InjectedMessage {
        topic: "opt/r".into(),
        payload: "old".into(),
        retain: true,
        ..Default::default()
    };
    b.publish(retained.clone()).unwrap();
    let opts = uringmq::SubscribeOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
        subscription_identifier: Some(9),
    };
    let sub = b.subscribe_with("opt/#", opts).unwrap();
    // Not sent the retained message; its own publication skipped (no local).
    sub.publish(InjectedMessage {
        topic: "opt/own".into(),
        ..Default::default()
    })
    .unwrap();
    b.publish(retained).unwrap();
    let d = sub.recv_timeout(Some(WAIT)).unwrap();
    assert_eq!((d.topic.as_str(), d.retain), ("opt/r", true));
    assert_eq!(&d.properties.subscription_identifiers[..], &[9]);
    assert_eq!(
        sub.recv_timeout(Some(Duration::from_millis(50)))
            .unwrap_err(),
        RecvError::Timeout
    );
    let bad = uringmq::SubscribeOptions {
        subscription_identifier: Some(0),
        ..Default::default()
    };
    assert!(b.subscribe_with("opt/#", bad).is_err());
}

/// A will-carrying v3.1.1 client `id` whose will goes to `wills/<id>`.
fn with_will(b: &Broker, id: &str) -> Client {
    let mut c = connect_packet(Protocol::V3_1_1, id);
    c.will = Some(LastWill {
        topic: format!("wills/{id}").into(),
        payload: "gone".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    Client::connect_with(b.local_addr(), c).0
}

#[test]
fn a_kick_publishes_the_will_only_when_asked() {
    // Mosquitto's kick takes `with_will`; its dynamic-security plugin passes false.
    let b = broker();
    let mut watcher = Client::connect(b.local_addr(), Protocol::V5, "watcher");
    watcher.subscribe("wills/#", QoS::AtMostOnce);
    let mut quiet = with_will(&b, "quiet");
    assert!(b.disconnect("quiet", false).unwrap());
    quiet.closed();
    let mut loud = with_will(&b, "loud");
    assert!(b.disconnect("loud", true).unwrap());
    loud.closed();
    // Only the will asked for arrives.
    assert_eq!(watcher.recv_publish().topic, "wills/loud");
    watcher.expect_nothing();
}

/// An ACL file: anonymous clients may write `open/#` only; alice may write `alice/#`; everyone
/// may read everything.
fn acl_broker(tag: &str) -> Broker {
    let dir = scratch_dir(tag);
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "topic read #\ntopic write open/#\n\nuser alice\ntopic read #\ntopic write alice/#\n",
    )
    .unwrap();
    broker_with(|c| c.acl_file = Some(acl))
}

fn injected(topic: &str, username: Option<&str>) -> InjectedMessage {
    InjectedMessage {
        topic: topic.into(),
        payload: topic.to_owned().into(),
        username: username.map(Into::into),
        ..Default::default()
    }
}

#[test]
fn in_process_publish_is_authorised_by_the_acl_file() {
    let b = acl_broker("inproc-acl");
    let mut s = Client::connect(b.local_addr(), Protocol::V5, "reader");
    s.subscribe("#", QoS::AtMostOnce);
    // Anonymous (no user name): the anonymous rules apply.
    let denied = b.publish(injected("alice/x", None)).unwrap_err();
    assert!(
        matches!(denied, uringmq::ApiError::NotAuthorized(_)),
        "{denied}"
    );
    b.publish(injected("open/x", None)).unwrap();
    assert_eq!(
        s.recv_publish().topic,
        "open/x",
        "the denied one was not routed"
    );
    // As a named user: that user's rules.
    b.publish(injected("alice/y", Some("alice"))).unwrap();
    assert_eq!(s.recv_publish().topic, "alice/y");
    assert!(b.publish(injected("open/y", Some("alice"))).is_err());
    // A subscription's publish is checked too.
    let sub = b.subscribe("x/#", QoS::AtMostOnce).unwrap();
    assert!(matches!(
        sub.publish(injected("alice/z", None)),
        Err(uringmq::ApiError::NotAuthorized(_))
    ));
    s.expect_nothing();
}

#[test]
fn in_process_publish_to_sys_is_refused() {
    // Without the broker's own $SYS topics, which the subscription would receive.
    let b = broker_with(|c| c.sys_interval_secs = 0);
    let sub = b.subscribe("$SYS/#", QoS::AtMostOnce).unwrap();
    for topic in ["$SYS/broker/uptime", "$SYS"] {
        assert!(matches!(
            b.publish(injected(topic, None)),
            Err(uringmq::ApiError::NotAuthorized(_))
        ));
    }
    assert_eq!(
        sub.recv_timeout(Some(QUIET)).unwrap_err(),
        RecvError::Timeout
    );
}

/// Who asked: client id, user name, listener, thread.
type Asked = (String, Option<String>, String, std::thread::ThreadId);

/// Records who asks, on which thread, and denies `secret/#`; blocking, like a Python hook.
struct Recorder(std::sync::Mutex<Vec<Asked>>);

impl uringmq_auth::Authorizer for Recorder {
    fn authorize(
        &self,
        c: &uringmq_auth::ClientInfo<'_>,
        access: uringmq_auth::Access,
        topic: &str,
    ) -> bool {
        if access == uringmq_auth::Access::Publish {
            self.0.lock().unwrap().push((
                c.client_id.to_owned(),
                c.username.map(str::to_owned),
                c.listener.to_owned(),
                std::thread::current().id(),
            ));
        }
        !topic.starts_with("secret/")
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

#[test]
fn in_process_publish_asks_the_hook_on_the_calling_thread() {
    let hook = std::sync::Arc::new(Recorder(Default::default()));
    let hooks = uringmq::Hooks {
        authorizer: Some(hook.clone()),
        ..Default::default()
    };
    let b = Broker::builder(config()).hooks(hooks).start().unwrap();
    b.publish(injected("open/x", None)).unwrap();
    assert!(matches!(
        b.publish(injected("secret/x", Some("alice"))),
        Err(uringmq::ApiError::NotAuthorized(_))
    ));
    let me = std::thread::current().id();
    let id = uringmq::IN_PROCESS_CLIENT_ID.to_owned();
    let listener = "default".to_owned();
    assert_eq!(
        *hook.0.lock().unwrap(),
        [
            (id.clone(), None, listener.clone(), me),
            (id, Some("alice".into()), listener, me),
        ]
    );
}

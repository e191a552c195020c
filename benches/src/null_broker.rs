//! A "null broker": the cheapest server that still lets the load generator run end to end, to
//! show how fast the load generator itself can go on this machine (`--null-broker`).
//!
//! One thread; answers CONNECT, SUBSCRIBE, QoS 1/2 and PINGREQ, and forwards every PUBLISH byte
//! for byte to every subscriber, batching each subscriber's writes per loop turn. No topic
//! matching, no sessions, packet identifiers passed through: only the fan-in scenario (all
//! publishers, one subscriber) is meaningful against it. Not an MQTT broker.

use crate::readbuf::ReadBuf;
use crate::signal::Signal;
use crate::wire::{self, kind};
use monoio::io::{AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

struct Peer {
    out: RefCell<Vec<u8>>,
    signal: Arc<Signal>,
    closed: Cell<bool>,
}

type Subscribers = Rc<RefCell<Vec<Rc<Peer>>>>;

/// Serves on 127.0.0.1:`port` for `duration`, then returns.
pub fn serve(port: u16, duration: Duration) -> io::Result<()> {
    // Same driver as uringmq-load's default (see `cli::Driver`).
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let subs: Subscribers = Rc::new(RefCell::new(Vec::new()));
        let accept_loop = async {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        monoio::spawn(peer(s, subs.clone()));
                    }
                    Err(e) => eprintln!("null broker: accept: {e}"),
                }
            }
        };
        // Losing an accept at shutdown is harmless: the process ends.
        let _ = monoio::time::timeout(duration, accept_loop).await;
        Ok(())
    })
}

async fn peer(s: TcpStream, subs: Subscribers) {
    let me = Rc::new(Peer {
        out: RefCell::new(Vec::new()),
        signal: Arc::new(Signal::default()),
        closed: Cell::new(false),
    });
    let (mut r, mut w) = s.into_split();
    let writer = me.clone();
    monoio::spawn(async move {
        let mut buf = Vec::new();
        while !writer.closed.get() {
            std::mem::swap(&mut buf, &mut writer.out.borrow_mut());
            if buf.is_empty() {
                writer.signal.wait().await;
                continue;
            }
            let (res, b) = w.write_all(buf).await;
            buf = b;
            buf.clear();
            if res.is_err() {
                writer.closed.set(true);
            }
        }
    });
    let mut rb = ReadBuf::new(4096);
    let mut v5 = false;
    'conn: loop {
        let mut used = 0;
        let mut touched: Vec<Rc<Peer>> = Vec::new();
        {
            let data = rb.data();
            let mut out = me.out.borrow_mut();
            while let Ok(Some((f, n))) = wire::next_frame(&data[used..]) {
                let frame = &data[used..used + n];
                used += n;
                let id = f.body.get(..2).map_or([0, 0], |b| [b[0], b[1]]);
                match f.kind {
                    1 => {
                        // Protocol level follows the 6-byte protocol name field.
                        v5 = f.body.get(6) == Some(&5);
                        out.extend_from_slice(if v5 {
                            &[0x20, 3, 0, 0, 0]
                        } else {
                            &[0x20, 2, 0, 0]
                        });
                    }
                    8 => {
                        let qos = f.body.last().copied().unwrap_or(0) & 3;
                        if v5 {
                            out.extend_from_slice(&[0x90, 4, id[0], id[1], 0, qos]);
                        } else {
                            out.extend_from_slice(&[0x90, 3, id[0], id[1], qos]);
                        }
                        subs.borrow_mut().push(me.clone());
                    }
                    kind::PUBLISH => {
                        let qos = (f.flags >> 1) & 3;
                        let topic_len = usize::from(u16::from_be_bytes(id));
                        if let Some(pid) = f.body.get(2 + topic_len..4 + topic_len) {
                            let k = if qos == 1 { kind::PUBACK } else { kind::PUBREC };
                            if qos > 0 {
                                wire::ack(&mut out, k, u16::from_be_bytes([pid[0], pid[1]]));
                            }
                        }
                        for s in subs.borrow().iter() {
                            if Rc::ptr_eq(s, &me) {
                                out.extend_from_slice(frame);
                            } else {
                                s.out.borrow_mut().extend_from_slice(frame);
                                if !touched.iter().any(|t| Rc::ptr_eq(t, s)) {
                                    touched.push(s.clone());
                                }
                            }
                        }
                    }
                    kind::PUBREL => wire::ack(&mut out, kind::PUBCOMP, u16::from_be_bytes(id)),
                    12 => out.extend_from_slice(&[0xD0, 0]),
                    kind::DISCONNECT => break 'conn,
                    _ => {}
                }
            }
        }
        rb.consume(used);
        me.signal.notify();
        for t in touched {
            t.signal.notify();
        }
        match rb.fill(&mut r).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    me.closed.set(true);
    me.signal.notify();
    subs.borrow_mut().retain(|s| !Rc::ptr_eq(s, &me));
}

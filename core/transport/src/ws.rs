//! MQTT over WebSocket (MQTT 5.0 / 3.1.1 section 6) as a sans-I/O adapter: the upgrade
//! handshake, then client frames turned into a plain MQTT byte stream and MQTT bytes wrapped
//! into binary frames.
//!
//! Frame headers are parsed and written by tungstenite's `FrameHeader`; this file holds the
//! RFC 6455 rules on top (masking, fragmentation, control frames, close handshake). Payloads
//! are unmasked straight into the caller's MQTT buffer as they arrive, so a large frame costs
//! no extra buffer and MQTT packets may span frames or share one [MQTT-6.0.0-2].

use std::io::Cursor;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::error::TransportError;
use crate::transport::ReadOutcome;
use crate::ws_handshake::{parse_request, write_accept, write_refusal};

/// RFC 6455 close codes we send.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;

/// Longest frame header (2 + 8 length + 4 mask bytes).
const MAX_HEADER: usize = 14;
/// Longest control frame payload (RFC 6455 5.5).
const MAX_CONTROL: usize = 125;

/// Settings of a WebSocket listener, shared by its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// The only request path upgraded (others get 404); `None` accepts any path, as
    /// Mosquitto does. The query string is ignored. Default `/mqtt`.
    pub path: Option<String>,
    /// Largest frame payload accepted; bigger frames are closed with 1009. MQTT packets may
    /// span frames, so this bounds nothing but one frame. Default 16 MiB.
    pub max_frame_size: u64,
    /// Largest upgrade request head; bigger requests get 431. Default 8 KiB.
    pub max_request_size: usize,
    /// Refuse (400) clients that offer neither `mqtt` nor `mqttv3.1` [MQTT-6.0.0-3].
    /// Default true; false accepts them and answers without a subprotocol.
    pub require_subprotocol: bool,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            path: Some("/mqtt".to_owned()),
            max_frame_size: 16 << 20,
            max_request_size: 8 << 10,
            require_subprotocol: true,
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Collecting the HTTP upgrade request.
    Handshake(BytesMut),
    /// Frames flow both ways.
    Open,
    /// A close frame or HTTP error was queued; nothing more is sent and input is ignored.
    Closed,
}

/// What the bytes arriving next belong to.
#[derive(Debug, Clone, Copy)]
enum FrameState {
    /// The next frame's header (partly in `head`).
    Header,
    /// Payload of a binary or continuation frame, unmasked into the MQTT stream.
    Data {
        remaining: u64,
        mask: [u8; 4],
        offset: usize,
    },
    /// Payload of a control frame, collected in `control` until complete.
    Control {
        opcode: Control,
        remaining: usize,
        mask: [u8; 4],
    },
}

/// The server side of one WebSocket connection carrying MQTT.
#[derive(Debug)]
pub struct WsTransport {
    config: Arc<WsConfig>,
    phase: Phase,
    frame: FrameState,
    /// True between the first and the final frame of a fragmented binary message.
    in_message: bool,
    head: [u8; MAX_HEADER],
    head_len: u8,
    control: [u8; MAX_CONTROL],
    control_len: u8,
    /// Bytes the transport itself must send (101 answer, pong, close).
    out: BytesMut,
}

impl WsTransport {
    /// A connection waiting for its upgrade request.
    pub fn new(config: Arc<WsConfig>) -> Self {
        WsTransport {
            config,
            phase: Phase::Handshake(BytesMut::new()),
            frame: FrameState::Header,
            in_message: false,
            head: [0; MAX_HEADER],
            head_len: 0,
            control: [0; MAX_CONTROL],
            control_len: 0,
            out: BytesMut::new(),
        }
    }

    /// Feeds bytes from the peer (the upgrade request, then frames); binary payloads are
    /// appended to `mqtt_in`. Answers (101, pong, close) wait in [`Self::pending_raw`].
    ///
    /// Returns [`ReadOutcome::Closed`] after the peer's close frame (our reply is queued).
    /// On error an HTTP error answer or a close frame with the reason's code is queued.
    pub fn read_raw(
        &mut self,
        raw: &[u8],
        mqtt_in: &mut BytesMut,
    ) -> Result<ReadOutcome, TransportError> {
        match &mut self.phase {
            Phase::Closed => Ok(ReadOutcome::Closed),
            Phase::Open => self.read_frames(raw, mqtt_in),
            Phase::Handshake(request) => {
                request.extend_from_slice(raw);
                match parse_request(request, &self.config) {
                    Ok(None) => Ok(ReadOutcome::Open),
                    Ok(Some(upgrade)) => {
                        write_accept(&upgrade, &mut self.out);
                        // A client may send its first frames right behind the request.
                        let early = request.split_off(upgrade.consumed);
                        self.phase = Phase::Open;
                        self.read_frames(&early, mqtt_in)
                    }
                    Err(refusal) => {
                        write_refusal(&refusal, &mut self.out);
                        self.phase = Phase::Closed;
                        Err(TransportError::WsHandshake {
                            status: refusal.status,
                            reason: refusal.reason,
                        })
                    }
                }
            }
        }
    }

    /// Wraps `mqtt` into one unmasked binary frame appended to `raw_out`. Bytes written before
    /// the upgrade completed or after the close was queued are dropped: the peer could not
    /// read them as MQTT.
    pub fn write_mqtt(&mut self, mqtt: &[u8], raw_out: &mut BytesMut) {
        self.write_mqtt_parts(&[mqtt], raw_out);
    }

    /// Like [`Self::write_mqtt`], the frame's payload being `parts` in order.
    pub fn write_mqtt_parts(&mut self, parts: &[&[u8]], raw_out: &mut BytesMut) {
        if matches!(self.phase, Phase::Open) && parts.iter().any(|p| !p.is_empty()) {
            write_frame(raw_out, OpCode::Data(Data::Binary), parts);
        }
    }

    /// Moves the transport's own bytes (101 answer, HTTP error, pong, close) to `raw_out`.
    pub fn pending_raw(&mut self, raw_out: &mut BytesMut) {
        raw_out.extend_from_slice(&self.out);
        self.out.clear();
    }

    /// True while the transport has bytes of its own to send.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// How many bytes of its own (pongs, close) wait to be sent.
    pub fn pending_len(&self) -> usize {
        self.out.len()
    }

    /// True until the upgrade request has been answered.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshake(_))
    }

    /// True once a close frame (or HTTP error) was queued: flush and close the socket.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Queues a normal close frame (1000), e.g. when the broker ends the session.
    pub fn close(&mut self) {
        if matches!(self.phase, Phase::Open) {
            write_close(&mut self.out, CLOSE_NORMAL, b"");
        }
        self.phase = Phase::Closed;
    }

    /// Splits frames out of `raw`. Never buffers more than one header and one control payload.
    fn read_frames(
        &mut self,
        raw: &[u8],
        mqtt_in: &mut BytesMut,
    ) -> Result<ReadOutcome, TransportError> {
        let mut input = raw;
        while !input.is_empty() {
            match self.frame {
                FrameState::Header => {
                    let had = usize::from(self.head_len);
                    let take = (MAX_HEADER - had).min(input.len());
                    self.head[had..had + take].copy_from_slice(&input[..take]);
                    let len = had + take;
                    let mut cursor = Cursor::new(&self.head[..len]);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(None) => {
                            // A 14-byte prefix always holds a whole header; so this is
                            // only reached with fewer bytes, all of which we keep.
                            self.head_len = len as u8;
                            input = &input[take..];
                        }
                        Ok(Some((header, payload_len))) => {
                            let used = cursor.position() as usize - had;
                            input = &input[used..];
                            self.head_len = 0;
                            if let Some(outcome) = self.start_frame(&header, payload_len)? {
                                return Ok(outcome);
                            }
                        }
                        Err(_) => {
                            return Err(self.fail(CLOSE_PROTOCOL_ERROR, "reserved opcode"));
                        }
                    }
                }
                FrameState::Data {
                    remaining,
                    mask,
                    offset,
                } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    unmask_into(mqtt_in, &input[..n], mask, offset);
                    input = &input[n..];
                    let remaining = remaining - n as u64;
                    self.frame = if remaining == 0 {
                        FrameState::Header
                    } else {
                        FrameState::Data {
                            remaining,
                            mask,
                            offset: (offset + n) & 3,
                        }
                    };
                }
                FrameState::Control {
                    opcode,
                    remaining,
                    mask,
                } => {
                    let n = remaining.min(input.len());
                    let at = usize::from(self.control_len);
                    self.control[at..at + n].copy_from_slice(&input[..n]);
                    self.control_len += n as u8;
                    input = &input[n..];
                    if remaining == n {
                        if let Some(outcome) = self.finish_control(opcode, mask)? {
                            return Ok(outcome);
                        }
                    } else {
                        self.frame = FrameState::Control {
                            opcode,
                            remaining: remaining - n,
                            mask,
                        };
                    }
                }
            }
        }
        Ok(ReadOutcome::Open)
    }

    /// Checks a frame header against RFC 6455 and MQTT section 6 and sets up its payload.
    /// `Some` ends reading (an empty close frame).
    fn start_frame(
        &mut self,
        header: &FrameHeader,
        len: u64,
    ) -> Result<Option<ReadOutcome>, TransportError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(self.fail(
                CLOSE_PROTOCOL_ERROR,
                "reserved bits set but no extension was negotiated",
            ));
        }
        let Some(mask) = header.mask else {
            return Err(self.fail(
                CLOSE_PROTOCOL_ERROR,
                "client frames must be masked (RFC 6455 5.1)",
            ));
        };
        match header.opcode {
            OpCode::Data(Data::Binary | Data::Continue) => {
                let is_continuation = header.opcode == OpCode::Data(Data::Continue);
                if is_continuation != self.in_message {
                    return Err(self.fail(
                        CLOSE_PROTOCOL_ERROR,
                        if is_continuation {
                            "continuation frame without a message to continue"
                        } else {
                            "new message before the fragmented one ended"
                        },
                    ));
                }
                if len > self.config.max_frame_size {
                    return Err(self.fail(CLOSE_TOO_BIG, "frame larger than the listener allows"));
                }
                self.in_message = !header.is_final;
                if len > 0 {
                    self.frame = FrameState::Data {
                        remaining: len,
                        mask,
                        offset: 0,
                    };
                }
                Ok(None)
            }
            OpCode::Data(_) => Err(self.fail(
                CLOSE_UNSUPPORTED_DATA,
                "MQTT travels in binary frames only [MQTT-6.0.0-1]",
            )),
            OpCode::Control(opcode) => {
                if !header.is_final {
                    return Err(self.fail(CLOSE_PROTOCOL_ERROR, "fragmented control frame"));
                }
                let len = match usize::try_from(len) {
                    Ok(len) if len <= MAX_CONTROL => len,
                    _ => {
                        return Err(
                            self.fail(CLOSE_PROTOCOL_ERROR, "control frame payload over 125 bytes")
                        )
                    }
                };
                self.control_len = 0;
                if len == 0 {
                    return self.finish_control(opcode, mask);
                }
                self.frame = FrameState::Control {
                    opcode,
                    remaining: len,
                    mask,
                };
                Ok(None)
            }
        }
    }

    /// Acts on a complete control frame. `Some` ends reading (close received).
    fn finish_control(
        &mut self,
        opcode: Control,
        mask: [u8; 4],
    ) -> Result<Option<ReadOutcome>, TransportError> {
        self.frame = FrameState::Header;
        let len = usize::from(self.control_len);
        self.control_len = 0;
        let mut payload = [0u8; MAX_CONTROL];
        payload[..len].copy_from_slice(&self.control[..len]);
        let payload = &mut payload[..len];
        apply_mask(payload, mask, 0);
        match opcode {
            Control::Ping => {
                write_frame(&mut self.out, OpCode::Control(Control::Pong), &[payload]);
                Ok(None)
            }
            Control::Pong => Ok(None),
            Control::Close => {
                let echo = match payload {
                    [] => None,
                    [_] => return Err(self.fail(CLOSE_PROTOCOL_ERROR, "close payload of 1 byte")),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        if !CloseCode::from(code).is_allowed() {
                            return Err(self.fail(CLOSE_PROTOCOL_ERROR, "invalid close code"));
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return Err(
                                self.fail(CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8")
                            );
                        }
                        Some(code)
                    }
                };
                // RFC 6455 5.5.1: answer a close with a close, echoing its code.
                match echo {
                    Some(code) => write_close(&mut self.out, code, b""),
                    None => write_frame(&mut self.out, OpCode::Control(Control::Close), &[]),
                }
                self.phase = Phase::Closed;
                Ok(Some(ReadOutcome::Closed))
            }
            // Reserved control opcodes are rejected by the header parser.
            Control::Reserved(_) => Err(self.fail(CLOSE_PROTOCOL_ERROR, "reserved opcode")),
        }
    }

    /// Queues a close frame with `code` and `reason` and returns the matching error.
    fn fail(&mut self, code: u16, reason: &'static str) -> TransportError {
        if matches!(self.phase, Phase::Open) {
            // Our reasons are short ASCII, well under the 123 bytes a close frame allows.
            write_close(&mut self.out, code, reason.as_bytes());
        }
        self.phase = Phase::Closed;
        TransportError::WsProtocol { code, reason }
    }
}

/// Appends one final, unmasked (server) frame made of `parts`.
fn write_frame(out: &mut BytesMut, opcode: OpCode, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    out.reserve(header.len(len as u64) + len);
    // Writing into a BytesMut cannot fail.
    let _ = header.format(len as u64, &mut out.writer());
    for part in parts {
        out.extend_from_slice(part);
    }
}

fn write_close(out: &mut BytesMut, code: u16, reason: &[u8]) {
    let reason = &reason[..reason.len().min(MAX_CONTROL - 2)];
    write_frame(
        out,
        OpCode::Control(Control::Close),
        &[&code.to_be_bytes(), reason],
    );
}

/// XORs `buf` with the frame mask, `offset` bytes into the payload.
fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let m = [0, 1, 2, 3].map(|i| mask[(offset + i) & 3]);
    let mut words = buf.chunks_exact_mut(4);
    for word in &mut words {
        for (b, k) in word.iter_mut().zip(m) {
            *b ^= k;
        }
    }
    for (b, k) in words.into_remainder().iter_mut().zip(m) {
        *b ^= k;
    }
}

/// Appends `data` to `out` unmasked, `offset` bytes into the payload.
fn unmask_into(out: &mut BytesMut, data: &[u8], mask: [u8; 4], offset: usize) {
    let start = out.len();
    out.extend_from_slice(data);
    apply_mask(&mut out[start..], mask, offset);
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use tungstenite::protocol::frame::Frame;

    use super::*;

    pub(crate) const REQUEST: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n";

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const BIN: OpCode = OpCode::Data(Data::Binary);
    const CONT: OpCode = OpCode::Data(Data::Continue);
    const PING: OpCode = OpCode::Control(Control::Ping);
    const CLOSE: OpCode = OpCode::Control(Control::Close);

    /// A client frame encoded (and masked) by tungstenite, not by the code under test.
    pub(crate) fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        frame_with_mask(opcode, fin, payload, Some(MASK))
    }

    fn frame_with_mask(
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask,
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        Frame::from_payload(header, payload.to_vec().into())
            .format(&mut out)
            .unwrap();
        out
    }

    /// Splits server output into (opcode, fin, payload), checking it is unmasked.
    pub(crate) fn server_frames(bytes: &[u8]) -> Vec<(OpCode, bool, Vec<u8>)> {
        let mut cursor = Cursor::new(bytes);
        let mut frames = Vec::new();
        while (cursor.position() as usize) < bytes.len() {
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(header.mask, None, "server frames are never masked");
            let start = cursor.position() as usize;
            let end = start + len as usize;
            frames.push((header.opcode, header.is_final, bytes[start..end].to_vec()));
            cursor.set_position(end as u64);
        }
        frames
    }

    fn config() -> Arc<WsConfig> {
        Arc::new(WsConfig::default())
    }

    /// A transport past its handshake, with the 101 answer already taken.
    fn open() -> WsTransport {
        let mut ws = WsTransport::new(config());
        let mut mqtt = BytesMut::new();
        assert_eq!(ws.read_raw(REQUEST, &mut mqtt).unwrap(), ReadOutcome::Open);
        assert!(!ws.is_handshaking());
        let mut out = BytesMut::new();
        ws.pending_raw(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 101 "));
        ws
    }

    fn feed(ws: &mut WsTransport, raw: &[u8]) -> (Result<ReadOutcome, TransportError>, Vec<u8>) {
        let mut mqtt = BytesMut::new();
        let result = ws.read_raw(raw, &mut mqtt);
        (result, mqtt.to_vec())
    }

    fn pending(ws: &mut WsTransport) -> Vec<(OpCode, bool, Vec<u8>)> {
        let mut out = BytesMut::new();
        ws.pending_raw(&mut out);
        server_frames(&out)
    }

    /// The close code of the only frame pending, which must be a close frame.
    fn pending_close_code(ws: &mut WsTransport) -> u16 {
        let frames = pending(ws);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].0, CLOSE);
        u16::from_be_bytes([frames[0].2[0], frames[0].2[1]])
    }

    fn protocol_error(ws: &mut WsTransport, raw: &[u8]) -> u16 {
        match feed(ws, raw).0 {
            Err(TransportError::WsProtocol { code, .. }) => {
                assert_eq!(pending_close_code(ws), code);
                assert!(ws.is_closed());
                code
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    const CONNECT: &[u8] = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd";

    #[test]
    fn frames_right_behind_the_request_are_not_lost() {
        let mut ws = WsTransport::new(config());
        let mut raw = REQUEST.to_vec();
        raw.extend(client_frame(BIN, true, CONNECT));
        let (result, mqtt) = feed(&mut ws, &raw);
        assert_eq!(result.unwrap(), ReadOutcome::Open);
        assert_eq!(mqtt, CONNECT);
    }

    #[test]
    fn packet_split_across_frames_and_packets_sharing_a_frame() {
        let mut ws = open();
        // [MQTT-6.0.0-2]: one CONNECT over three frames...
        let mut raw = client_frame(BIN, true, &CONNECT[..3]);
        raw.extend(client_frame(BIN, true, &CONNECT[3..9]));
        raw.extend(client_frame(BIN, true, &CONNECT[9..]));
        // ...then PINGREQ, PINGREQ and DISCONNECT in one frame.
        raw.extend(client_frame(BIN, true, b"\xc0\x00\xc0\x00\xe0\x00"));
        let (result, mqtt) = feed(&mut ws, &raw);
        result.unwrap();
        assert_eq!(mqtt, [CONNECT, b"\xc0\x00\xc0\x00\xe0\x00"].concat());
    }

    #[test]
    fn fragmented_message_with_a_ping_in_between() {
        let mut ws = open();
        let mut raw = client_frame(BIN, false, &CONNECT[..5]);
        raw.extend(client_frame(CONT, false, &CONNECT[5..6]));
        raw.extend(client_frame(PING, true, b"hi"));
        raw.extend(client_frame(CONT, false, b""));
        raw.extend(client_frame(CONT, true, &CONNECT[6..]));
        let (result, mqtt) = feed(&mut ws, &raw);
        result.unwrap();
        assert_eq!(mqtt, CONNECT);
        assert_eq!(
            pending(&mut ws),
            vec![(OpCode::Control(Control::Pong), true, b"hi".to_vec())]
        );
    }

    #[test]
    fn ping_gets_a_pong_with_the_same_payload_and_pong_is_ignored() {
        let mut ws = open();
        let (result, mqtt) = feed(&mut ws, &client_frame(PING, true, b""));
        result.unwrap();
        assert!(mqtt.is_empty());
        assert!(ws.wants_write());
        let payload = [7u8; 125];
        feed(&mut ws, &client_frame(PING, true, &payload))
            .0
            .unwrap();
        let pong = OpCode::Control(Control::Pong);
        assert_eq!(
            pending(&mut ws),
            vec![(pong, true, vec![]), (pong, true, payload.to_vec())]
        );
        feed(&mut ws, &client_frame(pong, true, b"x")).0.unwrap();
        assert!(!ws.wants_write());
    }

    /// Pongs a client makes the broker queue count toward the broker's back-pressure mark.
    #[test]
    fn queued_pongs_are_counted_until_sent() {
        let mut ws = open();
        assert_eq!(ws.pending_len(), 0);
        for _ in 0..10 {
            feed(&mut ws, &client_frame(PING, true, &[1u8; 100]))
                .0
                .unwrap();
        }
        // Each pong: 2 header bytes and the 100-byte payload.
        assert_eq!(ws.pending_len(), 10 * 102);
        pending(&mut ws);
        assert_eq!(ws.pending_len(), 0);
    }

    #[test]
    fn text_frame_is_closed_with_1003() {
        let mut ws = open();
        let text = client_frame(OpCode::Data(Data::Text), true, b"{}");
        assert_eq!(protocol_error(&mut ws, &text), 1003);
        // Nothing more is read or answered after the close.
        let (result, mqtt) = feed(&mut ws, &client_frame(BIN, true, CONNECT));
        assert_eq!(result.unwrap(), ReadOutcome::Closed);
        assert!(mqtt.is_empty());
        assert!(pending(&mut ws).is_empty());
    }

    #[test]
    fn unmasked_client_frame_is_closed_with_1002() {
        let mut ws = open();
        let raw = frame_with_mask(BIN, true, CONNECT, None);
        assert_eq!(protocol_error(&mut ws, &raw), 1002);
    }

    #[test]
    fn broken_fragmentation_is_closed_with_1002() {
        let mut ws = open();
        assert_eq!(
            protocol_error(&mut ws, &client_frame(CONT, true, b"x")),
            1002
        );

        let mut ws = open();
        let mut raw = client_frame(BIN, false, b"x");
        raw.extend(client_frame(BIN, true, b"y"));
        assert_eq!(protocol_error(&mut ws, &raw), 1002);
    }

    #[test]
    fn bad_control_frames_are_closed_with_1002() {
        let mut ws = open();
        assert_eq!(
            protocol_error(&mut ws, &client_frame(PING, true, &[0; 126])),
            1002
        );
        let mut ws = open();
        assert_eq!(
            protocol_error(&mut ws, &client_frame(PING, false, b"")),
            1002
        );
        let mut ws = open();
        let reserved = client_frame(BIN, true, b"x");
        let mut raw = reserved.clone();
        raw[0] = 0x80 | 0x0b; // reserved control opcode
        assert_eq!(protocol_error(&mut ws, &raw), 1002);
        let mut ws = open();
        let mut raw = reserved;
        raw[0] |= 0x40; // RSV1 without an extension
        assert_eq!(protocol_error(&mut ws, &raw), 1002);
    }

    #[test]
    fn oversized_frame_is_closed_with_1009_before_its_payload_arrives() {
        let mut ws = WsTransport::new(Arc::new(WsConfig {
            max_frame_size: 100,
            ..WsConfig::default()
        }));
        feed(&mut ws, REQUEST).0.unwrap();
        ws.pending_raw(&mut BytesMut::new()); // the 101 answer
        let frame = client_frame(BIN, true, &[0; 101]);
        assert_eq!(protocol_error(&mut ws, &frame[..8]), 1009);
    }

    #[test]
    fn close_is_answered_with_the_same_code() {
        let mut ws = open();
        let mut raw = client_frame(BIN, true, b"\xe0\x00");
        raw.extend(client_frame(CLOSE, true, b"\x03\xe8bye"));
        let (result, mqtt) = feed(&mut ws, &raw);
        assert_eq!(result.unwrap(), ReadOutcome::Closed);
        assert_eq!(mqtt, b"\xe0\x00");
        assert_eq!(pending_close_code(&mut ws), 1000);
        assert!(ws.is_closed());

        let mut ws = open();
        assert_eq!(
            feed(&mut ws, &client_frame(CLOSE, true, b"")).0.unwrap(),
            ReadOutcome::Closed
        );
        assert_eq!(pending(&mut ws), vec![(CLOSE, true, vec![])]);
    }

    #[test]
    fn malformed_close_frames_are_protocol_errors() {
        let mut ws = open();
        assert_eq!(
            protocol_error(&mut ws, &client_frame(CLOSE, true, b"\x03")),
            1002
        );
        let mut ws = open();
        // 999 is not a valid close code.
        assert_eq!(
            protocol_error(&mut ws, &client_frame(CLOSE, true, b"\x03\xe7")),
            1002
        );
        let mut ws = open();
        let bad_utf8 = client_frame(CLOSE, true, b"\x03\xe8\xff\xfe");
        assert_eq!(protocol_error(&mut ws, &bad_utf8), 1007);
    }

    #[test]
    fn refused_upgrades_answer_over_http_and_close() {
        for (request, status) in [
            (
                String::from_utf8(REQUEST.to_vec())
                    .unwrap()
                    .replace("/mqtt", "/x"),
                404,
            ),
            (
                String::from_utf8(REQUEST.to_vec())
                    .unwrap()
                    .replace("Sec-WebSocket-Protocol: mqtt\r\n", ""),
                400,
            ),
        ] {
            let mut ws = WsTransport::new(config());
            match feed(&mut ws, request.as_bytes()).0 {
                Err(TransportError::WsHandshake { status: got, .. }) => assert_eq!(got, status),
                other => panic!("expected HTTP {status}, got {other:?}"),
            }
            let mut out = BytesMut::new();
            ws.pending_raw(&mut out);
            assert!(out.starts_with(format!("HTTP/1.1 {status} ").as_bytes()));
            assert!(ws.is_closed());
        }
    }

    #[test]
    fn write_mqtt_makes_one_unmasked_binary_frame_per_call() {
        let mut ws = WsTransport::new(config());
        let mut out = BytesMut::new();
        ws.write_mqtt(b"\x20\x02\x00\x00", &mut out);
        assert!(out.is_empty(), "nothing may precede the 101 answer");
        feed(&mut ws, REQUEST).0.unwrap();
        ws.pending_raw(&mut BytesMut::new()); // the 101 answer
        let big = vec![0x5a; 70_000]; // needs the 64-bit length form
        ws.write_mqtt(b"\x20\x02\x00\x00", &mut out);
        ws.write_mqtt(&big, &mut out);
        ws.write_mqtt(b"", &mut out);
        assert_eq!(
            server_frames(&out),
            vec![(BIN, true, b"\x20\x02\x00\x00".to_vec()), (BIN, true, big)]
        );
        ws.close();
        assert_eq!(pending_close_code(&mut ws), 1000);
        let mut after = BytesMut::new();
        ws.write_mqtt(b"\xe0\x00", &mut after);
        assert!(after.is_empty(), "nothing may follow the close frame");
    }

    /// An in-memory socket for a tungstenite client: reads what the server wrote.
    #[derive(Default)]
    struct MemStream {
        rx: std::collections::VecDeque<u8>,
        tx: Vec<u8>,
    }

    impl std::io::Read for MemStream {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.rx.is_empty() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.rx.read(buf)
        }
    }

    impl std::io::Write for MemStream {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.tx.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_real_tungstenite_client_talks_to_the_adapter() {
        use tungstenite::protocol::Role;
        use tungstenite::{Message, WebSocket};

        let mut ws = open();
        let mut client = WebSocket::from_raw_socket(MemStream::default(), Role::Client, None);
        client.send(Message::binary(CONNECT)).unwrap();
        client.send(Message::Ping(b"p".to_vec().into())).unwrap();
        let sent = std::mem::take(&mut client.get_mut().tx);
        let (result, mqtt) = feed(&mut ws, &sent);
        result.unwrap();
        assert_eq!(mqtt, CONNECT);

        let mut out = BytesMut::new();
        ws.pending_raw(&mut out); // the pong
        ws.write_mqtt(b"\x20\x02\x00\x00", &mut out);
        client.get_mut().rx.extend(&out[..]);
        assert_eq!(client.read().unwrap(), Message::Pong(b"p".to_vec().into()));
        assert_eq!(
            client.read().unwrap(),
            Message::binary(&b"\x20\x02\x00\x00"[..])
        );

        client.close(None).unwrap();
        let sent = std::mem::take(&mut client.get_mut().tx);
        assert_eq!(feed(&mut ws, &sent).0.unwrap(), ReadOutcome::Closed);
        let mut out = BytesMut::new();
        ws.pending_raw(&mut out);
        client.get_mut().rx.extend(&out[..]);
        // The client sees our close reply, which completes its close handshake.
        assert!(matches!(
            client.read(),
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed)
        ));
    }

    proptest! {
        /// However the stream is cut into reads, the MQTT bytes come out the same.
        #[test]
        fn any_read_boundaries_give_the_same_stream(
            packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in prop::collection::vec(1usize..64, 1..40),
        ) {
            let mut raw = REQUEST.to_vec();
            for (i, p) in packets.iter().enumerate() {
                if i % 2 == 1 {
                    // A fragmented message with a ping between its fragments.
                    let (head, tail) = p.split_at(p.len() / 2);
                    raw.extend(client_frame(BIN, false, head));
                    raw.extend(client_frame(PING, true, b"k"));
                    raw.extend(client_frame(CONT, true, tail));
                } else {
                    raw.extend(client_frame(BIN, true, p));
                }
            }
            let mut ws = WsTransport::new(config());
            let mut mqtt = BytesMut::new();
            let mut rest = &raw[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                prop_assert_eq!(ws.read_raw(&rest[..n], &mut mqtt).unwrap(), ReadOutcome::Open);
                rest = &rest[n..];
            }
            prop_assert_eq!(mqtt.to_vec(), packets.concat());
        }

        /// Arbitrary bytes after the handshake end in Open, Closed or an error, never a panic.
        #[test]
        fn arbitrary_frames_never_panic(junk in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut ws = open();
            let mut mqtt = BytesMut::new();
            let _ = ws.read_raw(&junk, &mut mqtt);
            let mut out = BytesMut::new();
            ws.pending_raw(&mut out);
        }
    }
}

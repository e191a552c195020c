//! The server side of the WebSocket opening handshake (RFC 6455 section 4.2) for MQTT
//! (MQTT 5.0 / 3.1.1 section 6): parse the HTTP/1.1 upgrade request, check it, and write the
//! `101 Switching Protocols` answer or an HTTP error.

use bytes::BytesMut;

use crate::ws::WsConfig;

/// Subprotocols we accept, in order of preference. `mqttv3.1` is what MQTT 3.1 clients
/// (e.g. old Paho JS) offer; Mosquitto accepts it too.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Most headers a request may carry; browsers send about 15.
const MAX_HEADERS: usize = 48;

/// A valid upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// Bytes of the request head (anything after it is already WebSocket frames).
    pub(crate) consumed: usize,
    /// The `Sec-WebSocket-Accept` value.
    pub(crate) accept_key: String,
    /// The subprotocol chosen from the client's offer (`None` only when the offer was
    /// empty and the listener does not require one).
    pub(crate) protocol: Option<&'static str>,
}

/// A refused request: the HTTP status to answer with and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
}

fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// Parses an upgrade request from the start of `buf`. `Ok(None)`: the head is incomplete.
pub(crate) fn parse_request(buf: &[u8], config: &WsConfig) -> Result<Option<Upgrade>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > config.max_request_size {
                Err(refuse(431, "upgrade request head too large"))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "too many request headers"))
        }
        Err(_) => return Err(refuse(400, "malformed HTTP request")),
    };
    if consumed > config.max_request_size {
        return Err(refuse(431, "upgrade request head too large"));
    }
    if req.method != Some("GET") {
        return Err(refuse(
            400,
            "the upgrade request must be a GET (RFC 6455 4.1)",
        ));
    }
    if req.version != Some(1) {
        return Err(refuse(
            400,
            "the upgrade request must be HTTP/1.1 (RFC 6455 4.1)",
        ));
    }
    if let Some(want) = &config.path {
        let path = req.path.unwrap_or("");
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if path != want {
            return Err(refuse(404, "no WebSocket endpoint at this path"));
        }
    }
    let headers = req.headers;
    if !header_has_token(headers, "upgrade", "websocket") {
        return Err(refuse(400, "missing `Upgrade: websocket`"));
    }
    if !header_has_token(headers, "connection", "upgrade") {
        return Err(refuse(400, "missing `Connection: Upgrade`"));
    }
    if !header_values(headers, "sec-websocket-version").any(|v| v.trim_ascii() == b"13") {
        return Err(refuse(426, "unsupported Sec-WebSocket-Version (only 13)"));
    }
    let mut keys = header_values(headers, "sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key.trim_ascii(),
        _ => return Err(refuse(400, "need exactly one Sec-WebSocket-Key")),
    };
    // RFC 6455 4.2.1 item 5: the key is base64 of 16 bytes.
    if !matches!(data_encoding::BASE64.decode(key), Ok(k) if k.len() == 16) {
        return Err(refuse(400, "Sec-WebSocket-Key is not base64 of 16 bytes"));
    }
    let protocol = choose_subprotocol(headers);
    if protocol.is_none() && config.require_subprotocol {
        return Err(refuse(
            400,
            "the client must offer the `mqtt` subprotocol [MQTT-6.0.0-3]",
        ));
    }
    Ok(Some(Upgrade {
        consumed,
        accept_key: tungstenite::handshake::derive_accept_key(key),
        protocol,
    }))
}

/// The preferred subprotocol among all the client offered (names compare case-sensitively:
/// a browser rejects an answer that differs from its offer).
fn choose_subprotocol(headers: &[httparse::Header<'_>]) -> Option<&'static str> {
    SUBPROTOCOLS.into_iter().find(|want| {
        header_values(headers, "sec-websocket-protocol")
            .flat_map(|v| v.split(|b| *b == b','))
            .any(|offer| offer.trim_ascii() == want.as_bytes())
    })
}

/// Values of every header named `name` (a header may repeat).
fn header_values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// True if a comma-separated header holds `token` (case-insensitive), e.g.
/// `Connection: keep-alive, Upgrade`.
fn header_has_token(headers: &[httparse::Header<'_>], name: &'static str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(|v| v.split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Writes the `101 Switching Protocols` answer; the chosen subprotocol is echoed
/// [MQTT-6.0.0-4].
pub(crate) fn write_accept(upgrade: &Upgrade, out: &mut BytesMut) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(upgrade.accept_key.as_bytes());
    if let Some(protocol) = upgrade.protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Writes an HTTP error answer that closes the connection. A 426 names the version we
/// speak, as RFC 6455 4.2.2 asks.
pub(crate) fn write_refusal(refusal: &Refusal, out: &mut BytesMut) {
    let status_line: &[u8] = match refusal.status {
        404 => b"HTTP/1.1 404 Not Found\r\n",
        426 => b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        _ => b"HTTP/1.1 400 Bad Request\r\n",
    };
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"Connection: close\r\nContent-Length: 0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WsConfig {
        WsConfig::default()
    }

    /// RFC 6455 section 1.3's example key, in a request shaped like a browser's.
    fn request(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn rfc6455_example_key_gives_the_rfc_accept_value() {
        let req = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
        let up = parse_request(&req, &config()).unwrap().unwrap();
        assert_eq!(up.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.consumed, req.len());
        assert_eq!(up.protocol, Some("mqtt"));
        let mut out = BytesMut::new();
        write_accept(&up, &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: mqtt\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn prefers_mqtt_over_mqttv31_across_header_lines() {
        let req = request(
            "/mqtt",
            "Sec-WebSocket-Protocol: mqttv3.1\r\nSec-WebSocket-Protocol: chat, mqtt\r\n",
        );
        let up = parse_request(&req, &config()).unwrap().unwrap();
        assert_eq!(up.protocol, Some("mqtt"));
        let req = request("/mqtt", "Sec-WebSocket-Protocol: chat,mqttv3.1\r\n");
        let up = parse_request(&req, &config()).unwrap().unwrap();
        assert_eq!(up.protocol, Some("mqttv3.1"));
    }

    #[test]
    fn query_string_is_not_part_of_the_path() {
        let req = request("/mqtt?token=x", "Sec-WebSocket-Protocol: mqtt\r\n");
        assert!(parse_request(&req, &config()).unwrap().is_some());
    }

    #[test]
    fn any_path_when_none_is_configured() {
        let cfg = WsConfig {
            path: None,
            ..WsConfig::default()
        };
        let req = request("/ws", "Sec-WebSocket-Protocol: mqtt\r\n");
        assert!(parse_request(&req, &cfg).unwrap().is_some());
    }

    #[test]
    fn incomplete_head_waits_for_more() {
        let req = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
        for cut in [0, 1, 10, req.len() - 1] {
            assert_eq!(parse_request(&req[..cut], &config()), Ok(None), "cut {cut}");
        }
    }

    fn status(req: &[u8], cfg: &WsConfig) -> u16 {
        parse_request(req, cfg).unwrap_err().status
    }

    #[test]
    fn refusals_carry_the_right_status() {
        let cfg = config();
        let ok_proto = "Sec-WebSocket-Protocol: mqtt\r\n";
        assert_eq!(status(&request("/other", ok_proto), &cfg), 404);
        assert_eq!(
            status(&request("/mqtt", ""), &cfg),
            400,
            "missing subprotocol"
        );
        assert_eq!(
            status(&request("/mqtt", "Sec-WebSocket-Protocol: chat\r\n"), &cfg),
            400
        );
        let swap = |from: &str, to: &str| {
            String::from_utf8(request("/mqtt", ok_proto))
                .unwrap()
                .replace(from, to)
                .into_bytes()
        };
        assert_eq!(status(&swap("GET", "POST"), &cfg), 400);
        assert_eq!(status(&swap("HTTP/1.1", "HTTP/1.0"), &cfg), 400);
        assert_eq!(
            status(&swap("Upgrade: websocket", "Upgrade: h2c"), &cfg),
            400
        );
        assert_eq!(
            status(&swap("keep-alive, Upgrade", "keep-alive"), &cfg),
            400
        );
        assert_eq!(status(&swap("Version: 13", "Version: 8"), &cfg), 426);
        assert_eq!(
            status(&swap("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), &cfg),
            400
        );
        assert_eq!(status(b"GARBAGE\0\r\n\r\n", &cfg), 400);
    }

    #[test]
    fn oversized_head_is_refused_before_it_completes() {
        let cfg = WsConfig {
            max_request_size: 64,
            ..WsConfig::default()
        };
        let req = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n");
        assert_eq!(status(&req[..100], &cfg), 431);
    }

    #[test]
    fn subprotocol_may_be_optional() {
        let cfg = WsConfig {
            require_subprotocol: false,
            ..WsConfig::default()
        };
        let up = parse_request(&request("/mqtt", ""), &cfg).unwrap().unwrap();
        assert_eq!(up.protocol, None);
        let mut out = BytesMut::new();
        write_accept(&up, &mut out);
        assert!(!std::str::from_utf8(&out)
            .unwrap()
            .contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn refusal_answers_are_complete_http_responses() {
        for status in [400, 404, 426, 431] {
            let mut out = BytesMut::new();
            write_refusal(&refuse(status, "x"), &mut out);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut resp = httparse::Response::new(&mut headers);
            assert!(resp.parse(&out).unwrap().is_complete());
            assert_eq!(resp.code, Some(status));
        }
    }
}

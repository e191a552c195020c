//! Sans-I/O transports: TLS and WebSocket framing between the socket and the MQTT codec.
#![warn(missing_docs)]

//! MQTT topic names, filters, the subscription index and the retained store.
#![warn(missing_docs)]

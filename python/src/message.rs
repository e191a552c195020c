//! A delivered message as a Python object, and MQTT 5 publish properties to and from a dict.
//!
//! Properties travel as a plain dict with the spec's names in snake case (`content_type`,
//! `response_topic`, `correlation_data`, `user_properties` as a list of pairs...), so a message can
//! be republished with `broker.publish(m.topic, m.payload, properties=m.properties)`.

use bytes::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use uringmq::{Delivery, InjectedMessage};
use uringmq_codec::{ByteStr, PublishProperties, QoS};

/// A message delivered to an in-process subscription.
#[pyclass(module = "uringmq._uringmq", name = "Message", frozen, get_all)]
pub struct Message {
    /// Topic name.
    topic: String,
    /// Payload bytes.
    payload: Py<PyBytes>,
    /// QoS as delivered: the minimum of the message's and the subscription's.
    qos: u8,
    /// Retain flag (set on retained messages sent at subscribe time).
    retain: bool,
    /// MQTT 5 properties (only those present).
    properties: Py<PyDict>,
}

#[pymethods]
impl Message {
    fn __repr__(&self, py: Python<'_>) -> String {
        let payload = self.payload.bind(py).as_bytes();
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(64)]);
        format!(
            "Message(topic={:?}, payload={:?}{}, qos={}, retain={})",
            self.topic,
            shown,
            if payload.len() > 64 { "..." } else { "" },
            self.qos,
            if self.retain { "True" } else { "False" }
        )
    }
}

impl Message {
    /// Converts a delivery (payload copied once, into a Python `bytes`).
    pub fn from_delivery(py: Python<'_>, d: Delivery) -> PyResult<Message> {
        Ok(Message {
            payload: PyBytes::new(py, &d.payload).unbind(),
            properties: properties_to_dict(py, &d.properties)?.unbind(),
            topic: d.topic,
            qos: d.qos as u8,
            retain: d.retain,
        })
    }
}

/// The properties present in `p` as a dict. The topic alias is per connection and never shown.
pub fn properties_to_dict<'py>(
    py: Python<'py>,
    p: &PublishProperties,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if let Some(v) = p.payload_format_indicator {
        d.set_item("payload_format_indicator", v)?;
    }
    if let Some(v) = p.message_expiry_interval {
        d.set_item("message_expiry_interval", v)?;
    }
    if let Some(v) = &p.content_type {
        d.set_item("content_type", v.as_str())?;
    }
    if let Some(v) = &p.response_topic {
        d.set_item("response_topic", v.as_str())?;
    }
    if let Some(v) = &p.correlation_data {
        d.set_item("correlation_data", PyBytes::new(py, v))?;
    }
    if !p.user_properties.is_empty() {
        let pairs: Vec<(&str, &str)> = p
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        d.set_item("user_properties", PyList::new(py, pairs)?)?;
    }
    if !p.subscription_identifiers.is_empty() {
        d.set_item(
            "subscription_identifiers",
            p.subscription_identifiers.to_vec(),
        )?;
    }
    Ok(d)
}

/// Publish properties from a dict with the keys `properties_to_dict` produces. Unknown keys and
/// properties a publisher may not set are errors naming the key.
pub fn properties_from_dict(d: &Bound<'_, PyDict>, payload: &[u8]) -> PyResult<PublishProperties> {
    let mut p = PublishProperties::default();
    for (key, value) in d.iter() {
        let key: String = key.extract()?;
        let bad = |why: &str| PyValueError::new_err(format!("invalid property `{key}`: {why}"));
        match key.as_str() {
            "payload_format_indicator" => {
                let v: u8 = value.extract()?;
                if v > 1 {
                    return Err(bad("must be 0 (bytes) or 1 (UTF-8)"));
                }
                // A UTF-8 flagged payload must be UTF-8 [MQTT-3.3.2-4].
                if v == 1 && std::str::from_utf8(payload).is_err() {
                    return Err(bad("the payload is not valid UTF-8 [MQTT-3.3.2-4]"));
                }
                p.payload_format_indicator = Some(v);
            }
            "message_expiry_interval" => p.message_expiry_interval = Some(value.extract()?),
            "content_type" => p.content_type = Some(ByteStr::from(value.extract::<String>()?)),
            "response_topic" => {
                let t: String = value.extract()?;
                // The Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
                if t.is_empty() || t.contains(['+', '#']) {
                    return Err(bad(
                        "must be a topic name without wildcards [MQTT-3.3.2-14]",
                    ));
                }
                p.response_topic = Some(ByteStr::from(t));
            }
            "correlation_data" => {
                p.correlation_data = Some(Bytes::copy_from_slice(&value.extract::<Vec<u8>>()?))
            }
            "user_properties" => {
                // A list of pairs (duplicates allowed by the spec) or a dict.
                let pairs: Vec<(String, String)> = match value.cast::<PyDict>() {
                    Ok(m) => m
                        .iter()
                        .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
                        .collect::<PyResult<_>>()?,
                    Err(_) => value.extract()?,
                };
                p.user_properties = pairs
                    .into_iter()
                    .map(|(k, v)| (ByteStr::from(k), ByteStr::from(v)))
                    .collect();
            }
            // Set by the broker per subscriber / per connection, never by a publisher
            // [MQTT-3.3.4-6].
            "subscription_identifiers" | "topic_alias" => {
                return Err(bad("is set by the broker, not by a publisher"))
            }
            _ => return Err(bad("unknown property")),
        }
    }
    Ok(p)
}

/// A QoS from Python.
pub fn qos(v: u8) -> PyResult<QoS> {
    QoS::from_u8(v)
        .ok_or_else(|| PyValueError::new_err(format!("invalid qos {v}: must be 0, 1 or 2")))
}

/// An in-process publish's message (payload copied once) from Python's arguments; it is
/// authorised as user `username` (`None`: anonymous).
pub fn injected(
    topic: String,
    payload: &[u8],
    qos: u8,
    retain: bool,
    properties: Option<&Bound<'_, PyDict>>,
    username: Option<String>,
) -> PyResult<InjectedMessage> {
    let properties = match properties {
        Some(d) => properties_from_dict(d, payload)?,
        None => Default::default(),
    };
    Ok(InjectedMessage {
        topic,
        payload: Bytes::copy_from_slice(payload),
        qos: self::qos(qos)?,
        retain,
        properties,
        username,
    })
}

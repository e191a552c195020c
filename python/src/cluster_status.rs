//! `Broker.cluster_status()`: this node's view of its cluster (`uringmq::ClusterStatus`) as
//! plain Python dicts, for tests and tools that wait until the nodes see each other.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::time::UNIX_EPOCH;
use uringmq::{ClusterStatus, LinkStatus};

/// `{"name", "registered", "nodes": [{"name", "addr", "started"}], "links": {peer:
/// {"outbound": link, "inbound": link}}, "link_auth_failures", "client_ids"}` (`client_ids`: the
/// client ids this node owns and keeps in its directory).
pub(crate) fn status_dict<'py>(py: Python<'py>, s: ClusterStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", s.name)?;
    d.set_item("registered", s.registered)?;
    let nodes = s
        .nodes
        .into_iter()
        .map(|n| {
            let node = PyDict::new(py);
            node.set_item("name", n.name)?;
            node.set_item("addr", n.addr)?;
            node.set_item("started", n.started)?;
            Ok(node)
        })
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("nodes", nodes)?;
    let links = PyDict::new(py);
    for (peer, l) in s.links {
        let both = PyDict::new(py);
        both.set_item("outbound", link_dict(py, &l.outbound)?)?;
        both.set_item("inbound", link_dict(py, &l.inbound)?)?;
        links.set_item(peer, both)?;
    }
    d.set_item("links", links)?;
    d.set_item("link_auth_failures", s.link_auth_failures)?;
    d.set_item("client_ids", s.client_ids)?;
    Ok(d)
}

/// `{"up", "connects", "since" (seconds since the Unix epoch, or None), "frames_out",
/// "frames_in"}`.
fn link_dict<'py>(py: Python<'py>, l: &LinkStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("up", l.up)?;
    d.set_item("connects", l.connects)?;
    let since = l
        .since
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    d.set_item("since", since)?;
    d.set_item("frames_out", l.frames_out)?;
    d.set_item("frames_in", l.frames_in)?;
    Ok(d)
}

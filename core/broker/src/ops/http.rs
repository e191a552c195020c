//! The HTTP endpoint of `metrics_listen`: `GET /metrics`, `/healthz`, `/readyz`. `tiny_http`'s
//! accept thread and small worker pool read the requests; the answers are computed on the
//! `uringmq-ops` thread, never on a core. A scrape costs each core one mesh message
//! (`ops::refresh`) and a walk over its sessions.

use super::Context;
use crate::api::StartError;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use tiny_http::{Header, Method, Request, Response, Server};

/// The bound endpoint.
pub(crate) struct Bound {
    pub(crate) server: Server,
    pub(crate) addr: SocketAddr,
    /// A second handle on the listening socket: [`Bound::close`] shuts it down, so the port is
    /// free when the broker's `stop` returns (dropping a `tiny_http::Server` only asks its
    /// accept thread to end, some time later).
    pub(crate) listener: TcpListener,
}

/// Binds the endpoint; a failure names the address like a listener's.
pub(crate) fn bind(addr: SocketAddr) -> Result<Bound, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    let handle = listener.try_clone().map_err(err)?;
    let server = Server::from_listener(listener, None)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    Ok(Bound {
        server,
        addr: bound,
        listener: handle,
    })
}

/// Stops listening (connections to the port are refused from now on).
pub(crate) fn close(listener: &TcpListener) {
    // SAFETY: shutdown on a descriptor this handle owns; the accept thread then fails its
    // accept and, the server being dropped, ends.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
}

/// Answers one request.
pub(crate) fn serve(ctx: &Context, req: Request) {
    let (status, body, content_type) = answer(ctx, req.method(), req.url());
    let header = Header::from_bytes("Content-Type", content_type).ok();
    let mut resp = Response::from_string(body).with_status_code(status);
    if let Some(h) = header {
        resp = resp.with_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::debug!("metrics endpoint: cannot answer: {e}");
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
/// The content type Prometheus expects for the text format 0.0.4.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn answer(ctx: &Context, method: &Method, url: &str) -> (u16, String, &'static str) {
    if !matches!(method, Method::Get | Method::Head) {
        return (405, "only GET\n".into(), TEXT);
    }
    let path = url.split('?').next().unwrap_or("");
    match path {
        "/metrics" => (200, ctx.metrics_text(), PROMETHEUS),
        // Alive: this thread answers.
        "/healthz" => (200, "ok\n".into(), TEXT),
        // Listeners are bound before the broker starts; the cores must answer a snapshot.
        "/readyz" => {
            let stopping = ctx.stopping.load(std::sync::atomic::Ordering::Relaxed);
            if !stopping && super::refresh(&ctx.shared) {
                (200, "ready\n".into(), TEXT)
            } else {
                (
                    503,
                    "not ready: a core did not answer in time\n".into(),
                    TEXT,
                )
            }
        }
        _ => (404, "not found: /metrics, /healthz, /readyz\n".into(), TEXT),
    }
}

//! Reloading on SIGHUP (or [`Broker::reload`] when embedded): TLS certificates, the password
//! files and the ACL files (global and per listener) are re-read; connections stay up.
//!
//! Like Mosquitto, a file that fails to load keeps the previous version in force and is
//! reported, so a typo during certificate rotation never takes a listener down. New TLS
//! connections get the new certificates; open ones keep the session they negotiated. New
//! password/ACL rules apply to every check made after the reload, including on open
//! connections (Mosquitto re-applies ACLs to existing clients too).

use crate::api::ReloadReport;
use crate::embed::Broker;
use tracing::{info, warn};

impl Broker {
    /// Re-reads TLS certificates, the password files and the ACL files (what SIGHUP does).
    pub fn reload(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        for e in &self.endpoints {
            match e.reload_tls() {
                None => {}
                Some(Ok(())) => report.reloaded.push(format!("listener {}", e.name)),
                Some(Err(err)) => report.errors.push(format!("listener {}: {err}", e.name)),
            }
        }
        self.security.reload(&mut report);
        for what in &report.reloaded {
            info!("reloaded {what}");
        }
        for err in &report.errors {
            warn!("reload failed, previous version kept: {err}");
        }
        report
    }
}

//! The reverse-DNS compare loop: a full compare of the reverse zones at start, then every
//! `[rdns] compare_interval_secs`, soon after a rental's state changed or an update failed
//! (`Rdns::wake`), and again after a few seconds while a zone cannot be compared or repaired.

use crate::service::Service;
use std::sync::Arc;
use std::time::Duration;

/// How soon a failed compare is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Runs until [`Service::stop`]; returns at once when reverse DNS is off.
pub async fn run(service: Arc<Service>) {
    let Some(rdns) = service.rdns().cloned() else {
        return;
    };
    let every = Duration::from_secs(rdns.cfg().compare_interval_secs);
    loop {
        let wait = match service.rdns_compare().await {
            Ok(Some(c)) if c.failed_zones == 0 => {
                tracing::debug!(checked = c.checked, repaired = c.repaired, "rdns compare");
                every
            }
            Ok(Some(c)) => {
                tracing::warn!(
                    failed_zones = c.failed_zones,
                    "rdns compare incomplete; retrying"
                );
                RETRY.min(every)
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("rdns compare: {e}");
                RETRY.min(every)
            }
        };
        tokio::select! {
            () = rdns.sleep_unless_woken(wait) => {}
            () = service.stopped() => return,
        }
    }
}

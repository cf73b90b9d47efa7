//! The daemon's metrics: the `METRICS` reply and the node_exporter
//! textfile (`textfile_dir/rvm_backup.prom`), rewritten after every job
//! and every `backup_monitoring_interval` (and once at start).
//!
//! Both come from `crate::monitor::metrics::text`: one pass over the
//! store's sidecars and a read of `state.json`, on the executor (a few
//! milliseconds for a store of hundreds of archives). A failed textfile
//! write is logged (an error the first time, then at debug level until it
//! works again), never fatal.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};
use smol::Timer;

use super::Daemon;
use crate::monitor::metrics::{self, textfile};
use crate::monitor::Finding;

/// The `content_type` of the `METRICS` reply's text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Whether the last textfile write failed (said once, not every time).
static FAILING: AtomicBool = AtomicBool::new(false);

impl Daemon {
    /// The monitor's latest findings (none before its first evaluation,
    /// or with monitoring off).
    fn metrics_findings(&self) -> Vec<Finding> {
        self.monitor.borrow().findings.clone()
    }

    /// (Alert, sink) entries in the outbox not yet delivered.
    fn metrics_outbox_depth(&self) -> Option<u64> {
        Some(self.alerting.depth())
    }

    /// The WAL shipper, when point-in-time recovery is on.
    fn metrics_pitr(&self) -> Option<crate::pitr::PitrStatus> {
        let on = self
            .session()
            .config()
            .database
            .as_ref()
            .is_some_and(|d| d.pitr_enabled());
        on.then(|| self.pitr.borrow().clone())
    }

    /// The metrics in the Prometheus text format.
    pub(super) fn metrics_text(&self) -> String {
        let mut snap = metrics::gather(&self.session());
        snap.pitr = self.metrics_pitr();
        snap.offsite = self.offsite_status();
        metrics::render(&snap, &self.metrics_findings(), self.metrics_outbox_depth())
    }

    /// `METRICS`: the text as a JSON string, so the reply stays one line.
    pub(super) fn metrics_json(&self) -> Value {
        json!({"content_type": CONTENT_TYPE, "text": self.metrics_text()})
    }

    /// Rewrite the textfile, if `textfile_dir` is set.
    pub(super) fn write_textfile(&self) {
        let session = self.session();
        let Some(dir) = session.config().textfile_dir.clone() else {
            return;
        };
        let text = self.metrics_text();
        match textfile::write(&dir, &text) {
            Ok(()) => {
                if FAILING.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "metrics textfile {} written again",
                        dir.join(textfile::FILE_NAME).display()
                    );
                }
            }
            Err(e) => {
                if FAILING.swap(true, Ordering::Relaxed) {
                    log::debug!("metrics textfile not written: {e}");
                } else {
                    log::error!(
                        "metrics textfile not written (node_exporter shows stale figures): {e}"
                    );
                }
            }
        }
    }
}

/// Rewrite the textfile every `backup_monitoring_interval` (read again
/// each time, so a reload takes effect at the next write).
pub(super) async fn textfile_task(d: Rc<Daemon>) {
    loop {
        if d.stopping.get() {
            return;
        }
        d.write_textfile();
        let interval = d.session().config().monitoring_interval;
        Timer::after(interval).await;
    }
}

//! `restore`: pick one archive of a strategy and restore it, under the
//! store lock so that no prune removes it meanwhile.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::restore::{Restored, Selector};
use crate::strategy::Strategy;

use super::{select, Session};

/// What to restore, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    pub strategy: Strategy,
    pub selector: Selector,
    /// `None`: in place; else each file lands at `target/<original path>`.
    pub target: Option<PathBuf>,
    /// Only this entry (an absolute path as `list` shows it).
    pub file: Option<PathBuf>,
    /// Restore a database archive whose source failed its integrity check.
    pub accept_damaged: bool,
}

impl Session {
    pub async fn restore(&self, req: &RestoreRequest, progress: &mut Progress) -> Result<Restored> {
        let mut listing = self.list(Some(req.strategy));
        for (path, e) in &listing.problems {
            log::warn!("ignoring unreadable sidecar {}: {e}", path.display());
        }
        let archive = select::by_selector(&mut listing, req.strategy, &req.selector)?;
        let _lock = match self.store.lock() {
            Ok(lock) => Some(lock),
            // A store on a read-only medium (a write-protected recovery
            // stick) cannot be pruned meanwhile: restore without the lock.
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
            {
                log::info!(
                    "{} is read-only: restoring without the store lock",
                    self.store.root().display()
                );
                None
            }
            Err(e) => return Err(e),
        };
        crate::restore::run(
            archive,
            self.key.as_ref(),
            req.target.as_deref(),
            req.file.as_deref(),
            req.accept_damaged,
            progress,
        )
        .await
    }
}

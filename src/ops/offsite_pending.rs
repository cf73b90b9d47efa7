//! What is not yet in the offsite store, for the daemon's `STATUS`,
//! monitor and metrics: the local files against the local record, with
//! no network call (see [`crate::offsite::pending`]).

use super::Session;
use crate::error::{msg, Result};
use crate::offsite::local;
use crate::offsite::pending::{self, Pending};
use crate::offsite::record;
use crate::safefs::Dir;

impl Session {
    /// Objects, bytes and the oldest time not confirmed remotely.
    pub fn offsite_pending(&self) -> Result<Pending> {
        let t = self.offsite_target()?;
        let dir = &self.cfg.backup_dir;
        let rec = record::load(dir, &self.store_id(&t))?;
        let (items, _) = local::items(&self.store, self.key.as_ref(), dir);
        let root = Dir::open_path(dir).map_err(|e| {
            msg(format!(
                "cannot open backup directory {}: {e}",
                dir.display()
            ))
        })?;
        Ok(pending::of_files(&items, &rec, &root))
    }
}

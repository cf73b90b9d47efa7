//! The operations layer: every operation the front ends offer, done once.
//!
//! A [`Session`] is one configuration, its master key and its store. Each
//! operation (backup, list, verify, restore, prune) is a method here that
//! owns the whole sequence: which key, the store lock, which archive, the
//! driver call below (`backup`, `verify`, `restore`, `prune`), and what is
//! recorded in `state.json`. The front ends only parse and present: `cli`
//! prints the reports, the daemon queues jobs and turns reports into
//! protocol replies, `demo` calls these methods directly. So an operation
//! behaves the same whichever front end asks for it.
//!
//! Invariants:
//! - the key rule is one: the key ring is loaded when `encryption_enabled`
//!   is on, or when a key file exists (older archives may be encrypted);
//!   new archives are written with its last key, and read with the key
//!   their header names;
//! - every operation that writes or deletes in the store holds the store
//!   lock for its whole duration (backup, restore, prune; not `--dry-run`,
//!   list or verify, which only read);
//! - a backup is verified before it counts: the state file records a run
//!   as successful, and the archive as the newest verified one, only after
//!   the new archive was read back completely;
//! - an id that names an archive whose sidecar cannot be read (wrong key,
//!   damage) fails with that reason, never with "no such archive".

mod backup;
mod disaster;
mod drill;
mod export;
mod offsite;
mod offsite_pending;
pub mod offsite_prune;
mod pitr;
mod prune;
mod restore;
mod restore_all;
mod select;
mod verify;

use std::path::PathBuf;

use crate::config::Config;
use crate::crypto::KeyRing;
use crate::error::Result;
use crate::store::{Listing, Store};
use crate::strategy::Strategy;

pub use backup::BackupReport;
pub(crate) use disaster::{
    boot_wait, has_sets_dir, restore_interrupted, wait_for_stick, write_result,
};
pub use disaster::{
    disaster_restore, DisasterOptions, DisasterOutcome, DisasterReport, DoneStrategy,
    PlannedArchive, SetInfo,
};
pub use drill::{DrillOutcome, DrillReport};
pub use export::{ExportReport, ExportedArchive};
pub use offsite::{
    stage_from_offsite, OffsiteVerifyReport, SetOutcome, Staged, SyncReport, STAGE_DIR,
};
pub use pitr::PitrRange;
pub use prune::PruneReport;
pub use restore::RestoreRequest;
pub use restore_all::{RestoreAllReport, RestoredStrategy, RESTORE_ALL_ORDER};
pub use verify::{VerifyReport, Which};

/// One configuration with its key and store: what every operation needs.
pub struct Session {
    cfg: Config,
    /// The key ring: archives are written with its last key and read
    /// with whichever key their header names.
    key: Option<KeyRing>,
    store: Store,
    /// Whether restores take the store lock. A recovery stick's pool is
    /// read-only to a restore: no lock file, no leftover sweep there.
    lock_store: bool,
}

impl Session {
    /// Open a session on a loaded config: load the key (see the module doc
    /// for when) and describe the store. Nothing is written.
    pub fn open(cfg: Config) -> Result<Session> {
        let key = if cfg.encryption_enabled || cfg.key_file.exists() {
            Some(crate::keys::load(&cfg.key_file)?)
        } else {
            None
        };
        let store = Store::for_config(&cfg);
        Ok(Session {
            cfg,
            key,
            store,
            lock_store: true,
        })
    }

    /// A session that reads archives from another store (a recovery
    /// stick's pool) with a key ring from elsewhere (unsealed from the
    /// stick). Restores from it write nothing into that store: no lock, no
    /// `state.json`.
    pub(crate) fn over_store(cfg: Config, key: Option<KeyRing>, store: Store) -> Session {
        Session {
            cfg,
            key,
            store,
            lock_store: false,
        }
    }

    /// The daemon's session. On a freshly imaged board the master key
    /// does not exist yet: when encryption is on, `key_file` is missing,
    /// the store holds no archive (not even an unreadable one) and no
    /// disaster restore is pending, a new key is made first (mode 0600),
    /// so the board protects itself from its first boot; the next export
    /// seals it onto the stick. A key file missing on a board with archives
    /// is still an error: a new key would not read them. Returns the new
    /// key's id when one was made.
    pub fn open_first_start(cfg: Config) -> Result<(Session, Option<crate::crypto::KeyId>)> {
        let fresh = cfg.encryption_enabled
            && matches!(std::fs::symlink_metadata(&cfg.key_file), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            && !disaster::restore_interrupted(&cfg)
            && {
                let listing = Store::for_config(&cfg).list(None, None);
                listing.archives.is_empty() && listing.problems.is_empty()
            };
        let made = if fresh {
            let key = crate::keys::generate(&cfg.key_file)?;
            log::warn!(
                "no master key and no archives: first start of a fresh board; made a new master key {} (id {}). Export to a recovery stick (recovery_public_key) so that it is escrowed",
                cfg.key_file.display(),
                key.id()
            );
            Some(key.id())
        } else {
            None
        };
        Ok((Session::open(cfg)?, made))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn key(&self) -> Option<&KeyRing> {
        self.key.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every archive (of one strategy, or all), oldest first, and the
    /// sidecars that could not be read.
    pub fn list(&self, only: Option<Strategy>) -> Listing {
        self.store.list(only, self.key.as_ref())
    }

    /// Every archive (of one strategy, or all) handed to `f` one at a
    /// time, not sorted, with the sidecars that could not be read: see
    /// [`Store::visit`].
    pub fn visit(
        &self,
        only: Option<Strategy>,
        f: impl FnMut(std::result::Result<crate::store::Listed, (PathBuf, crate::error::Error)>),
    ) {
        self.store.visit(only, self.key.as_ref(), f)
    }

    /// The strategies `backup` with no argument (or `--all`) means.
    pub fn all_strategies(&self) -> Result<Vec<Strategy>> {
        let c = self.cfg.configured();
        if c.is_empty() {
            return Err(crate::error::msg(format!(
                "{} configures no strategy: add a [database], [config], [logs] or [application] section",
                self.cfg.file.display()
            )));
        }
        Ok(c)
    }

    fn backup_dir(&self) -> &PathBuf {
        &self.cfg.backup_dir
    }
}

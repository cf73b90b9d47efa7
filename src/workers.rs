//! Whether this process may put work on threads of its own beside the one
//! that runs it: the read-ahead of a sequential archive pass
//! (`format::ahead`) and the database checks beside the page scan
//! (`sources::db_facts`).
//!
//! One-shot commands may: a restore or a backup then uses both cores of a
//! two-core board. The daemon turns it off ([`set_allowed`]) before it
//! starts any job: it holds its memory bound (8 MiB resident while it backs
//! up, ships the WAL and answers), and each extra thread costs buffers and
//! a malloc arena of its own; its jobs then do that work on its one thread,
//! serially.

use std::sync::atomic::{AtomicBool, Ordering};

static ALLOWED: AtomicBool = AtomicBool::new(true);

/// Allow or forbid worker threads in this process (on by default).
pub fn set_allowed(on: bool) {
    ALLOWED.store(on, Ordering::Relaxed);
}

/// Whether worker threads may be started.
pub fn allowed() -> bool {
    ALLOWED.load(Ordering::Relaxed)
}

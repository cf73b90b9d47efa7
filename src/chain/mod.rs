//! Incremental chains of the tree strategies (config, logs, application).
//!
//! An incremental archive names its parent in the sidecar (block 4) and
//! stores each file unchanged since the parent (same device, inode, size,
//! mtime and ctime, clean in the parent) as a kind 5 entry: a reference to
//! the archive that holds the content (a kind 1 entry under the same path)
//! plus the content's SHA-256. This module owns:
//!
//! - `order`: the canonical entry order as a comparison, so two archives'
//!   indexes can be merge-joined;
//! - `cursor`: a forward-only cursor over one archive's index (fixed
//!   memory: one record and the reader's frame buffers);
//! - `plan`: which parent a new backup uses (or why it is a full one);
//! - `db`: the database strategy's chains (page deltas and digests);
//! - `db_check`: verify's checks of the database chain entries;
//! - `holders`: resolving kind 5 entries for restore and verify, one
//!   index cursor and one content reader per referenced archive.
//!
//! Invariants: a chain never spans different source lists (the order
//! would differ); a chain is at most [`MAX_CHAIN`] archives deep; every
//! kind 5 entry names its holder directly, so resolving one is a single
//! lookup, never a walk down the chain.

pub mod cursor;
pub mod db;
pub mod db_check;
pub mod holders;
pub mod order;
pub mod plan;

/// Longest chain the reader accepts (a full archive and its incrementals),
/// whatever `full_every_count` says: bounds the open readers of a restore.
pub const MAX_CHAIN: usize = 64;

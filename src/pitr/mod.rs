//! Point-in-time recovery of the database: WAL shipping.
//!
//! The daemon's shipper (`shipper`) copies every committed transaction of
//! the live database's write-ahead log (`wal`) into authenticated segment
//! archives (`segment`), chained to each other and to a full database
//! archive (the generation's snapshot), under
//! `<backup_dir>/database-wal/<generation>/` (`store`). A restore to a time
//! (`apply`, driven by `ops::pitr`) takes the newest generation whose range
//! starts at or before it, restores its snapshot into a scratch directory,
//! applies the segments' pages in order up to the last batch at or before
//! that time, checks the result and only then publishes it.
//!
//! Invariants: a chain is never silently broken (every break starts a new
//! generation from a fresh snapshot); a segment is never trusted before
//! its archive authenticated and its hash matched the next link's record;
//! memory is one WAL frame whatever the sizes.

pub(crate) mod apply;
pub(crate) mod segment;
pub mod shipper;
pub(crate) mod store;
pub(crate) mod wal;

pub use shipper::{PitrStatus, Shipper};

/// `(seconds, nanoseconds)` as RFC 3339 with milliseconds, UTC.
pub(crate) fn rfc3339_nanos(t: (i64, u32)) -> String {
    let s = crate::timefmt::rfc3339(t.0);
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}.{:03}Z", t.1 / 1_000_000),
        None => s,
    }
}

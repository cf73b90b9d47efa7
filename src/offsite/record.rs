//! The local record of the offsite store: which objects are confirmed
//! remotely (key and size), and the multipart upload in progress, if any,
//! so a rerun after a power cut resumes it instead of starting over.
//!
//! WAL segments, shipped in order and many, are recorded per generation
//! as the next sequence number to ship (everything below it is
//! confirmed), so the record does not grow with their number.
//!
//! Kept as `<backup_dir>/offsite.json` (mode 0600), rewritten crash-safely
//! (temporary name, fsync, rename, fsync of the directory) after every
//! confirmed object and every new upload id, so the worst a power cut
//! costs is sending one object again (which the server then refuses with
//! 412 and a HEAD confirms).
//!
//! Invariants: the record belongs to one store (endpoint, bucket and
//! prefix): a record of another one is set aside, not trusted; it names
//! only files that exist locally (entries of files pruned since are dropped
//! on each sync), so it stays bounded by the backup directory; it is read
//! with a size bound ([`MAX_RECORD`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::local::Item;
use crate::error::{msg, Result};
use crate::fsutil::{read_regular, write_atomic, Follow};

pub const FILE: &str = "offsite.json";
/// The lock file one sync holds.
pub const LOCK: &str = ".offsite.lock";
/// Largest record read.
pub const MAX_RECORD: usize = 32 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// `endpoint bucket prefix` the record is about.
    pub store: String,
    /// Confirmed archive parts and sidecars: key under the prefix -> size.
    pub confirmed: BTreeMap<String, u64>,
    /// WAL segments: generation -> the first sequence number not confirmed.
    #[serde(default)]
    pub wal: BTreeMap<String, u64>,
    pub upload: Option<Upload>,
}

impl Record {
    pub fn is_confirmed(&self, item: &Item) -> bool {
        match &item.segment {
            Some((g, seq)) => self.wal.get(g).is_some_and(|next| seq < next),
            None => self.confirmed.contains_key(&item.key()),
        }
    }

    /// Record `item` as confirmed (segments are confirmed in order).
    pub fn confirm(&mut self, item: &Item, size: u64) {
        match &item.segment {
            Some((g, seq)) => {
                let next = self.wal.entry(g.clone()).or_insert(0);
                *next = (*next).max(seq.saturating_add(1));
            }
            None => {
                self.confirmed.insert(item.key(), size);
            }
        }
    }

    /// Forget what is not in `items` any more (pruned locally).
    pub fn retain(&mut self, items: &[Item]) {
        let keys: BTreeSet<String> = items
            .iter()
            .filter(|i| i.segment.is_none())
            .map(Item::key)
            .collect();
        let gens: BTreeSet<&str> = items
            .iter()
            .filter_map(|i| i.segment.as_ref().map(|(g, _)| g.as_str()))
            .collect();
        self.confirmed.retain(|k, _| keys.contains(k));
        self.wal.retain(|g, _| gens.contains(g.as_str()));
    }
}

/// A multipart upload started and not yet completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    pub size: u64,
    pub part_size: u64,
}

pub fn path(backup_dir: &Path) -> PathBuf {
    backup_dir.join(FILE)
}

/// Load the record for `store`; a missing file, or a record of another
/// store, gives an empty one.
pub fn load(backup_dir: &Path, store: &str) -> Result<Record> {
    let p = path(backup_dir);
    let bytes = match read_regular(&p, MAX_RECORD, Follow::No) {
        Ok((_, b)) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(fresh(store));
        }
        Err(e) => {
            return Err(msg(format!(
                "cannot read the offsite record {}: {e}; if it is damaged, remove it (the next sync then checks every object with the store)",
                p.display()
            )))
        }
    };
    // Only a cache of what the store confirmed: a damaged one (a card that
    // lost a block) is started again, not a reason to stop shipping on a
    // board nobody tends; the next sync asks the store about every object.
    let r: Record = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            log::warn!(
                "the offsite record {} is damaged ({e}); starting a new one: this sync checks every object with the store",
                p.display()
            );
            return Ok(fresh(store));
        }
    };
    if r.version != 1 || r.store != store {
        log::info!(
            "offsite record {} is about another store ({:?}); starting a new one",
            p.display(),
            r.store
        );
        return Ok(fresh(store));
    }
    Ok(r)
}

fn fresh(store: &str) -> Record {
    Record {
        version: 1,
        store: store.to_string(),
        ..Record::default()
    }
}

/// Hold `<backup_dir>/.offsite.lock` (one sync at a time; released
/// when the returned file is dropped). A second sync fails at once.
pub fn lock(backup_dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = backup_dir.join(LOCK);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(
            (rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::NONBLOCK
                | rustix::fs::OFlags::CLOEXEC)
                .bits() as i32,
        )
        .open(&p)
        .map_err(|e| msg(format!("cannot open the offsite lock {}: {e}", p.display())))?;
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(msg(format!(
            "offsite lock {} is not a regular file: remove it",
            p.display()
        )));
    }
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(msg(format!(
            "another offsite sync is running on {}; wait for it to finish",
            backup_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(msg(format!("cannot lock {}: {e}", p.display())))
        }
    }
}

pub fn save(backup_dir: &Path, r: &Record) -> Result<()> {
    let bytes = serde_json::to_vec(r).map_err(|e| msg(format!("offsite record: {e}")))?;
    write_atomic(&path(backup_dir), &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_other_stores() {
        let dir = std::env::temp_dir().join(format!("rvm-offsite-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = load(&dir, "s").unwrap();
        assert!(r.confirmed.is_empty() && r.upload.is_none());
        r.confirmed.insert("database/x.meta".into(), 5);
        r.upload = Some(Upload {
            key: "k".into(),
            upload_id: "u".into(),
            size: 9,
            part_size: 5,
        });
        save(&dir, &r).unwrap();
        assert_eq!(load(&dir, "s").unwrap(), r);
        assert!(load(&dir, "other").unwrap().confirmed.is_empty());
        // A damaged record is a cache lost, not a reason to stop shipping.
        std::fs::write(path(&dir), b"{").unwrap();
        let fresh = load(&dir, "s").unwrap();
        assert!(fresh.confirmed.is_empty() && fresh.upload.is_none() && fresh.store == "s");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_are_confirmed_by_generation_and_sequence() {
        let seg = |g: &str, seq: u64| Item {
            dirs: vec!["database-wal".into(), g.into()],
            name: format!("{seq:012}.rvw"),
            segment: Some((g.into(), seq)),
            group: g.into(),
        };
        let part = Item {
            dirs: vec!["config".into()],
            name: "x.000.rvb".into(),
            segment: None,
            group: "x".into(),
        };
        let mut r = Record::default();
        assert!(!r.is_confirmed(&seg("g1", 0)));
        r.confirm(&seg("g1", 0), 9);
        r.confirm(&seg("g1", 1), 9);
        r.confirm(&part, 7);
        assert!(r.is_confirmed(&seg("g1", 1)) && !r.is_confirmed(&seg("g1", 2)));
        assert!(!r.is_confirmed(&seg("g2", 0)) && r.is_confirmed(&part));
        r.retain(&[seg("g1", 5)]);
        assert!(r.is_confirmed(&seg("g1", 0)) && !r.is_confirmed(&part));
        r.retain(&[]);
        assert!(r.wal.is_empty());
    }
}

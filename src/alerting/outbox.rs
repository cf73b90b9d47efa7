//! The outbox: alerts on disk until each sink has taken them.
//!
//! Layout: `backup_dir/outbox/` holds one file per (alert, sink),
//! `SSSSSSSSSSSSSSSS.json` (`S`: a 64-bit sequence number in hex, so names
//! sort by age), holding the alert, the sink's name, the attempts so far,
//! the next try (Unix milliseconds) and the last error; and `dropped`, the
//! number of entries ever dropped (decimal).
//!
//! Invariants:
//! - an entry is written crash-safely (temporary name, fsync, rename, one
//!   fsync of the directory per batch) before [`Outbox::add`] returns, so
//!   nothing is sent that a power cut could forget; it is removed only
//!   after its sink took it ([`Outbox::delivered`]) — at least once;
//! - a failed try rewrites the entry (same crash-safe way) with its next
//!   try, so a restart does not hammer a receiver; a next try further
//!   ahead than the backoff cap (a clock set back) is pulled in to it;
//! - at most `max` entries: the oldest are dropped to make room, and every
//!   dropped or damaged entry is counted in `dropped` (persisted);
//! - only names this module writes are ever removed (the pattern above and
//!   its `.tmp`); leftover temporary files are removed when opened;
//! - an entry is read with a size bound ([`MAX_ENTRY`]); a damaged one is
//!   dropped with a warning, never a panic;
//! - memory holds only an index (sequence, sink, next try) per entry.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backoff;
use crate::fsutil::{self, Follow};
use crate::monitor::Alert;

/// Largest entry file read (an alert is far smaller).
pub const MAX_ENTRY: usize = 64 << 10;
/// `outbox_max`: default and range.
pub const DEFAULT_MAX: u32 = 1000;
pub const MIN_MAX: u32 = 16;
pub const MAX_MAX: u32 = 100_000;
const DROPPED_FILE: &str = "dropped";

/// One stored delivery.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub sink: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub next_try: i64,
    #[serde(default)]
    pub last_error: String,
    pub alert: Alert,
}

/// What the index keeps of an entry.
#[derive(Clone, Debug)]
pub struct Meta {
    pub sink: String,
    pub next_try: i64,
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max: usize,
    index: BTreeMap<u64, Meta>,
    next_seq: u64,
    dropped: u64,
}

fn entry_name(seq: u64) -> String {
    format!("{seq:016x}.json")
}

/// The sequence number of one of our names (`tmp`: the temporary form).
fn parse_name(name: &str, tmp: bool) -> Option<u64> {
    let stem = if tmp {
        name.strip_suffix(".json.tmp")?
    } else {
        name.strip_suffix(".json")?
    };
    (stem.len() == 16 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u64::from_str_radix(stem, 16).ok())
        .flatten()
}

/// The outbox directory of a store.
pub fn dir_of(backup_dir: &Path) -> PathBuf {
    backup_dir.join("outbox")
}

/// How many entries wait in the outbox of `backup_dir` (for a reader
/// without an open outbox, e.g. a CLI command); 0 if there is none.
pub fn depth_of(backup_dir: &Path) -> u64 {
    fs::read_dir(dir_of(backup_dir))
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| parse_name(n, false))
                        .is_some()
                })
                .count() as u64
        })
        .unwrap_or(0)
}

/// How many outbox entries of `backup_dir` were ever dropped (the
/// `dropped` file; 0 when there is none).
pub fn dropped_of(backup_dir: &Path) -> u64 {
    read_dropped(&dir_of(backup_dir))
}

impl Outbox {
    /// Open (creating it, mode 0700) the outbox in `backup_dir`: remove
    /// leftover temporary files, index the entries, drop damaged ones.
    pub fn open(backup_dir: &Path, max: u32, now_ms: i64) -> io::Result<Outbox> {
        let dir = dir_of(backup_dir);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                return Err(io::Error::other(format!(
                    "{} is {}, not a directory; move it away so the outbox can be made",
                    dir.display(),
                    fsutil::describe_type(m.file_type())
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().mode(0o700).create(&dir)?;
                fsutil::sync_dir(backup_dir).map_err(io::Error::other)?;
            }
            Err(e) => return Err(e),
        }
        let mut ob = Outbox {
            dropped: read_dropped(&dir),
            dir,
            max: max.clamp(MIN_MAX, MAX_MAX) as usize,
            index: BTreeMap::new(),
            next_seq: 0,
        };
        let mut seqs = Vec::new();
        for e in fs::read_dir(&ob.dir)? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if parse_name(&name, true).is_some() {
                let _ = fs::remove_file(ob.dir.join(&name));
            } else if let Some(seq) = parse_name(&name, false) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let cap = backoff::CAP.as_millis() as i64;
        let mut damaged = 0;
        for seq in seqs {
            ob.next_seq = ob.next_seq.max(seq.saturating_add(1));
            match ob.read(seq) {
                Ok(entry) => {
                    let next_try = entry.next_try.min(now_ms.saturating_add(cap));
                    ob.index.insert(
                        seq,
                        Meta {
                            sink: entry.sink,
                            next_try,
                        },
                    );
                }
                Err(e) => {
                    log::warn!(
                        "alert outbox: dropping damaged entry {}: {e}",
                        ob.dir.join(entry_name(seq)).display()
                    );
                    let _ = fs::remove_file(ob.dir.join(entry_name(seq)));
                    damaged += 1;
                }
            }
        }
        if damaged > 0 {
            ob.count_dropped(damaged);
            let _ = fsutil::sync_dir(&ob.dir);
        }
        // Over a lowered bound: the oldest go.
        ob.make_room(0);
        Ok(ob)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries waiting.
    pub fn depth(&self) -> u64 {
        self.index.len() as u64
    }

    /// Entries ever dropped (the bound, damage, a sink no longer
    /// configured).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn set_max(&mut self, max: u32) {
        self.max = max.clamp(MIN_MAX, MAX_MAX) as usize;
        self.make_room(0);
    }

    /// Store `alert` once for each of `sinks`, durably, first try at
    /// `now_ms`. Returns the sequence numbers written.
    pub fn add(&mut self, alert: &Alert, sinks: &[String], now_ms: i64) -> io::Result<Vec<u64>> {
        let sinks = &sinks[..sinks.len().min(self.max)];
        self.make_room(sinks.len());
        let mut written = Vec::new();
        let mut failure = None;
        for sink in sinks {
            let seq = self.next_seq;
            self.next_seq = seq.saturating_add(1);
            let entry = Entry {
                sink: sink.clone(),
                attempts: 0,
                next_try: now_ms,
                last_error: String::new(),
                alert: alert.clone(),
            };
            match self.write(seq, &entry) {
                Ok(()) => {
                    self.index.insert(
                        seq,
                        Meta {
                            sink: sink.clone(),
                            next_try: now_ms,
                        },
                    );
                    written.push(seq);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        fsutil::sync_dir(&self.dir).map_err(io::Error::other)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    fn make_room(&mut self, incoming: usize) {
        let mut n = 0;
        while self.index.len() + incoming > self.max {
            let Some((seq, meta)) = self.index.pop_first() else {
                break;
            };
            let _ = fs::remove_file(self.dir.join(entry_name(seq)));
            log::debug!(
                "alert outbox full: dropped entry {seq} for sink {}",
                meta.sink
            );
            n += 1;
        }
        if n > 0 {
            log::warn!(
                "alert outbox full ({} entries, outbox_max): dropped the {n} oldest undelivered alert(s); check the sinks (rvm-backup alert test)",
                self.max
            );
            self.count_dropped(n);
        }
    }

    fn count_dropped(&mut self, n: u64) {
        self.dropped = self.dropped.saturating_add(n);
        let path = self.dir.join(DROPPED_FILE);
        if let Err(e) = fsutil::write_atomic(&path, format!("{}\n", self.dropped).as_bytes(), 0o600)
        {
            log::warn!("cannot record the dropped alert count: {e}");
        }
    }

    fn write(&self, seq: u64, entry: &Entry) -> io::Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
        if bytes.len() > MAX_ENTRY {
            return Err(io::Error::other(format!(
                "an alert of {} bytes is larger than an outbox entry may be ({MAX_ENTRY})",
                bytes.len()
            )));
        }
        let path = self.dir.join(entry_name(seq));
        // write_atomic fsyncs the file and the directory.
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(io::Error::other)
    }

    /// Read one entry (bounded; never through a symlink).
    pub fn read(&self, seq: u64) -> io::Result<Entry> {
        let (_, bytes) =
            fsutil::read_regular(&self.dir.join(entry_name(seq)), MAX_ENTRY, Follow::No)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The oldest entry due at `now_ms` whose sink is not held back
    /// (`held(sink)`: the time before which that sink is not tried).
    pub fn next_due(&self, now_ms: i64, held: impl Fn(&str) -> i64) -> Option<u64> {
        self.index
            .iter()
            .find(|(_, m)| m.next_try.max(held(&m.sink)) <= now_ms)
            .map(|(seq, _)| *seq)
    }

    /// When the next entry falls due (`None`: the outbox is empty).
    pub fn next_wake(&self, held: impl Fn(&str) -> i64) -> Option<i64> {
        self.index
            .values()
            .map(|m| m.next_try.max(held(&m.sink)))
            .min()
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.index.contains_key(&seq)
    }

    /// The sink took it: remove it for good.
    pub fn delivered(&mut self, seq: u64) -> io::Result<()> {
        if self.index.remove(&seq).is_some() {
            fs::remove_file(self.dir.join(entry_name(seq)))?;
            fsutil::sync_dir(&self.dir).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// It cannot be delivered ever (damaged, its sink gone): drop and count.
    pub fn discard(&mut self, seq: u64) {
        if self.index.remove(&seq).is_some() {
            let _ = fs::remove_file(self.dir.join(entry_name(seq)));
            let _ = fsutil::sync_dir(&self.dir);
            self.count_dropped(1);
        }
    }

    /// A try failed: persist the next one (`delay_ms` from now).
    pub fn failed(
        &mut self,
        seq: u64,
        mut entry: Entry,
        error: &str,
        now_ms: i64,
        delay_ms: u64,
    ) -> io::Result<i64> {
        entry.attempts = entry.attempts.saturating_add(1);
        entry.next_try = now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
        entry.last_error = error.chars().take(1000).collect();
        if let Some(m) = self.index.get_mut(&seq) {
            m.next_try = entry.next_try;
        } else {
            return Ok(entry.next_try);
        }
        self.write(seq, &entry)?;
        Ok(entry.next_try)
    }
}

fn read_dropped(dir: &Path) -> u64 {
    fsutil::read_regular(&dir.join(DROPPED_FILE), 64, Follow::No)
        .ok()
        .and_then(|(_, b)| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{AlertKind, Finding, Severity};

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-outbox-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn alert(reason: &str) -> Alert {
        let f = Finding {
            rule: "failures".into(),
            subject: "database".into(),
            severity: Severity::Critical,
            reason: reason.into(),
            figures: serde_json::Map::new(),
        };
        Alert::new(
            AlertKind::Firing,
            &f,
            Severity::Ok,
            "rvm-1",
            "",
            1_795_000_000,
        )
        .unwrap()
    }

    fn sinks(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entries_survive_a_reopen_and_go_when_delivered() {
        let d = scratch("reopen");
        let mut ob = Outbox::open(&d, 100, 0).unwrap();
        let a = alert("one");
        let seqs = ob.add(&a, &sinks(&["w", "x"]), 1000).unwrap();
        assert_eq!(seqs.len(), 2);
        // A leftover temporary file and a stranger's file.
        fs::write(ob.dir().join("00000000000000ff.json.tmp"), b"half").unwrap();
        fs::write(ob.dir().join("notes.txt"), b"mine").unwrap();
        drop(ob);
        let mut ob = Outbox::open(&d, 100, 2000).unwrap();
        assert_eq!(ob.depth(), 2);
        assert!(!ob.dir().join("00000000000000ff.json.tmp").exists());
        assert!(ob.dir().join("notes.txt").exists());
        let first = ob.next_due(2000, |_| 0).unwrap();
        let e = ob.read(first).unwrap();
        assert_eq!((e.sink.as_str(), e.alert.id.as_str()), ("w", a.id.as_str()));
        ob.delivered(first).unwrap();
        assert_eq!(ob.depth(), 1);
        assert_eq!(depth_of(&d), 1);
        // New entries sort after the old ones.
        let more = ob.add(&alert("two"), &sinks(&["w"]), 3000).unwrap();
        assert!(more[0] > first);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failures_persist_their_next_try_and_a_clock_jump_is_capped() {
        let d = scratch("retry");
        let mut ob = Outbox::open(&d, 100, 0).unwrap();
        let seq = ob.add(&alert("r"), &sinks(&["w"]), 0).unwrap()[0];
        let e = ob.read(seq).unwrap();
        let next = ob.failed(seq, e, "HTTP 500", 10_000, 4000).unwrap();
        assert_eq!(next, 14_000);
        assert_eq!(ob.next_due(13_999, |_| 0), None);
        assert_eq!(ob.next_wake(|_| 0), Some(14_000));
        // A held sink defers its entries.
        assert_eq!(ob.next_wake(|_| 20_000), Some(20_000));
        drop(ob);
        let ob = Outbox::open(&d, 100, 13_000).unwrap();
        assert_eq!(ob.next_wake(|_| 0), Some(14_000));
        let e = ob.read(seq).unwrap();
        assert_eq!((e.attempts, e.last_error.as_str()), (1, "HTTP 500"));
        drop(ob);
        // The clock went back a day: the retry is not a day away.
        let ob = Outbox::open(&d, 100, 14_000 - 86_400_000).unwrap();
        assert!(ob.next_wake(|_| i64::MIN).unwrap() <= 14_000 - 86_400_000 + 600_000);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts_them() {
        let d = scratch("bound");
        let mut ob = Outbox::open(&d, 16, 0).unwrap();
        let mut all = Vec::new();
        for i in 0..20 {
            all.extend(ob.add(&alert(&format!("n{i}")), &sinks(&["w"]), i).unwrap());
        }
        assert_eq!(ob.depth(), 16);
        assert_eq!(ob.dropped(), 4);
        let oldest = ob.next_due(i64::MAX, |_| 0).unwrap();
        assert_eq!(oldest, all[4]);
        assert_eq!(ob.read(oldest).unwrap().alert.reason, "n4");
        drop(ob);
        let ob = Outbox::open(&d, 16, 0).unwrap();
        assert_eq!((ob.depth(), ob.dropped()), (16, 4));
        assert_eq!((depth_of(&d), dropped_of(&d)), (16, 4));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_entries_are_dropped_not_fatal() {
        let d = scratch("damaged");
        let mut ob = Outbox::open(&d, 100, 0).unwrap();
        let good = ob.add(&alert("ok"), &sinks(&["w"]), 0).unwrap()[0];
        let dir = ob.dir().to_path_buf();
        drop(ob);
        fs::write(dir.join("0000000000000100.json"), b"{\"sink\": 3").unwrap();
        fs::write(dir.join("0000000000000101.json"), vec![b' '; MAX_ENTRY + 1]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("0000000000000102.json")).unwrap();
        crate::fsutil::make_fifo(&dir.join("0000000000000103.json"));
        let ob = Outbox::open(&d, 100, 0).unwrap();
        assert_eq!(ob.depth(), 1);
        assert_eq!(ob.dropped(), 4);
        assert!(ob.contains(good));
        assert!(Path::new("/etc/passwd").exists());
        // Sequence numbers continue after the highest seen.
        assert!(ob.next_seq > 0x103);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_non_directory_outbox_is_an_error_that_says_what_to_do() {
        let d = scratch("notdir");
        fs::write(d.join("outbox"), b"x").unwrap();
        let e = Outbox::open(&d, 100, 0).unwrap_err().to_string();
        assert!(
            e.contains("not a directory") && e.contains("move it away"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}

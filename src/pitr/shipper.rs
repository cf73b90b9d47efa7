//! The WAL shipper: copies committed WAL frames into segments, owns the
//! checkpoints, and starts a new generation whenever the chain breaks.
//!
//! Three connections of our own to the live database:
//! - **R** holds a read transaction nearly all the time. While any reader
//!   holds a WAL read mark no connection can restart (rewind) the WAL, so
//!   the frames after the point we shipped to can only be appended to:
//!   we read the `-wal` file directly, validate the frames exactly as
//!   SQLite does (`wal`), and ship whole transactions.
//! - **W** takes the write lock (`BEGIN IMMEDIATE`) for a checkpoint, so
//!   that nothing is appended between "shipped to the end" and the
//!   checkpoint, and afterwards writes a no-op (`PRAGMA user_version` set
//!   to its own value) so that SQLite restarts the WAL from its start.
//! - **C** runs `PRAGMA wal_checkpoint(PASSIVE)` (never RESTART, which
//!   would block the application's writers while it waits for readers).
//!
//! A WAL restart changes the salts. A restart is accepted as part of the
//! same chain only when it is provably seamless: salt-1 grew by exactly
//! one (one restart), the file was not
//! truncated, the new WAL has not reached the position after our last
//! shipped frame, and that position holds no valid continuation of the
//! old chain (a frame appended after ours and then lost). Anything else —
//! unexpected salts, a shorter WAL, a replaced database file (device and
//! inode), another page size, a daemon restart — starts a new generation
//! from a fresh snapshot (an ordinary database archive): never a silent
//! gap.
//!
//! Times: WAL frames carry none. A batch's time is the WAL file's mtime
//! read after its frames were read (every frame in it was written at or
//! before), capped at the wall clock and never earlier than the previous
//! batch. Its precision is the sync interval.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::segment::{self, SegmentMeta};
use super::wal::{self, Cksum, ReadAt, WalHeader};
use crate::error::{msg, Error, IoContext, Result};
use crate::ops::Session;
use crate::safefs::Dir;

/// The most frames the WAL holds while the shipper runs, under a steady
/// writer and with no reader of the application holding an old snapshot
/// (which holds back any checkpoint): the bound is [`CHECKPOINT_AT`] plus
/// what the writer appends within one [`PROBE_EVERY`] and one step.
pub(crate) const CHECKPOINT_FRAMES: u64 = 1000;
/// Shipped frames at which a step checkpoints, and frames in the WAL at
/// which [`Shipper::wants_step`] asks for a step before the next tick: a
/// quarter below [`CHECKPOINT_FRAMES`], the headroom for what a writer
/// appends between two probes and while the step ships (250 frames in
/// 50 ms: up to 5,000 frames a second).
pub(crate) const CHECKPOINT_AT: u64 = CHECKPOINT_FRAMES / 4 * 3;
/// How often the daemon probes the WAL between its sync ticks.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);
/// After a checkpoint found a writer holding the write lock, wait this long
/// (a probe would otherwise step, and write a small segment, every probe).
const BUSY_RETRY: Duration = Duration::from_millis(500);
/// At most this many frames go into one segment (a bigger backlog is
/// shipped over several segments, a tick each).
const MAX_SEGMENT_FRAMES: u64 = 4096;
/// How long our connections wait for a lock.
const BUSY: Duration = Duration::from_millis(50);
/// After a checkpoint that could not backfill everything, wait this long.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

/// What the daemon shows about shipping.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PitrStatus {
    pub enabled: bool,
    pub generation: Option<String>,
    /// Segments written in this generation.
    pub segments: u64,
    /// Time of the newest shipped batch (RFC 3339, UTC).
    pub last_commit_time: Option<String>,
    /// The same in milliseconds since the Unix epoch.
    pub last_commit_unix_ms: Option<i64>,
    /// Seconds since frames were last seen shipped or found up to date
    /// (every commit not shipped yet is younger than this; STATUS fills
    /// it from `last_ok_unix_ms` when it answers).
    pub lag_seconds: Option<u64>,
    /// Wall time (ms since the Unix epoch) of the last step that shipped
    /// or found everything shipped: the monitor's `pitr` rule judges the
    /// time since.
    pub last_ok_unix_ms: Option<i64>,
    pub generations_started: u64,
    pub last_error: Option<String>,
    /// Segments on the recovery stick, of the generations whose snapshot
    /// is a set's database archive there (`None`: no stick with a set of
    /// this board is mounted at `export_dir`).
    pub stick_segments: Option<u64>,
    /// Why the last copy to the stick failed (a pulled or full stick).
    pub stick_error: Option<String>,
}

impl PitrStatus {
    fn mark_ok(&mut self) {
        self.last_ok_unix_ms = Some(crate::timefmt::now_unix_ms());
        self.lag_seconds = Some(0);
    }

    /// Whole seconds from `last_ok_unix_ms` to `now_ms` (`None` before
    /// the first successful step).
    pub fn lag_at(&self, now_ms: i64) -> Option<u64> {
        self.last_ok_unix_ms
            .map(|t| u64::try_from(now_ms.saturating_sub(t) / 1000).unwrap_or(0))
    }
}

struct Chain {
    generation: String,
    dir: PathBuf,
    seq: u64,
    prev_sha256: [u8; 32],
    hdr: WalHeader,
    next_frame: u64,
    /// Index just past the last valid frame (committed or not) the last
    /// scan saw in the current WAL: the probe looks beyond it.
    seen_end: u64,
    cksum: Cksum,
    db_id: (u64, u64),
    last_time: (i64, u32),
    next_checkpoint: Instant,
}

/// A prepared generation: the WAL header and the database's device and
/// inode when it was prepared.
struct Pending {
    hdr: WalHeader,
    db_id: (u64, u64),
}

/// Why the chain cannot continue.
#[derive(Debug)]
pub(crate) struct Break(pub String);

enum Shipped {
    Batch,
    Nothing,
}

pub struct Shipper {
    db_path: PathBuf,
    dir: Dir,
    db_name: Vec<u8>,
    wal_name: Vec<u8>,
    r: Connection,
    w: Connection,
    c: Connection,
    reading: bool,
    chain: Option<Chain>,
    /// A prepared generation waiting for its snapshot.
    pending: Option<Pending>,
    snapshot_at: Instant,
    buf: Vec<u8>,
    pub status: PitrStatus,
}

fn sql(e: rusqlite::Error, what: &str, db: &Path) -> Error {
    msg(format!("{what} on {}: {e}", db.display()))
}

fn open_conn(db: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql(e, "cannot open", db))?;
    c.busy_timeout(BUSY)
        .map_err(|e| sql(e, "busy_timeout", db))?;
    // Our connections never checkpoint on their own.
    c.query_row("PRAGMA wal_autocheckpoint=0", [], |_| Ok(()))
        .map_err(|e| sql(e, "wal_autocheckpoint", db))?;
    Ok(c)
}

impl Shipper {
    /// Open the three connections to `db` (which must be in WAL mode).
    pub fn open(db: &Path) -> Result<Shipper> {
        let parent = crate::fsutil::parent(db);
        let name = db
            .file_name()
            .ok_or_else(|| msg(format!("{} names no file", db.display())))?
            .as_bytes()
            .to_vec();
        let dir = Dir::open_path(parent).at("open the directory of", db)?;
        let r = open_conn(db)?;
        let mode: String = r
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(|e| sql(e, "read journal_mode", db))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(msg(format!(
                "{} is in journal mode {mode}, not WAL: point-in-time recovery needs WAL mode (PRAGMA journal_mode=WAL), or set pitr = false in [database]",
                db.display()
            )));
        }
        let mut wal_name = name.clone();
        wal_name.extend_from_slice(b"-wal");
        Ok(Shipper {
            db_path: db.to_path_buf(),
            dir,
            db_name: name,
            wal_name,
            w: open_conn(db)?,
            c: open_conn(db)?,
            r,
            reading: false,
            chain: None,
            pending: None,
            snapshot_at: Instant::now(),
            buf: Vec::new(),
            status: PitrStatus {
                enabled: true,
                ..PitrStatus::default()
            },
        })
    }

    fn begin_read(&mut self) -> Result<()> {
        if self.reading {
            return Ok(());
        }
        self.r
            .execute_batch("BEGIN")
            .map_err(|e| sql(e, "begin the read transaction", &self.db_path))?;
        self.r
            .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| {
                let _ = self.r.execute_batch("ROLLBACK");
                sql(e, "read", &self.db_path)
            })?;
        self.reading = true;
        Ok(())
    }

    fn end_read(&mut self) {
        if self.reading {
            let _ = self.r.execute_batch("COMMIT");
            self.reading = false;
        }
    }

    fn no_op_write(&self) -> rusqlite::Result<()> {
        let v: i64 = self.w.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        self.w.execute_batch(&format!("PRAGMA user_version = {v}"))
    }

    fn db_id(&self) -> Result<(u64, u64)> {
        match self.dir.stat(&self.db_name).at("inspect", &self.db_path)? {
            Some(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => {
                Ok(crate::safefs::dev_ino(&st))
            }
            _ => Err(msg(format!(
                "{} is missing or not a regular file",
                self.db_path.display()
            ))),
        }
    }

    /// The `-wal` file beside the database: opened relative to its
    /// directory, never through a symlink, only a regular file.
    fn open_wal(&self) -> Result<Option<File>> {
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::CLOEXEC;
        let name = std::ffi::OsStr::from_bytes(&self.wal_name);
        let fd = match rustix::fs::openat(&self.dir, name, flags, rustix::fs::Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => {
                return Err(msg(format!(
                    "cannot open the WAL of {}: {e}",
                    self.db_path.display()
                )))
            }
        };
        let f = File::from(fd);
        let m = f.metadata().at("inspect the WAL of", &self.db_path)?;
        if !m.is_file() {
            return Err(msg(format!(
                "the WAL of {} is not a regular file",
                self.db_path.display()
            )));
        }
        Ok(Some(f))
    }

    /// Whether a new generation must start (none yet, a break, or the
    /// snapshot interval passed): then [`Shipper::prepare_generation`], a
    /// database backup, [`Shipper::finish_generation`].
    pub fn needs_snapshot(&self, snapshot_every: Duration) -> bool {
        self.chain.is_none() || self.snapshot_at.elapsed() >= snapshot_every
    }

    /// Whether a step should run before the next tick (cheap: one open
    /// and two reads of a few bytes; the daemon calls it every
    /// [`PROBE_EVERY`]). Yes when the current WAL holds at least
    /// [`CHECKPOINT_AT`] frames, more than the last scan saw (the frame at
    /// that index carries the header's salts; a frame left over from
    /// before a restart carries older ones), and no checkpoint retry is
    /// pending; or when another connection restarted the WAL (its
    /// continuity is best checked while the new WAL is short). So a step
    /// that could not checkpoint is not repeated every probe. Any error:
    /// no (the tick finds it).
    pub fn wants_step(&self) -> bool {
        let Some(c) = self.chain.as_ref() else {
            return false;
        };
        let Ok(Some(wal)) = self.open_wal() else {
            return false;
        };
        let Ok(Some(hdr)) = wal::read_header(&wal) else {
            return false;
        };
        if (hdr.salt1, hdr.salt2) != (c.hdr.salt1, c.hdr.salt2) {
            return true;
        }
        if Instant::now() < c.next_checkpoint {
            return false;
        }
        let Some(at) = hdr.frame_offset((CHECKPOINT_AT - 1).max(c.seen_end)) else {
            return false;
        };
        let mut fh = [0u8; wal::FRAME_HEADER_LEN];
        if !matches!(wal.read_full_at(&mut fh, at), Ok(true)) {
            return false;
        }
        let be = |i: usize| u32::from_be_bytes([fh[i], fh[i + 1], fh[i + 2], fh[i + 3]]);
        (be(8), be(12)) == (hdr.salt1, hdr.salt2)
    }

    /// One step, called every sync interval while a generation runs (and
    /// sooner when [`Shipper::wants_step`]): ship what is new, and
    /// checkpoint when the WAL holds [`CHECKPOINT_AT`] frames (shipped, or
    /// seen: a transaction still being written holds the write lock, so
    /// the checkpoint waits [`BUSY_RETRY`]). A chain break ends the
    /// generation (then `needs_snapshot`).
    pub fn step(&mut self, session: &Session) {
        if let Err(b) = self.ship(session, false) {
            self.broken(b);
            return;
        }
        let due = self.chain.as_ref().is_some_and(|c| {
            c.next_frame.max(c.seen_end) >= CHECKPOINT_AT && Instant::now() >= c.next_checkpoint
        });
        if due {
            if let Err(b) = self.checkpoint(session) {
                self.broken(b);
            }
        }
    }

    fn broken(&mut self, b: Break) {
        log::warn!(
            "point-in-time recovery: the WAL chain of {} broke ({}); starting a new generation from a fresh snapshot",
            self.db_path.display(),
            b.0
        );
        self.chain = None;
    }

    /// First half of a new generation: fresh connections (the database
    /// may have been replaced, e.g. by a restore, and old connections would
    /// still watch the old file), a WAL frame the checkpoints have not
    /// backfilled (so that R's read transaction takes a read mark on the
    /// WAL; a reader of a fully backfilled WAL reads the database file and
    /// does not hold restarts off), R's read mark, and the WAL header.
    /// Returns the time after which the snapshot must start: any database
    /// archive created at or after it holds every commit before frame 0 of
    /// this WAL, and replaying all of this WAL's frames onto it is exact.
    pub fn prepare_generation(&mut self) -> Result<(i64, u32)> {
        self.chain = None;
        self.pending = None;
        self.end_read();
        if self.status.generations_started > 0 {
            let fresh = Shipper::open(&self.db_path)?;
            let status = std::mem::take(&mut self.status);
            *self = fresh;
            self.status = status;
        }
        self.no_op_write()
            .map_err(|e| sql(e, "write to", &self.db_path))?;
        self.begin_read()?;
        let db_id = self.db_id()?;
        let wal = self
            .open_wal()?
            .ok_or_else(|| msg(format!("{} has no WAL file", self.db_path.display())))?;
        let hdr = wal::read_header(&wal)
            .ctx(|| "cannot read the WAL".into())?
            .ok_or_else(|| {
                msg(format!(
                    "the WAL of {} has no valid header",
                    self.db_path.display()
                ))
            })?;
        let since = crate::timefmt::now_precise();
        self.pending = Some(Pending { hdr, db_id });
        Ok(since)
    }

    /// Second half: `generation` is the id of a database archive created
    /// at or after the time `prepare_generation` returned. Writes segment 0
    /// with every frame of the WAL as it is now.
    pub fn finish_generation(&mut self, session: &Session, generation: &str) -> Result<()> {
        let Pending { hdr, db_id } = self
            .pending
            .take()
            .ok_or_else(|| msg("no generation was prepared"))?;
        let root = super::store::root(&session.config().backup_dir);
        let dir = root.join(generation);
        std::fs::create_dir_all(&dir).at("create", &dir)?;
        crate::fsutil::sync_dir(&root)?;
        crate::fsutil::sync_dir(crate::fsutil::parent(&root))?;
        self.chain = Some(Chain {
            generation: generation.to_string(),
            dir,
            seq: 0,
            prev_sha256: [0; 32],
            hdr,
            next_frame: 0,
            seen_end: 0,
            cksum: hdr.cksum,
            db_id,
            last_time: (0, 0),
            next_checkpoint: Instant::now(),
        });
        self.snapshot_at = Instant::now();
        self.status.generation = Some(generation.to_string());
        self.status.segments = 0;
        self.status.generations_started += 1;
        if let Err(b) = self.ship(session, true) {
            self.chain = None;
            return Err(msg(format!(
                "the WAL changed while generation {generation} started ({}); trying again",
                b.0
            )));
        }
        log::info!(
            "point-in-time recovery: generation {generation} started for {}",
            self.db_path.display()
        );
        Ok(())
    }

    /// Check a changed WAL header continues our chain (see the module doc).
    fn seamless_restart(&mut self, wal: &File, new: &WalHeader) -> std::io::Result<bool> {
        let Some(c) = self.chain.as_ref() else {
            return Ok(false);
        };
        let old = c.hdr;
        // Salt-1 grows by one at each restart (from the shared WAL index);
        // the checkpoint sequence does not help: each connection writes
        // its own counter.
        if new.salt1 != old.salt1.wrapping_add(1) || new.page_size != old.page_size {
            return Ok(false);
        }
        let Some(at) = old.frame_offset(c.next_frame) else {
            return Ok(false);
        };
        if wal.metadata()?.len() < at {
            return Ok(false); // truncated: what was after ours is unknowable
        }
        let (prev, next) = (c.cksum, c.next_frame);
        let before = wal::scan(wal, new, 0, new.cksum, next + 1, &mut self.buf)?;
        let mut frame = vec![0u8; old.frame_len() as usize];
        let appended =
            wal.read_full_at(&mut frame, at)? && wal::check_frame(&old, prev, &frame).is_some();
        let after = wal::scan(wal, new, 0, new.cksum, next + 1, &mut self.buf)?;
        Ok(!appended && before.valid_end < next && after.valid_end < next)
    }

    /// Ship the committed frames after our position (at most one segment).
    /// `force`: write a segment even without frames (segment 0).
    fn ship(&mut self, session: &Session, force: bool) -> Result<Shipped, Break> {
        let brk = |s: String| Break(s);
        let db_id = self.db_id().map_err(|e| brk(e.to_string()))?;
        let wal = self
            .open_wal()
            .map_err(|e| brk(e.to_string()))?
            .ok_or_else(|| brk("the WAL file disappeared".into()))?;
        let hdr = wal::read_header(&wal)
            .map_err(|e| brk(format!("cannot read the WAL: {e}")))?
            .ok_or_else(|| brk("the WAL was truncated or reset".into()))?;
        let Some(c) = self.chain.as_ref() else {
            return Err(brk("no generation".into()));
        };
        if db_id != c.db_id {
            return Err(brk("the database file was replaced".into()));
        }
        if hdr.page_size != c.hdr.page_size {
            return Err(brk("the page size changed".into()));
        }
        if (hdr.salt1, hdr.salt2) != (c.hdr.salt1, c.hdr.salt2) {
            let ok = self
                .seamless_restart(&wal, &hdr)
                .map_err(|e| brk(format!("cannot read the WAL: {e}")))?;
            if !ok {
                return Err(brk("the WAL was restarted by another connection (a checkpoint we did not make) and its continuity cannot be proven".into()));
            }
            let c = self
                .chain
                .as_mut()
                .ok_or_else(|| brk("no generation".into()))?;
            c.hdr = hdr;
            c.next_frame = 0;
            c.seen_end = 0;
            c.cksum = hdr.cksum;
        }
        let c = self
            .chain
            .as_ref()
            .ok_or_else(|| brk("no generation".into()))?;
        let len = wal
            .metadata()
            .map_err(|e| brk(format!("cannot inspect the WAL: {e}")))?
            .len();
        if c.hdr.frame_offset(c.next_frame).is_none_or(|at| len < at) {
            return Err(brk("the WAL is shorter than what was shipped".into()));
        }
        let (start, prev) = (c.next_frame, c.cksum);
        let scan = wal::scan(&wal, &c.hdr, start, prev, MAX_SEGMENT_FRAMES, &mut self.buf)
            .map_err(|e| brk(format!("cannot read the WAL: {e}")))?;
        if let Some(c) = self.chain.as_mut() {
            c.seen_end = scan.valid_end;
        }
        let Some(c) = self.chain.as_ref() else {
            return Err(brk("no generation".into()));
        };
        if scan.commits == 0 && !force {
            self.status.mark_ok();
            return Ok(Shipped::Nothing);
        }
        // After reading: every frame read was written at or before mtime.
        let mtime = wal
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let now = crate::timefmt::now_precise();
        let mut when = match mtime {
            Some(d) if (d.as_secs() as i64, d.subsec_nanos()) < now => {
                (d.as_secs() as i64, d.subsec_nanos())
            }
            _ => now,
        };
        when = when.max(c.last_time);
        let meta = SegmentMeta {
            version: 1,
            generation: c.generation.clone(),
            seq: c.seq,
            prev_sha256: c.prev_sha256,
            page_size: c.hdr.page_size,
            wal_salts: (c.hdr.salt1, c.hdr.salt2),
            first_frame: start,
            frames: scan.commit_end - start,
            commits: scan.commits,
            db_size: scan.db_size,
            time: when.0,
            time_nanos: when.1,
        };
        let cfg = session.config();
        let key = session.key().map(crate::crypto::KeyRing::writing);
        let src = segment::Source {
            wal: &wal,
            header: &c.hdr,
            prev,
            db_path: self.db_path.as_os_str().as_bytes(),
        };
        let hash = segment::write(&c.dir, &meta, &src, cfg, key, &mut self.buf)
            .map_err(|e| brk(format!("cannot write segment {}: {e}", meta.seq)))?;
        let c = self
            .chain
            .as_mut()
            .ok_or_else(|| brk("no generation".into()))?;
        c.seq += 1;
        c.prev_sha256 = hash;
        c.next_frame = scan.commit_end;
        c.cksum = scan.commit_cksum;
        c.last_time = when;
        self.status.segments = c.seq;
        self.status.last_commit_time = Some(super::rfc3339_nanos(when));
        self.status.last_commit_unix_ms =
            Some(when.0.saturating_mul(1000) + i64::from(when.1 / 1_000_000));
        self.status.mark_ok();
        Ok(Shipped::Batch)
    }

    /// The checkpoint protocol (module doc): W holds the write lock while
    /// we ship to the end and C backfills; then W's no-op restarts the WAL.
    fn checkpoint(&mut self, session: &Session) -> Result<(), Break> {
        if self.w.execute_batch("BEGIN IMMEDIATE").is_err() {
            // A writer is busy: a little later.
            if let Some(c) = self.chain.as_mut() {
                c.next_checkpoint = Instant::now() + BUSY_RETRY;
            }
            return Ok(());
        }
        // Nothing can be appended now: ship everything there is.
        loop {
            match self.ship(session, false) {
                Ok(Shipped::Batch) => continue,
                Ok(Shipped::Nothing) => break,
                Err(b) => {
                    let _ = self.w.execute_batch("ROLLBACK");
                    return Err(b);
                }
            }
        }
        let shipped = self.chain.as_ref().map_or(0, |c| c.next_frame);
        self.end_read();
        let done: rusqlite::Result<(i64, i64, i64)> =
            self.c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        let all =
            matches!(done, Ok((_, log, ck)) if log >= 0 && log == ck && log as u64 == shipped);
        let result = if all {
            // Release the write lock, then write at once: the no-op's
            // transaction starts on a fully backfilled WAL and restarts it.
            // A writer of the application may get in first: then it
            // restarts the WAL, which the next ship checks like ours.
            let _ = self.w.execute_batch("ROLLBACK");
            if let Err(e) = self.no_op_write() {
                log::debug!("point-in-time recovery: the no-op write after a checkpoint: {e}");
            }
            self.begin_read().map_err(|e| Break(e.to_string()))?;
            self.ship(session, false).map(|_| ())
        } else {
            // Readers of the application hold older snapshots: nothing is
            // restarted; take the read mark again before writers resume.
            let r = self.begin_read();
            let _ = self.w.execute_batch("ROLLBACK");
            if let Some(c) = self.chain.as_mut() {
                c.next_checkpoint = Instant::now() + CHECKPOINT_RETRY;
            }
            r.map_err(|e| Break(e.to_string()))
        };
        result
    }

    /// The database this shipper watches.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checkpoint protocol relies on this: setting `user_version` to
    /// its own value writes a frame, and on a fully backfilled WAL that
    /// write restarts the WAL with new salts.
    #[test]
    fn no_op_user_version_write_restarts_a_backfilled_wal() {
        let dir = std::env::temp_dir().join(format!("rvb-noop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(n); INSERT INTO t VALUES (1);")
            .unwrap();
        let s = Shipper::open(&db).unwrap();
        let wal = s.open_wal().unwrap().unwrap();
        let h1 = wal::read_header(&wal).unwrap().unwrap();
        let before = wal::scan(&wal, &h1, 0, h1.cksum, u64::MAX, &mut Vec::new()).unwrap();
        s.no_op_write().unwrap();
        let mid = wal::scan(&wal, &h1, 0, h1.cksum, u64::MAX, &mut Vec::new()).unwrap();
        assert_eq!(
            mid.commits,
            before.commits + 1,
            "the no-op wrote a commit frame"
        );
        let (_, log, ck): (i64, i64, i64) =
            s.c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(log, ck);
        s.no_op_write().unwrap();
        let h2 = wal::read_header(&wal).unwrap().unwrap();
        assert_eq!(h2.salt1, h1.salt1.wrapping_add(1));
        let after = wal::scan(&wal, &h2, 0, h2.cksum, u64::MAX, &mut Vec::new()).unwrap();
        assert_eq!((after.commits, after.valid_end), (1, 1));
        drop(s);
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A scratch application database in WAL mode (table `t(n, pad)`), a
    /// store beside it, and a shipper whose first generation is started
    /// from a database backup: the directory, the application's
    /// connection, the session, the shipper and the snapshot's id.
    fn first_generation(name: &str) -> (PathBuf, Connection, Session, Shipper, String) {
        use crate::progress::Progress;
        use crate::strategy::Strategy;
        let dir = std::env::temp_dir().join(format!("rvb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("app.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(n INTEGER PRIMARY KEY, pad);")
            .unwrap();
        let text = format!(
            "backup_dir = \"{d}/backups\"\nencryption_enabled = false\n[database]\npath = \"{d}/app.db\"\n",
            d = dir.display()
        );
        let cfg = crate::config::Config::parse(&text, Path::new("test.toml")).unwrap();
        let session = Session::open(cfg).unwrap();
        let mut s = Shipper::open(&db).unwrap();
        s.prepare_generation().unwrap();
        smol::block_on(session.backup(Strategy::Database, &mut Progress::silent())).unwrap();
        let id = session.list(Some(Strategy::Database)).archives[0]
            .meta
            .id
            .clone();
        s.finish_generation(&session, &id).unwrap();
        (dir, app, session, s, id)
    }

    /// After our checkpoint restarts the WAL, the application may write
    /// more frames before the next step than we had shipped (1,000 commits
    /// a second with a 1 s sync interval do, benches/wal-shipping.py).
    /// The restart is checked at the end of the checkpoint, while the new
    /// WAL is short, so the chain goes on instead of breaking.
    #[test]
    fn a_burst_after_our_checkpoint_keeps_the_chain() {
        let (dir, app, session, mut s, id) = first_generation("burst");
        let commit = |from: i64, count: i64| {
            for n in from..from + count {
                app.execute("INSERT INTO t VALUES (?1, randomblob(3000))", [n])
                    .unwrap();
            }
        };
        commit(0, 1100);
        let salts = |s: &Shipper| {
            let h = wal::read_header(&s.open_wal().unwrap().unwrap())
                .unwrap()
                .unwrap();
            (h.salt1, h.salt2)
        };
        let before = salts(&s);
        s.step(&session); // ships, then checkpoints: the WAL restarts
        assert_ne!(salts(&s), before, "the step did not restart the WAL");
        commit(1100, 2500); // more frames than were shipped
        s.step(&session);
        assert!(
            s.chain.is_some() && s.status.generations_started == 1,
            "the chain broke: {:?}",
            s.status
        );
        assert_eq!(
            s.chain.as_ref().map(|c| c.generation.as_str()),
            Some(id.as_str())
        );
        drop(s);
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The daemon's probe between ticks: it asks for a step once the
    /// current WAL holds `CHECKPOINT_AT` frames, not after the step's
    /// checkpoint restarted the WAL, and not again after a step that could
    /// not checkpoint (a long transaction holds the write lock), so the
    /// probe never turns into a step every 50 ms.
    #[test]
    fn the_probe_asks_for_a_step_at_the_checkpoint_point_only() {
        let (dir, app, session, mut s, _) = first_generation("probe");
        app.busy_timeout(Duration::from_secs(10)).unwrap();
        let frames = |s: &Shipper| {
            let wal = s.open_wal().unwrap().unwrap();
            let h = wal::read_header(&wal).unwrap().unwrap();
            wal::scan(&wal, &h, 0, h.cksum, u64::MAX, &mut Vec::new())
                .unwrap()
                .valid_end
        };
        let mut n = 0;
        while frames(&s) < CHECKPOINT_AT {
            assert!(!s.wants_step(), "asked at {} frames", frames(&s));
            assert!(n < 10 * CHECKPOINT_AT as i64, "the WAL does not grow");
            app.execute("INSERT INTO t VALUES (?1, randomblob(3000))", [n])
                .unwrap();
            n += 1;
        }
        assert!(s.wants_step(), "not asked at {} frames", frames(&s));

        // The application holds the write lock: the step ships but cannot
        // checkpoint, and the probe does not ask again at once.
        app.execute_batch("BEGIN IMMEDIATE").unwrap();
        s.step(&session);
        assert!(frames(&s) >= CHECKPOINT_AT, "checkpointed under a writer");
        assert!(
            !s.wants_step(),
            "a step that could not checkpoint is asked for again"
        );
        app.execute_batch("COMMIT").unwrap();

        // After the retry time the step checkpoints; then nothing to ask.
        std::thread::sleep(BUSY_RETRY);
        s.step(&session);
        assert!(frames(&s) < 10, "no checkpoint: {} frames", frames(&s));
        assert!(!s.wants_step(), "asked again after the checkpoint");
        assert!(s.chain.is_some(), "the chain broke: {:?}", s.status);
        drop(s);
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The audit trail: who asked for what, and what came of it.
//!
//! One JSON object per line in `audit_log`, appended with `O_APPEND` and
//! fsynced before the request is answered. Every record carries `prev`, the
//! SHA-256 of the previous line (the first one: 64 zeros), so editing or
//! deleting a record breaks the chain at that point. A head file next to
//! the log (`audit.log.head`, written crash-safely after each append) holds
//! the record count and the last hash, so cutting records off the end is
//! detected too. A crash between the append and the head update leaves the
//! head one record behind, which `verify` accepts and the next append fixes.
//!
//! Bounds, so that neither a full disk nor a flood of requests can break or
//! bloat the log:
//! - an append that fails (ENOSPC, EIO) is cut back off (`set_len` to the
//!   length before it), so no torn record is ever followed by another one;
//!   `open` also cuts off a torn or unparsable *last* line (a power cut);
//! - `what` and `result` are cut to [`MAX_WHAT`] and [`MAX_RESULT`] bytes
//!   (marked `…(+N bytes)`), control characters escaped, so one record is
//!   at most a few KiB;
//! - [`AuditLog::refused`] writes at most [`REFUSALS_PER_WINDOW`] refusal
//!   records per uid per [`REFUSAL_WINDOW`], then one summary record;
//! - past `audit_max_bytes` the log is rotated to `audit.log.1` … `.N`
//!   (`audit_keep`), the chain continuing in the new file (its first `prev`
//!   is the last hash of the rotated file, and `seq` goes on);
//! - `verify` streams line by line with a fixed buffer; a line longer than
//!   [`MAX_LINE`] is an error, whatever the size of the log.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{msg, Error, IoContext, Result};
use crate::fsutil::{open_regular, read_regular, write_atomic, Follow};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line `verify` accepts (a record is far shorter).
pub const MAX_LINE: usize = 64 << 10;
/// Longest `what` kept in a record, in bytes (before the truncation mark).
pub const MAX_WHAT: usize = 256;
/// Longest `result` kept in a record, in bytes (before the truncation mark).
pub const MAX_RESULT: usize = 512;
/// Refusal records written per uid and window; the rest are counted.
pub const REFUSALS_PER_WINDOW: u32 = 10;
/// The window of [`REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Most rotated files (`audit.log.1` … `.20`) kept or looked at.
pub const MAX_ROTATED: u32 = 20;
/// Uids whose refusals are tracked at once; beyond, the oldest window is
/// closed (its summary written) to make room.
const MAX_TRACKED_UIDS: usize = 256;
/// Largest head file read.
const MAX_HEAD_LEN: usize = 4096;

/// Who caused an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Peer { uid: u32, pid: i32 },
    Scheduler,
    Daemon,
}

impl Actor {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Actor::Peer { uid, pid } => json!({"uid": uid, "pid": pid}),
            Actor::Scheduler => json!("scheduler"),
            Actor::Daemon => json!("daemon"),
        }
    }
}

/// When to rotate the log and how many rotated files to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rotate before an append once the log holds this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` newest … `.keep` oldest), at most
    /// [`MAX_ROTATED`]; 0 deletes the log at rotation.
    pub keep: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: crate::config::DEFAULT_AUDIT_MAX_BYTES,
            keep: crate::config::DEFAULT_AUDIT_KEEP,
        }
    }
}

impl Limits {
    /// `audit_max_bytes` and `audit_keep` of a config.
    pub fn from_config(cfg: &crate::config::Config) -> Limits {
        Limits {
            max_bytes: cfg.audit_max_bytes,
            keep: cfg.audit_keep,
        }
    }
}

/// Refusals of one uid in the current window.
struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
    pid: i32,
}

pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    /// `seq` of the last record (0: none yet).
    count: u64,
    last: String,
    /// Bytes in the current (unrotated) file.
    size: u64,
    limits: Limits,
    refusals: HashMap<u32, Window>,
}

fn sha_hex(line: &[u8]) -> String {
    Sha256::digest(line)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn head_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".head");
    PathBuf::from(s)
}

/// `audit.log.N`, the N-th newest rotated file.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// What a verified chain looks like.
#[derive(Debug, PartialEq, Eq)]
pub struct ChainState {
    /// Records checked, over the rotated files and the log.
    pub records: u64,
    /// `seq` of the first record present: 1, unless older rotated files
    /// were deleted (then that record's `prev` was taken as the anchor).
    pub first_seq: u64,
    /// `seq` of the last record (0 for an empty log).
    pub last_seq: u64,
    pub last_hash: String,
}

/// Cut `s` to at most `max` bytes of text, escaping control and
/// bidirectional-formatting characters (so a record reads as one honest
/// line in any terminal); what was cut is marked `…(+N bytes)`.
pub fn bounded_field(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 16);
    for (i, c) in s.char_indices() {
        let invisible = c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        let start = out.len();
        if invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(start);
            out.push_str(&format!("…(+{} bytes)", s.len() - i));
            break;
        }
    }
    out
}

/// Something a record can be appended to: the log file, or in tests a
/// writer that fails like a full disk.
pub(crate) trait AppendTarget: Write {
    fn current_len(&mut self) -> std::io::Result<u64>;
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()>;
    fn sync(&mut self) -> std::io::Result<()>;
}

impl AppendTarget for File {
    fn current_len(&mut self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// Append `bytes` whole and durably, or not at all: on any failure the
/// target is cut back to its length before the append, then the error is
/// returned. Returns the new length.
pub(crate) fn append_whole<T: AppendTarget + ?Sized>(
    t: &mut T,
    bytes: &[u8],
) -> std::io::Result<u64> {
    let before = t.current_len()?;
    match t.write_all(bytes).and_then(|()| t.sync()) {
        Ok(()) => Ok(before.saturating_add(bytes.len() as u64)),
        Err(e) => {
            if let Err(cut) = t.truncate_to(before).and_then(|()| t.sync()) {
                log::error!(
                    "cannot cut a failed audit append back off ({cut}); the next start cuts it off"
                );
            }
            Err(e)
        }
    }
}

/// The fields of a record that the chain needs, if `line` is a record.
fn parse_record(line: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .filter(serde_json::Value::is_object)
}

/// Read one line of at most [`MAX_LINE`] bytes into `buf` (without the
/// newline). `Ok(None)` at the end; `Ok(Some(false))` for a line that is
/// too long (its first `MAX_LINE + 1` bytes are in `buf`).
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(Some(buf.len() <= MAX_LINE))
}

impl AuditLog {
    /// Open (creating) the log with the default [`Limits`]; see [`AuditLog::open_with`].
    pub fn open(path: &Path) -> Result<AuditLog> {
        AuditLog::open_with(path, Limits::default())
    }

    /// Open (creating) the log: a torn or unparsable last line (a power
    /// cut during an append) is cut off with a warning, then the whole
    /// chain, rotated files included, is verified in fixed memory; a broken
    /// chain is refused.
    pub fn open_with(path: &Path, limits: Limits) -> Result<AuditLog> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).at("create", dir)?;
        }
        repair_tail(path)?;
        let state = verify(path)?;
        let size = match fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).at("read audit log", path),
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            head_path: head_path(path),
            count: state.last_seq,
            last: state.last_hash,
            size,
            limits: Limits {
                max_bytes: limits.max_bytes.max(1),
                keep: limits.keep.min(MAX_ROTATED),
            },
            refusals: HashMap::new(),
        })
    }

    /// Append one record and make it durable. Summaries of refusals
    /// suppressed so far ([`AuditLog::refused`]) are written first.
    pub fn record(&mut self, actor: &Actor, what: &str, result: &str) -> Result<()> {
        self.write_summaries(|_| true)?;
        self.append(actor, what, result)
    }

    /// Record a refused request, at most [`REFUSALS_PER_WINDOW`] per uid
    /// per [`REFUSAL_WINDOW`] (measured on the caller's monotonic clock,
    /// `now`). Further refusals in the window are only counted; the count
    /// is written as one record (`uid U: K more refused requests
    /// suppressed …`) when the window has ended (at the next call of
    /// `refused` or [`AuditLog::flush_suppressed`]) or at the next
    /// [`AuditLog::record`], whichever comes first. So a flood writes a
    /// bounded number of bytes. Actors that are not peers are not limited.
    pub fn refused(&mut self, actor: &Actor, what: &str, result: &str, now: Instant) -> Result<()> {
        let Actor::Peer { uid, pid } = *actor else {
            return self.append(actor, what, result);
        };
        self.flush_suppressed(now)?;
        if !self.refusals.contains_key(&uid) && self.refusals.len() >= MAX_TRACKED_UIDS {
            if let Some(oldest) = self
                .refusals
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(u, _)| *u)
            {
                self.write_summaries(|u| u == oldest)?;
                self.refusals.remove(&oldest);
            }
        }
        let w = self.refusals.entry(uid).or_insert(Window {
            start: now,
            written: 0,
            suppressed: 0,
            pid,
        });
        w.pid = pid;
        if w.written < REFUSALS_PER_WINDOW {
            w.written += 1;
            self.append(actor, what, result)
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
            Ok(())
        }
    }

    /// Close the refusal windows that ended by `now`, writing a summary
    /// record for each that suppressed something. The daemon may call it
    /// from a timer; `refused` calls it too.
    pub fn flush_suppressed(&mut self, now: Instant) -> Result<()> {
        let ended = |w: &Window| now.saturating_duration_since(w.start) >= REFUSAL_WINDOW;
        let done: Vec<u32> = self
            .refusals
            .iter()
            .filter(|(_, w)| ended(w))
            .map(|(u, _)| *u)
            .collect();
        for uid in done {
            self.write_summaries(|u| u == uid)?;
            self.refusals.remove(&uid);
        }
        Ok(())
    }

    /// Write one summary record per selected window that suppressed
    /// refusals, and reset its count (the window itself goes on).
    fn write_summaries(&mut self, select: impl Fn(u32) -> bool) -> Result<()> {
        let mut pending: Vec<(u32, i32, u64)> = self
            .refusals
            .iter()
            .filter(|(u, w)| select(**u) && w.suppressed > 0)
            .map(|(u, w)| (*u, w.pid, w.suppressed))
            .collect();
        pending.sort_unstable();
        for (uid, pid, n) in pending {
            self.append(
                &Actor::Peer { uid, pid },
                "refused requests",
                &format!(
                    "uid {uid}: {n} more refused requests suppressed (at most {REFUSALS_PER_WINDOW} are recorded per uid per minute)"
                ),
            )?;
            if let Some(w) = self.refusals.get_mut(&uid) {
                w.suppressed = 0;
            }
        }
        Ok(())
    }

    fn append(&mut self, actor: &Actor, what: &str, result: &str) -> Result<()> {
        if self.size >= self.limits.max_bytes {
            if let Err(e) = self.rotate() {
                log::error!(
                    "cannot rotate the audit log {}: {e}; appending to it anyway",
                    self.path.display()
                );
            }
        }
        let seq = self.count.checked_add(1).ok_or_else(|| {
            msg(format!(
                "audit log {}: no sequence numbers left; move it away and restart",
                self.path.display()
            ))
        })?;
        let line = json!({
            "seq": seq,
            "time": crate::timefmt::rfc3339(crate::timefmt::now_unix()),
            "who": actor.to_json(),
            "what": bounded_field(what, MAX_WHAT),
            "result": bounded_field(result, MAX_RESULT),
            "prev": self.last,
        })
        .to_string();
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32,
            )
            .open(&self.path)
            .at("open audit log", &self.path)?;
        let meta = f.metadata().at("read audit log", &self.path)?;
        if !meta.is_file() {
            return Err(msg(format!(
                "audit log {} is {}, not a regular file: move it away",
                self.path.display(),
                crate::fsutil::describe_type(meta.file_type())
            )));
        }
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        let size = append_whole(&mut f, &bytes).at("append to audit log", &self.path)?;
        let before = size.saturating_sub(bytes.len() as u64);
        let hash = sha_hex(&bytes[..bytes.len() - 1]);
        let head = format!("{seq} {hash}\n");
        if let Err(e) = write_atomic(&self.head_path, head.as_bytes(), 0o640) {
            // The head could not follow (a full disk: the record fitted in
            // the log's last block, the head's temporary file did not). Cut
            // the record back off, so log and head never drift apart by
            // more than the one record a crash between the two writes can
            // leave; `count`/`last` stay at the record before.
            if let Err(cut) = f.set_len(before).and_then(|()| f.sync_all()) {
                log::error!(
                    "cannot cut an audit record back off after its head update failed ({cut}); the log is one record ahead of its head"
                );
                // The record stays: the head is one behind, which `verify`
                // accepts; the chain must go on from it.
                self.size = size;
                self.count = seq;
                self.last = hash;
            }
            return Err(e);
        }
        self.size = size;
        self.count = seq;
        self.last = hash;
        Ok(())
    }

    /// Shift `.1`… up by one (deleting the oldest, and any numbered file
    /// beyond `keep`), move the log to `.1`, fsync the directory. At every
    /// instant the files present still chain (at worst with the oldest
    /// missing), so a crash in between is harmless. The chain goes on in
    /// the new file from `self.count` and `self.last`.
    fn rotate(&mut self) -> Result<()> {
        let keep = self.limits.keep;
        for n in (keep.max(1)..=MAX_ROTATED).rev() {
            remove_if_file(&rotated_path(&self.path, n))?;
        }
        for n in (1..keep).rev() {
            let from = rotated_path(&self.path, n);
            if fs::symlink_metadata(&from).is_ok() {
                let to = rotated_path(&self.path, n + 1);
                fs::rename(&from, &to)
                    .ctx(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
            }
        }
        if keep == 0 {
            remove_if_file(&self.path)?;
        } else {
            let to = rotated_path(&self.path, 1);
            fs::rename(&self.path, &to)
                .ctx(|| format!("cannot rename {} to {}", self.path.display(), to.display()))?;
        }
        crate::fsutil::sync_dir(crate::fsutil::parent(&self.path))?;
        log::info!("rotated the audit log {}", self.path.display());
        self.size = 0;
        Ok(())
    }
}

/// Remove `path` if it is a file or a symlink (never a directory).
fn remove_if_file(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs::remove_file(path).at("remove", path),
        _ => Ok(()),
    }
}

/// Cut off what a power cut or a failed append left at the end of the
/// log: bytes after the last newline, and a last line that is not a
/// record at all. Reads only the tail.
fn repair_tail(path: &Path) -> Result<()> {
    let mut f = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(
            (rustix::fs::OFlags::NONBLOCK
                | rustix::fs::OFlags::CLOEXEC
                | rustix::fs::OFlags::NOFOLLOW)
                .bits() as i32,
        )
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(msg(format!(
                "audit log {} is a symbolic link, which is refused: replace it with the file itself",
                path.display()
            )))
        }
        Err(e) => return Err(e).at("open audit log", path),
    };
    let meta = f.metadata().at("read audit log", path)?;
    if !meta.is_file() {
        return Err(msg(format!(
            "audit log {} is {}, not a regular file: move it away",
            path.display(),
            crate::fsutil::describe_type(meta.file_type())
        )));
    }
    let len = meta.len();
    let start = len.saturating_sub(2 * MAX_LINE as u64 + 2);
    f.seek(SeekFrom::Start(start)).at("read audit log", path)?;
    let mut tail = Vec::new();
    Read::by_ref(&mut f)
        .take(2 * MAX_LINE as u64 + 2)
        .read_to_end(&mut tail)
        .at("read audit log", path)?;
    let mut keep = tail.len();
    if tail.last().is_some_and(|&b| b != b'\n') {
        keep = match tail.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => return Ok(()), // a huge last line: `verify` names it
        };
        log::warn!(
            "audit log {} ends in a torn record (power cut?); cutting it off",
            path.display()
        );
    }
    if keep > 0 {
        // The last whole line: [line_start, keep - 1).
        let line_start = tail[..keep - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1);
        if let Some(ls) = line_start.or((start == 0).then_some(0)) {
            if parse_record(&tail[ls..keep - 1]).is_none() {
                log::warn!(
                    "audit log {} ends in a damaged record (a failed append?); cutting it off",
                    path.display()
                );
                keep = ls;
            }
        }
    }
    if keep != tail.len() {
        f.set_len(start + keep as u64)
            .at("repair audit log", path)?;
        f.sync_all().at("sync audit log", path)?;
    }
    Ok(())
}

/// The files of the chain, oldest first: the rotated ones present
/// (`.20` … `.1`), then the log itself.
fn chain_files(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..=MAX_ROTATED)
        .rev()
        .map(|n| rotated_path(path, n))
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect();
    v.push(path.to_path_buf());
    v
}

/// Check the whole chain, rotated files first, and the head file. Streams
/// line by line with a fixed buffer: memory does not grow with the log.
/// When older rotated files were deleted, the chain starts at the first
/// record present and its `prev` is taken as the anchor.
pub fn verify(path: &Path) -> Result<ChainState> {
    let mut prev: Option<String> = None;
    let mut first_seq = 0u64;
    let mut last_seq = 0u64;
    let mut records = 0u64;
    // (seq, hash) of the last two records, for the head check.
    let mut recent: [(u64, String); 2] = [(0, GENESIS.to_string()), (0, GENESIS.to_string())];
    let mut buf = Vec::with_capacity(4096);
    for file in chain_files(path) {
        let f = match open_regular(&file, Follow::No) {
            Ok((f, _)) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at("read audit log", &file),
        };
        let mut r = BufReader::with_capacity(64 << 10, f);
        let mut n = 0u64;
        while let Some(fits) = read_line(&mut r, &mut buf).at("read audit log", &file)? {
            n += 1;
            let at = || format!("audit log {} line {n}", file.display());
            if !fits {
                return Err(msg(format!(
                    "{}: longer than {MAX_LINE} bytes, not a record (edited?)",
                    at()
                )));
            }
            let rec = parse_record(&buf)
                .ok_or_else(|| msg(format!("{}: not a record (edited?)", at())))?;
            let seq = rec["seq"].as_u64();
            let rprev = rec["prev"].as_str();
            let linked = match (&prev, seq, rprev) {
                (None, Some(s), Some(p)) => {
                    // The first record present: the genesis, or (older
                    // files rotated away) any record as the anchor.
                    (s == 1 && p == GENESIS) || (s > 1 && p.len() == 64)
                }
                (Some(want), Some(s), Some(p)) => p == want && last_seq.checked_add(1) == Some(s),
                _ => false,
            };
            if !linked {
                return Err(msg(format!(
                    "{}: the chain is broken (a record before it was edited or deleted)",
                    at()
                )));
            }
            let s = seq.unwrap_or_default();
            if prev.is_none() {
                first_seq = s;
            }
            let hash = sha_hex(&buf);
            last_seq = s;
            records += 1;
            recent.swap(0, 1);
            recent[1] = (s, hash.clone());
            prev = Some(hash);
        }
    }
    check_head(path, last_seq, &recent)?;
    Ok(ChainState {
        records,
        first_seq,
        last_seq,
        last_hash: prev.unwrap_or_else(|| GENESIS.to_string()),
    })
}

/// The head must name the last record (`last_seq` and its hash), or the
/// one before it (a crash between the append and the head update).
fn check_head(path: &Path, last_seq: u64, recent: &[(u64, String); 2]) -> Result<()> {
    let hp = head_path(path);
    let head = match read_regular(&hp, MAX_HEAD_LEN, Follow::No) {
        Ok((_, h)) => String::from_utf8_lossy(&h).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && last_seq <= 1 => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                what: format!("cannot read audit head {}", hp.display()),
                source: e,
            })
        }
    };
    let mut parts = head.split_whitespace();
    let head_count: Option<u64> = parts.next().and_then(|c| c.parse().ok());
    let head_hash = parts.next().unwrap_or_default();
    let hash_of = |seq: u64| {
        recent
            .iter()
            .find(|(s, _)| *s == seq && seq > 0)
            .map(|(_, h)| h.as_str())
    };
    let consistent = match head_count {
        Some(c) if c == last_seq => c == 0 || hash_of(c) == Some(head_hash),
        // The append made it to disk, the head update did not: fine.
        Some(c) if c > 0 && c.checked_add(1) == Some(last_seq) => hash_of(c) == Some(head_hash),
        _ => false,
    };
    if !consistent {
        let said = head_count.map_or_else(|| "nothing readable".to_string(), |c| c.to_string());
        return Err(msg(format!(
            "audit log {} holds {last_seq} records but its head says {said}: records were cut off or the log was replaced",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-audit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d.join("audit.log")
    }

    fn three(path: &Path) {
        let mut log = AuditLog::open(path).unwrap();
        log.record(
            &Actor::Peer { uid: 1000, pid: 42 },
            "BACKUP config",
            "accepted job 1",
        )
        .unwrap();
        log.record(&Actor::Scheduler, "backup database", "ok")
            .unwrap();
        log.record(
            &Actor::Peer { uid: 7, pid: 9 },
            "RESTORE config",
            "refused: forbidden",
        )
        .unwrap();
    }

    #[test]
    fn chain_verifies_and_survives_reopen() {
        let p = temp("ok");
        three(&p);
        assert_eq!(verify(&p).unwrap().records, 3);
        AuditLog::open(&p)
            .unwrap()
            .record(&Actor::Daemon, "start", "ok")
            .unwrap();
        assert_eq!(verify(&p).unwrap().records, 4);
    }

    #[test]
    fn edits_and_deletions_are_detected() {
        let p = temp("edit");
        three(&p);
        let text = fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        fs::write(&p, text.replace("refused: forbidden", "ok")).unwrap();
        assert!(verify(&p).is_err(), "edited last record");
        fs::write(&p, text.replacen("1000", "0", 1)).unwrap();
        assert!(verify(&p).is_err(), "edited first record");
        fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(verify(&p).is_err(), "deleted middle record");
        fs::write(&p, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        assert!(verify(&p).is_err(), "deleted last record");
        fs::write(&p, "").unwrap();
        assert!(verify(&p).is_err(), "emptied log");
        fs::write(&p, &text).unwrap();
        assert!(verify(&p).is_ok());
    }

    #[test]
    fn torn_tail_is_cut_off() {
        let p = temp("torn");
        three(&p);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":4,\"ti").unwrap();
        let mut log = AuditLog::open(&p).unwrap();
        log.record(&Actor::Daemon, "start", "ok").unwrap();
        assert_eq!(verify(&p).unwrap().records, 4);
    }

    /// A writer that takes `room` bytes, then fails like a full disk.
    struct FullDisk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let free = self.room.saturating_sub(self.data.len());
            if free == 0 {
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            let n = free.min(buf.len());
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl AppendTarget for FullDisk {
        fn current_len(&mut self) -> std::io::Result<u64> {
            Ok(self.data.len() as u64)
        }
        fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
            self.data.truncate(len as usize);
            Ok(())
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_append_leaves_no_torn_record() {
        let mut t = FullDisk {
            data: b"{\"seq\":1}\n".to_vec(),
            room: 20,
        };
        let e = append_whole(&mut t, b"{\"seq\":2,\"a long record\":1}\n").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(t.data, b"{\"seq\":1}\n", "the short write was cut back off");
        t.room = 1000;
        assert_eq!(append_whole(&mut t, b"{\"seq\":2}\n").unwrap(), 20);
    }

    #[test]
    fn a_failed_head_update_cuts_the_record_back_off() {
        let p = temp("headfail");
        three(&p);
        let mut log = AuditLog::open(&p).unwrap();
        let good = fs::read(&p).unwrap();
        // The head's temporary file cannot be created (like a full disk
        // where the record still fitted in the log's last block).
        let tmp = crate::fsutil::tmp_path(&head_path(&p));
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("x"), b"x").unwrap();
        for i in 0..8 {
            assert!(log
                .record(&Actor::Daemon, &format!("event {i}"), "ok")
                .is_err());
        }
        assert_eq!(fs::read(&p).unwrap(), good, "records cut back off");
        assert_eq!(verify(&p).unwrap().records, 3);
        drop(log);
        // The next start accepts the log, and the chain goes on.
        fs::remove_dir_all(&tmp).unwrap();
        let mut log = AuditLog::open(&p).unwrap();
        log.record(&Actor::Daemon, "start", "ok").unwrap();
        let st = verify(&p).unwrap();
        assert_eq!((st.records, st.last_seq), (4, 4));
        // Also in a log that still is open: count and last rolled back.
        let mut log = AuditLog::open(&p).unwrap();
        fs::create_dir(&tmp).unwrap();
        assert!(log.record(&Actor::Daemon, "lost", "ok").is_err());
        fs::remove_dir(&tmp).unwrap();
        log.record(&Actor::Daemon, "after", "ok").unwrap();
        let st = verify(&p).unwrap();
        assert_eq!((st.records, st.last_seq), (5, 5));
    }

    #[test]
    fn a_symlinked_log_is_refused_and_its_target_untouched() {
        let p = temp("symlink");
        let victim = p.with_file_name("victim");
        fs::write(&victim, b"precious\n{\"torn").unwrap();
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let e = AuditLog::open(&p).err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious\n{\"torn");
    }

    #[test]
    fn a_damaged_last_line_is_cut_off_at_open() {
        let p = temp("damaged");
        three(&p);
        let good = fs::read(&p).unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":4,\"ti\x00garbage\n").unwrap();
        drop(f);
        assert!(verify(&p).is_err());
        let mut log = AuditLog::open(&p).unwrap();
        assert_eq!(fs::read(&p).unwrap(), good);
        log.record(&Actor::Daemon, "start", "ok").unwrap();
        assert_eq!(verify(&p).unwrap().records, 4);
        // Only the last line: garbage in the middle is an error, not cut.
        let text = fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        fs::write(
            &p,
            format!(
                "{}\ngarbage\n{}\n{}\n{}\n",
                lines[0], lines[1], lines[2], lines[3]
            ),
        )
        .unwrap();
        let e = AuditLog::open(&p).err().unwrap().to_string();
        assert!(e.contains("line 2: not a record"), "{e}");
    }

    #[test]
    fn fields_are_bounded_and_escaped() {
        assert_eq!(bounded_field("BACKUP config", 256), "BACKUP config");
        assert_eq!(
            bounded_field("a\nb\x1b[31m\u{202e}", 256),
            "a\\nb\\u{1b}[31m\\u{202e}"
        );
        let long = "x".repeat(4096);
        let b = bounded_field(&long, 256);
        assert_eq!(b, format!("{}…(+3840 bytes)", "x".repeat(256)));
        let b = bounded_field(&"é".repeat(300), 255);
        assert!(
            b.starts_with(&"é".repeat(127)) && b.ends_with("…(+346 bytes)"),
            "{b}"
        );
        let p = temp("bounded");
        let mut log = AuditLog::open(&p).unwrap();
        log.record(&Actor::Daemon, &long, &long).unwrap();
        assert!(fs::metadata(&p).unwrap().len() < 1200);
        assert_eq!(verify(&p).unwrap().records, 1);
    }

    #[test]
    fn a_flood_of_refusals_writes_a_bounded_log() {
        let p = temp("flood");
        let mut log = AuditLog::open(&p).unwrap();
        let t0 = Instant::now();
        let what = format!("BACKUP {}", "A".repeat(4096));
        for i in 0..20_000u64 {
            let now = t0 + Duration::from_micros(i * 500); // 10 s
            log.refused(
                &Actor::Peer { uid: 4104, pid: 7 },
                &what,
                "refused 403 no role",
                now,
            )
            .unwrap();
        }
        let size = fs::metadata(&p).unwrap().len();
        assert!(size < 64 << 10, "{size} bytes");
        assert_eq!(verify(&p).unwrap().records, u64::from(REFUSALS_PER_WINDOW));
        // The next accepted record first says how many were left out.
        log.record(&Actor::Daemon, "stop", "signal Term").unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("uid 4104: 19990 more refused requests suppressed"),
            "{text}"
        );
        assert_eq!(verify(&p).unwrap().records, 12);
    }

    #[test]
    fn refusal_windows_end_with_a_summary() {
        let p = temp("window");
        let mut log = AuditLog::open(&p).unwrap();
        let t0 = Instant::now();
        let peer = Actor::Peer { uid: 5, pid: 1 };
        for _ in 0..15 {
            log.refused(&peer, "RESTORE config", "refused 403", t0)
                .unwrap();
        }
        log.refused(&Actor::Peer { uid: 6, pid: 2 }, "PRUNE", "refused 403", t0)
            .unwrap();
        assert_eq!(verify(&p).unwrap().records, 11);
        log.flush_suppressed(t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(verify(&p).unwrap().records, 11, "window still open");
        // After the window: the summary, then a fresh window.
        log.refused(&peer, "RESTORE config", "refused 403", t0 + REFUSAL_WINDOW)
            .unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("uid 5: 5 more refused requests suppressed"),
            "{text}"
        );
        assert_eq!(verify(&p).unwrap().records, 13);
        // Scheduler and daemon records are never limited.
        for _ in 0..20 {
            log.refused(&Actor::Scheduler, "x", "y", t0).unwrap();
        }
        assert_eq!(verify(&p).unwrap().records, 33);
    }

    fn rotating(p: &Path, keep: u32) -> AuditLog {
        AuditLog::open_with(
            p,
            Limits {
                max_bytes: 2000,
                keep,
            },
        )
        .unwrap()
    }

    #[test]
    fn rotation_keeps_the_chain_and_detects_edits() {
        let p = temp("rotate");
        let mut log = rotating(&p, 3);
        for i in 0..100 {
            log.record(&Actor::Daemon, &format!("event {i}"), "ok")
                .unwrap();
        }
        assert!(rotated_path(&p, 3).exists() && !rotated_path(&p, 4).exists());
        assert!(fs::metadata(&p).unwrap().len() < 2500);
        let st = verify(&p).unwrap();
        assert_eq!(st.last_seq, 100);
        assert!(st.first_seq > 1, "older files were deleted: {st:?}");
        // Reopen and go on: seq continues across files.
        drop(log);
        let mut log = rotating(&p, 3);
        log.record(&Actor::Daemon, "start", "ok").unwrap();
        assert_eq!(verify(&p).unwrap().last_seq, 101);
        // The first record of the new file chains to the rotated one.
        let first = fs::read_to_string(&p).unwrap();
        let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        let older = fs::read_to_string(rotated_path(&p, 1)).unwrap();
        assert_eq!(
            first["prev"].as_str().unwrap(),
            sha_hex(older.lines().last().unwrap().as_bytes())
        );
        // An edit in a rotated file is found, naming that file.
        let r2 = rotated_path(&p, 2);
        let text = fs::read_to_string(&r2).unwrap();
        fs::write(&r2, text.replacen("\"ok\"", "\"ko\"", 1)).unwrap();
        let e = verify(&p).unwrap_err().to_string();
        assert!(
            e.contains(".log.2 line") && e.contains("chain is broken"),
            "{e}"
        );
        fs::write(&r2, &text).unwrap();
        // A missing oldest file is fine; a missing middle one is not.
        fs::remove_file(rotated_path(&p, 3)).unwrap();
        verify(&p).unwrap();
        fs::remove_file(rotated_path(&p, 1)).unwrap();
        assert!(verify(&p).is_err());
    }

    #[test]
    fn rotation_with_keep_zero_and_a_crash_before_the_new_file() {
        let p = temp("keep0");
        let mut log = rotating(&p, 0);
        for i in 0..50 {
            log.record(&Actor::Daemon, &format!("event {i}"), "ok")
                .unwrap();
        }
        assert!(!rotated_path(&p, 1).exists());
        assert_eq!(verify(&p).unwrap().last_seq, 50);
        // A crash right after the log was moved to .1: no log file yet.
        let p = temp("movedaway");
        three(&p);
        fs::rename(&p, rotated_path(&p, 1)).unwrap();
        let mut log = AuditLog::open(&p).unwrap();
        log.record(&Actor::Daemon, "start", "ok").unwrap();
        let st = verify(&p).unwrap();
        assert_eq!((st.first_seq, st.last_seq, st.records), (1, 4, 4));
    }

    #[test]
    fn a_huge_line_is_refused_with_a_fixed_buffer() {
        let p = temp("huge");
        three(&p);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&vec![b'{'; 10 * MAX_LINE]).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        let e = verify(&p).unwrap_err().to_string();
        assert!(e.contains("line 4: longer than 65536 bytes"), "{e}");
        let mut buf = Vec::new();
        let mut r = BufReader::new(std::io::Cursor::new(vec![b'x'; 1 << 20]));
        assert_eq!(read_line(&mut r, &mut buf).unwrap(), Some(false));
        assert_eq!(buf.len(), MAX_LINE + 1, "never more than the limit read");
    }

    #[test]
    fn head_files_cannot_overflow_the_check() {
        let p = temp("head");
        fs::write(&p, "").unwrap();
        fs::write(head_path(&p), "a").unwrap();
        assert!(verify(&p).is_err());
        fs::remove_file(head_path(&p)).unwrap();
        three(&p);
        for head in [
            "18446744073709551615 x",
            "18446744073709551616",
            "0 0",
            "",
            "\u{0}",
        ] {
            fs::write(head_path(&p), head).unwrap();
            assert!(verify(&p).is_err(), "{head:?}");
        }
    }
}

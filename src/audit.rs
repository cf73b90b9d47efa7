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

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{msg, IoContext, Result};
use crate::fsutil::write_atomic;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    count: u64,
    last: String,
}

fn sha_hex(line: &str) -> String {
    Sha256::digest(line.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn head_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".head");
    PathBuf::from(s)
}

/// What a verified chain looks like.
#[derive(Debug, PartialEq, Eq)]
pub struct ChainState {
    pub records: u64,
    pub last_hash: String,
}

impl AuditLog {
    /// Open (creating) the log; a torn last line from a power cut is cut off.
    pub fn open(path: &Path) -> Result<AuditLog> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).at("create", dir)?;
        }
        let text = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).at("read audit log", path),
        };
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole != text.len() {
            log::warn!(
                "audit log {} ends in a torn record (power cut?); cutting it off",
                path.display()
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .at("open audit log", path)?;
            f.set_len(whole as u64).at("repair audit log", path)?;
            f.sync_all().at("sync audit log", path)?;
        }
        let state = verify(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            head_path: head_path(path),
            count: state.records,
            last: state.last_hash,
        })
    }

    /// Append one record and make it durable.
    pub fn record(&mut self, actor: &Actor, what: &str, result: &str) -> Result<()> {
        let line = json!({
            "seq": self.count + 1,
            "time": crate::timefmt::rfc3339(crate::timefmt::now_unix()),
            "who": actor.to_json(),
            "what": what,
            "result": result,
            "prev": self.last,
        })
        .to_string();
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.path)
            .at("open audit log", &self.path)?;
        f.write_all(format!("{line}\n").as_bytes())
            .at("append to audit log", &self.path)?;
        f.sync_all().at("sync audit log", &self.path)?;
        self.count += 1;
        self.last = sha_hex(&line);
        let head = format!("{} {}\n", self.count, self.last);
        write_atomic(&self.head_path, head.as_bytes(), 0o640)
    }
}

/// Check the whole chain and the head file.
pub fn verify(path: &Path) -> Result<ChainState> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).at("read audit log", path),
    };
    let mut prev = GENESIS.to_string();
    let mut count = 0u64;
    for (n, line) in text.lines().enumerate() {
        let rec: serde_json::Value = serde_json::from_str(line).map_err(|_| {
            msg(format!(
                "audit log {} line {}: not a record (edited?)",
                path.display(),
                n + 1
            ))
        })?;
        if rec["prev"].as_str() != Some(prev.as_str()) || rec["seq"].as_u64() != Some(count + 1) {
            return Err(msg(format!(
                "audit log {} line {}: the chain is broken (a record before it was edited or deleted)",
                path.display(),
                n + 1
            )));
        }
        prev = sha_hex(line);
        count += 1;
    }
    check_head(path, count, &text)?;
    Ok(ChainState {
        records: count,
        last_hash: prev,
    })
}

fn check_head(path: &Path, count: u64, text: &str) -> Result<()> {
    let head = match fs::read_to_string(head_path(path)) {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && count == 0 => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && count == 1 => return Ok(()),
        Err(e) => return Err(e).at("read audit head", &head_path(path)),
    };
    let mut parts = head.split_whitespace();
    let head_count: u64 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(u64::MAX);
    let head_hash = parts.next().unwrap_or_default();
    let hash_of = |k: u64| text.lines().nth(k as usize - 1).map(sha_hex);
    let consistent = match head_count {
        c if c == count => hash_of(c).as_deref() == Some(head_hash),
        // The append made it to disk, the head update did not: fine.
        c if c + 1 == count && c > 0 => hash_of(c).as_deref() == Some(head_hash),
        _ => false,
    };
    if !consistent {
        return Err(msg(format!(
            "audit log {} holds {count} records but its head says {head_count}: records were cut off or the log was replaced",
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
}

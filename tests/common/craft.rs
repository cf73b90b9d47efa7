//! Archives written directly with the format API, signed with a board's
//! key, as a malicious or buggy writer could: tests of what restore refuses.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rvm_backup::format::header::{Header, DEFAULT_FRAME_SIZE, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use rvm_backup::format::sidecar::{self, Meta};
use rvm_backup::format::{ArchiveWriter, EntryHeader, EntryKind};
use rvm_backup::store::parts::PartWriter;
use rvm_backup::strategy::Strategy;

use super::Board;

pub type Entry = (EntryKind, PathBuf, Vec<u8>);

/// Write an archive with arbitrary entries, signed with the board's key.
pub fn craft(
    b: &Board,
    strategy: Strategy,
    sources: &[&Path],
    entries: &[Entry],
    db_check: Option<&str>,
) -> String {
    let key = rvm_backup::keys::load(&b.key).unwrap();
    let created = rvm_backup::timefmt::now_unix();
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let id = format!(
        "{}-{}-{n:06x}",
        strategy.name(),
        rvm_backup::timefmt::compact(created)
    );
    let header = Header {
        flags: FLAG_COMPRESSED | FLAG_ENCRYPTED,
        frame_size: DEFAULT_FRAME_SIZE,
        key_id: key.writing().id(),
        salt: [7; 32],
        created,
    };
    let dir = b.backups.join(strategy.name());
    fs::create_dir_all(&dir).unwrap();
    let mut w = ArchiveWriter::new(
        PartWriter::new(&dir, &id, 1 << 30),
        &header,
        header.protection(Some(&key)).unwrap(),
        Some(1),
    )
    .unwrap();
    for (kind, path, content) in entries {
        let h = EntryHeader {
            kind: *kind,
            path: path.as_os_str().as_bytes().to_vec(),
            mode: if *kind == EntryKind::Dir {
                0o755
            } else {
                0o640
            },
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            size: content.len() as u64,
        };
        w.begin_entry(&h).unwrap();
        w.write_content(content).unwrap();
        w.end_entry(0).unwrap();
    }
    let (parts, summary) = w.finish().unwrap();
    let meta = Meta {
        id: id.clone(),
        strategy,
        created,
        created_nanos: n as u32,
        duration_ms: 0,
        host: "test".into(),
        tool_version: "0".into(),
        sources: sources.iter().map(|s| s.display().to_string()).collect(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        skipped: 0,
        changed_while_read: 0,
        content_bytes: 0,
        archive_bytes: summary.archive_bytes,
        compressed: true,
        encrypted: true,
        key_id: key.writing().id(),
        parts: parts.finish().unwrap(),
        database: None,
        hardlinks: 0,
        db_check: db_check.map(str::to_string),
        schema_sha256: None,
        tables: Vec::new(),
        parent: None,
    };
    let bytes = sidecar::encode(&meta, &header, &header.protection(Some(&key)).unwrap());
    fs::write(dir.join(format!("{id}.meta")), bytes).unwrap();
    id
}

static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

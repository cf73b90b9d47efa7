//! Test vectors for archive format v1 (docs/format.md, "Test vectors").
//!
//! The archives in `tests/vectors/` were written by this implementation
//! from the inputs below. The tests check that the writer still produces
//! exactly those bytes and that the reader still reads them, so a format
//! change cannot slip in unnoticed and a second implementation has bytes
//! to check itself against.

use std::io::Cursor;

use rvm_backup::crypto::{ArchiveKeys, KeyRing, MasterKey, Protection};
use rvm_backup::format::header::{Header, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use rvm_backup::format::{sidecar, ArchiveReader, ArchiveWriter, EntryHeader, EntryKind};

const MASTER: [u8; 32] = [0x42; 32];
const SALT: [u8; 32] = [0x01; 32];
const CREATED: i64 = 1_795_532_400; // 2026-11-24T15:00:00Z

fn entries() -> Vec<(EntryKind, &'static str, u32, Vec<u8>)> {
    vec![
        (EntryKind::Dir, "/etc/myrvm", 0o755, Vec::new()),
        (
            EntryKind::File,
            "/etc/myrvm/a.env",
            0o644,
            b"RVM_MACHINE=RVM-0001\n".to_vec(),
        ),
        (
            EntryKind::File,
            "/etc/myrvm/big.txt",
            0o600,
            b"deposit accepted\n".repeat(300),
        ),
        (
            EntryKind::Symlink,
            "/etc/myrvm/current",
            0o777,
            b"a.env".to_vec(),
        ),
    ]
}

/// The hard-link vector (`v1-hardlink.hex`, unencrypted): a file and a
/// second name for it.
fn hardlink_entries() -> Vec<(EntryKind, &'static str, u32, Vec<u8>)> {
    vec![
        (EntryKind::Dir, "/etc/myrvm", 0o755, Vec::new()),
        (
            EntryKind::File,
            "/etc/myrvm/a.env",
            0o644,
            b"RVM_MACHINE=RVM-0001\n".to_vec(),
        ),
        (
            EntryKind::HardLink,
            "/etc/myrvm/b.env",
            0o644,
            b"/etc/myrvm/a.env".to_vec(),
        ),
    ]
}

type Entries = Vec<(EntryKind, &'static str, u32, Vec<u8>)>;

fn build_from(flags: u16, entries: Entries) -> Vec<u8> {
    let key = MasterKey::from_bytes(MASTER);
    let key_id = if flags & FLAG_ENCRYPTED != 0 {
        key.id()
    } else {
        Default::default()
    };
    let header = Header {
        flags,
        frame_size: 4096,
        key_id,
        salt: SALT,
        created: CREATED,
    };
    let level = (flags & FLAG_COMPRESSED != 0).then_some(1);
    let mut w = ArchiveWriter::new(
        Vec::new(),
        &header,
        header.protection_with_key(Some(&key)).unwrap(),
        level,
    )
    .unwrap();
    for (kind, path, mode, content) in entries {
        let h = EntryHeader {
            kind,
            path: path.as_bytes().to_vec(),
            mode,
            uid: 1000,
            gid: 1000,
            mtime: CREATED - 3600,
            mtime_nsec: 500_000_000,
            size: content.len() as u64,
        };
        w.begin_entry(&h).unwrap();
        w.write_content(&content).unwrap();
        w.end_entry(0).unwrap();
    }
    w.finish().unwrap().0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn check(name: &str, flags: u16, expected_hex: &str) {
    check_entries(name, flags, expected_hex, entries())
}

fn check_entries(name: &str, flags: u16, expected_hex: &str, entries: Entries) {
    let bytes = build_from(flags, entries.clone());
    if std::env::var_os("RVM_BACKUP_WRITE_VECTORS").is_some() {
        let lines: Vec<String> = hex(&bytes)
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        std::fs::write(format!("tests/vectors/{name}.hex"), lines.join("\n") + "\n").unwrap();
        return;
    }
    let expected = unhex(expected_hex);
    assert_eq!(
        hex(&bytes),
        hex(&expected),
        "writer output for {name} changed: that is a format change"
    );
    let key = MasterKey::from_bytes(MASTER);
    let mut r = ArchiveReader::open(Cursor::new(&expected), Some(&KeyRing::from(key))).unwrap();
    let mut got = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        let mut content = Vec::new();
        while let Some(c) = r.content_chunk().unwrap() {
            content.extend_from_slice(c);
        }
        r.end_entry().unwrap();
        got.push((h.kind, String::from_utf8(h.path).unwrap(), h.mode, content));
    }
    let want: Vec<_> = entries
        .into_iter()
        .map(|(k, p, m, c)| (k, p.to_string(), m, c))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn encrypted_compressed_vector() {
    check(
        "v1-encrypted",
        FLAG_COMPRESSED | FLAG_ENCRYPTED,
        include_str!("vectors/v1-encrypted.hex"),
    );
}

#[test]
fn plain_vector() {
    check("v1-plain", 0, include_str!("vectors/v1-plain.hex"));
}

#[test]
fn hardlink_vector() {
    check_entries(
        "v1-hardlink",
        0,
        include_str!("vectors/v1-hardlink.hex"),
        hardlink_entries(),
    );
}

/// The database chain vector (`v1-dbpages.hex`, unencrypted): an
/// incremental database archive, its changed pages (kind 8) and their
/// digests (kind 9).
fn dbpages_entries() -> Entries {
    use rvm_backup::chain::db::digest;
    use rvm_backup::format::pages::{DigestsHead, PagesHead};
    const DB: &str = "/var/lib/myrvm/rvm.sqlite";
    let key = [0x07u8; 32];
    let p1 = vec![0x11u8; 512];
    let p3: Vec<u8> = (0..512u32).map(|i| (i % 251) as u8).collect();
    let head = PagesHead {
        page_size: 512,
        page_count: 3,
    };
    let mut delta = head.encode().to_vec();
    let mut digests = DigestsHead {
        page_size: 512,
        page_count: 3,
        key,
        fingerprint: [0x5a; 32],
    }
    .encode()
    .to_vec();
    for (pgno, page) in [(1u32, &p1), (3, &p3)] {
        delta.extend_from_slice(&pgno.to_le_bytes());
        delta.extend_from_slice(page);
        digests.extend_from_slice(&pgno.to_le_bytes());
        digests.extend_from_slice(&digest(&key, page));
    }
    vec![
        (EntryKind::DbPages, DB, 0o640, delta),
        (EntryKind::DbDigests, DB, 0o600, digests),
    ]
}

#[test]
fn dbpages_vector() {
    check_entries(
        "v1-dbpages",
        0,
        include_str!("vectors/v1-dbpages.hex"),
        dbpages_entries(),
    );
}

#[test]
fn key_id_and_derived_keys() {
    let key = MasterKey::from_bytes(MASTER);
    // Documented in docs/format.md.
    assert_eq!(
        key.id().to_string(),
        include_str!("vectors/key-id.txt").trim()
    );
    // The first AES-CTR keystream block of frame 0 under the derived key:
    // encrypting zeros yields the keystream itself.
    let p = Protection::Encrypted(ArchiveKeys::derive(&key, &SALT));
    let mut block = [0u8; 16];
    p.apply_keystream(0, &mut block);
    assert_eq!(
        hex(&block),
        include_str!("vectors/frame0-keystream.txt").trim()
    );
}

#[test]
fn sidecar_tag_depends_on_every_byte() {
    let key = MasterKey::from_bytes(MASTER);
    let header = Header {
        flags: 3,
        frame_size: 4096,
        key_id: key.id(),
        salt: SALT,
        created: CREATED,
    };
    let meta = sidecar::Meta {
        id: "config-20261124T150000Z-000000".into(),
        strategy: rvm_backup::strategy::Strategy::Config,
        created: CREATED,
        created_nanos: 0,
        duration_ms: 1,
        host: "rvm".into(),
        tool_version: "0.1.0".into(),
        sources: vec!["/etc/myrvm".into()],
        files: 2,
        dirs: 1,
        symlinks: 1,
        skipped: 0,
        changed_while_read: 0,
        content_bytes: 5121,
        archive_bytes: 1,
        compressed: true,
        encrypted: true,
        key_id: key.id(),
        parts: vec![],
        database: None,
        hardlinks: 1,
        db_check: None,
        schema_sha256: None,
        tables: Vec::new(),
        parent: None,
    };
    let bytes = sidecar::encode(
        &meta,
        &header,
        &header.protection_with_key(Some(&key)).unwrap(),
    );
    assert_eq!(
        sidecar::decode(&bytes, Some(&KeyRing::from(key)))
            .unwrap()
            .1,
        meta
    );
}

/// The incremental vector (`v1-incremental.hex`, unencrypted): an index
/// with stat blocks (marker 0xFD), a changed file stored whole, and an
/// unchanged one as a kind 5 reference into an earlier archive.
const EARLIER: &str = "config-20261124T140000Z-0a1b2c";

fn incremental_bytes() -> Vec<u8> {
    use rvm_backup::format::record::{IndexStat, Reference};
    let key = MasterKey::from_bytes(MASTER);
    let header = Header {
        flags: 0,
        frame_size: 4096,
        key_id: Default::default(),
        salt: SALT,
        created: CREATED,
    };
    let mut w = ArchiveWriter::new(
        Vec::new(),
        &header,
        header.protection_with_key(Some(&key)).unwrap(),
        None,
    )
    .unwrap();
    w.index_stats();
    let h = |kind, path: &str, mode, size| EntryHeader {
        kind,
        path: path.as_bytes().to_vec(),
        mode,
        uid: 1000,
        gid: 1000,
        mtime: CREATED - 3600,
        mtime_nsec: 500_000_000,
        size,
    };
    let stat = |ino, file_size, holder: &str| IndexStat {
        dev: 0x0801,
        ino,
        mtime: CREATED - 3600,
        mtime_nsec: 500_000_000,
        ctime: CREATED - 1800,
        ctime_nsec: 250_000_000,
        file_size,
        holder: holder.as_bytes().to_vec(),
    };
    w.begin_entry(&h(EntryKind::Dir, "/etc/myrvm", 0o755, 0))
        .unwrap();
    w.end_entry_stat(0, IndexStat::default()).unwrap();
    let a = b"RVM_MACHINE=RVM-0002\n";
    w.begin_entry(&h(
        EntryKind::File,
        "/etc/myrvm/a.env",
        0o644,
        a.len() as u64,
    ))
    .unwrap();
    w.write_content(a).unwrap();
    w.end_entry_stat(0, stat(1001, a.len() as u64, "")).unwrap();
    let big = b"deposit accepted\n".repeat(300);
    w.stored_entry(
        &h(EntryKind::Stored, "/etc/myrvm/big.txt", 0o600, 0),
        &Reference {
            holder: EARLIER.into(),
            file_size: big.len() as u64,
        },
        rvm_backup::crypto::sha256(&big),
        stat(1002, big.len() as u64, EARLIER),
    )
    .unwrap();
    w.finish().unwrap().0
}

#[test]
fn incremental_vector() {
    use rvm_backup::format::record::Reference;
    let bytes = incremental_bytes();
    if std::env::var_os("RVM_BACKUP_WRITE_VECTORS").is_some() {
        let lines: Vec<String> = hex(&bytes)
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        std::fs::write("tests/vectors/v1-incremental.hex", lines.join("\n") + "\n").unwrap();
        return;
    }
    let expected = unhex(include_str!("vectors/v1-incremental.hex"));
    assert_eq!(
        hex(&bytes),
        hex(&expected),
        "writer output for v1-incremental changed: that is a format change"
    );
    let key = KeyRing::from(MasterKey::from_bytes(MASTER));
    let mut r = ArchiveReader::open(Cursor::new(&expected), Some(&key)).unwrap();
    let mut kinds = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        let mut content = Vec::new();
        while let Some(c) = r.content_chunk().unwrap() {
            content.extend_from_slice(c);
        }
        let t = r.end_entry().unwrap();
        if h.kind == EntryKind::Stored {
            let reference = Reference::decode(&content).unwrap();
            assert_eq!(reference.holder, EARLIER);
            assert_eq!(reference.file_size, 5100);
            assert_eq!(
                t.sha256,
                rvm_backup::crypto::sha256(&b"deposit accepted\n".repeat(300))
            );
        }
        kinds.push(h.kind);
    }
    assert_eq!(
        kinds,
        vec![EntryKind::Dir, EntryKind::File, EntryKind::Stored]
    );
    let mut r = ArchiveReader::open(Cursor::new(&expected), Some(&key)).unwrap();
    let index = r.read_index().unwrap();
    let stats: Vec<_> = index.iter().map(|i| i.stat.clone().unwrap()).collect();
    assert_eq!(stats[0], Default::default());
    assert_eq!((stats[1].ino, stats[1].holder.len()), (1001, 0));
    assert_eq!(
        (stats[2].ino, stats[2].file_size, &stats[2].holder[..]),
        (1002, 5100, EARLIER.as_bytes())
    );
}

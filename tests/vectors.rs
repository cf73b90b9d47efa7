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

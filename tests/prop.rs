//! Property tests for every parser of untrusted bytes: arbitrary or mutated
//! input gives an error, never a panic.

use std::io::Cursor;
use std::path::Path;

use proptest::prelude::*;
use rvm_backup::crypto::{KeyRing, MasterKey};
use rvm_backup::format::header::{Header, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use rvm_backup::format::{sidecar, ArchiveReader, ArchiveWriter, EntryHeader, EntryKind};

fn key() -> KeyRing {
    KeyRing::from(MasterKey::from_bytes([0x42; 32]))
}

/// A small valid archive to mutate.
fn sample_archive() -> Vec<u8> {
    let k = key();
    let header = Header {
        flags: FLAG_COMPRESSED | FLAG_ENCRYPTED,
        frame_size: 4096,
        key_id: k.writing().id(),
        salt: [1; 32],
        created: 0,
    };
    let mut w = ArchiveWriter::new(
        Vec::new(),
        &header,
        header.protection(Some(&k)).unwrap(),
        Some(1),
    )
    .unwrap();
    for (i, content) in [&b"hello"[..], &[7u8; 9000], b""].iter().enumerate() {
        let h = EntryHeader {
            kind: EntryKind::File,
            path: format!("/etc/f{i}").into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: content.len() as u64,
        };
        w.begin_entry(&h).unwrap();
        w.write_content(content).unwrap();
        w.end_entry(0).unwrap();
    }
    w.finish().unwrap().0
}

/// One sequential pass, with frames opened on a second thread or not;
/// the entries' hashes in order.
fn read_through(bytes: &[u8], ahead: bool) -> Result<Vec<[u8; 32]>, String> {
    let k = key();
    let mut r = ArchiveReader::open(Cursor::new(bytes), Some(&k)).map_err(|e| e.to_string())?;
    if ahead {
        r.read_ahead();
    }
    let mut seen = Vec::new();
    while r.next_entry().map_err(|e| e.to_string())?.is_some() {
        seen.push(r.end_entry().map_err(|e| e.to_string())?.sha256);
    }
    Ok(seen)
}

/// Read everything, sequentially and through the index; Ok only if the
/// whole archive checked out. The sequential pass with read-ahead must
/// give exactly what the serial one gives, the same error included.
fn read_all(bytes: &[u8]) -> Result<usize, String> {
    let serial = read_through(bytes, false);
    assert_eq!(
        read_through(bytes, true),
        serial,
        "read-ahead and serial reads differ"
    );
    let n = serial?.len();
    let k = key();
    let mut r = ArchiveReader::open(Cursor::new(bytes), Some(&k)).map_err(|e| e.to_string())?;
    for rec in r.read_index().map_err(|e| e.to_string())? {
        r.seek_to(rec.at).map_err(|e| e.to_string())?;
        r.next_entry().map_err(|e| e.to_string())?;
        r.end_entry().map_err(|e| e.to_string())?;
    }
    Ok(n)
}

#[test]
fn sample_reads() {
    assert_eq!(read_all(&sample_archive()), Ok(3));
}

/// Read-ahead over many frames, raw and deflated, and cut short or
/// damaged in each of them: the same entries, or the same error, as a
/// serial read.
#[test]
fn read_ahead_matches_serial_reads_frame_by_frame() {
    let k = key();
    let header = Header {
        flags: FLAG_COMPRESSED | FLAG_ENCRYPTED,
        frame_size: 4096,
        key_id: k.writing().id(),
        salt: [2; 32],
        created: 0,
    };
    let mut w = ArchiveWriter::new(
        Vec::new(),
        &header,
        header.protection(Some(&k)).unwrap(),
        Some(1),
    )
    .unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..6 {
        // Alternately incompressible (stored raw) and compressible.
        let content: Vec<u8> = (0..(i + 1) * 7000)
            .map(|j| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 2 == 0 {
                    x as u8
                } else {
                    (j % 7) as u8
                }
            })
            .collect();
        let h = EntryHeader {
            kind: EntryKind::File,
            path: format!("/var/f{i}").into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: content.len() as u64,
        };
        w.begin_entry(&h).unwrap();
        w.write_content(&content).unwrap();
        w.end_entry(0).unwrap();
    }
    let bytes = w.finish().unwrap().0;
    assert_eq!(read_all(&bytes), Ok(6));
    assert!(bytes.len() > 10 * 4096, "too few frames: {}", bytes.len());
    for at in (0..bytes.len()).step_by(997) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(read_all(&bad).is_err(), "flip at {at} not detected");
        assert!(read_all(&bytes[..at]).is_err(), "cut at {at} not detected");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_all(&bytes);
        let _ = sidecar::decode(&bytes, Some(&key()));
        let _ = sidecar::decode(&bytes, None);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = sample_archive()[..64].to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert!(read_all(&bytes).is_err());
    }

    #[test]
    fn mutated_archives_are_rejected(edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let mut bytes = sample_archive();
        for (at, x) in &edits {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        prop_assert!(read_all(&bytes).is_err());
    }

    #[test]
    fn truncated_or_extended_archives_are_rejected(cut in 0usize..20_000, extra in proptest::collection::vec(any::<u8>(), 1..64)) {
        let bytes = sample_archive();
        let cut = cut % bytes.len();
        prop_assert!(read_all(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(read_all(&longer).is_err());
    }

    #[test]
    fn config_parser_never_panics(text in "\\PC{0,400}") {
        let _ = rvm_backup::config::Config::parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn config_like_input_never_panics(
        key in "[a-z_]{1,24}",
        value in prop_oneof!["\"[0-9]{0,30}[smhdwKMG]?\"", "[0-9]{1,25}", "true", "\\[\"/[a-z]{0,8}\"\\]", "\"/[ -~]{0,20}\""],
        section in prop_oneof!["", "[database]\n", "[config]\n", "[access.admin]\n", "[logs]\npaths = [\"/x\"]\n"],
    ) {
        let text = format!("{section}{key} = {value}\n");
        let _ = rvm_backup::config::Config::parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn accepted_paths_have_no_dot_components(path in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), Just(b'a'), Just(0u8)], 0..24)) {
        if rvm_backup::format::record::check_path(&path).is_ok() {
            let s = String::from_utf8(path).unwrap();
            prop_assert!(s.starts_with('/'));
            prop_assert!(s == "/" || s[1..].split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        }
    }

    #[test]
    fn request_line_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..5000)) {
        use rvm_backup::server::protocol::{parse, MAX_LINE};
        match parse(&line) {
            Ok(req) => prop_assert!(line.len() <= MAX_LINE && !req.verb.name().is_empty()),
            Err(e) => prop_assert!([400, 413].contains(&e.code)),
        }
    }

    #[test]
    fn request_like_lines_parse_or_fail_cleanly(
        verb in prop_oneof!["PING", "status", "BACKUP", "Restore", "JOB", "frob", ""],
        args in proptest::collection::vec("[ -~]{0,12}", 0..4),
    ) {
        let line = format!("{verb} {}", args.join(" "));
        let _ = rvm_backup::server::protocol::parse(line.as_bytes());
    }

    #[test]
    fn audit_and_state_files_never_panic(text in "\\PC{0,300}", head in "[0-9a-f ]{0,80}") {
        let dir = std::env::temp_dir().join(format!("rvb-prop-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("audit.log"), &text).unwrap();
        std::fs::write(dir.join("audit.log.head"), &head).unwrap();
        let _ = rvm_backup::audit::verify(&dir.join("audit.log"));
        std::fs::write(dir.join("state.json"), &text).unwrap();
        let _ = rvm_backup::state::load(&dir);
    }

    #[test]
    fn time_parser_never_panics(s in "\\PC{0,40}") {
        let _ = rvm_backup::timefmt::parse(&s);
    }
}

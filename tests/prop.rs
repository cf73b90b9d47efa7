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
    // Through the index, every entry or every second or third one, then
    // back to the first: a chain's holder reads this way, with forward
    // read-ahead, which must give what serial seeks give, damaged or not.
    for stride in 1..=3 {
        let seeks = by_index(bytes, false, stride);
        assert_eq!(
            by_index(bytes, true, stride),
            seeks,
            "forward read-ahead and serial seeks differ (every {stride} entries)"
        );
        if serial.is_ok() {
            seeks?;
        }
    }
    Ok(serial?.len())
}

/// Seek to every `stride`th entry by the index and read it, then to the
/// first again; with `forward`, with forward read-ahead, switched off and
/// on again halfway (as a chain's holders do). The entries' hashes.
fn by_index(bytes: &[u8], forward: bool, stride: usize) -> Result<Vec<[u8; 32]>, String> {
    let k = key();
    let mut r = ArchiveReader::open(Cursor::new(bytes), Some(&k)).map_err(|e| e.to_string())?;
    let index = r.read_index().map_err(|e| e.to_string())?;
    r.read_ahead_forward(forward);
    let mut seen = Vec::new();
    let picked = index.iter().step_by(stride).chain(index.first());
    for (n, rec) in picked.enumerate() {
        if forward && n == index.len() / (2 * stride) {
            r.read_ahead_forward(false);
            r.read_ahead_forward(true);
        }
        r.seek_to(rec.at).map_err(|e| e.to_string())?;
        r.next_entry().map_err(|e| e.to_string())?;
        seen.push(r.end_entry().map_err(|e| e.to_string())?.sha256);
    }
    Ok(seen)
}

#[test]
fn sample_reads() {
    assert_eq!(read_all(&sample_archive()), Ok(3));
}

/// An archive of files of these sizes, frames of 4 KiB, each file's
/// content pseudo-random (stored raw) or, where `compressible(i)`, a
/// repeating pattern (deflated).
fn archive_of(sizes: &[usize], compressible: impl Fn(usize) -> bool) -> Vec<u8> {
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
    for (i, &size) in sizes.iter().enumerate() {
        let content: Vec<u8> = (0..size)
            .map(|j| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if compressible(i) {
                    (j % 7) as u8
                } else {
                    x as u8
                }
            })
            .collect();
        let h = EntryHeader {
            kind: EntryKind::File,
            path: format!("/var/f{i:03}").into_bytes(),
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
    w.finish().unwrap().0
}

/// Every byte flipped (in steps of `step`) and every cut: each is found,
/// the same way with and without read-ahead (`read_all` compares them).
fn damage_is_found_everywhere(bytes: &[u8], step: usize) {
    for at in (0..bytes.len()).step_by(step) {
        let mut bad = bytes.to_vec();
        bad[at] ^= 0x40;
        assert!(read_all(&bad).is_err(), "flip at {at} not detected");
        assert!(read_all(&bytes[..at]).is_err(), "cut at {at} not detected");
    }
}

/// Read-ahead over many frames, raw and deflated, and cut short or
/// damaged in each of them: the same entries, or the same error, as a
/// serial read.
#[test]
fn read_ahead_matches_serial_reads_frame_by_frame() {
    let sizes: Vec<usize> = (1..=6).map(|i| i * 7000).collect();
    // Alternately incompressible (stored raw) and compressible.
    let bytes = archive_of(&sizes, |i| i % 2 == 1);
    assert_eq!(read_all(&bytes), Ok(6));
    assert!(bytes.len() > 10 * 4096, "too few frames: {}", bytes.len());
    damage_is_found_everywhere(&bytes, 997);
}

/// Files of about a frame each: seeks by the index skip one or two frames,
/// which forward read-ahead walks through rather than jumping. The same
/// entries, or the same error, as serial seeks, with damage in any frame
/// (also in one walked through but not needed).
#[test]
fn forward_read_ahead_walks_short_seeks_like_serial_ones() {
    let sizes: Vec<usize> = (0..40).map(|i| 1500 + (i * 1237) % 6000).collect();
    let bytes = archive_of(&sizes, |i| i % 5 == 0);
    assert_eq!(read_all(&bytes), Ok(40));
    damage_is_found_everywhere(&bytes, 1499);
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

//! Hostile archives: flipped bits, truncation, wrong keys, foreign files and
//! crafted entries are detected and refused, and a refused restore leaves
//! the target exactly as it was.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use rvm_backup::crypto::MasterKey;
use rvm_backup::format::header::{Header, DEFAULT_FRAME_SIZE, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use rvm_backup::format::sidecar::{self, Meta};
use rvm_backup::format::{ArchiveWriter, EntryHeader, EntryKind};
use rvm_backup::progress::Progress;
use rvm_backup::store::parts::PartWriter;
use rvm_backup::store::Store;

/// A board whose config tree is small, so every bit can be tried.
fn small_board(name: &str) -> Board {
    let b = Board::new(name);
    let cfg = b.root.join("etc/myrvm");
    fs::create_dir_all(cfg.join("sub")).unwrap();
    fs::write(cfg.join("a.env"), b"RVM_A=1\n").unwrap();
    fs::write(cfg.join("sub/b.env"), "RVM_B=ü\n".repeat(20)).unwrap();
    std::os::unix::fs::symlink("a.env", cfg.join("link")).unwrap();
    b.ok(&["backup", "config"]);
    b
}

/// Verify every archive in-process; true if all pass.
fn verifies(backups: &Path, key: &MasterKey) -> bool {
    let listing = Store::new(backups).list(None, Some(key));
    listing.problems.is_empty()
        && !listing.archives.is_empty()
        && listing.archives.iter().all(|a| {
            smol::block_on(rvm_backup::verify::verify(
                a,
                Some(key),
                &mut Progress::silent(),
            ))
            .is_ok()
        })
}

#[test]
fn every_flipped_bit_and_every_truncation_is_detected() {
    let b = small_board("bits");
    let key = rvm_backup::keys::load(&b.key).unwrap();
    assert!(verifies(&b.backups, &key));
    let id = &b.ids("config")[0];
    for file in archive_files(&b.backups, id) {
        let original = fs::read(&file).unwrap();
        assert!(
            original.len() < 8192,
            "keep this archive small: {}",
            original.len()
        );
        for bit in 0..original.len() * 8 {
            let mut bytes = original.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            fs::write(&file, &bytes).unwrap();
            assert!(
                !verifies(&b.backups, &key),
                "flipped bit {bit} of {} went unnoticed",
                file.display()
            );
        }
        for len in 0..original.len() {
            fs::write(&file, &original[..len]).unwrap();
            assert!(
                !verifies(&b.backups, &key),
                "truncation to {len} of {} went unnoticed",
                file.display()
            );
        }
        let mut longer = original.clone();
        longer.push(0);
        fs::write(&file, &longer).unwrap();
        assert!(
            !verifies(&b.backups, &key),
            "an appended byte went unnoticed"
        );
        fs::write(&file, &original).unwrap();
    }
    assert!(verifies(&b.backups, &key));
}

#[test]
fn tampered_archive_is_refused_and_target_untouched() {
    let b = small_board("refuse");
    let id = b.ids("config")[0].clone();
    let part = archive_files(&b.backups, &id)
        .into_iter()
        .find(|p| p.extension().unwrap() == "rvb")
        .unwrap();
    let target = b.tmp.path().join("target");
    fs::create_dir_all(target.join("keep")).unwrap();
    fs::write(target.join("keep/me.txt"), b"precious").unwrap();
    let live_before = snapshot(&b.root);
    let target_before = snapshot(&target);
    let original = fs::read(&part).unwrap();
    for pos in [70, original.len() / 2, original.len() - 30] {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x10;
        fs::write(&part, &bytes).unwrap();
        let err = b.fails(&["restore", "config", "--target", target.to_str().unwrap()]);
        assert!(err.contains(&id), "{err}");
        assert_eq!(
            snapshot(&target),
            target_before,
            "a failed restore changed the target"
        );
        b.fails(&["restore", "config"]);
        assert_eq!(
            snapshot(&b.root),
            live_before,
            "a failed in-place restore changed the live tree"
        );
        b.fails(&["verify", &id]);
    }
    fs::write(&part, &original[..original.len() - 100]).unwrap();
    let err = b.fails(&["restore", "config", "--target", target.to_str().unwrap()]);
    assert!(
        err.contains("truncated") || err.contains("bytes but its sidecar"),
        "{err}"
    );
    assert_eq!(snapshot(&target), target_before);
}

#[test]
fn wrong_or_missing_key_names_the_key_needed() {
    let b = small_board("wrongkey");
    let needed = b.list()[0]["key_id"].as_str().unwrap().to_string();
    fs::remove_file(&b.key).unwrap();
    let err = b.fails(&["verify", "--all"]);
    assert!(
        err.contains("keygen") || err.contains("does not exist"),
        "{err}"
    );
    b.ok(&["keygen", "--out", b.key.to_str().unwrap()]);
    for cmd in [
        &["verify", "--all"][..],
        &["list"],
        &["restore", "config", "--target", "/tmp/never-written"],
    ] {
        let err = b.fails(cmd);
        assert!(err.contains(&needed), "{cmd:?}: {err}");
    }
    assert!(!Path::new("/tmp/never-written").exists());
}

#[test]
fn loose_key_permissions_are_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let b = small_board("perms");
    fs::set_permissions(&b.key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = b.fails(&["backup", "config"]);
    assert!(err.contains("chmod 600"), "{err}");
    let err = b.fails(&["keygen", "--out", b.key.to_str().unwrap()]);
    assert!(err.contains("refusing to overwrite"), "{err}");
}

#[test]
fn foreign_files_are_refused() {
    let b = small_board("foreign");
    let id = b.ids("config")[0].clone();
    let files = archive_files(&b.backups, &id);
    let sidecar = files
        .iter()
        .find(|p| p.extension().unwrap() == "meta")
        .unwrap();
    let part = files
        .iter()
        .find(|p| p.extension().unwrap() == "rvb")
        .unwrap();
    let len = fs::metadata(part).unwrap().len() as usize;
    fs::write(part, pseudo_random(len, 9)).unwrap();
    let err = b.fails(&["verify", &id]);
    assert!(err.contains("not an rvm-backup archive"), "{err}");
    fs::write(sidecar, b"PK\x03\x04 this is a zip file, not a sidecar").unwrap();
    let err = b.fails(&["list"]);
    assert!(err.contains("sidecar"), "{err}");
    fs::write(sidecar, b"").unwrap();
    b.fails(&["verify", "--all"]);
}

/// Write an archive with arbitrary entries, signed with the board's key, as
/// a malicious or buggy writer could.
fn craft(b: &Board, sources: &[&Path], entries: &[(EntryKind, PathBuf, Vec<u8>)]) -> String {
    let key = rvm_backup::keys::load(&b.key).unwrap();
    let created = rvm_backup::timefmt::now_unix();
    let id = format!("config-{}-abcdef", rvm_backup::timefmt::compact(created));
    let header = Header {
        flags: FLAG_COMPRESSED | FLAG_ENCRYPTED,
        frame_size: DEFAULT_FRAME_SIZE,
        key_id: key.id(),
        salt: [7; 32],
        created,
    };
    let dir = b.backups.join("config");
    fs::create_dir_all(&dir).unwrap();
    let mut w = ArchiveWriter::new(
        PartWriter::new(&dir, &id, 1 << 30),
        &header,
        header.protection(Some(&key)).unwrap(),
        Some(1),
    )
    .unwrap();
    for (kind, path, content) in entries {
        use std::os::unix::ffi::OsStrExt;
        let h = EntryHeader {
            kind: *kind,
            path: path.as_os_str().as_bytes().to_vec(),
            mode: if *kind == EntryKind::Dir {
                0o755
            } else {
                0o644
            },
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
    let (parts, summary) = w.finish().unwrap();
    let meta = Meta {
        id: id.clone(),
        strategy: rvm_backup::strategy::Strategy::Config,
        created,
        created_nanos: 0,
        duration_ms: 0,
        host: "evil".into(),
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
        key_id: key.id(),
        parts: parts.finish().unwrap(),
        database: None,
        hardlinks: 0,
        db_check: None,
        schema_sha256: None,
        tables: Vec::new(),
    };
    let bytes = sidecar::encode(&meta, &header, &header.protection(Some(&key)).unwrap());
    fs::write(dir.join(format!("{id}.meta")), bytes).unwrap();
    id
}

fn restore_is_refused(b: &Board, id: &str, target: &Path, expect: &str) {
    let before = snapshot(target);
    let err = b.fails(&[
        "restore",
        "config",
        id,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(
        snapshot(target),
        before,
        "refused restore changed the target"
    );
}

#[test]
fn crafted_paths_are_refused() {
    let b = Board::new("crafted");
    let src = b.root.join("etc/myrvm");
    let target = b.tmp.path().join("target");
    let outside = b.tmp.path().join("outside");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir_all(&outside).unwrap();
    let file = |p: PathBuf| (EntryKind::File, p, b"evil".to_vec());

    let dotdot = craft(
        &b,
        &[&src],
        &[file(PathBuf::from(format!(
            "{}/../../../../outside/x",
            src.display()
        )))],
    );
    restore_is_refused(&b, &dotdot, &target, "unsafe path");

    let relative = craft(&b, &[Path::new("etc")], &[file(PathBuf::from("etc/x"))]);
    restore_is_refused(&b, &relative, &target, "unsafe path");

    let escaping = craft(
        &b,
        &[&src],
        &[file(src.join("ok")), file(PathBuf::from("/etc/passwd"))],
    );
    restore_is_refused(&b, &escaping, &target, "outside the archive's sources");

    // A symlink in the archive, then a file "inside" it.
    let link_trick = craft(
        &b,
        &[&src],
        &[
            (
                EntryKind::Symlink,
                src.join("link"),
                outside.display().to_string().into_bytes(),
            ),
            file(src.join("link/pwned")),
        ],
    );
    restore_is_refused(&b, &link_trick, &target, "not a directory");
    assert!(!outside.join("pwned").exists());

    // A symlink already in the target, pointing outside.
    let in_target = b.in_target(&target, &src);
    fs::create_dir_all(&in_target).unwrap();
    std::os::unix::fs::symlink(&outside, in_target.join("sub")).unwrap();
    let through = craft(&b, &[&src], &[file(src.join("sub/pwned"))]);
    restore_is_refused(&b, &through, &target, "symlink");
    assert!(!outside.join("pwned").exists());

    let twice = craft(&b, &[&src], &[file(src.join("a")), file(src.join("a"))]);
    restore_is_refused(&b, &twice, &target, "twice");

    // A future entry kind is refused with a clear message.
    let dir_ok = craft(
        &b,
        &[&src],
        &[
            (EntryKind::Dir, src.clone(), Vec::new()),
            file(src.join("fine")),
        ],
    );
    b.ok(&[
        "restore",
        "config",
        &dir_ok,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(in_target.join("fine")).unwrap(), b"evil");
}

#[test]
fn a_sidecar_cannot_name_foreign_part_files() {
    let b = small_board("partnames");
    let victim = b.tmp.path().join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    let key = rvm_backup::keys::load(&b.key).unwrap();
    let id = b.ids("config")[0].clone();
    let sidecar_path = b.backups.join("config").join(format!("{id}.meta"));
    let (header, mut meta) =
        sidecar::decode(&fs::read(&sidecar_path).unwrap(), Some(&key)).unwrap();
    meta.parts[0].name = format!("../../{}", victim.file_name().unwrap().to_string_lossy());
    let forged = sidecar::encode(&meta, &header, &header.protection(Some(&key)).unwrap());
    fs::write(&sidecar_path, forged).unwrap();
    let err = b.fails(&["list"]);
    assert!(err.contains("part names"), "{err}");
    b.ok(&["prune"]);
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious",
        "prune must never touch a file outside the store"
    );
}

//! Trees deeper or longer than an archive can hold: backup skips what
//! restore could not handle (one warning each, counted in `skipped`), so
//! the archive it writes always restores.

mod archive_read;
mod common;

use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;

use common::*;
use rustix::fs::{Mode, OFlags};
use rvm_backup::format::record::{MAX_DIR_DEPTH, MAX_PATH_LEN};
use rvm_backup::strategy::Strategy;

/// Create `names` nested below `base`, relative to descriptors (the full
/// path may be longer than the kernel's PATH_MAX); a file `f` at the end.
fn nest(base: &Path, names: &[String]) {
    let mut dir: OwnedFd =
        rustix::fs::open(base, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for n in names {
        rustix::fs::mkdirat(&dir, n.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(
            &dir,
            n.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
    }
    let f = rustix::fs::openat(
        &dir,
        "f",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&f, b"deep").unwrap();
}

#[test]
fn too_deep_and_too_long_paths_are_skipped_and_the_archive_restores() {
    let b = Board::new("deep");
    b.populate();
    let app = b.root.join("opt/myrvm");
    // 300 directories below the source root.
    nest(&app, &vec!["d".to_string(); 300]);
    // A path of more than 4200 bytes, 200-byte names.
    nest(&app, &vec!["l".repeat(200); 22]);
    let out = b.run(&["backup", "application"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let deep_warnings = stderr.matches("directories deep").count();
    let long_warnings = stderr.matches("bytes long").count();
    assert_eq!(deep_warnings, 1, "{stderr}");
    assert_eq!(long_warnings, 1, "{stderr}");
    let (meta, entries) = archive_read::newest(&b.backups, &b.key, Strategy::Application);
    assert_eq!(meta.skipped, 2, "{stderr}");
    for e in &entries {
        let p = &e.header.path;
        assert!(p.len() <= MAX_PATH_LEN);
        assert!(p.split(|&c| c == b'/').filter(|c| !c.is_empty()).count() <= MAX_DIR_DEPTH + 1);
    }
    let id = b.ids("application").pop().unwrap();
    let target = b.tmp.path().join("t");
    fs::create_dir_all(&target).unwrap();
    b.ok(&[
        "restore",
        "application",
        &id,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(b.in_target(&target, &app).join("d/d/d").is_dir());
    // In place too (the restore root is closer to the entries).
    b.ok(&["restore", "application", &id]);
    b.ok(&["verify"]);
}

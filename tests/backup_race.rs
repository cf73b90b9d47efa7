//! A tree owner must not be able to make the backup (running as root) store
//! a file it cannot read, by swapping a file in its own directory for a
//! symlink to that file while the backup walks the tree.
//!
//! Needs root (to run the swapper as another user). Without root it fails
//! when `CI` is set and prints a clear skip otherwise: it never passes
//! silently.

mod archive_read;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rvm_backup::format::EntryKind;
use rvm_backup::strategy::Strategy;

const NOBODY: u32 = 65534;
const VICTIMS: usize = 2;

/// Keeps exchanging each victim (a regular file) with a symlink to the
/// secret: `renameat2(RENAME_EXCHANGE)`, one system call per swap, so both
/// names always exist and flip between file and symlink as fast as the
/// kernel allows (the window being raced is a few hundred nanoseconds).
const SWAPPER: &str = r#"
import ctypes, os, sys
d, secret, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
pairs = []
for i in range(n):
    v, l = os.path.join(d, "victim%02d" % i), os.path.join(d, "victim%02d.swap" % i)
    with open(v, "w") as f: f.write("harmless content of the same length!\n")
    os.symlink(secret, l)
    pairs.append((v.encode(), l.encode()))
while True:
    for v, l in pairs:
        if libc.renameat2(AT_FDCWD, v, AT_FDCWD, l, RENAME_EXCHANGE) != 0:
            sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
"#;

#[test]
fn swapped_symlinks_never_leak_a_root_only_file() {
    if !require_root("swapped_symlinks_never_leak_a_root_only_file") {
        return;
    }
    let b = Board::new("race");
    let app = b.root.join("opt/myrvm");
    std::fs::create_dir_all(&app).unwrap();
    // Everything up to the owned directory must be traversable by nobody.
    for p in [b.tmp.path(), &b.root, &b.root.join("opt"), &app] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let owned = app.join("shared");
    std::fs::create_dir(&owned).unwrap();
    std::os::unix::fs::chown(&owned, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::write(app.join("normal.txt"), b"normal\n").unwrap();

    let secret_dir = b.tmp.path().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    let marker = format!(
        "TOP-SECRET-{:016x}",
        std::process::id() as u64 * 0x9E37_79B9
    );
    let secret = secret_dir.join("shadow");
    std::fs::write(&secret, format!("{marker}\n").repeat(2)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut swapper = Command::new("python3")
        .args(["-c", SWAPPER])
        .arg(&owned)
        .arg(&secret)
        .arg(VICTIMS.to_string())
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    std::thread::sleep(Duration::from_millis(200));
    if let Some(status) = swapper.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(swapper.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("the swapper died at once ({status}): {err}");
    }

    let started = Instant::now();
    let mut backups = 0;
    while backups < 100 && started.elapsed() < Duration::from_secs(60) {
        let out = b.run(&["backup", "application"]);
        assert!(
            out.status.success(),
            "backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        backups += 1;
    }
    let _ = swapper.kill();
    let _ = swapper.wait();

    let archives = archive_read::read_all(&b.backups, &b.key, Strategy::Application);
    assert_eq!(archives.len(), backups);
    let (mut victim_files, mut skipped) = (0, 0);
    for (meta, entries) in &archives {
        skipped += meta.skipped;
        for e in entries {
            let path = e.header.display_path();
            assert!(
                !e.content
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes()),
                "archive {} stored the root-only secret under {path}",
                meta.id
            );
            if e.header.kind == EntryKind::File && path.contains("/victim") {
                victim_files += 1;
            }
        }
    }
    eprintln!(
        "{backups} backups in {:?}: {victim_files} victim files stored, {skipped} entries skipped",
        started.elapsed()
    );
    assert!(
        victim_files > 0,
        "the race never stored a victim file: the test exercised nothing"
    );
}

//! An in-place restore as root over a tree where another user owns a
//! directory: that user keeps swapping a directory of theirs for a symlink
//! to a root-owned directory outside the tree while restores run. No file
//! may appear in, and no owner or mode may change of, anything outside the
//! restored tree.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const NOBODY: u32 = 65534;

/// Name, owner, group, mode and size of everything below `dir`.
fn state_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        out.push(format!(
            "{} {}:{} {:o} {}",
            p.display(),
            m.uid(),
            m.gid(),
            m.mode(),
            if m.is_dir() { 0 } else { m.len() }
        ));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// Swaps `inner` with a symlink to `outside` and back as fast as it can,
/// atomically (`renameat2(RENAME_EXCHANGE)`), in short bursts.
const SWAPPER: &str = r#"
import ctypes, os, random, sys, time
inner, away, outside, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
a, b = inner.encode(), away.encode()
os.symlink(outside, away)
end = time.time() + secs
while time.time() < end:
    for _ in range(random.randint(1, 2000)):
        libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
    if os.path.islink(inner):
        libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
    time.sleep(random.uniform(0, 0.002))
"#;

#[test]
fn a_user_swapping_directories_cannot_redirect_an_in_place_restore() {
    if !require_root("a_user_swapping_directories_cannot_redirect_an_in_place_restore") {
        return;
    }
    let b = Board::new("race");
    // The temp dir must be reachable by nobody.
    for p in [b.tmp.path(), &b.root] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let src = b.root.join("etc/myrvm");
    let user = src.join("userdir");
    let inner = user.join("inner");
    fs::create_dir_all(&inner).unwrap();
    fs::write(inner.join("f07"), b"data 7\n").unwrap();
    fs::write(src.join("root.conf"), b"root only\n").unwrap();
    for p in [&user, &inner] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    for e in fs::read_dir(&inner).unwrap() {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    b.ok(&["backup", "config"]);

    // Root-owned, outside the restored tree, where the user cannot write.
    let outside = b.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("shadow"), b"secret\n").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    let before = state_of(&outside);

    let mut swapper = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SWAPPER)
        .arg(&inner)
        .arg(user.join("inner.link"))
        .arg(&outside)
        .arg("40")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 is needed for the swapping user");
    let started = Instant::now();
    let (mut ok, mut refused, mut runs) = (0, 0, 0);
    let mut broken = None;
    while runs < 200 && started.elapsed() < Duration::from_secs(35) {
        runs += 1;
        let out = b.run(&["restore", "config"]);
        if out.status.success() {
            ok += 1;
        } else {
            refused += 1;
        }
        let now = state_of(&outside);
        if now != before {
            broken = Some(now);
            break;
        }
    }
    let _ = swapper.kill();
    let _ = swapper.wait();
    eprintln!("{runs} restores: {ok} completed, {refused} refused");
    assert!(runs >= 100 || broken.is_some(), "only {runs} restores ran");
    if let Some(now) = broken {
        panic!(
            "after {runs} restores the restore wrote outside its tree:\nbefore {before:#?}\nafter {now:#?}"
        );
    }
    assert_eq!(state_of(&outside), before);
    // Without the swapper the restore works and is complete.
    if fs::symlink_metadata(&inner)
        .unwrap()
        .file_type()
        .is_symlink()
    {
        fs::remove_file(&inner).unwrap();
        fs::rename(user.join("inner.link"), &inner).unwrap();
    }
    b.ok(&["restore", "config"]);
    assert_eq!(fs::read(inner.join("f07")).unwrap(), b"data 7\n");
    assert_eq!(fs::metadata(&inner).unwrap().uid(), NOBODY);
    assert_eq!(fs::metadata(src.join("root.conf")).unwrap().uid(), 0);
}

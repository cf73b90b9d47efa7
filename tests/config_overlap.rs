//! `backup_dir` overlapping a source, seen on the release binary: equal to
//! a source (nothing stored, exit 0), reached through a symlink inside a
//! source (every archive contained the earlier ones), a parent of a source
//! (taking the lock deleted the user's `*.tmp` and `*.rvb` files). Each is
//! now refused when the config is loaded; and the lock's leftover cleanup
//! deletes only names rvm-backup writes.

mod common;

use std::fs;
use std::path::Path;

use common::Board;

/// Point the board's config at `backup_dir`, sources unchanged.
fn with_backup_dir(b: &Board, backup_dir: &Path) {
    let text = fs::read_to_string(&b.config).unwrap();
    let old = format!("backup_dir = \"{}\"", b.backups.display());
    assert!(text.contains(&old));
    fs::write(
        &b.config,
        text.replace(&old, &format!("backup_dir = \"{}\"", backup_dir.display())),
    )
    .unwrap();
}

#[test]
fn backup_dir_equal_to_a_source_is_refused() {
    let b = Board::new("overlap-equal");
    b.populate();
    let app = b.root.join("opt/myrvm");
    with_backup_dir(&b, &app);
    let e = b.fails(&["backup", "--all"]);
    assert!(
        e.contains(&format!(
            "backup_dir \"{}\" is the same as [application] path",
            app.display()
        )) && e.contains("move the backup directory out of the sources"),
        "{e}"
    );
}

#[test]
fn backup_dir_through_a_symlink_inside_a_source_is_refused() {
    let b = Board::new("overlap-symlink");
    b.populate();
    let inside = b.root.join("opt/myrvm/var");
    fs::create_dir_all(&inside).unwrap();
    let link = b.tmp.path().join("srv");
    std::os::unix::fs::symlink(&inside, &link).unwrap();
    with_backup_dir(&b, &link.join("backups"));
    let e = b.fails(&["backup", "application"]);
    assert!(
        e.contains("lies inside [application] path") && e.contains("through symlinks"),
        "{e}"
    );
    assert!(!inside.join("backups").exists(), "nothing was written");
}

#[test]
fn backup_dir_above_a_source_is_refused_and_user_files_survive() {
    let b = Board::new("overlap-parent");
    b.populate();
    // backup_dir = the board's /etc, so the config source sits in it.
    let etc = b.root.join("etc");
    let user = etc.join("myrvm/config/old.rvb");
    fs::create_dir_all(user.parent().unwrap()).unwrap();
    fs::write(&user, b"mine").unwrap();
    fs::write(etc.join("myrvm/draft.tmp"), b"mine too").unwrap();
    with_backup_dir(&b, &etc);
    let e = b.fails(&["backup", "--all"]);
    assert!(
        e.contains(&format!(
            "[config] path \"{}\" lies inside backup_dir \"{}\"",
            etc.join("myrvm").display(),
            etc.display()
        )),
        "{e}"
    );
    assert_eq!(fs::read(&user).unwrap(), b"mine");
    assert!(etc.join("myrvm/draft.tmp").exists());
}

#[test]
fn lock_cleanup_deletes_only_our_leftovers() {
    let b = Board::new("overlap-cleanup");
    b.populate();
    b.ok(&["backup", "config"]);
    let dir = b.backups.join("config");
    let outside = b.tmp.path().join("precious");
    fs::write(&outside, b"precious").unwrap();
    let user_files = [
        "foo.tmp",
        "x.rvb",
        "notes.meta.tmp",
        "logs-20260101T000000Z-abcdef.meta.tmp",
        "config-20260101T000000Z-ABCDEF.000.rvb",
        "config-20260101T000000Z-abcdef.000.rvb.bak",
    ];
    for name in user_files {
        fs::write(dir.join(name), b"user data").unwrap();
    }
    // A symlink named like a leftover is not a regular file: left alone.
    let link = dir.join("config-20260101T000000Z-abcdef.meta.tmp");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    // Real leftovers of a killed run are removed.
    let leftovers = [
        "config-20260101T000000Z-012345.000.rvb",
        "config-20260101T000000Z-012345.001.rvb.tmp",
        "config-20260101T000000Z-012345.meta.tmp",
        "config-20260101T000000Z-012345.index.tmp",
    ];
    for name in leftovers {
        fs::write(dir.join(name), b"leftover").unwrap();
    }
    b.ok(&["backup", "config"]);
    for name in user_files {
        assert_eq!(fs::read(dir.join(name)).unwrap(), b"user data", "{name}");
    }
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&outside).unwrap(), b"precious");
    for name in leftovers {
        assert!(!dir.join(name).exists(), "{name} should be gone");
    }
    assert_eq!(b.ids("config").len(), 2);
}

//! `export --to DIR` onto a real FAT32 stick (fusefat): a complete set
//! (MANIFEST, key.sealed, pool) with FAT-safe names and several parts per
//! archive; re-export copies only what changed; `export_keep` drops old
//! sets and collects the pool; a pulled stick, a full stick, a read-only
//! stick, a directory that is no stick and a tampered pool file; and the
//! daemon's `EXPORT` verb.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::stick::Stick;
use common::*;
use rvm_backup::recovery_set::{is_fat_safe, Manifest};

const MACHINE_ID: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";

/// A fleet recovery key pair: the private key file and the config line.
fn recovery_key(dir: &Path) -> (PathBuf, String) {
    let file = dir.join("rvm-recovery.key");
    let out = bin()
        .args(["keygen", "--recovery", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.split('#').next().unwrap().trim().to_string();
    assert!(
        line.starts_with("recovery_public_key = \"rvmrec1:"),
        "{line}"
    );
    (file, line)
}

/// A populated board configured for export: 64K parts, a recovery key, a
/// machine id of its own; `extra` adds config lines.
fn board(name: &str, extra: &str) -> Board {
    let b = Board::new(name);
    let (_, line) = recovery_key(b.tmp.path());
    let mid = b.tmp.path().join("machine-id");
    fs::write(&mid, format!("{MACHINE_ID}\n")).unwrap();
    b.write_config(&format!(
        "max_part_size = \"64K\"\n{line}\nmachine_id_file = \"{}\"\n{extra}",
        mid.display()
    ));
    b.populate();
    // Incompressible content: several 64K parts.
    fs::write(b.root.join("opt/myrvm/blob.bin"), pseudo_random(300_000, 7)).unwrap();
    b.ok(&["backup", "--all"]);
    b
}

fn stick(name: &str, mib: u64) -> Option<Stick> {
    Stick::new(name, mib)
}

/// The one board directory on the stick.
fn board_dir(stick: &Path) -> PathBuf {
    let root = stick.join("rvm-backup");
    let dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// Complete sets (with a MANIFEST), oldest first.
fn complete_sets(stick: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(board_dir(stick))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("set-"))
        .filter(|n| board_dir(stick).join(n).join("MANIFEST").is_file())
        .collect();
    v.sort();
    v
}

/// Open a set's manifest with the board's key ring and check every file
/// it names against its size and SHA-256; returns the manifest.
fn check_set(b: &Board, stick: &Path, set: &str) -> Manifest {
    let bd = board_dir(stick);
    let bytes = fs::read(bd.join(set).join("MANIFEST")).unwrap();
    let ring = rvm_backup::keys::load(&b.key).unwrap();
    let m = Manifest::open(&bytes, Some(&ring), true).unwrap();
    assert_eq!(m.set, set);
    assert!(m.encrypted);
    let sealed = m.sealed_key.clone().expect("a sealed key");
    let mut files = vec![(bd.join(set).join(&sealed.name), sealed)];
    for a in &m.archives {
        for f in &a.files {
            files.push((bd.join("pool").join(&f.name), f.clone()));
        }
    }
    for (p, f) in files {
        let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(data.len() as u64, f.bytes, "{}", p.display());
        assert_eq!(
            rvm_backup::crypto::sha256(&data),
            f.digest(),
            "{}",
            p.display()
        );
    }
    m
}

/// `verify --all` over the stick's pool, as a store of its own.
fn verify_pool(b: &Board, stick: &Path) {
    let cfg = b.tmp.path().join("pool.toml");
    fs::write(
        &cfg,
        format!(
            "backup_dir = \"{}\"\nkey_file = \"{}\"\n",
            board_dir(stick).join("pool").display(),
            b.key.display()
        ),
    )
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["--quiet", "verify", "--all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify of the pool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn export(b: &Board, s: &Stick) -> String {
    b.ok(&["export", "--to", s.dir.to_str().unwrap()])
}

/// Every name under `dir` is FAT-safe.
fn all_fat_safe(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(is_fat_safe(&n), "{n:?} in {}", dir.display());
        if e.file_type().unwrap().is_dir() {
            all_fat_safe(&e.path());
        }
    }
}

fn line_of<'a>(out: &'a str, strategy: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{strategy} ")))
        .unwrap_or_else(|| panic!("no {strategy} line in {out}"))
}

fn copied_total(out: &str) -> u64 {
    let l = out.lines().find(|l| l.starts_with("total: ")).unwrap();
    l.strip_prefix("total: copied ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{l}"))
}

#[test]
fn export_writes_a_complete_set_and_reexport_copies_only_what_changed() {
    let b = board("export-basic", "");
    let Some(s) = stick("export-basic", 64) else {
        return;
    };
    let out = export(&b, &s);
    let sets = complete_sets(&s.dir);
    assert_eq!(sets.len(), 1, "{out}");
    let m = check_set(&b, &s.dir, &sets[0]);
    assert_eq!(m.archives.len(), 4);
    assert_eq!(m.machine_id, MACHINE_ID);
    let app = m
        .archives
        .iter()
        .find(|a| a.strategy == "application")
        .unwrap();
    assert!(app.files.len() > 3, "several 64K parts: {:?}", app.files);
    all_fat_safe(&s.dir.join("rvm-backup"));
    verify_pool(&b, &s.dir);
    assert!(copied_total(&out) > 300_000, "{out}");
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(b.backups.join("state.json")).unwrap()).unwrap();
    assert_eq!(st["database"]["last_export_ok"], true);
    assert_eq!(st["database"]["last_export_set"], sets[0].as_str());

    // Nothing changed: nothing copied, a new set all the same.
    let again = export(&b, &s);
    assert_eq!(copied_total(&again), 0, "{again}");
    assert!(line_of(&again, "application").contains("already on the stick"));

    // One new backup: only that archive is copied.
    fs::write(b.root.join("etc/myrvm/plain.env"), b"A=2\n").unwrap();
    b.ok(&["backup", "config"]);
    let third = export(&b, &s);
    assert!(line_of(&third, "config").contains("copied"), "{third}");
    for other in ["database", "logs", "application"] {
        assert!(
            line_of(&third, other).contains("already on the stick"),
            "{third}"
        );
    }
    let sets = complete_sets(&s.dir);
    assert_eq!(sets.len(), 3, "export_keep defaults to 3");
    check_set(&b, &s.dir, sets.last().unwrap());
}

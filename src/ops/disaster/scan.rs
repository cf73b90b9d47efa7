//! Finding the recovery sets on a stick and choosing the one to restore.
//!
//! A set is *complete* when its `MANIFEST` exists, parses (the tag is
//! checked later, once a key is at hand), names the board and set
//! directories it lies in, and every file it names is on the stick as a
//! regular file of the size it says. Anything else is *incomplete*: it is
//! mentioned, never used.
//!
//! Invariants: the scan is bounded (boards, sets, directory entries,
//! manifest size); it never follows a symbolic link and never opens
//! anything but regular files; nothing on the stick is written.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{read_regular, Follow};
use crate::recovery_set::{
    self, manifest::MAX_MANIFEST_LEN, BoardIdentity, Manifest, MANIFEST_FILE, POOL_DIR,
    SEALED_KEY_FILE,
};

/// Most board directories looked at on one stick.
pub(crate) const MAX_BOARDS: usize = 64;
/// Most set directories looked at per board.
pub(crate) const MAX_SETS_PER_BOARD: usize = 256;
/// Most entries read from one directory of the stick.
const MAX_DIR_ENTRIES: usize = 4096;

/// One complete set (its manifest parsed, not yet authenticated).
#[derive(Clone, Debug)]
pub(crate) struct FoundSet {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The manifest file as read, for [`Manifest::open`].
    pub bytes: Vec<u8>,
}

/// One board's directory and its complete sets, oldest first.
#[derive(Debug)]
pub(crate) struct BoardSets {
    pub board: String,
    pub dir: PathBuf,
    pub complete: Vec<FoundSet>,
}

impl BoardSets {
    pub fn newest(&self) -> Option<&FoundSet> {
        self.complete.last()
    }

    pub fn pool(&self) -> PathBuf {
        self.dir.join(POOL_DIR)
    }

    fn describe(&self) -> String {
        match self.newest() {
            Some(s) => format!(
                "{} (hostname {:?}, machine id {}, newest set {})",
                self.board,
                s.manifest.hostname,
                if s.manifest.machine_id.is_empty() {
                    "unknown"
                } else {
                    &s.manifest.machine_id
                },
                s.manifest.set
            ),
            None => self.board.clone(),
        }
    }
}

/// What is on the stick.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Boards with at least one complete set, by name.
    pub boards: Vec<BoardSets>,
    /// One line per incomplete set or skipped entry, for the result.
    pub incomplete: Vec<String>,
}

/// Regular-directory names below `dir` (no symlinks), sorted, bounded.
fn subdirs(dir: &Path, keep: impl Fn(&str) -> bool) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)?.take(MAX_DIR_ENTRIES).flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if keep(&name) && e.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Scan `stick` for sets. Fails only when there is no `rvm-backup`
/// directory to scan.
pub(crate) fn scan(stick: &Path) -> Result<Scan, String> {
    let root = recovery_set::root(stick);
    let boards = subdirs(&root, recovery_set::is_fat_safe).map_err(|e| {
        format!(
            "there is no readable {} directory on {} ({e}): is the recovery stick mounted there, and was `export` run onto it?",
            recovery_set::ROOT_DIR,
            stick.display()
        )
    })?;
    let mut scan = Scan::default();
    if boards.len() > MAX_BOARDS {
        scan.incomplete.push(format!(
            "{} board directories; only the first {MAX_BOARDS} were looked at",
            boards.len()
        ));
    }
    for board in boards.into_iter().take(MAX_BOARDS) {
        let dir = root.join(&board);
        let sets = match subdirs(&dir, recovery_set::is_set_name) {
            Ok(s) => s,
            Err(e) => {
                scan.incomplete
                    .push(format!("{board}: cannot read its directory ({e})"));
                continue;
            }
        };
        let skip = sets.len().saturating_sub(MAX_SETS_PER_BOARD);
        let mut found = BoardSets {
            board: board.clone(),
            dir: dir.clone(),
            complete: Vec::new(),
        };
        // Sets are named by time: the newest are last; keep those.
        for set in sets.into_iter().skip(skip) {
            match check_set(&dir, &board, &set) {
                Ok(s) => found.complete.push(s),
                Err(why) => scan
                    .incomplete
                    .push(format!("{board}/{set} is incomplete, not used: {why}")),
            }
        }
        if !found.complete.is_empty() {
            scan.boards.push(found);
        }
    }
    Ok(scan)
}

/// Whether one set is complete; why not.
fn check_set(board_dir: &Path, board: &str, set: &str) -> Result<FoundSet, String> {
    let dir = board_dir.join(set);
    let path = dir.join(MANIFEST_FILE);
    let bytes = match read_regular(&path, MAX_MANIFEST_LEN, Follow::No) {
        Ok((_, b)) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("it has no MANIFEST (an export was interrupted before it finished)".into())
        }
        Err(e) => return Err(format!("its MANIFEST cannot be read ({e})")),
    };
    let (manifest, _, _) = Manifest::parse(&bytes).map_err(|e| e.to_string())?;
    if manifest.board != board || manifest.set != set {
        return Err(format!(
            "its MANIFEST describes {}/{}, not this directory",
            manifest.board, manifest.set
        ));
    }
    let pool = board_dir.join(POOL_DIR);
    let mut files: Vec<(PathBuf, u64, &str)> = manifest
        .archives
        .iter()
        .flat_map(|a| &a.files)
        .map(|f| (pool.join(&f.name), f.bytes, f.name.as_str()))
        .collect();
    if let Some(f) = &manifest.sealed_key {
        files.push((dir.join(SEALED_KEY_FILE), f.bytes, SEALED_KEY_FILE));
    }
    for (path, bytes, name) in files {
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.size() == bytes => {}
            Ok(m) if m.is_file() => {
                return Err(format!(
                    "{name} is {} bytes, the manifest says {bytes}",
                    m.size()
                ))
            }
            Ok(m) => {
                return Err(format!(
                    "{name} is {}, not a file",
                    crate::fsutil::describe_type(m.file_type())
                ))
            }
            Err(e) => return Err(format!("{name} is missing ({e})")),
        }
    }
    Ok(FoundSet {
        dir,
        manifest,
        bytes,
    })
}

/// The board whose sets to restore (see `ops::disaster` for the rule),
/// or why none can be chosen.
pub(crate) fn choose_board<'a>(
    scan: &'a Scan,
    me: &BoardIdentity,
) -> Result<&'a BoardSets, String> {
    match scan.boards.as_slice() {
        [] => {
            return Err(if scan.incomplete.is_empty() {
                "the stick holds no recovery set: run `export` onto it on a working board first"
                    .into()
            } else {
                "the stick holds no complete recovery set (see the notes below)".into()
            })
        }
        [only] => return Ok(only),
        _ => {}
    }
    let unique = |matches: Vec<&'a BoardSets>| match matches.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    if !me.machine_id.is_empty() {
        let by_id = scan
            .boards
            .iter()
            .filter(|b| {
                b.complete
                    .iter()
                    .any(|s| s.manifest.machine_id == me.machine_id)
            })
            .collect();
        if let Some(b) = unique(by_id) {
            return Ok(b);
        }
    }
    if !me.hostname.is_empty() {
        let by_host = scan
            .boards
            .iter()
            .filter(|b| {
                b.newest()
                    .is_some_and(|s| s.manifest.hostname == me.hostname)
            })
            .collect();
        if let Some(b) = unique(by_host) {
            return Ok(b);
        }
    }
    let listed: Vec<String> = scan.boards.iter().map(BoardSets::describe).collect();
    Err(format!(
        "the stick holds sets of {} boards and none matches this board (hostname {:?}, machine id {}): {}. Nothing was restored. Use a stick that holds only this board's sets (copy one board's directory under {}/ onto an empty stick), or set this board's hostname to the one wanted",
        scan.boards.len(),
        me.hostname,
        if me.machine_id.is_empty() { "unknown" } else { &me.machine_id },
        listed.join("; "),
        recovery_set::ROOT_DIR
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery_set::{ManifestArchive, ManifestFile};

    fn manifest(board: &str, set: &str, host: &str, mid: &str) -> Manifest {
        Manifest {
            version: 1,
            set: set.into(),
            board: board.into(),
            hostname: host.into(),
            machine_id: mid.into(),
            tool_version: "0.1.0".into(),
            created: 1_795_000_000,
            encrypted: false,
            key_id: None,
            recovery_key_id: None,
            sealed_key: None,
            archives: vec![ManifestArchive {
                strategy: "config".into(),
                id: "config-20261126T140000Z-a1b2c3".into(),
                created: 1_794_999_000,
                entries: 1,
                content_bytes: 5,
                files: vec![ManifestFile {
                    name: "config/config-20261126T140000Z-a1b2c3.meta".into(),
                    bytes: 5,
                    sha256: "ab".repeat(32),
                }],
            }],
        }
    }

    fn write_set(stick: &Path, m: &Manifest) {
        let bd = recovery_set::root(stick).join(&m.board);
        fs::create_dir_all(bd.join(&m.set)).unwrap();
        fs::create_dir_all(bd.join("pool/config")).unwrap();
        fs::write(
            bd.join("pool/config/config-20261126T140000Z-a1b2c3.meta"),
            b"12345",
        )
        .unwrap();
        fs::write(bd.join(&m.set).join(MANIFEST_FILE), m.seal(None)).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-scan-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const MID_A: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";
    const MID_B: &str = "aaaaaaaaaaaa404aaa1f6d2a48adfda4";

    fn me(host: &str, mid: &str) -> BoardIdentity {
        BoardIdentity {
            hostname: host.into(),
            machine_id: mid.into(),
        }
    }

    #[test]
    fn newest_complete_set_and_incomplete_ones_noted() {
        let d = scratch("newest");
        write_set(&d, &manifest("a-1", "set-20261126T150000Z", "a", MID_A));
        write_set(&d, &manifest("a-1", "set-20261127T150000Z", "a", MID_A));
        // Newer but without MANIFEST: an interrupted export.
        fs::create_dir_all(recovery_set::root(&d).join("a-1/set-20261128T150000Z")).unwrap();
        // Newer, but a pool file has the wrong size.
        let mut bad = manifest("a-1", "set-20261129T150000Z", "a", MID_A);
        bad.archives[0].files[0].bytes = 6;
        write_set(&d, &bad);
        let s = scan(&d).unwrap();
        assert_eq!(s.boards.len(), 1);
        let b = choose_board(&s, &me("new-host", "")).unwrap();
        assert_eq!(b.newest().unwrap().manifest.set, "set-20261127T150000Z");
        assert_eq!(s.incomplete.len(), 2, "{:?}", s.incomplete);
        assert!(s.incomplete[0].contains("no MANIFEST"));
        assert!(s.incomplete[1].contains("6"), "{:?}", s.incomplete);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_manifest_in_the_wrong_directory_is_not_used() {
        let d = scratch("moved");
        let m = manifest("a-1", "set-20261126T150000Z", "a", MID_A);
        write_set(&d, &m);
        let root = recovery_set::root(&d);
        fs::create_dir_all(root.join("b-2/set-20261126T150000Z")).unwrap();
        fs::copy(
            root.join("a-1/set-20261126T150000Z/MANIFEST"),
            root.join("b-2/set-20261126T150000Z/MANIFEST"),
        )
        .unwrap();
        let s = scan(&d).unwrap();
        assert_eq!(s.boards.len(), 1);
        assert!(
            s.incomplete[0].contains("describes a-1"),
            "{:?}",
            s.incomplete
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn board_choice() {
        let d = scratch("choice");
        assert!(scan(&d).unwrap_err().contains("no readable rvm-backup"));
        fs::create_dir_all(recovery_set::root(&d)).unwrap();
        assert!(choose_board(&scan(&d).unwrap(), &me("x", ""))
            .unwrap_err()
            .contains("no recovery set"));
        write_set(&d, &manifest("a-1", "set-20261126T150000Z", "a", MID_A));
        write_set(&d, &manifest("b-2", "set-20261126T150000Z", "b", MID_B));
        let s = scan(&d).unwrap();
        assert_eq!(choose_board(&s, &me("zzz", MID_B)).unwrap().board, "b-2");
        assert_eq!(choose_board(&s, &me("a", "")).unwrap().board, "a-1");
        let e = choose_board(&s, &me("c", "cccccccccccc404aaa1f6d2a48adfda4")).unwrap_err();
        assert!(
            e.contains("a-1") && e.contains("b-2") && e.contains("none matches"),
            "{e}"
        );
        // Same hostname on both: not unique, refused.
        write_set(&d, &manifest("c-3", "set-20261126T150000Z", "a", ""));
        let s = scan(&d).unwrap();
        assert!(choose_board(&s, &me("a", "")).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}

//! The backup directory: layout, names, the run lock, leftovers, listing.
//!
//! Layout: `backup_dir/<strategy>/<id>.NNN.rvb` (archive parts) and
//! `backup_dir/<strategy>/<id>.meta` (the sidecar), where the id is
//! `<strategy>-<YYYYMMDDTHHMMSSZ>-<6 hex>`: only `[A-Za-z0-9._-]`, FAT-safe.
//!
//! Invariants:
//! - an archive exists exactly when its sidecar does: parts are published
//!   first, the sidecar last; pruning removes the sidecar first;
//! - only the holder of `backup_dir/.lock` writes or deletes; a second run
//!   fails at once with a message naming the holder's pid;
//! - at lock time, temporary files and parts without a sidecar (what a killed
//!   run leaves) are removed; only names this program writes, with an id of
//!   that directory's strategy, and only regular files.

pub mod parts;
pub mod spill;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::crypto::KeyRing;
use crate::error::{msg, Error, IoContext, Result};
use crate::format::header::Header;
use crate::format::sidecar::{self, Meta};
use crate::fsutil::{read_regular, Follow, TMP_SUFFIX};
use crate::strategy::Strategy;

pub const SIDECAR_EXT: &str = ".meta";
pub const PART_EXT: &str = ".rvb";
const LOCK_FILE: &str = ".lock";

pub struct Store {
    root: PathBuf,
    /// Refuse unencrypted archives (their tags are plain SHA-256 that
    /// anyone can forge) when the board encrypts.
    require_encryption: bool,
}

/// Proof that this process holds the store lock; released on drop.
pub struct StoreLock {
    _file: File,
}

/// One archive as its sidecar describes it.
#[derive(Clone, Debug)]
pub struct Listed {
    pub meta: Meta,
    pub header: Header,
    pub dir: PathBuf,
}

impl Listed {
    pub fn sidecar_path(&self) -> PathBuf {
        self.dir.join(format!("{}{SIDECAR_EXT}", self.meta.id))
    }

    /// What `list --json` prints and the socket's `LIST` returns.
    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.meta;
        let first_part = m
            .parts
            .first()
            .map(|p| self.dir.join(&p.name).display().to_string())
            .unwrap_or_default();
        serde_json::json!({
            "id": m.id,
            "strategy": m.strategy.name(),
            "created": crate::timefmt::rfc3339(m.created),
            "bytes": m.archive_bytes,
            "files": m.files,
            "path": first_part,
            "sidecar": self.sidecar_path().display().to_string(),
            "parts": m.parts.len(),
            "content_bytes": m.content_bytes,
            "dirs": m.dirs,
            "symlinks": m.symlinks,
            "skipped": m.skipped,
            "changed_while_read": m.changed_while_read,
            "duration_ms": m.duration_ms,
            "encrypted": m.encrypted,
            "compressed": m.compressed,
            "key_id": m.key_id.to_string(),
            "host": m.host,
            "hardlinks": m.hardlinks,
            "db_check": m.db_check,
            "parent": m.parent,
        })
    }
}

/// The outcome of reading all sidecars: good archives and unreadable ones.
pub struct Listing {
    pub archives: Vec<Listed>,
    pub problems: Vec<(PathBuf, Error)>,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
            require_encryption: false,
        }
    }

    /// The store of a config: with `encryption_enabled`, only encrypted
    /// (authenticated) archives are accepted.
    pub fn for_config(cfg: &crate::config::Config) -> Store {
        Store {
            root: cfg.backup_dir.clone(),
            require_encryption: cfg.encryption_enabled,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn strategy_dir(&self, s: Strategy) -> PathBuf {
        self.root.join(s.name())
    }

    /// Take the run lock (creating the directory tree), then clean up what
    /// a killed run left behind.
    pub fn lock(&self) -> Result<StoreLock> {
        fs::create_dir_all(&self.root).at("create backup directory", &self.root)?;
        let path = self.root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::NONBLOCK
                    | rustix::fs::OFlags::CLOEXEC)
                    .bits() as i32,
            )
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    msg(format!(
                        "lock file {} is a symbolic link, which is refused: remove it",
                        path.display()
                    ))
                } else {
                    Error::Io {
                        what: format!("cannot open lock {}", path.display()),
                        source: e,
                    }
                }
            })?;
        let meta = file.metadata().at("read lock", &path)?;
        if !meta.is_file() {
            return Err(msg(format!(
                "lock file {} is {}, not a regular file: remove it",
                path.display(),
                crate::fsutil::describe_type(meta.file_type())
            )));
        }
        if let Err(e) = file.try_lock() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(match e {
                fs::TryLockError::WouldBlock => msg(format!(
                    "another rvm-backup run (pid {}) is working on {}; wait for it to finish",
                    holder.trim(),
                    self.root.display()
                )),
                fs::TryLockError::Error(e) => Error::Io {
                    what: format!("cannot lock {}", path.display()),
                    source: e,
                },
            });
        }
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        for s in Strategy::ALL {
            let dir = self.strategy_dir(s);
            fs::create_dir_all(&dir).at("create", &dir)?;
            clean_leftovers(s, &dir)?;
        }
        Ok(StoreLock { _file: file })
    }

    /// Read every sidecar (of one strategy, or all), oldest first.
    pub fn list(&self, only: Option<Strategy>, key: Option<&KeyRing>) -> Listing {
        let mut listing = Listing {
            archives: Vec::new(),
            problems: Vec::new(),
        };
        self.visit(only, key, |found| match found {
            Ok(a) => listing.archives.push(a),
            Err((path, e)) => listing.problems.push((path, e)),
        });
        listing
            .archives
            .sort_by_key(|a| (a.meta.created, a.meta.created_nanos, a.meta.id.clone()));
        listing
    }

    /// Read every sidecar (of one strategy, or all) and hand each to `f`
    /// at once, as an archive or as the sidecar's path and why it could
    /// not be read: in file-name order per strategy, not sorted by age.
    /// Only one sidecar is held at a time (plus one directory's names),
    /// for callers that fold the store into a few figures (metrics).
    pub fn visit(
        &self,
        only: Option<Strategy>,
        key: Option<&KeyRing>,
        mut f: impl FnMut(std::result::Result<Listed, (PathBuf, Error)>),
    ) {
        for s in Strategy::ALL
            .into_iter()
            .filter(|s| only.is_none_or(|o| o == *s))
        {
            let dir = self.strategy_dir(s);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for name in sorted_names(entries) {
                if !name.ends_with(SIDECAR_EXT) {
                    continue;
                }
                let path = dir.join(&name);
                match read_sidecar(&path, key).and_then(|(h, m)| self.check_listed(s, &name, h, m))
                {
                    Ok((header, meta)) => f(Ok(Listed {
                        meta,
                        header,
                        dir: dir.clone(),
                    })),
                    Err(e) => f(Err((path, e))),
                }
            }
        }
    }
}

impl Store {
    /// The newest `n` archives of strategy `s` (oldest first), the number
    /// of archives its directory holds, and the chosen sidecars that could
    /// not be read. Reads only those `n` sidecars: ids sort by their UTC
    /// time, so the names alone say which are newest (the monitor's
    /// bounded look at the store).
    pub fn newest(
        &self,
        s: Strategy,
        n: usize,
        key: Option<&KeyRing>,
    ) -> (Vec<Listed>, usize, Vec<(PathBuf, Error)>) {
        let dir = self.strategy_dir(s);
        let Ok(entries) = fs::read_dir(&dir) else {
            return (Vec::new(), 0, Vec::new());
        };
        let ids: Vec<String> = sorted_names(entries)
            .into_iter()
            .filter_map(|name| name.strip_suffix(SIDECAR_EXT).map(str::to_string))
            .filter(|id| is_archive_id(s, id))
            .collect();
        let count = ids.len();
        let mut archives = Vec::new();
        let mut problems = Vec::new();
        for id in &ids[count.saturating_sub(n)..] {
            let name = format!("{id}{SIDECAR_EXT}");
            let path = dir.join(&name);
            match read_sidecar(&path, key).and_then(|(h, m)| self.check_listed(s, &name, h, m)) {
                Ok((header, meta)) => archives.push(Listed {
                    meta,
                    header,
                    dir: dir.clone(),
                }),
                Err(e) => problems.push((path, e)),
            }
        }
        archives.sort_by_key(|a| (a.meta.created, a.meta.created_nanos, a.meta.id.clone()));
        (archives, count, problems)
    }
}

impl Store {
    /// A sidecar may only describe itself: its own strategy, its own file
    /// name, and parts named `<id>.NNN.rvb` in order, in its directory (a
    /// forged part name like `../../etc/passwd` would make prune delete it).
    fn check_listed(
        &self,
        s: Strategy,
        file_name: &str,
        header: Header,
        meta: Meta,
    ) -> Result<(Header, Meta)> {
        let own_parts = meta
            .parts
            .iter()
            .enumerate()
            .all(|(n, p)| p.name == parts::part_name(&meta.id, n));
        let safe_id = !meta.id.is_empty()
            && meta
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if meta.strategy != s
            || format!("{}{SIDECAR_EXT}", meta.id) != file_name
            || !own_parts
            || !safe_id
        {
            return Err(msg("sidecar does not describe this archive (wrong name, strategy or part names); refusing it"));
        }
        if self.require_encryption && !header.encrypted() {
            return Err(msg(
                "archive is not encrypted, but encryption_enabled is on: its plain SHA-256 tags can be forged; refusing it (set encryption_enabled = false to read it on purpose)",
            ));
        }
        Ok((header, meta))
    }
}

/// Read and authenticate one sidecar. It is opened without following a
/// symlink and without blocking (`O_NOFOLLOW|O_NONBLOCK`), must be a regular
/// file, and at most `MAX_SIDECAR_LEN + 1` bytes are ever read, so a FIFO, a
/// device or a huge file in `backup_dir` is one clear problem, not a hang.
pub fn read_sidecar(path: &Path, key: Option<&KeyRing>) -> Result<(Header, Meta)> {
    let (_, bytes) = read_regular(path, sidecar::MAX_SIDECAR_LEN, Follow::No)
        .ctx(|| format!("cannot read sidecar {}", path.display()))?;
    let id = path
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(SIDECAR_EXT)
                .to_string()
        })
        .unwrap_or_default();
    sidecar::decode(&bytes, key).map_err(|source| Error::Archive { id, source })
}

fn sorted_names(entries: fs::ReadDir) -> Vec<String> {
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Whether `id` is an archive id of strategy `s`:
/// `<strategy>-<YYYYMMDDTHHMMSSZ>-<6 lowercase hex>`.
pub fn is_archive_id(s: Strategy, id: &str) -> bool {
    let Some(rest) = id.strip_prefix(s.name()).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let b = rest.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 16 + 1 + 6
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..15)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// What a leftover file name is, if this program could have written it:
/// the archive id it belongs to and whether it is a published part (which
/// is a leftover only without its sidecar) or a temporary (always one).
fn leftover_kind(s: Strategy, name: &str) -> Option<(&str, bool)> {
    fn part_of(n: &str) -> Option<&str> {
        let (id, num) = n.strip_suffix(PART_EXT)?.rsplit_once('.')?;
        (num.len() >= 3 && num.bytes().all(|c| c.is_ascii_digit())).then_some(id)
    }
    let (id, is_part) = if let Some(t) = name.strip_suffix(TMP_SUFFIX) {
        let id = t
            .strip_suffix(SIDECAR_EXT)
            .or_else(|| t.strip_suffix(".index"))
            .or_else(|| part_of(t))?;
        (id, false)
    } else {
        (part_of(name)?, true)
    };
    is_archive_id(s, id).then_some((id, is_part))
}

/// Remove what an interrupted run of strategy `s` left in its directory:
/// `<id>.NNN.rvb` parts without a `<id>.meta`, and the temporaries
/// `<id>.NNN.rvb.tmp`, `<id>.meta.tmp`, `<id>.index.tmp`, where `<id>` is an
/// id of this strategy, and only regular files (looked at with lstat, no
/// symlink followed). Anything else, whatever its name, is left alone: the
/// directory may hold files this program never wrote.
fn clean_leftovers(s: Strategy, dir: &Path) -> Result<()> {
    let names = sorted_names(fs::read_dir(dir).at("read", dir)?);
    let mut removed = false;
    for name in &names {
        let Some((id, is_part)) = leftover_kind(s, name) else {
            if name.ends_with(TMP_SUFFIX) || name.ends_with(PART_EXT) {
                log::debug!(
                    "leaving {} alone: not a name rvm-backup writes",
                    dir.join(name).display()
                );
            }
            continue;
        };
        if is_part && names.contains(&format!("{id}{SIDECAR_EXT}")) {
            continue;
        }
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(m) => {
                log::debug!(
                    "leaving {} alone: it is {}",
                    path.display(),
                    crate::fsutil::describe_type(m.file_type())
                );
                continue;
            }
            Err(_) => continue,
        }
        log::info!(
            "removing leftover of an interrupted run: {}",
            path.display()
        );
        fs::remove_file(&path).at("remove leftover", &path)?;
        removed = true;
    }
    if removed {
        crate::fsutil::sync_dir(dir)?;
    }
    Ok(())
}

/// A new archive id: strategy, UTC start time, 6 random hex digits.
pub fn new_id(strategy: Strategy, created: i64) -> Result<String> {
    let mut r = [0u8; 3];
    crate::crypto::fill_random(&mut r).ctx(|| "cannot get random bytes".into())?;
    Ok(format!(
        "{}-{}-{:02x}{:02x}{:02x}",
        strategy.name(),
        crate::timefmt::compact(created),
        r[0],
        r[1],
        r[2]
    ))
}

/// Pick the archive an id or unique id prefix names.
pub fn resolve<'a>(archives: &'a [Listed], wanted: &str) -> Result<&'a Listed> {
    if let Some(exact) = archives.iter().find(|a| a.meta.id == wanted) {
        return Ok(exact);
    }
    let matches: Vec<&Listed> = archives
        .iter()
        .filter(|a| a.meta.id.starts_with(wanted))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(msg(format!(
            "no archive with id {wanted:?}; see `rvm-backup list`"
        ))),
        many => Err(msg(format!(
            "id prefix {wanted:?} matches {} archives ({} …); give more of the id",
            many.len(),
            many[0].meta.id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_are_leftovers() {
        let id = "config-20261124T150000Z-0a1b2c";
        assert!(is_archive_id(Strategy::Config, id));
        assert!(!is_archive_id(Strategy::Logs, id));
        assert!(!is_archive_id(
            Strategy::Config,
            "config-20261124T150000Z-0A1B2C"
        ));
        assert!(!is_archive_id(
            Strategy::Config,
            "config-2026112XT150000Z-0a1b2c"
        ));
        assert!(!is_archive_id(
            Strategy::Config,
            "config-20261124T150000Z-0a1b2c0"
        ));
        let s = Strategy::Config;
        assert_eq!(leftover_kind(s, &format!("{id}.000.rvb")), Some((id, true)));
        assert_eq!(
            leftover_kind(s, &format!("{id}.1000.rvb")),
            Some((id, true))
        );
        for t in [".000.rvb.tmp", ".meta.tmp", ".index.tmp"] {
            assert_eq!(
                leftover_kind(s, &format!("{id}{t}")),
                Some((id, false)),
                "{t}"
            );
        }
        for other in [
            "foo.tmp",
            "x.rvb",
            "notes.meta.tmp",
            "x.000.rvb",
            "state.json.tmp",
            &format!("{id}.meta"),
            &format!("{id}.00.rvb"),
            &format!("{id}.0a0.rvb"),
            &format!("{id}.rvb"),
            &format!("{id}.tmp"),
            &format!("{id}.000.rvb.bak"),
            "logs-20261124T150000Z-0a1b2c.000.rvb",
        ] {
            assert_eq!(leftover_kind(s, other), None, "{other}");
        }
    }

    #[test]
    fn a_lock_symlink_is_refused_and_its_target_untouched() {
        let d = std::env::temp_dir().join(format!("rvb-store-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let root = d.join("backups");
        fs::create_dir_all(&root).unwrap();
        let victim = d.join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, root.join(LOCK_FILE)).unwrap();
        let e = Store::new(&root).lock().err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        fs::remove_file(root.join(LOCK_FILE)).unwrap();
        crate::fsutil::make_fifo(&root.join(LOCK_FILE));
        let e = Store::new(&root).lock().err().unwrap().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        fs::remove_file(root.join(LOCK_FILE)).unwrap();
        drop(Store::new(&root).lock().unwrap());
        fs::remove_dir_all(&d).unwrap();
    }
}

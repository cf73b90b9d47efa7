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
//!   run leaves) are removed.

pub mod parts;
pub mod spill;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::crypto::MasterKey;
use crate::error::{msg, Error, IoContext, Result};
use crate::format::header::Header;
use crate::format::sidecar::{self, Meta};
use crate::fsutil::TMP_SUFFIX;
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
            .open(&path)
            .at("open lock", &path)?;
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
            clean_leftovers(&dir)?;
        }
        Ok(StoreLock { _file: file })
    }

    /// Read every sidecar (of one strategy, or all), oldest first.
    pub fn list(&self, only: Option<Strategy>, key: Option<&MasterKey>) -> Listing {
        let mut listing = Listing {
            archives: Vec::new(),
            problems: Vec::new(),
        };
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
                    Ok((header, meta)) => listing.archives.push(Listed {
                        meta,
                        header,
                        dir: dir.clone(),
                    }),
                    Err(e) => listing.problems.push((path, e)),
                }
            }
        }
        listing
            .archives
            .sort_by_key(|a| (a.meta.created, a.meta.created_nanos, a.meta.id.clone()));
        listing
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

pub fn read_sidecar(path: &Path, key: Option<&MasterKey>) -> Result<(Header, Meta)> {
    let len = fs::metadata(path).at("read", path)?.len();
    if len > sidecar::MAX_SIDECAR_LEN as u64 {
        return Err(msg(format!(
            "{} is too large to be a sidecar",
            path.display()
        )));
    }
    let bytes = fs::read(path).at("read", path)?;
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

/// Remove temporaries and parts whose sidecar was never published.
fn clean_leftovers(dir: &Path) -> Result<()> {
    let names = sorted_names(fs::read_dir(dir).at("read", dir)?);
    let mut removed = false;
    for name in &names {
        let orphan_part = name.ends_with(PART_EXT) && {
            let id = name
                .trim_end_matches(PART_EXT)
                .rsplit_once('.')
                .map_or("", |(id, _)| id);
            !names.contains(&format!("{id}{SIDECAR_EXT}"))
        };
        if name.ends_with(TMP_SUFFIX) || orphan_part {
            let path = dir.join(name);
            log::info!(
                "removing leftover of an interrupted run: {}",
                path.display()
            );
            fs::remove_file(&path).at("remove leftover", &path)?;
            removed = true;
        }
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

//! Phase 1: put every entry on disk under a temporary name beside its
//! destination, by descriptor, and journal it.
//!
//! The stage holds one open directory per restore root (the `--target`
//! directory, or for an in-place restore the parent of each source root)
//! and a stack of open directories from that root down to the current
//! one. It moves down one component at a time with `openat(O_DIRECTORY |
//! O_NOFOLLOW)` (`mkdirat` when missing) and creates staged files with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` inside the directory's descriptor; owner,
//! mode and time go through the file's own descriptor. No path string
//! below a root is ever resolved again, so a directory swapped for a
//! symlink mid-restore makes the restore fail instead of writing elsewhere.
//!
//! Invariants: every name created is journaled (with its device and inode)
//! before anything else can fail, so undo finds it; the directory stack is
//! bounded by [`MAX_DEPTH`]; entries of a full restore must come in
//! canonical order ([`super::order`]); nothing is renamed over a
//! destination here.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::journal::{FileKey, Journal, Kind, Rec};
use super::order::Order;
use super::sparse::SparseWriter;
use super::Restored;
use crate::error::{msg, Error, IoContext, Result};
use crate::format::record::STATUS_CHANGED;
use crate::format::{ArchiveReader, EntryHeader, EntryKind, FormatError};
use crate::progress::Progress;
use crate::safefs::{self, Dir, Found};
use crate::store::parts::PartReader;

/// Deepest directory nesting a restore follows (one descriptor per level),
/// counted from the restore root. The same limit the backup walker applies
/// to the whole absolute path (see `MAX_DIR_DEPTH`), so whatever backup
/// stores is within it both in place and with `--target`.
pub const MAX_DEPTH: usize = crate::format::record::MAX_DIR_DEPTH;

/// The incremental links a staged full database image is brought up to
/// (see [`crate::chain::db::apply_links`]).
#[derive(Clone, Copy)]
pub(super) struct Links<'a> {
    pub links: &'a [&'a crate::store::Listed],
    pub key: Option<&'a crate::crypto::KeyRing>,
    pub page_size: u32,
}

pub(super) struct RootDir {
    pub path: PathBuf,
    pub dir: Dir,
}

pub(super) struct Level {
    pub name: Vec<u8>,
    pub dir: Dir,
}

/// Everything phase 1 put on disk, so it can be published or undone.
pub struct Stage {
    pub(super) id: String,
    pub(super) target: Option<PathBuf>,
    pub(super) sources: Vec<Vec<u8>>,
    pub(super) accept_damaged: bool,
    pub(super) roots: Vec<Option<RootDir>>,
    /// Directories above a restore root that this restore created (by
    /// path: they are on the operator's own path to the root).
    pub(super) created_root_dirs: Vec<PathBuf>,
    pub(super) cur_root: Option<usize>,
    pub(super) stack: Vec<Level>,
    pub(super) journal: Journal,
    /// Staged names made so far (a cell: taken while a directory of the
    /// stage is borrowed).
    pub(super) counter: std::cell::Cell<u64>,
    /// Random per restore, in every staged name, so that nobody can
    /// predict the names and pre-create them to block the restore.
    pub(super) token: u64,
    /// One directory per file system touched, for `syncfs`.
    pub(super) devs: Vec<Dir>,
    pub(super) order: Order,
    /// Set once publishing succeeded: nothing is left to undo.
    pub(super) finished: bool,
    /// Every sync of the restore goes through this ([`super::durable`]).
    pub(super) flush: Box<dyn super::durable::Flush>,
    /// Staged database images' integrity checks still running on their
    /// own threads; [`Stage::checked`] waits for them, and publishing
    /// begins with it.
    pub(super) pending: Vec<super::database::PendingCheck>,
}

/// The staged name number `n` of the restore with `token`. Keeps the
/// `.rvm-restore-` prefix and `.tmp` suffix the documented cleanup
/// (`find -name '.rvm-restore-*.tmp'`) matches.
pub fn tmp_name(token: u64, n: u64) -> Vec<u8> {
    format!(".rvm-restore-{}-{token:016x}-{n}.tmp", std::process::id()).into_bytes()
}

/// How many fresh names staging tries when a name is already taken (by
/// someone else's file: the names are random, so a clash is hostile or
/// astronomically unlikely).
const TMP_ATTEMPTS: u32 = 8;

/// Make a staged name in `dir` with `create`, trying fresh names when one
/// exists already; returns its number, name and what `create` returned.
fn create_tmp<T>(
    counter: &std::cell::Cell<u64>,
    token: u64,
    dir: &Dir,
    mut create: impl FnMut(&Dir, &[u8]) -> std::io::Result<T>,
) -> std::io::Result<(u64, Vec<u8>, T)> {
    let mut attempt = 0;
    loop {
        let n = counter.get() + 1;
        counter.set(n);
        let name = tmp_name(token, n);
        match create(dir, &name) {
            Ok(t) => return Ok((n, name, t)),
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists && attempt + 1 < TMP_ATTEMPTS =>
            {
                log::debug!(
                    "staging name {} exists already; trying another",
                    show(&name)
                );
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Database => "database",
        EntryKind::HardLink => "hard link",
        EntryKind::WalSegment => "WAL segment",
        EntryKind::Stored => "file (stored earlier)",
        EntryKind::DbPages => "database (changed pages)",
        EntryKind::DbDigests => "page digests",
    }
}

impl Stage {
    pub fn new(
        id: &str,
        sources: &[String],
        target: Option<&Path>,
        accept_damaged: bool,
    ) -> Result<Stage> {
        let mut token = [0u8; 8];
        crate::crypto::fill_random(&mut token).ctx(|| "cannot get random bytes".into())?;
        Ok(Stage {
            id: id.to_string(),
            target: target.map(Path::to_path_buf),
            sources: sources.iter().map(|s| s.as_bytes().to_vec()).collect(),
            accept_damaged,
            roots: sources.iter().map(|_| None).collect(),
            created_root_dirs: Vec::new(),
            cur_root: None,
            stack: Vec::new(),
            journal: Journal::new(),
            counter: std::cell::Cell::new(0),
            token: u64::from_le_bytes(token),
            devs: Vec::new(),
            order: Order::default(),
            finished: false,
            flush: Box::new(super::durable::Kernel),
            pending: Vec::new(),
        })
    }

    /// Wait for every staged image's integrity check: the first failure,
    /// or Ok once all passed. Nothing staged is published before this.
    pub(crate) async fn checked(&mut self) -> Result<()> {
        for p in std::mem::take(&mut self.pending) {
            p.wait().await?;
        }
        Ok(())
    }

    pub(super) fn arch(&self, source: FormatError) -> Error {
        Error::Archive {
            id: self.id.clone(),
            source,
        }
    }

    /// Index of the source an archive path lies in.
    pub(super) fn source_of(&self, path: &[u8]) -> Result<usize> {
        self.sources
            .iter()
            .position(|s| {
                path == s.as_slice()
                    || path.len() > s.len()
                        && path.starts_with(s)
                        && (path[s.len()] == b'/' || s.as_slice() == b"/")
            })
            .ok_or_else(|| {
                msg(format!(
                    "archive entry {} is outside the archive's sources; refusing it",
                    show(path)
                ))
            })
    }

    /// The restore root of source `i` and the components of `path` below it.
    fn split<'p>(&self, i: usize, path: &'p [u8]) -> Result<(PathBuf, Vec<&'p [u8]>)> {
        let s = &self.sources[i];
        let (root, below): (PathBuf, &[u8]) = match &self.target {
            Some(t) => (t.clone(), &path[1..]),
            None => {
                let cut = s.iter().rposition(|&c| c == b'/').unwrap_or(0);
                let root = if cut == 0 { &b"/"[..] } else { &s[..cut] };
                (
                    PathBuf::from(std::ffi::OsStr::from_bytes(root)),
                    path.get(cut + 1..).unwrap_or_default(),
                )
            }
        };
        let comps: Vec<&[u8]> = below
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        if comps.is_empty() {
            return Err(msg(format!(
                "archive entry {} is the restore root itself; refusing it",
                show(path)
            )));
        }
        Ok((root, comps))
    }

    fn note_dev(&mut self, dir: &Dir) -> Result<()> {
        if !self.devs.iter().any(|d| d.dev == dir.dev) {
            self.devs.push(
                dir.try_clone()
                    .ctx(|| "cannot duplicate a directory descriptor".into())?,
            );
        }
        Ok(())
    }

    /// Open (creating it if needed) the restore root of source `i`, and
    /// make it the current one.
    fn enter_root(&mut self, i: usize, root: PathBuf) -> Result<()> {
        if self.roots[i].is_none() {
            let shared = self
                .roots
                .iter()
                .flatten()
                .find(|r| r.path == root)
                .map(|r| r.dir.try_clone())
                .transpose()
                .at("open", &root)?;
            let dir = match shared {
                Some(d) => d,
                None => {
                    let mut missing = Vec::new();
                    for a in root.ancestors().filter(|a| !a.as_os_str().is_empty()) {
                        match std::fs::symlink_metadata(a) {
                            Ok(_) => break,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                missing.push(a.to_path_buf())
                            }
                            Err(e) => return Err(e).at("inspect", a),
                        }
                    }
                    for d in missing.into_iter().rev() {
                        std::fs::create_dir(&d).at("create directory", &d)?;
                        self.created_root_dirs.push(d);
                    }
                    Dir::open_path(&root).at("open directory", &root)?
                }
            };
            self.journal
                .spill_into(&dir)
                .ctx(|| format!("cannot use {} for restoring", root.display()))?;
            self.note_dev(&dir)?;
            self.roots[i] = Some(RootDir { path: root, dir });
        }
        if self.cur_root != Some(i) {
            self.stack.clear();
            self.cur_root = Some(i);
            self.push(&Rec::Root { index: i as u32 })?;
        }
        Ok(())
    }

    pub(super) fn push(&mut self, rec: &Rec) -> Result<()> {
        self.journal.push(rec).ctx(|| {
            "cannot write the restore journal (a temporary file in the restore root)".into()
        })
    }

    /// The directory the stack ends in (the root when it is empty).
    fn top(&self) -> Result<&Dir> {
        if let Some(l) = self.stack.last() {
            return Ok(&l.dir);
        }
        self.cur_root
            .and_then(|i| self.roots[i].as_ref())
            .map(|r| &r.dir)
            .ok_or_else(|| msg("internal error: restore root not open"))
    }

    /// How a name in the current directory reads to an operator.
    fn shown(&self, name: &[u8]) -> PathBuf {
        let mut p = self
            .cur_root
            .and_then(|i| self.roots[i].as_ref())
            .map(|r| r.path.clone())
            .unwrap_or_default();
        for l in &self.stack {
            p.push(std::ffi::OsStr::from_bytes(&l.name));
        }
        p.push(std::ffi::OsStr::from_bytes(name));
        p
    }

    /// Make the stack hold exactly `comps` below the current root, opening
    /// each level without following symlinks and creating missing ones.
    fn descend(&mut self, comps: &[&[u8]], mode: u32) -> Result<()> {
        let keep = self
            .stack
            .iter()
            .zip(comps)
            .take_while(|(l, c)| l.name == **c)
            .count();
        self.stack.truncate(keep);
        for (depth, name) in comps.iter().enumerate().skip(keep) {
            if self.stack.len() >= MAX_DEPTH {
                return Err(msg(format!(
                    "{} is nested more than {MAX_DEPTH} directories deep; rvm-backup does not restore that deep",
                    self.shown(name).display()
                )));
            }
            let parent = self.top()?;
            let (dir, created) = match parent.open_child(name) {
                Ok(d) => (d, false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    parent
                        .mkdir(name, mode)
                        .at("create directory", &self.shown(name))?;
                    let d = parent
                        .open_child(name)
                        .at("open new directory", &self.shown(name))?;
                    (d, true)
                }
                Err(e) => {
                    let shown = self.shown(name);
                    return Err(match parent.kind(name) {
                        Ok(Found::Symlink) => msg(format!(
                            "{} is a symlink; refusing to restore through it",
                            shown.display()
                        )),
                        Ok(Found::Other) => msg(format!(
                            "{} is in the way: it is not a directory; move it away and restore again",
                            shown.display()
                        )),
                        _ => Error::Io {
                            what: format!("cannot open directory {}", shown.display()),
                            source: e,
                        },
                    });
                }
            };
            self.push(&Rec::Enter {
                depth: depth as u32,
                name: name.to_vec(),
                dev: dir.dev,
                ino: dir.ino,
                created,
            })?;
            self.note_dev(&dir)?;
            self.stack.push(Level {
                name: name.to_vec(),
                dir,
            });
        }
        Ok(())
    }

    /// Stage one entry whose header was just read; returns its checked
    /// hash. `ordered`: part of a full pass, which must be in canonical
    /// order.
    pub async fn entry(
        &mut self,
        r: &mut ArchiveReader<PartReader>,
        h: &EntryHeader,
        ordered: bool,
        done: &mut Restored,
        progress: &mut Progress,
    ) -> Result<[u8; 32]> {
        self.entry_with(r, h, ordered, None, done, progress).await
    }

    /// [`Self::entry`]; for a kind 4 entry, `links` are the incremental
    /// archives whose pages go over it before it is checked (the database
    /// chain restore, `chain::db`).
    pub(super) async fn entry_with(
        &mut self,
        r: &mut ArchiveReader<PartReader>,
        h: &EntryHeader,
        ordered: bool,
        links: Option<Links<'_>>,
        done: &mut Restored,
        progress: &mut Progress,
    ) -> Result<[u8; 32]> {
        let src = self.source_of(&h.path)?;
        if links.is_some() && h.kind != EntryKind::Database {
            return Err(self.arch(FormatError::Corrupt(
                "a database chain starts with another kind of entry".into(),
            )));
        }
        if ordered {
            self.order
                .check(src, &h.path, h.kind == EntryKind::Dir)
                .map_err(msg)?;
        }
        let (root, comps) = self.split(src, &h.path)?;
        self.enter_root(src, root)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(msg("internal error: empty path"));
        };
        self.descend(parents, 0o755)?;
        let existing = self.top()?.kind(name).at("inspect", &self.shown(name))?;
        if existing != Found::Missing && (existing == Found::Dir) != (h.kind == EntryKind::Dir) {
            return Err(msg(format!(
                "{} exists as a {} but the archive holds a {} there; move it away and restore again",
                self.shown(name).display(),
                if existing == Found::Dir { "directory" } else { "non-directory" },
                kind_name(h.kind)
            )));
        }
        let trailer = match h.kind {
            // WAL segments are archives of their own (`pitr`), replayed
            // onto a restored database, never an entry of a tree.
            EntryKind::WalSegment => {
                return Err(self.arch(FormatError::Corrupt(
                    "a WAL segment entry inside a backup archive".into(),
                )))
            }
            EntryKind::Dir => {
                self.descend(&comps, 0o700)?;
                self.push(&Rec::Fix {
                    depth: self.stack.len() as u32,
                    mode: h.mode,
                    uid: h.uid,
                    gid: h.gid,
                    mtime: h.mtime,
                    nsec: h.mtime_nsec,
                })?;
                done.dirs += 1;
                r.end_entry().map_err(|e| self.arch(e))?
            }
            EntryKind::Symlink => {
                let target = read_small(r).map_err(|e| self.arch(e))?;
                let t = r.end_entry().map_err(|e| self.arch(e))?;
                let shown = self.shown(name);
                let top = self.top()?;
                let (n, tmp, ()) = create_tmp(&self.counter, self.token, top, |d, tmp| {
                    d.symlink(&target, tmp)
                })
                .at("create symlink", &shown)?;
                let ino = top
                    .chown_symlink(&tmp, h.uid, h.gid)
                    .at("set the owner of symlink", &shown)?;
                let dev = top.dev;
                self.push(&Rec::Staged {
                    depth: self.stack.len() as u32,
                    kind: Kind::Symlink,
                    name: name.to_vec(),
                    tmp: n,
                    dev,
                    ino,
                    key: None,
                })?;
                done.symlinks += 1;
                t
            }
            EntryKind::DbPages | EntryKind::DbDigests => {
                // Resolved by the caller (restore::stage_db_chain; kind 9
                // is read past by it).
                return Err(msg(format!(
                    "internal error: a {} entry reached the stage unresolved",
                    kind_name(h.kind)
                )));
            }
            EntryKind::Stored => {
                // Resolved by the caller (restore::stage_stored), which
                // hands in the holder's kind 1 entry instead.
                return Err(msg(
                    "internal error: a kind 5 entry reached the stage unresolved",
                ));
            }
            EntryKind::HardLink => {
                let target = read_small(r).map_err(|e| self.arch(e))?;
                let t = r.end_entry().map_err(|e| self.arch(e))?;
                self.hard_link(h, name, &target)?;
                done.hardlinks += 1;
                t
            }
            EntryKind::File | EntryKind::Database => {
                let shown = self.shown(name);
                let top = self.top()?;
                let (n, tmp, mut f) = create_tmp(&self.counter, self.token, top, |d, tmp| {
                    d.create_file(tmp, 0o600)
                })
                .at("create a file beside", &shown)?;
                let (dev, ino) = safefs::file_id(&f).at("inspect", &shown)?;
                let (pdev, pino) = (top.dev, top.ino);
                self.push(&Rec::Staged {
                    depth: self.stack.len() as u32,
                    kind: if h.kind == EntryKind::Database {
                        Kind::Database
                    } else {
                        Kind::File
                    },
                    name: name.to_vec(),
                    tmp: n,
                    dev,
                    ino,
                    key: (h.kind == EntryKind::File).then(|| FileKey {
                        root: src as u32,
                        path: h.path.clone(),
                        parent_dev: pdev,
                        parent_ino: pino,
                    }),
                })?;
                let t = self
                    .write_content(r, &mut f, &shown, done, progress)
                    .await?;
                let mut h = h.clone();
                if let Some(l) = links {
                    if let Some(newest) =
                        crate::chain::db::apply_links(l.links, l.key, &f, l.page_size).await?
                    {
                        h = EntryHeader {
                            path: h.path.clone(),
                            ..newest
                        };
                    }
                }
                if h.kind == EntryKind::Database || h.kind == EntryKind::DbPages {
                    let pending = super::database::check_staged_soon(
                        self.top()?,
                        &tmp,
                        self.accept_damaged,
                        &self.id,
                    )?;
                    self.pending.extend(pending);
                }
                safefs::set_meta(f.as_fd(), h.uid, h.gid, h.mode, h.mtime, h.mtime_nsec)
                    .at("set owner, mode and time of", &shown)?;
                done.files += 1;
                t
            }
        };
        if trailer.status == STATUS_CHANGED {
            log::warn!(
                "{} changed while it was backed up; its content may be inconsistent",
                h.display_path()
            );
            done.changed_while_read += 1;
        }
        Ok(trailer.sha256)
    }

    async fn write_content(
        &mut self,
        r: &mut ArchiveReader<PartReader>,
        f: &mut File,
        shown: &Path,
        done: &mut Restored,
        progress: &mut Progress,
    ) -> Result<crate::format::reader::Trailer> {
        let mut w = SparseWriter::new(f);
        while let Some(c) = r.content_chunk().map_err(|e| self.arch(e))? {
            w.write(c).at("write", shown)?;
            progress.add(c.len() as u64);
            done.bytes += c.len() as u64;
            smol::future::yield_now().await;
        }
        let t = r.end_entry().map_err(|e| self.arch(e))?;
        w.finish().at("write", shown)?;
        Ok(t)
    }

    /// Stage `name` in the current directory as a second name of the file
    /// staged earlier for archive path `target`.
    fn hard_link(&mut self, h: &EntryHeader, name: &[u8], target: &[u8]) -> Result<()> {
        let refuse = |why: &str| {
            msg(format!(
                "archive entry {} is a hard link to {}, {why}; refusing it (restore from another archive)",
                h.display_path(),
                show(target)
            ))
        };
        crate::format::record::check_path(target).map_err(|e| self.arch(e))?;
        let src = self
            .source_of(target)
            .map_err(|_| refuse("which is outside the archive's sources"))?;
        let found = self
            .journal
            .find_file(src as u32, target)
            .ctx(|| "cannot read the restore journal".into())?;
        let Some((
            _,
            Rec::Staged {
                tmp: src_tmp,
                dev,
                ino,
                key: Some(key),
                ..
            },
        )) = found
        else {
            return Err(refuse("which is not a file stored earlier in this archive"));
        };
        let (_, comps) = self.split(src, target)?;
        let Some((_, parents)) = comps.split_last() else {
            return Err(refuse("which is not a file"));
        };
        let root = self.roots[src]
            .as_ref()
            .ok_or_else(|| refuse("whose directory is not open"))?;
        let mut dir = root.dir.try_clone().at("open", &root.path)?;
        for c in parents {
            dir = dir
                .open_child(c)
                .ctx(|| format!("cannot reopen the directory of {}", show(target)))?;
        }
        let src_name = tmp_name(self.token, src_tmp);
        let still = dir
            .stat(&src_name)
            .ok()
            .flatten()
            .is_some_and(|st| safefs::dev_ino(&st) == (dev, ino));
        if (dir.dev, dir.ino) != (key.parent_dev, key.parent_ino) || !still {
            return Err(msg(format!(
                "the directory of {} was changed by someone else while restoring; nothing was restored, try again",
                show(target)
            )));
        }
        let shown = self.shown(name);
        let (n, _, ()) = create_tmp(&self.counter, self.token, self.top()?, |d, tmp| {
            d.link_from(&dir, &src_name, tmp)
        })
        .at("create hard link", &shown)?;
        self.push(&Rec::Staged {
            depth: self.stack.len() as u32,
            kind: Kind::HardLink,
            name: name.to_vec(),
            tmp: n,
            dev,
            ino,
            key: None,
        })
    }
}

/// The content of a symlink or hard-link entry (bounded by the reader to
/// `MAX_PATH_LEN`).
fn read_small(r: &mut ArchiveReader<PartReader>) -> Result<Vec<u8>, FormatError> {
    let mut v = Vec::new();
    while let Some(c) = r.content_chunk()? {
        v.extend_from_slice(c);
        if v.len() > crate::format::record::MAX_PATH_LEN {
            return Err(FormatError::Corrupt("link target too long".into()));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_names_are_random_and_a_taken_name_is_retried() {
        let t = std::env::temp_dir().join(format!("rvb-stage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).unwrap();
        let dir = Dir::open_path(&t).unwrap();
        let a = Stage::new("x", &[], None, false).unwrap();
        let b = Stage::new("x", &[], None, false).unwrap();
        assert_ne!(a.token, b.token);
        let name = String::from_utf8(tmp_name(a.token, 1)).unwrap();
        assert!(name.starts_with(".rvm-restore-") && name.ends_with(".tmp"));
        // The old predictable names, and two of this restore's, are taken.
        std::fs::write(
            t.join(format!(".rvm-restore-{}-1.tmp", std::process::id())),
            b"x",
        )
        .unwrap();
        for n in 1..=2 {
            let taken = tmp_name(a.token, n);
            std::fs::write(t.join(std::ffi::OsStr::from_bytes(&taken)), b"x").unwrap();
        }
        let (n, got, _f) = create_tmp(&a.counter, a.token, &dir, |d, tmp| {
            d.create_file(tmp, 0o600)
        })
        .unwrap();
        assert_eq!((n, got), (3, tmp_name(a.token, 3)));
        // Every name taken: a clear error after a few attempts, not a loop.
        let full = std::cell::Cell::new(100);
        for n in 101..=100 + u64::from(TMP_ATTEMPTS) {
            std::fs::write(
                t.join(std::ffi::OsStr::from_bytes(&tmp_name(a.token, n))),
                b"x",
            )
            .unwrap();
        }
        let e = create_tmp(&full, a.token, &dir, |d, tmp| d.create_file(tmp, 0o600)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        let _ = std::fs::remove_dir_all(&t);
    }
}

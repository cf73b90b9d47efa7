//! Durability of a restore: one flush per file system, not one `fsync`
//! per file.
//!
//! Phase 1 writes staged files without syncing them. Before publish renames
//! anything into place, [`Stage::flush_all`] makes the data of every staged
//! file durable: one `syncfs` per file system the restore touched. Where
//! `syncfs` fails, or is not trusted (a FUSE file system: its `syncfs`
//! writes the page cache to the daemon but does not make the daemon sync
//! its storage), it falls back to an `fsync` of every staged file and every
//! directory of the restore on that file system, in one pass over the
//! journal. After publish the same call makes the renames and directory
//! changes durable (directories only, in the fallback).
//!
//! Invariants: publish renames nothing before [`Stage::flush_all`] returned
//! `Ok` for every touched file system; any failure of the flush, and of its
//! fallback, is an error that aborts the restore (before publish: nothing
//! was replaced, and the stage's drop removes the staged copies). The
//! [`Flush`] trait is the one seam through which every sync goes, so tests
//! can count and fail them.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::journal::{Kind, Rec};
use super::stage::{tmp_name, Stage};
use crate::error::{msg, Error, Result};
use crate::safefs::{self, Dir};

/// `statfs` type of every FUSE file system (`FUSE_SUPER_MAGIC`).
const FUSE_MAGIC: i64 = 0x6573_5546;

/// The two kinds of sync a restore does.
pub(crate) trait Flush {
    /// Make everything written to the file system of `dir` durable.
    fn syncfs(&mut self, dir: &Dir) -> io::Result<()>;
    /// `fsync` one open file or directory.
    fn fsync(&mut self, fd: BorrowedFd<'_>) -> io::Result<()>;
}

/// The real thing: the kernel's `syncfs` (refused on FUSE) and `fsync`.
pub(crate) struct Kernel;

impl Flush for Kernel {
    fn syncfs(&mut self, dir: &Dir) -> io::Result<()> {
        let st = rustix::fs::fstatfs(dir)?;
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        if i64::from(st.f_type as i64) == FUSE_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a FUSE file system: syncfs does not reach its storage",
            ));
        }
        dir.syncfs()
    }

    fn fsync(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        rustix::fs::fsync(fd)?;
        Ok(())
    }
}

/// When a flush happens, for messages and for what the fallback syncs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum When {
    /// Staged data must be durable before anything is renamed.
    BeforePublish,
    /// Renames and directory changes must be durable before success.
    AfterPublish,
}

fn failed(when: When, e: impl std::fmt::Display) -> Error {
    match when {
        When::BeforePublish => msg(format!(
            "cannot flush the restored files to disk before putting them in place ({e}); \
             nothing was replaced and the staged copies are removed; check the disk \
             (dmesg, free space) and restore again"
        )),
        When::AfterPublish => msg(format!(
            "the restored files are in place but could not be flushed to disk ({e}); \
             they may be lost at a power cut: check the disk (dmesg) and restore again"
        )),
    }
}

impl Stage {
    /// One `syncfs` per touched file system; the per-file fallback where
    /// that fails.
    pub(super) fn flush_all(&mut self, when: When) -> Result<()> {
        let mut fallback = Vec::new();
        for d in &self.devs {
            if let Err(e) = self.flush.syncfs(d) {
                log::debug!(
                    "syncfs of the file system of device {:#x} not used ({e}); syncing each restored file instead",
                    d.dev
                );
                fallback.push(d.dev);
            }
        }
        if fallback.is_empty() {
            return Ok(());
        }
        self.fsync_each(&fallback, when)
            .map_err(|e| failed(when, e))
    }

    /// `fsync` every directory of the restore on the file systems `devs`
    /// and, before publish, every staged file there, in one journal pass.
    fn fsync_each(&mut self, devs: &[u64], when: When) -> Result<()> {
        let token = self.token;
        let replaced = || {
            msg("a directory of the restore was replaced by someone else while restoring; check who changes it")
        };
        let io = |what: &str, e: io::Error| msg(format!("{what}: {e}"));
        for r in self.roots.iter().flatten() {
            if devs.contains(&r.dir.dev) {
                self.flush
                    .fsync(r.dir.as_fd())
                    .map_err(|e| io("fsync of a restore root", e))?;
            }
        }
        for d in &self.created_root_dirs {
            let Some(parent) = d.parent() else { continue };
            let p =
                Dir::open_path(parent).map_err(|e| io("cannot open a directory to sync it", e))?;
            if devs.contains(&p.dev) {
                self.flush
                    .fsync(p.as_fd())
                    .map_err(|e| io("fsync of a directory", e))?;
            }
        }
        let mut root: Option<&Dir> = None;
        let mut stack: Vec<Dir> = Vec::new();
        let mut at = 0;
        let end = self.journal.end();
        while at < end {
            let (rec, next) = self
                .journal
                .read(at)
                .map_err(|e| io("cannot read the restore journal", e))?;
            at = next;
            match rec {
                Rec::Root { index } => {
                    stack.clear();
                    root = self
                        .roots
                        .get(index as usize)
                        .and_then(Option::as_ref)
                        .map(|r| &r.dir);
                }
                Rec::Enter {
                    depth,
                    name,
                    dev,
                    ino,
                    ..
                } => {
                    stack.truncate(depth as usize);
                    let parent = stack.last().or(root).ok_or_else(replaced)?;
                    let dir = parent
                        .open_child(&name)
                        .ok()
                        .filter(|d| (d.dev, d.ino) == (dev, ino))
                        .ok_or_else(replaced)?;
                    if devs.contains(&dev) {
                        self.flush
                            .fsync(dir.as_fd())
                            .map_err(|e| io("fsync of a directory", e))?;
                    }
                    stack.push(dir);
                }
                Rec::Fix { .. } => {}
                Rec::Staged {
                    depth,
                    kind,
                    tmp,
                    dev,
                    ino,
                    ..
                } => {
                    // Symlinks and hard links have no data of their own:
                    // their names are made durable with their directory.
                    if when != When::BeforePublish
                        || !matches!(kind, Kind::File | Kind::Database)
                        || !devs.contains(&dev)
                    {
                        continue;
                    }
                    stack.truncate(depth as usize);
                    let dir = stack.last().or(root).ok_or_else(replaced)?;
                    let name = tmp_name(token, tmp);
                    let ours = dir.stat(&name).ok().flatten().is_some_and(|st| {
                        safefs::dev_ino(&st) == (dev, ino)
                            && rustix::fs::FileType::from_raw_mode(st.st_mode).is_file()
                    });
                    if !ours {
                        return Err(msg(
                            "a staged file was replaced by someone else while restoring; check who changes its directory",
                        ));
                    }
                    let f: File = dir
                        .open_regular(&name)
                        .map_err(|e| io("cannot open a staged file to sync it", e))?;
                    if safefs::file_id(&f).ok() != Some((dev, ino)) {
                        return Err(msg(
                            "a staged file was replaced by someone else while restoring; check who changes its directory",
                        ));
                    }
                    self.flush
                        .fsync(f.as_fd())
                        .map_err(|e| io("fsync of a staged file", e))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};
    use std::rc::Rc;

    use crate::config::Config;
    use crate::progress::Progress;
    use crate::store::Store;
    use crate::strategy::Strategy;

    /// What the syncs saw: for each call, whether the restore had already
    /// put its files in place at that moment.
    #[derive(Default)]
    struct Seen {
        syncfs: Vec<bool>,
        /// (published, the descriptor is a regular file)
        fsync: Vec<(bool, bool)>,
    }

    struct Recorder {
        seen: Rc<RefCell<Seen>>,
        /// A file the archive holds and the target lacks before publish.
        probe: PathBuf,
        /// A file the target holds before, with content `old`.
        live: PathBuf,
        syncfs_fails: bool,
        fsync_fails: bool,
    }

    impl Recorder {
        fn published(&self) -> bool {
            let fresh = self.probe.exists();
            let replaced = std::fs::read(&self.live).ok().as_deref() != Some(&b"old"[..]);
            assert_eq!(fresh, replaced, "half published at a sync");
            fresh
        }
    }

    impl Flush for Recorder {
        fn syncfs(&mut self, _dir: &Dir) -> io::Result<()> {
            let p = self.published();
            self.seen.borrow_mut().syncfs.push(p);
            if self.syncfs_fails {
                return Err(io::Error::other("injected syncfs failure"));
            }
            Ok(())
        }

        fn fsync(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
            let p = self.published();
            let regular =
                rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode).is_file();
            self.seen.borrow_mut().fsync.push((p, regular));
            if self.fsync_fails {
                return Err(io::Error::other("injected fsync failure"));
            }
            Ok(())
        }
    }

    struct Case {
        d: PathBuf,
        src: PathBuf,
        target: PathBuf,
        archive: crate::store::Listed,
    }

    /// An application archive of three files in nested directories, and a
    /// target that already holds an older `a.txt`.
    fn case(name: &str) -> Case {
        let d = std::env::temp_dir().join(format!("rvb-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let src = d.join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.txt"), b"new content of a").unwrap();
        std::fs::write(src.join("sub/b.txt"), vec![b'b'; 100_000]).unwrap();
        std::fs::write(src.join("sub/deeper/c.bin"), b"c").unwrap();
        let text = format!(
            "backup_dir = {:?}\nencryption_enabled = false\n[application]\npaths = [{:?}]\n",
            d.join("backups").display().to_string(),
            src.display().to_string()
        );
        let cfg = Config::parse(&text, &d.join("c.toml")).unwrap();
        let store = Store::for_config(&cfg);
        let lock = store.lock().unwrap();
        let mut progress = Progress::silent();
        smol::block_on(crate::backup::run(
            &cfg,
            &store,
            &lock,
            Strategy::Application,
            None,
            None,
            &mut progress,
        ))
        .unwrap();
        let archive = store.list(None, None).archives.pop().unwrap();
        let target = d.join("target");
        let live_dir = target.join(src.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&live_dir).unwrap();
        std::fs::write(live_dir.join("a.txt"), b"old").unwrap();
        Case {
            d,
            src,
            target,
            archive,
        }
    }

    impl Case {
        fn restored(&self, rel: &str) -> PathBuf {
            self.target
                .join(self.src.strip_prefix("/").unwrap())
                .join(rel)
        }

        fn restore(&self, syncfs_fails: bool, fsync_fails: bool) -> (Result<()>, Seen) {
            let seen = Rc::new(RefCell::new(Seen::default()));
            let rec = Recorder {
                seen: seen.clone(),
                probe: self.restored("sub/deeper/c.bin"),
                live: self.restored("a.txt"),
                syncfs_fails,
                fsync_fails,
            };
            let mut progress = Progress::silent();
            let r = smol::block_on(super::super::run_with(
                &self.archive,
                &[],
                None,
                Some(&self.target),
                None,
                false,
                &mut progress,
                Box::new(rec),
            ))
            .map(|_| ());
            let seen = Rc::try_unwrap(seen).ok().unwrap().into_inner();
            (r, seen)
        }
    }

    fn leftovers(dir: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with(".rvm-restore-") {
                found.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                leftovers(&e.path(), found);
            }
        }
    }

    #[test]
    fn one_syncfs_before_anything_is_in_place_and_one_after() {
        let c = case("syncfs");
        let (r, seen) = c.restore(false, false);
        r.unwrap();
        // One file system: one flush before publish (nothing in place
        // yet), one after (everything in place), no fsync per file.
        assert_eq!(seen.syncfs, vec![false, true]);
        assert!(seen.fsync.is_empty(), "{:?}", seen.fsync);
        assert_eq!(
            std::fs::read(c.restored("a.txt")).unwrap(),
            b"new content of a"
        );
        assert_eq!(std::fs::read(c.restored("sub/deeper/c.bin")).unwrap(), b"c");
        let _ = std::fs::remove_dir_all(&c.d);
    }

    #[test]
    fn a_failing_syncfs_falls_back_to_an_fsync_of_every_staged_file() {
        let c = case("fallback");
        let (r, seen) = c.restore(true, false);
        r.unwrap();
        let files_before = seen.fsync.iter().filter(|&&(p, f)| !p && f).count();
        let dirs_before = seen.fsync.iter().filter(|&&(p, f)| !p && !f).count();
        let files_after = seen.fsync.iter().filter(|&&(p, f)| p && f).count();
        let dirs_after = seen.fsync.iter().filter(|&&(p, f)| p && !f).count();
        assert_eq!(files_before, 3, "{:?}", seen.fsync);
        assert_eq!(files_after, 0, "{:?}", seen.fsync);
        // The target root and every directory below it on the way to the
        // three files, before and after.
        let depth = c.src.components().count() + 2;
        assert!(dirs_before >= depth, "{dirs_before} < {depth}");
        assert!(dirs_after >= depth, "{dirs_after} < {depth}");
        assert_eq!(
            std::fs::read(c.restored("sub/b.txt")).unwrap().len(),
            100_000
        );
        let _ = std::fs::remove_dir_all(&c.d);
    }

    #[test]
    fn a_failing_flush_aborts_before_publish_and_leaves_the_target_alone() {
        let c = case("fails");
        let (r, seen) = c.restore(true, true);
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("cannot flush the restored files to disk before putting them in place")
                && e.contains("injected fsync failure")
                && e.contains("nothing was replaced"),
            "{e}"
        );
        assert!(seen.fsync.iter().all(|&(p, _)| !p));
        assert_eq!(std::fs::read(c.restored("a.txt")).unwrap(), b"old");
        assert!(
            !c.restored("sub").exists(),
            "a directory made by the restore is left"
        );
        let mut left = Vec::new();
        leftovers(&c.target, &mut left);
        assert!(left.is_empty(), "staged copies left: {left:?}");
        let _ = std::fs::remove_dir_all(&c.d);
    }
}

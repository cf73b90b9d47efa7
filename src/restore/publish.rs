//! Phase 2 (publish) and undo: replays of the journal.
//!
//! Publish first flushes every touched file system once (`syncfs`, or an
//! `fsync` of each staged file where that fails: [`super::durable`]), so no
//! staged byte can be lost after its name is in place; then it replays the
//! journal from the roots it holds open: each directory is reopened with
//! `O_NOFOLLOW` and must have the device and inode phase 1 recorded, each
//! staged name must still be the inode phase 1 made, and only then is it
//! renamed over its destination inside that one directory descriptor.
//! Directory owner, mode and time are set when the replay leaves a
//! directory (after everything inside it). A last flush makes the
//! renames and directory changes durable.
//!
//! Undo replays the same journal and removes only names this restore made
//! (checked by device and inode) and directories it created (if empty).
//!
//! Invariants: nothing is renamed into place before the data of every
//! staged file is durable; a mismatch stops publishing with an error (what
//! was not renamed is undone by the stage's drop); both replays yield to
//! the executor after every entry.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::durable::When;
use super::journal::{Kind, Rec};
use super::stage::{tmp_name, Stage};
use crate::error::{msg, IoContext, Result};
use crate::safefs::{self, Dir};

struct PLevel {
    name: Vec<u8>,
    dir: Dir,
    fix: Option<Rec>,
}

fn apply_fix(l: &PLevel, shown: &std::path::Path) -> Result<()> {
    if let Some(Rec::Fix {
        mode,
        uid,
        gid,
        mtime,
        nsec,
        ..
    }) = &l.fix
    {
        l.dir
            .set_meta(*uid, *gid, *mode, *mtime, *nsec)
            .at("set owner, mode and time of", shown)?;
    }
    Ok(())
}

impl Stage {
    fn root_dir(&self, index: u32) -> Result<&Dir> {
        self.roots
            .get(index as usize)
            .and_then(Option::as_ref)
            .map(|r| &r.dir)
            .ok_or_else(|| msg("the restore journal is damaged (unknown root)"))
    }

    fn shown_at(&self, root: Option<u32>, stack: &[Vec<u8>], name: &[u8]) -> PathBuf {
        let mut p = root
            .and_then(|i| self.roots.get(i as usize))
            .and_then(Option::as_ref)
            .map(|r| r.path.clone())
            .unwrap_or_default();
        for n in stack {
            p.push(OsStr::from_bytes(n));
        }
        p.push(OsStr::from_bytes(name));
        p
    }

    /// Phase 2. Returns where a replaced live database was kept.
    pub async fn publish(&mut self) -> Result<Option<PathBuf>> {
        // The staged images' checks come first: nothing unchecked goes live.
        self.checked().await?;
        self.stack.clear();
        self.flush_all(When::BeforePublish)?;
        let mut previous = None;
        let mut root: Option<u32> = None;
        let mut stack: Vec<PLevel> = Vec::new();
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut at = 0;
        let end = self.journal.end();
        while at < end {
            let (rec, next) = self
                .journal
                .read(at)
                .ctx(|| "cannot read the restore journal".into())?;
            at = next;
            match rec {
                Rec::Root { index } => {
                    self.leave(&mut stack, &mut names, root, 0)?;
                    self.root_dir(index)?;
                    root = Some(index);
                }
                Rec::Enter {
                    depth,
                    name,
                    dev,
                    ino,
                    ..
                } => {
                    self.leave(&mut stack, &mut names, root, depth as usize)?;
                    let parent = match stack.last() {
                        Some(l) => &l.dir,
                        None => self.root_dir(root.unwrap_or(u32::MAX))?,
                    };
                    let shown = self.shown_at(root, &names, &name);
                    let dir = parent
                        .open_child(&name)
                        .ok()
                        .filter(|d| (d.dev, d.ino) == (dev, ino));
                    let Some(dir) = dir else {
                        return Err(msg(format!(
                            "{} was replaced by someone else while restoring; stopped publishing \
                             (entries already in place stay, the rest is removed); check who changes \
                             that directory and restore again",
                            shown.display()
                        )));
                    };
                    names.push(name.clone());
                    stack.push(PLevel {
                        name,
                        dir,
                        fix: None,
                    });
                }
                fix @ Rec::Fix { depth, .. } => {
                    self.leave(&mut stack, &mut names, root, depth as usize)?;
                    if let Some(l) = stack.last_mut() {
                        l.fix = Some(fix);
                    }
                }
                Rec::Staged {
                    depth,
                    kind,
                    name,
                    tmp,
                    dev,
                    ino,
                    ..
                } => {
                    self.leave(&mut stack, &mut names, root, depth as usize)?;
                    let dir = match stack.last() {
                        Some(l) => &l.dir,
                        None => self.root_dir(root.unwrap_or(u32::MAX))?,
                    };
                    let shown = self.shown_at(root, &names, &name);
                    let tmp = tmp_name(self.token, tmp);
                    let same = dir
                        .stat(&tmp)
                        .at("inspect the staged copy of", &shown)?
                        .is_some_and(|st| safefs::dev_ino(&st) == (dev, ino));
                    if !same {
                        return Err(msg(format!(
                            "the staged copy of {} was replaced by someone else while restoring; \
                             stopped publishing; check who changes that directory and restore again",
                            shown.display()
                        )));
                    }
                    if kind == Kind::Database {
                        previous = super::database::swap(dir, &tmp, &name, &shown)?;
                    } else {
                        dir.rename(&tmp, &name).ctx(|| {
                            format!("cannot move the restored copy into {}", shown.display())
                        })?;
                    }
                    smol::future::yield_now().await;
                }
            }
        }
        self.leave(&mut stack, &mut names, root, 0)?;
        self.flush_all(When::AfterPublish)?;
        self.finished = true;
        Ok(previous)
    }

    /// Leave directories until `depth` remain, fixing up each one left.
    fn leave(
        &self,
        stack: &mut Vec<PLevel>,
        names: &mut Vec<Vec<u8>>,
        root: Option<u32>,
        depth: usize,
    ) -> Result<()> {
        while stack.len() > depth {
            let Some(l) = stack.pop() else { break };
            names.pop();
            apply_fix(&l, &self.shown_at(root, names, &l.name))?;
        }
        Ok(())
    }

    /// Remove everything phase 1 made that is still ours.
    pub(super) fn undo(&mut self) {
        let token = self.token;
        struct ULevel {
            name: Vec<u8>,
            dir: Option<Dir>,
            created: bool,
            dev: u64,
            ino: u64,
        }
        fn leave(stack: &mut Vec<ULevel>, root: Option<&Dir>, depth: usize) {
            while stack.len() > depth {
                let Some(l) = stack.pop() else { break };
                if !l.created {
                    continue;
                }
                drop(l.dir);
                let parent = match stack.last() {
                    Some(p) => p.dir.as_ref(),
                    None => root,
                };
                if let Some(p) = parent {
                    let _ = p.rmdir_if(&l.name, l.dev, l.ino);
                }
            }
        }
        self.stack.clear();
        let mut root: Option<u32> = None;
        let mut stack: Vec<ULevel> = Vec::new();
        let mut at = 0;
        let end = self.journal.end();
        while at < end {
            let Ok((rec, next)) = self.journal.read(at) else {
                log::warn!(
                    "cannot read the restore journal: some .rvm-restore-* files may be left"
                );
                break;
            };
            at = next;
            let root_dir = root
                .and_then(|i| self.roots.get(i as usize))
                .and_then(Option::as_ref)
                .map(|r| &r.dir);
            match rec {
                Rec::Root { index } => {
                    leave(&mut stack, root_dir, 0);
                    root = Some(index);
                }
                Rec::Enter {
                    depth,
                    name,
                    dev,
                    ino,
                    created,
                } => {
                    leave(&mut stack, root_dir, depth as usize);
                    let parent = match stack.last() {
                        Some(l) => l.dir.as_ref(),
                        None => root_dir,
                    };
                    let dir = parent
                        .and_then(|p| p.open_child(&name).ok())
                        .filter(|d| (d.dev, d.ino) == (dev, ino));
                    stack.push(ULevel {
                        name,
                        dir,
                        created,
                        dev,
                        ino,
                    });
                }
                Rec::Fix { .. } => {}
                Rec::Staged {
                    depth,
                    tmp,
                    dev,
                    ino,
                    ..
                } => {
                    leave(&mut stack, root_dir, depth as usize);
                    let dir = match stack.last() {
                        Some(l) => l.dir.as_ref(),
                        None => root_dir,
                    };
                    if let Some(d) = dir {
                        let _ = d.unlink_if(&tmp_name(token, tmp), dev, ino);
                    }
                }
            }
        }
        let root_dir = root
            .and_then(|i| self.roots.get(i as usize))
            .and_then(Option::as_ref)
            .map(|r| &r.dir);
        leave(&mut stack, root_dir, 0);
        for d in self.created_root_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Drop for Stage {
    /// A restore abandoned before publishing finished (an error, or its
    /// task dropped by a cancel or shutdown) leaves nothing of its own.
    fn drop(&mut self) {
        if !self.finished {
            self.undo();
        }
    }
}

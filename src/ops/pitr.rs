//! Point-in-time recovery as operations: the restorable ranges (`list`),
//! `restore database --at TIME` from a generation's snapshot and segments,
//! and retention of generations.
//!
//! Invariants: the live database is touched only after the replayed image
//! passed `PRAGMA integrity_check` and every segment used was
//! authenticated and chained; the restore and the pruning of generations
//! both hold the store lock, so neither races the other; the generation
//! holding the newest restore point is never pruned.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{msg, IoContext, Result};
use crate::pitr::apply::{self, Reached};
use crate::pitr::store::{self, Generation};
use crate::progress::Progress;
use crate::restore::Restored;
use crate::store::Listed;
use crate::strategy::Strategy;

use super::restore::RestoreRequest;
use super::Session;

/// The scratch directory of a point-in-time restore, in `backup_dir`.
const PITR_SCRATCH: &str = ".pitr-restore";

/// One generation's restorable range, for `list`.
#[derive(Clone, Debug)]
pub struct PitrRange {
    pub generation: String,
    pub first: (i64, u32),
    pub last: (i64, u32),
    pub segments: u64,
    /// Whether its snapshot archive is still in the store.
    pub snapshot: bool,
    /// Why it cannot be used, when it cannot.
    pub problem: Option<String>,
}

impl PitrRange {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "pitr",
            "strategy": "database",
            "generation": self.generation,
            "first": crate::pitr::rfc3339_nanos(self.first),
            "last": crate::pitr::rfc3339_nanos(self.last),
            "segments": self.segments,
            "snapshot_present": self.snapshot,
            "problem": self.problem,
        })
    }
}

/// A chosen generation and its snapshot.
pub(crate) struct Plan {
    generation: Generation,
    snapshot: Listed,
    last: (i64, u32),
}

impl Plan {
    /// The database archive the generation starts from.
    pub(crate) fn snapshot(&self) -> &Listed {
        &self.snapshot
    }
}

impl Session {
    /// Check, reading only, every segment a restore to `t` from `plan`
    /// applies (authenticated and chained), so that `restore --all` can
    /// refuse a broken chain before anything is touched.
    pub(crate) async fn pitr_check(&self, plan: &Plan, t: i64) -> Result<()> {
        apply::replay(
            &plan.generation,
            self.key.as_ref(),
            self.cfg.encryption_enabled,
            t,
            None,
        )
        .await
        .map(|_| ())
    }

    /// Whether the store holds any point-in-time generation.
    pub(crate) fn has_pitr(&self) -> bool {
        !store::generations(&self.cfg.backup_dir).is_empty()
    }

    /// The restorable ranges, oldest generation first.
    pub fn pitr_ranges(&self) -> Vec<PitrRange> {
        let listing = self.list(Some(Strategy::Database));
        store::generations(&self.cfg.backup_dir)
            .into_iter()
            .map(|g| {
                let snapshot = listing.archives.iter().any(|a| a.meta.id == g.id);
                let mut r = PitrRange {
                    generation: g.id.clone(),
                    first: (0, 0),
                    last: (0, 0),
                    segments: g.seqs.len() as u64,
                    snapshot,
                    problem: None,
                };
                match g.range(self.key(), self.cfg.encryption_enabled) {
                    Ok((f, l)) => {
                        r.first = f.when();
                        r.last = l.when();
                    }
                    Err(e) => r.problem = Some(e.to_string()),
                }
                if !snapshot && r.problem.is_none() {
                    r.problem = Some(format!("its snapshot archive {} is gone", g.id));
                }
                r
            })
            .collect()
    }

    /// The generation to restore `t` from, when point-in-time data covers
    /// it and is newer than any database archive at or before `t`.
    pub(crate) fn pitr_plan(&self, t: i64) -> Option<Plan> {
        let listing = self.list(Some(Strategy::Database));
        let newest_archive = listing
            .archives
            .iter()
            .filter(|a| a.meta.created <= t)
            .map(|a| a.meta.created)
            .max();
        for g in store::generations(&self.cfg.backup_dir).into_iter().rev() {
            let Ok((first, last)) = g.range(self.key(), self.cfg.encryption_enabled) else {
                log::warn!("point-in-time generation {} is unreadable; skipped", g.id);
                continue;
            };
            if first.time > t {
                continue;
            }
            let Some(snapshot) = listing.archives.iter().find(|a| a.meta.id == g.id) else {
                log::warn!(
                    "point-in-time generation {} has lost its snapshot archive; skipped",
                    g.id
                );
                continue;
            };
            let reach = if last.time <= t { last.when() } else { (t, 0) };
            if newest_archive.is_some_and(|a| a > reach.0) {
                return None;
            }
            return Some(Plan {
                generation: g,
                snapshot: snapshot.clone(),
                last: last.when(),
            });
        }
        None
    }

    /// Restore the database as of `t` from `plan` (the caller holds the
    /// store lock and runs the recovery hooks around an in-place restore).
    pub(crate) async fn pitr_restore(
        &self,
        plan: Plan,
        t: i64,
        req: &RestoreRequest,
        progress: &mut Progress,
    ) -> Result<Restored> {
        // One fixed name: the caller holds the store lock, so no other
        // restore uses it now, and what a killed restore left is removed
        // here instead of piling up under a new name per process.
        let scratch = self.cfg.backup_dir.join(PITR_SCRATCH);
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).at("remove the stale", &scratch)?;
        }
        std::fs::create_dir_all(&scratch).at("create", &scratch)?;
        let out = self
            .pitr_restore_in(&plan, t, req, &scratch, progress)
            .await;
        if let Err(e) = std::fs::remove_dir_all(&scratch) {
            log::warn!("could not remove {}: {e}", scratch.display());
        }
        out
    }

    async fn pitr_restore_in(
        &self,
        plan: &Plan,
        t: i64,
        req: &RestoreRequest,
        scratch: &Path,
        progress: &mut Progress,
    ) -> Result<Restored> {
        let snap = &plan.snapshot;
        let db_src = snap
            .meta
            .sources
            .first()
            .ok_or_else(|| msg(format!("archive {} names no database", snap.meta.id)))?;
        let page_size = snap
            .meta
            .database
            .as_ref()
            .map(|d| d.page_size)
            .ok_or_else(|| msg(format!("archive {} is not a database image", snap.meta.id)))?;
        // 1. The snapshot, staged, checked and published into the scratch
        //    directory by the ordinary restore.
        // A generation's snapshot is a full archive (the daemon makes it
        // with `backup --full`); the listing is handed in all the same, so
        // that any database archive restores.
        let listing = self.list(Some(Strategy::Database));
        let mut done = crate::restore::run(
            snap,
            &listing.archives,
            self.key.as_ref(),
            Some(scratch),
            None,
            req.accept_damaged,
            progress,
        )
        .await?;
        let rel = Path::new(db_src.trim_start_matches('/'));
        let staged = scratch.join(rel);
        // 2. The segments, replayed onto it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&staged)
            .at("open the staged database", &staged)?;
        let reached = apply::replay(
            &plan.generation,
            self.key.as_ref(),
            self.cfg.encryption_enabled,
            t,
            Some((&file, page_size)),
        )
        .await?;
        file.sync_all().at("sync", &staged)?;
        drop(file);
        // 3. Checked before anything live is touched.
        check(&staged, req.accept_damaged, &snap.meta.id)?;
        // 4. Published as a database restore publishes.
        let dest = match &req.target {
            Some(dir) => dir.join(rel),
            None => PathBuf::from(db_src),
        };
        done.previous_database = publish(&staged, &dest)?;
        done.pitr = Some(describe(&reached, &snap.meta.id, plan.last, t));
        Ok(done)
    }

    /// `disaster-restore`'s database: the archive `snapshot` with the
    /// segments of `g` (the stick's copy of the generation it starts)
    /// replayed to the newest commit that chains. Only whole segments that
    /// authenticate and chain are applied: a bad tail is cut off, a chain
    /// with no good segment or a replay that fails falls back to the plain
    /// archive; either way `Restored::pitr` says what happened. The caller
    /// holds the lock and runs the hooks, as for any restore.
    pub(crate) async fn restore_database_replayed(
        &self,
        snapshot: &Listed,
        g: Generation,
        target: Option<&Path>,
        accept_damaged: bool,
        progress: &mut Progress,
    ) -> Result<Restored> {
        let (good, bad) =
            apply::good_prefix(&g, self.key.as_ref(), self.cfg.encryption_enabled).await;
        let total = g.seqs.len();
        let mut g = g;
        g.seqs
            .truncate(usize::try_from(good.segments).unwrap_or(usize::MAX));
        let tail = bad.map(|e| {
            format!(
                "WARNING: of the {total} WAL segment(s) on the stick only the first {} chain and authenticate ({e}); the database was brought to the last good one, later commits are lost",
                good.segments
            )
        });
        if let Some(t) = &tail {
            log::warn!("{t}");
        }
        if g.seqs.is_empty() {
            let why = format!(
                "the database is as of its archive {} ({})",
                snapshot.meta.id,
                tail.unwrap_or_else(|| "no WAL segment on the stick".into())
            );
            return self
                .plain_restore(snapshot, target, accept_damaged, why, progress)
                .await;
        }
        let plan = Plan {
            generation: g,
            snapshot: snapshot.clone(),
            last: good.time,
        };
        let req = RestoreRequest {
            strategy: Strategy::Database,
            selector: crate::restore::Selector::Latest,
            target: target.map(Path::to_path_buf),
            file: None,
            accept_damaged,
        };
        match self.pitr_restore(plan, i64::MAX, &req, progress).await {
            Ok(mut r) => {
                if let Some(t) = tail {
                    let reached = r.pitr.unwrap_or_default();
                    let reached = reached.replace(" (the newest point shipped)", "");
                    r.pitr = Some(format!("{reached}; {t}"));
                }
                Ok(r)
            }
            Err(e) => {
                log::warn!("replaying the WAL segments from the stick failed: {e}");
                let why = format!(
                    "WARNING: replaying the WAL segments from the stick failed ({e}); the database is as of its archive {}",
                    snapshot.meta.id
                );
                self.plain_restore(snapshot, target, accept_damaged, why, progress)
                    .await
            }
        }
    }

    /// The archive itself, with `why` as the account of the replay.
    async fn plain_restore(
        &self,
        snapshot: &Listed,
        target: Option<&Path>,
        accept_damaged: bool,
        why: String,
        progress: &mut Progress,
    ) -> Result<Restored> {
        let mut r = self
            .restore_archive(snapshot, target, accept_damaged, progress)
            .await?;
        r.pitr = Some(why);
        Ok(r)
    }

    /// Check every generation's whole chain (each segment authenticated,
    /// in sequence, chained by hash). One result per generation: its
    /// segment count, or why it fails.
    pub async fn verify_pitr(&self) -> Vec<(String, Result<u64>)> {
        let mut out = Vec::new();
        for g in store::generations(&self.cfg.backup_dir) {
            let r = apply::replay(
                &g,
                self.key.as_ref(),
                self.cfg.encryption_enabled,
                i64::MAX,
                None,
            )
            .await
            .map(|r| r.segments);
            out.push((g.id, r));
        }
        out
    }

    /// Delete whole generations whose newest restore point is older than
    /// `pitr_retention`, never the one with the newest restore point.
    /// Holds the store lock. Returns the generations removed.
    pub fn prune_pitr(&self) -> Result<Vec<String>> {
        let _lock = self.store.lock()?;
        let gens = store::generations(&self.cfg.backup_dir);
        let retention = self
            .cfg
            .database
            .as_ref()
            .map_or(crate::config::DEFAULT_PITR_RETENTION_S, |d| {
                d.pitr_retention().as_secs()
            });
        let cutoff =
            crate::timefmt::now_unix().saturating_sub(i64::try_from(retention).unwrap_or(i64::MAX));
        let mut newest: Option<(i64, u32, usize)> = None;
        let mut lasts = Vec::new();
        for (i, g) in gens.iter().enumerate() {
            let last = g
                .range(self.key(), self.cfg.encryption_enabled)
                .ok()
                .map(|(_, l)| l.when());
            if let Some(l) = last {
                if newest.is_none_or(|n| (n.0, n.1) <= l) {
                    newest = Some((l.0, l.1, i));
                }
            }
            lasts.push(last);
        }
        let mut removed = Vec::new();
        for (i, g) in gens.iter().enumerate() {
            if newest.is_some_and(|n| n.2 == i) || i + 1 == gens.len() {
                continue;
            }
            // An unreadable generation is kept until it is as old by name
            // as the cutoff (its id carries its snapshot's time).
            let old = match lasts[i] {
                Some(l) => l.0 < cutoff,
                None => false,
            };
            if old {
                store::remove_generation(g)?;
                removed.push(g.id.clone());
            }
        }
        Ok(removed)
    }
}

fn describe(r: &Reached, snapshot: &str, last: (i64, u32), t: i64) -> String {
    let newest = if last.0 <= t {
        " (the newest point shipped)"
    } else {
        ""
    };
    format!(
        "restored to the commit at {}{newest}, {} commits after snapshot {snapshot}",
        crate::pitr::rfc3339_nanos(r.time),
        r.commits
    )
}

fn check(db: &Path, accept_damaged: bool, id: &str) -> Result<()> {
    let uri = format!("file:{}?immutable=1", db.display());
    let result = rusqlite::Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)));
    let problem = match result {
        Ok(s) if s == "ok" => return Ok(()),
        Ok(s) => s,
        Err(e) => format!("it cannot be opened: {e}"),
    };
    if accept_damaged {
        log::warn!("the database replayed from {id} fails its integrity check ({problem}); restoring it as asked");
        return Ok(());
    }
    Err(msg(format!(
        "the database replayed from snapshot {id} and its WAL segments fails PRAGMA integrity_check ({problem}); nothing was restored. Restore another time, or the archive itself"
    )))
}

/// Move (or copy, across file systems) the checked image `staged` into
/// `dest`'s directory under a temporary name, then swap it in as a
/// database restore does (the previous file kept as `.pre-restore-…`).
/// Both directories are used through open descriptors.
fn publish(staged: &Path, dest: &Path) -> Result<Option<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let parent = crate::fsutil::parent(dest);
    std::fs::create_dir_all(parent).at("create", parent)?;
    let name = dest
        .file_name()
        .ok_or_else(|| msg(format!("{} names no file", dest.display())))?
        .as_bytes()
        .to_vec();
    let src_name = staged
        .file_name()
        .ok_or_else(|| msg(format!("{} names no file", staged.display())))?
        .to_os_string();
    let sdir = crate::safefs::Dir::open_path(crate::fsutil::parent(staged))
        .at("open", crate::fsutil::parent(staged))?;
    let dir = crate::safefs::Dir::open_path(parent).at("open", parent)?;
    let tmp = format!(".rvm-pitr-{}.tmp", std::process::id());
    let tmp_os = std::ffi::OsStr::new(&tmp);
    let moved = rustix::fs::renameat(&sdir, src_name.as_os_str(), &dir, tmp_os);
    if moved.is_err() {
        // Another file system: a copy, created O_EXCL|O_NOFOLLOW there.
        let meta = std::fs::metadata(staged).at("inspect", staged)?;
        let mut from = std::fs::File::open(staged).at("open", staged)?;
        let mut to = dir
            .create_file(tmp.as_bytes(), meta.mode() & 0o7777)
            .at("create", &parent.join(&tmp))?;
        let copied = std::io::copy(&mut from, &mut to)
            .and_then(|_| std::os::unix::fs::fchown(&to, Some(meta.uid()), Some(meta.gid())))
            .and_then(|()| to.sync_all());
        if let Err(e) = copied {
            let _ = dir.unlink(tmp.as_bytes());
            return Err(e).at("copy the restored database to", &parent.join(&tmp));
        }
    }
    let out = crate::restore::swap_database(&dir, tmp.as_bytes(), &name, dest);
    if out.is_err() {
        let _ = dir.unlink(tmp.as_bytes());
    }
    out
}

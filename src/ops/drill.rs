//! `drill`: prove that the newest archive of each strategy can really be
//! restored, and time it.
//!
//! For each strategy the newest archive is restored with the ordinary
//! restore driver into a scratch directory of its own under the store
//! (`backup_dir/.drill-<pid>-<n>/`, mode 0700, made fresh, never reused).
//! The restore itself checks every content hash, the index, the part hashes
//! and, for a database, `PRAGMA integrity_check`; a database is then opened
//! read-only and its schema hash and per-table row counts are compared with
//! the ones its sidecar recorded at backup time (extension block 3). The
//! recovery time (restore and checks, monotonic clock) and the bytes
//! restored are measured, the scratch directory is removed, and the outcome
//! is recorded per strategy in `state.json` (`last_drill*`).
//!
//! Invariants:
//! - the whole drill holds the store lock, so no prune deletes the archive
//!   being drilled and no other drill shares the scratch space; scratch
//!   directories that a killed drill left behind are removed at the start;
//! - only the drill's own scratch directory is ever removed, and only when
//!   it is still the directory the drill created (device and inode); also
//!   when the drill is cancelled (the future is dropped);
//! - free space is checked before anything is written: a disk without room
//!   for the archive's content fails that strategy's drill with a message;
//! - every strategy's outcome is recorded, pass or fail; a lock that cannot
//!   be taken fails the whole call and records nothing (it says nothing
//!   about the archives).

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use crate::error::{msg, IoContext, Result};
use crate::format::sidecar::Meta;
use crate::out::human_bytes;
use crate::progress::Progress;
use crate::restore::{Restored, Selector};
use crate::sources::database;
use crate::store::{Listed, Listing, SIDECAR_EXT};
use crate::strategy::Strategy;

use super::{select, Session};

/// Scratch directories are `<backup_dir>/.drill-<pid>-<n>`.
pub const SCRATCH_PREFIX: &str = ".drill-";

/// Room wanted beyond the archive's content: directories, the restore's
/// journal spill.
const ROOM_MARGIN: u64 = 1 << 20;

static SCRATCH_SEQ: AtomicU32 = AtomicU32::new(0);

/// How one strategy's drill went.
#[derive(Clone, Debug, PartialEq)]
pub struct DrillOutcome {
    pub strategy: Strategy,
    /// The archive drilled; `None` when there was none to drill.
    pub id: Option<String>,
    pub ok: bool,
    /// Recovery time: the restore and its checks.
    pub seconds: f64,
    /// Content bytes restored.
    pub bytes: u64,
    pub files: u64,
    /// Why it failed.
    pub error: Option<String>,
}

impl DrillOutcome {
    /// The `drill --json` line: `strategy`, `id`, `ok`, `seconds`, `bytes`,
    /// `files`, and `error` when not ok.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "strategy": self.strategy.name(),
            "id": self.id,
            "ok": self.ok,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "bytes": self.bytes,
            "files": self.files,
        });
        if let (Some(e), Some(map)) = (&self.error, v.as_object_mut()) {
            map.insert("error".into(), Value::String(e.clone()));
        }
        v
    }

    /// One line for people and for a job's outcome.
    pub fn describe(&self) -> String {
        let id = self.id.as_deref().unwrap_or("(no archive)");
        match &self.error {
            None => format!(
                "{} {id}: restored {} files, {} in {:.2} s, checked",
                self.strategy,
                self.files,
                human_bytes(self.bytes),
                self.seconds
            ),
            Some(e) => format!("{} {id}: {e}", self.strategy),
        }
    }
}

/// Every strategy's outcome, in the order asked.
#[derive(Clone, Debug, Default)]
pub struct DrillReport {
    pub outcomes: Vec<DrillOutcome>,
}

impl DrillReport {
    pub fn failed(&self) -> impl Iterator<Item = &DrillOutcome> {
        self.outcomes.iter().filter(|o| !o.ok)
    }

    pub fn all_ok(&self) -> bool {
        self.failed().next().is_none()
    }
}

impl Session {
    /// Drill `strategies` (see the module doc). Per-strategy failures are
    /// in the report (and in `state.json`); an `Err` means no drill ran.
    pub async fn drill(
        &self,
        strategies: &[Strategy],
        progress: &mut Progress,
    ) -> Result<DrillReport> {
        if strategies.is_empty() {
            return Err(msg(format!(
                "nothing to drill: {} configures no strategy",
                self.cfg.file.display()
            )));
        }
        let _lock = self.store.lock()?;
        clean_stale_scratch(self.store.root());
        let mut report = DrillReport::default();
        for &s in strategies {
            let o = self.drill_one(s, progress).await;
            let recorded = match &o.error {
                None => Ok(o.seconds),
                Some(e) => Err((o.seconds, e.clone())),
            };
            let now = crate::timefmt::now_unix();
            crate::state::update(self.backup_dir(), s, |r| r.record_drill(recorded, now));
            if let Some(e) = &o.error {
                log::warn!("recovery drill of {s} failed: {e}");
            }
            report.outcomes.push(o);
        }
        Ok(report)
    }

    async fn drill_one(&self, strategy: Strategy, progress: &mut Progress) -> DrillOutcome {
        let mut o = DrillOutcome {
            strategy,
            id: None,
            ok: false,
            seconds: 0.0,
            bytes: 0,
            files: 0,
            error: None,
        };
        let mut listing = self.list(Some(strategy));
        let archive = match newest(&mut listing, strategy) {
            Ok(a) => a,
            Err(e) => {
                o.error = Some(e.to_string());
                return o;
            }
        };
        o.id = Some(archive.meta.id.clone());
        match self.drill_archive(archive, progress, &mut o.seconds).await {
            Ok(r) => {
                o.ok = true;
                o.bytes = r.bytes;
                o.files = r.files;
            }
            Err(e) => o.error = Some(e.to_string()),
        }
        o
    }

    /// Restore `archive` into fresh scratch space, check it, remove it.
    /// `seconds` gets the recovery time even when the drill fails.
    async fn drill_archive(
        &self,
        archive: &Listed,
        progress: &mut Progress,
        seconds: &mut f64,
    ) -> Result<Restored> {
        let root = self.store.root();
        check_room(root, &archive.meta.id, archive.meta.content_bytes)?;
        let scratch = Scratch::create(root)?;
        let started = Instant::now();
        let listing = self.list(Some(archive.meta.strategy));
        let checked = async {
            let restored = crate::restore::run(
                archive,
                &listing.archives,
                self.key.as_ref(),
                Some(scratch.path()),
                None,
                false,
                progress,
            )
            .await?;
            if archive.meta.strategy == Strategy::Database {
                check_database(&archive.meta, scratch.path()).await?;
            }
            Ok::<_, crate::error::Error>(restored)
        }
        .await;
        *seconds = started.elapsed().as_secs_f64();
        let removed = scratch.remove();
        let restored = checked?;
        removed?;
        Ok(restored)
    }
}

/// The newest archive of `strategy`. A sidecar that cannot be read and is
/// newer than every readable one is the newest archive: the drill fails
/// with its reason instead of quietly drilling an older one.
fn newest(listing: &mut Listing, strategy: Strategy) -> Result<&Listed> {
    let prefix = format!("{}-", strategy.name());
    let newest_readable = listing
        .archives
        .iter()
        .rev()
        .find(|a| a.meta.strategy == strategy)
        .map(|a| a.meta.id.clone());
    let unreadable = listing
        .problems
        .iter()
        .filter_map(|(p, e)| {
            let id = p.file_name()?.to_str()?.strip_suffix(SIDECAR_EXT)?;
            (id.starts_with(&prefix) && newest_readable.as_deref().is_none_or(|n| id > n))
                .then(|| (id.to_string(), e))
        })
        .max_by(|a, b| a.0.cmp(&b.0));
    if let Some((id, e)) = unreadable {
        return Err(msg(format!(
            "the newest {strategy} archive {id} cannot be read: {e}"
        )));
    }
    select::by_selector(listing, strategy, &Selector::Latest)
}

/// Fail early, before writing, when the store's disk cannot hold the
/// restored content.
fn check_room(root: &Path, id: &str, content_bytes: u64) -> Result<()> {
    let st = rustix::fs::statvfs(root)
        .map_err(std::io::Error::from)
        .at("check the free space of", root)?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let need = content_bytes
        .saturating_add(content_bytes / 64)
        .saturating_add(ROOM_MARGIN);
    if free < need {
        return Err(msg(format!(
            "not enough free space for a drill of {id}: it needs about {} in {}, {} is free; free space there (e.g. `rvm-backup prune`) and drill again",
            human_bytes(need),
            root.display(),
            human_bytes(free)
        )));
    }
    Ok(())
}

/// Remove scratch directories a killed drill left in the store. Called
/// under the store lock, so no drill is using them.
fn clean_stale_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let is_scratch = name.to_str().is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
        // Not followed: only a real directory of that name is removed.
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_scratch && is_dir {
            let p = e.path();
            log::warn!("removing {}, left by an interrupted drill", p.display());
            if let Err(err) = std::fs::remove_dir_all(&p) {
                log::error!("cannot remove {}: {err}", p.display());
            }
        }
    }
}

/// The drill's own scratch directory: created fresh (never an existing
/// one), removed when done or dropped, and only while it is still the
/// directory that was created.
struct Scratch {
    path: PathBuf,
    dev: u64,
    ino: u64,
    removed: bool,
}

impl Scratch {
    fn create(root: &Path) -> Result<Scratch> {
        let n = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{SCRATCH_PREFIX}{}-{n}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .at("create the drill's scratch directory", &path)?;
        let m = std::fs::symlink_metadata(&path).at("inspect", &path)?;
        Ok(Scratch {
            path,
            dev: m.dev(),
            ino: m.ino(),
            removed: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_own_dir(&self.path, self.dev, self.ino)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = remove_own_dir(&self.path, self.dev, self.ino) {
                log::error!("{e}");
            }
        }
    }
}

fn remove_own_dir(path: &Path, dev: u64, ino: u64) -> Result<()> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at("inspect", path),
    };
    if !m.is_dir() || m.dev() != dev || m.ino() != ino {
        return Err(msg(format!(
            "{} is no longer the scratch directory this drill created; it was left alone, look at it and remove it by hand",
            path.display()
        )));
    }
    std::fs::remove_dir_all(path).at("remove the drill's scratch directory", path)
}

/// Open the restored database read-only and compare it with what the
/// sidecar recorded at backup time.
async fn check_database(meta: &Meta, scratch: &Path) -> Result<()> {
    let source = meta
        .sources
        .first()
        .ok_or_else(|| msg(format!("archive {} names no database path", meta.id)))?;
    let file = scratch.join(source.trim_start_matches('/'));
    let uri = format!("file:{}?immutable=1", uri_path(&file));
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| {
        msg(format!(
            "archive {}: the restored database cannot be opened: {e}",
            meta.id
        ))
    })?;
    compare(meta.schema_sha256, &meta.tables, &conn)
        .await
        .map_err(|why| {
            msg(format!(
                "archive {}: the restored database differs from what was backed up: {why}",
                meta.id
            ))
        })
}

/// Compare a database with a recorded schema hash and row counts; the
/// error names the first difference. An archive made before these were
/// recorded (`None`, no tables) passes on the restore's own checks.
async fn compare(
    schema: Option<[u8; 32]>,
    tables: &[(String, u64)],
    conn: &Connection,
) -> std::result::Result<(), String> {
    if let Some(want) = schema {
        let got =
            database::schema_sha256(conn).map_err(|e| format!("its schema cannot be read: {e}"))?;
        if got != want {
            return Err("its schema is not the one recorded at backup time".into());
        }
    }
    for (name, want) in tables {
        let got = database::count_rows(conn, name)
            .map_err(|e| format!("table {name:?} cannot be counted: {e}"))?;
        if got != *want {
            return Err(format!(
                "table {name:?} has {got} rows, the backup recorded {want}"
            ));
        }
        smol::future::yield_now().await;
    }
    Ok(())
}

/// A path as the path of an SQLite `file:` URI.
fn uri_path(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            '%' => s.push_str("%25"),
            '?' => s.push_str("%3F"),
            '#' => s.push_str("%23"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_root(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-drill-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn compare_names_the_table_and_the_schema() {
        let d = scratch_root("compare");
        let db = d.join("a?b#c%d.sqlite");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE deposits(x); CREATE TABLE refunds(y);
             INSERT INTO deposits VALUES (1), (2), (3);",
        )
        .unwrap();
        let schema = database::schema_sha256(&c).unwrap();
        drop(c);
        let uri = format!("file:{}?immutable=1", uri_path(&db));
        let ro = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let tables = vec![("deposits".to_string(), 3), ("refunds".to_string(), 0)];
        smol::block_on(compare(Some(schema), &tables, &ro)).unwrap();
        // An archive from before block 3 passes on the restore's checks.
        smol::block_on(compare(None, &[], &ro)).unwrap();
        let fewer = vec![("deposits".to_string(), 4)];
        let e = smol::block_on(compare(Some(schema), &fewer, &ro)).unwrap_err();
        assert!(
            e.contains("\"deposits\" has 3 rows") && e.contains("4"),
            "{e}"
        );
        let gone = vec![("prizes".to_string(), 0)];
        let e = smol::block_on(compare(None, &gone, &ro)).unwrap_err();
        assert!(e.contains("\"prizes\""), "{e}");
        let e = smol::block_on(compare(Some([0; 32]), &tables, &ro)).unwrap_err();
        assert!(e.contains("schema"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn scratch_is_fresh_private_and_only_removed_while_it_is_ours() {
        let d = scratch_root("scratch");
        let s = Scratch::create(&d).unwrap();
        let p = s.path().to_path_buf();
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "scratch is private: {mode:o}");
        std::fs::create_dir_all(p.join("x/y")).unwrap();
        std::fs::write(p.join("x/y/f"), b"1").unwrap();
        s.remove().unwrap();
        assert!(!p.exists());

        // Dropped (a cancelled drill): removed too.
        let s = Scratch::create(&d).unwrap();
        let p = s.path().to_path_buf();
        drop(s);
        assert!(!p.exists());

        // Replaced by another directory meanwhile: left alone, and said so.
        let s = Scratch::create(&d).unwrap();
        let p = s.path().to_path_buf();
        std::fs::rename(&p, d.join("moved")).unwrap();
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("precious"), b"1").unwrap();
        let e = s.remove().unwrap_err().to_string();
        assert!(e.contains("left alone"), "{e}");
        assert!(p.join("precious").exists());

        // Stale scratch of a killed drill goes; a symlink of that name and
        // other directories stay.
        std::fs::create_dir_all(d.join(".drill-1-0/deep")).unwrap();
        std::os::unix::fs::symlink(d.join("moved"), d.join(".drill-2-0")).unwrap();
        std::fs::create_dir(d.join("config")).unwrap();
        clean_stale_scratch(&d);
        assert!(!d.join(".drill-1-0").exists());
        assert!(d.join(".drill-2-0").symlink_metadata().is_ok());
        assert!(d.join("moved").is_dir() && d.join("config").is_dir());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_disk_without_room_fails_before_anything_is_written() {
        let d = scratch_root("room");
        check_room(&d, "logs-x", 1 << 20).unwrap();
        let e = check_room(&d, "logs-x", u64::MAX / 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not enough free space for a drill of logs-x") && e.contains("is free"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_cancelled_drill_leaves_no_scratch_and_records_nothing() {
        let d = scratch_root("cancel");
        let etc = d.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        for i in 0..40 {
            std::fs::write(etc.join(format!("f{i}")), vec![b'x'; 1000]).unwrap();
        }
        let text = format!(
            "backup_dir = \"{b}/backups\"\nencryption_enabled = false\n[config]\npaths = [\"{b}/etc\"]\n",
            b = d.display()
        );
        let cfg = crate::config::Config::parse(&text, Path::new("test.toml")).unwrap();
        let session = Session::open(cfg).unwrap();
        smol::block_on(session.backup(Strategy::Config, &mut Progress::silent())).unwrap();
        let backups = d.join("backups");
        let scratch_dirs = || {
            std::fs::read_dir(&backups)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(SCRATCH_PREFIX)
                })
                .count()
        };
        let mut progress = Progress::silent();
        let mut drill = Box::pin(session.drill(&[Strategy::Config], &mut progress));
        let mut polls = 0;
        while scratch_dirs() == 0 {
            assert!(smol::block_on(smol::future::poll_once(drill.as_mut())).is_none());
            polls += 1;
            assert!(polls < 1000, "the drill never made its scratch directory");
        }
        // Mid-restore: a few more steps, then cancel (drop the future).
        for _ in 0..5 {
            assert!(smol::block_on(smol::future::poll_once(drill.as_mut())).is_none());
        }
        drop(drill);
        assert_eq!(scratch_dirs(), 0, "a cancelled drill left its scratch");
        let st = crate::state::load(&backups);
        assert_eq!(st[&Strategy::Config].last_drill, None);
        // And the lock is free again: the next drill passes.
        let r =
            smol::block_on(session.drill(&[Strategy::Config], &mut Progress::silent())).unwrap();
        assert!(r.all_ok(), "{r:?}");
        assert_eq!(r.outcomes[0].files, 40);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn json_has_the_fields_the_issue_names() {
        let mut o = DrillOutcome {
            strategy: Strategy::Logs,
            id: Some("logs-x".into()),
            ok: true,
            seconds: 1.23456,
            bytes: 10,
            files: 2,
            error: None,
        };
        let v = o.to_json();
        assert_eq!(v["strategy"], "logs");
        assert_eq!(v["seconds"], 1.235);
        assert!(v.get("error").is_none());
        o.ok = false;
        o.error = Some("bad".into());
        assert_eq!(o.to_json()["error"], "bad");
    }
}

//! `export`: write a recovery set of this board onto a mounted stick
//! (`docs/format.md`, section 11; the layout is `recovery_set`'s).
//!
//! Sequence, all under the store lock (no prune deletes what is being
//! copied, no second export writes the same board directory):
//! 1. `DIR` must hold a writable stick of an allowed type
//!    (`recovery_set::stick`); no disaster restore may be unfinished (a
//!    half-restored board must not push its good sets off the stick); with
//!    encryption on, a recovery public key must be configured (a set
//!    without the sealed key dies with the card);
//! 2. per configured strategy the newest verified archive (`state.json`'s
//!    `last_verified`; else the newest archive, verified first);
//! 3. leftovers of an interrupted export of this board are removed
//!    (temporaries, set directories without `MANIFEST`, pool files no
//!    complete set references and this export does not need);
//! 4. the parts and then the sidecar go to `pool/<strategy>/` unless a
//!    file of that name with the right size and SHA-256 is there already
//!    (so the pool, like a store, holds an archive exactly when it holds
//!    its sidecar); each copy is crash-safe and read back from the stick;
//! 5. every archive is verified completely from the pool copy;
//! 6. `set-<UTC time>/` is created (a directory is never renamed: that
//!    fails on fusefat), `key.sealed` written, and `MANIFEST` last; the
//!    manifest is read back and opened with the key ring, the sealed key
//!    and sidecars are hashed again; if that fails, `MANIFEST` is removed;
//! 7. only then: the newest `export_keep` complete sets stay, older ones
//!    go (`MANIFEST` first), then pool files no remaining set references.
//!
//! Invariants: a set is complete only when every file it names is on the
//! stick and checked; a failure at any step (full stick, pulled stick,
//! power cut) leaves the previous sets complete and restorable; a new set
//! is always named later than every set on the stick (a board whose clock
//! went back would otherwise write a set that sorts oldest and is dropped
//! at once); only names this program writes are removed, only in this
//! board's directory. The outcome is recorded in `state.json`
//! (`last_export*`, on every configured strategy's record).

mod copy;
mod sets;
mod wal;

pub(super) use wal::stick_generation;
pub use wal::StickWalReport;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{msg, Result};
use crate::fsutil::{read_regular, Follow};
use crate::out::human_bytes;
use crate::progress::Progress;
use crate::recovery_set::manifest::MAX_MANIFEST_LEN;
use crate::recovery_set::{
    self, stick, BoardIdentity, Manifest, ManifestArchive, ManifestFile, MANIFEST_FILE, POOL_DIR,
    ROOT_DIR, SEALED_KEY_FILE,
};
use crate::store::{Listed, Store, SIDECAR_EXT};
use crate::strategy::Strategy;

use self::copy::{StickIo, Want};
use super::Session;

/// Most tries to find a free set name (one second later each).
const MAX_SET_NAME_TRIES: i64 = 100;
/// Room wanted for the small files beyond the archives.
const SMALL_FILES_ROOM: u64 = 1 << 20;

/// One archive of the set, and what it cost to put it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedArchive {
    pub strategy: Strategy,
    pub id: String,
    /// Bytes copied onto the stick now.
    pub copied_bytes: u64,
    /// Bytes already on the stick with the right hash.
    pub reused_bytes: u64,
    /// Files (sidecar and parts).
    pub files: usize,
}

/// What an export did.
#[derive(Clone, Debug)]
pub struct ExportReport {
    pub dir: PathBuf,
    /// `DIR/rvm-backup/<board>`.
    pub board_dir: PathBuf,
    /// The new set's directory name.
    pub set: String,
    pub encrypted: bool,
    pub archives: Vec<ExportedArchive>,
    /// Older sets removed (beyond `export_keep`).
    pub removed_sets: Vec<String>,
    pub removed_pool_files: usize,
    /// The point-in-time segments copied after the set (`None`: failed,
    /// see the notes).
    pub wal: Option<StickWalReport>,
    /// Things that went wrong after the set was complete (cleaning).
    pub notes: Vec<String>,
}

impl ExportReport {
    pub fn copied(&self) -> u64 {
        self.archives.iter().map(|a| a.copied_bytes).sum()
    }

    pub fn reused(&self) -> u64 {
        self.archives.iter().map(|a| a.reused_bytes).sum()
    }

    /// One line for a job's outcome.
    pub fn describe(&self) -> String {
        format!(
            "set {} written to {} and verified: {} archives, {} copied, {} already on the stick{}{}",
            self.set,
            self.board_dir.display(),
            self.archives.len(),
            human_bytes(self.copied()),
            human_bytes(self.reused()),
            if self.removed_sets.is_empty() {
                String::new()
            } else {
                format!("; removed older sets {}", self.removed_sets.join(" "))
            },
            match &self.wal {
                Some(w) if w.copied + w.present > 0 => format!(
                    "; point-in-time segments on the stick: {} ({} copied now)",
                    w.copied + w.present,
                    w.copied
                ),
                _ => String::new(),
            }
        )
    }
}

/// One archive chosen for the set, with what each of its files must be.
/// (Also the offsite store's sets, `ops::offsite::sets`.)
pub(in crate::ops) struct Chosen {
    pub(in crate::ops) listed: Listed,
    /// (file name, local path, what it must be); the sidecar first.
    files: Vec<(String, PathBuf, Want)>,
}

impl Session {
    /// Export a recovery set to `dir` (the configured `export_dir` when
    /// `None`); see the module doc. The outcome is recorded in
    /// `state.json` either way.
    pub async fn export(
        &self,
        dir: Option<&Path>,
        progress: &mut Progress,
    ) -> Result<ExportReport> {
        let dir = dir.map_or_else(|| self.cfg.export_dir.clone(), Path::to_path_buf);
        let result = self.export_to(&dir, progress).await;
        let now = crate::timefmt::now_unix();
        let outcome = match &result {
            Ok(r) => Ok(r.set.clone()),
            Err(e) => Err(e.to_string()),
        };
        crate::state::update_many(self.backup_dir(), &self.cfg.configured(), |r| {
            r.record_export(outcome.clone(), now)
        });
        result
    }

    async fn export_to(&self, dir: &Path, progress: &mut Progress) -> Result<ExportReport> {
        let stick = stick::check(dir, self.backup_dir()).map_err(|e| msg(e.to_string()))?;
        if super::restore_interrupted(&self.cfg) {
            // A half-restored board must not push the sets it is being
            // restored from off the stick.
            return Err(msg(
                "a disaster restore of this board was interrupted and is not finished: no export until it is (run disaster-restore again, or reboot with the recovery stick in)",
            ));
        }
        if self.cfg.encryption_enabled && self.cfg.recovery_public_key.is_none() {
            return Err(self.no_recovery_key());
        }
        if self.cfg.configured().is_empty() {
            return Err(msg(format!(
                "nothing to export: {} configures no strategy",
                self.cfg.file.display()
            )));
        }
        let _lock = self.store.lock()?;
        let chosen = self.choose_for_export(progress).await?;
        let encrypted =
            self.cfg.encryption_enabled || chosen.iter().any(|c| c.listed.meta.encrypted);
        let keys = self.set_keys(encrypted)?;
        let identity = BoardIdentity::current(&self.cfg.machine_id_file)?;
        let mut io = StickIo {
            stick: &stick,
            needed: 0,
        };

        // The board's directories, and what an interrupted export left.
        let mkdir = |parent: &Path, name: &str| {
            sets::ensure_dir(parent, name, stick.dev)
                .map_err(|e| io.error("create", &parent.join(name), e))
        };
        let root = mkdir(&stick.dir, ROOT_DIR)?;
        let board = mkdir(&root, &identity.dir_name())?;
        let pool = mkdir(&board, POOL_DIR)?;
        for c in &chosen {
            mkdir(&pool, c.listed.meta.strategy.name())?;
        }
        sets::clean_leftovers(&board, &pool).map_err(|e| io.error("clean up", &board, e))?;
        let needed_names: BTreeSet<String> = chosen
            .iter()
            .flat_map(|c| {
                let s = c.listed.meta.strategy.name();
                c.files.iter().map(move |(n, _, _)| format!("{s}/{n}"))
            })
            .collect();
        let existing = sets::list_sets(&board).map_err(|e| io.error("read", &board, e))?;
        match sets::referenced(&board, &existing) {
            Ok(mut keep) => {
                keep.extend(needed_names.iter().cloned());
                sets::collect_pool(&pool, &keep).map_err(|e| io.error("clean up", &pool, e))?;
            }
            Err(e) => log::warn!("not cleaning the pool on the stick: {e}"),
        }

        // What is on the stick already, and what must be copied.
        progress.start(&format!("check the stick at {}", dir.display()), None);
        let mut plan = Vec::new();
        for c in &chosen {
            let sdir = pool.join(c.listed.meta.strategy.name());
            let mut todo = Vec::new();
            let mut reused = 0;
            for (name, src, want) in &c.files {
                let dest = sdir.join(name);
                let there = copy::hash_file(&dest, progress)
                    .await
                    .map_err(|e| io.error("read", &dest, e))?;
                if there == Some((want.bytes, want.sha256)) {
                    reused += want.bytes;
                } else {
                    todo.push((src.clone(), dest, want.clone()));
                }
            }
            // Parts first, the sidecar last, as in the store: the pool
            // holds an archive exactly when it holds its sidecar.
            let sidecar_first = todo
                .first()
                .is_some_and(|(_, d, _)| d.to_string_lossy().ends_with(SIDECAR_EXT));
            todo.rotate_left(usize::from(sidecar_first));
            plan.push((todo, reused));
        }
        progress.finish();
        io.needed = plan
            .iter()
            .flat_map(|(t, _)| t.iter().map(|(_, _, w)| w.bytes))
            .sum::<u64>()
            .saturating_add(SMALL_FILES_ROOM);
        check_room(&pool, &io)?;

        // Copy, read back, verify.
        progress.start(&format!("export to {}", dir.display()), Some(io.needed));
        let mut archives = Vec::new();
        for (c, (todo, reused)) in chosen.iter().zip(plan) {
            let mut copied = 0;
            for (src, dest, want) in &todo {
                copy::copy_in(src, dest, want, &io, progress).await?;
                copied += want.bytes;
            }
            archives.push(ExportedArchive {
                strategy: c.listed.meta.strategy,
                id: c.listed.meta.id.clone(),
                copied_bytes: copied,
                reused_bytes: reused,
                files: c.files.len(),
            });
        }
        progress.finish();
        self.verify_pool(&pool, &chosen, &io, progress).await?;

        // The set: its directory, the sealed key, the manifest last.
        let set = create_set_dir(&board, &existing, &io)?;
        let set_dir = board.join(&set);
        let written = async {
            let sealed_key = match sealed_ring(keys)? {
                Some(bytes) => {
                    copy::write_small(&set_dir.join(SEALED_KEY_FILE), &bytes, &io, progress)
                        .await?;
                    Some(manifest_file(SEALED_KEY_FILE.into(), &bytes))
                }
                None => None,
            };
            let archives = chosen.iter().map(manifest_archive).collect();
            let manifest = new_manifest(
                set.clone(),
                &identity,
                encrypted,
                keys,
                sealed_key,
                archives,
            );
            let bytes = manifest.seal(keys.map(|(r, _)| r.writing()));
            if !stick.still_there() {
                return Err(io.error(
                    "write",
                    &set_dir,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            }
            copy::write_small(&set_dir.join(MANIFEST_FILE), &bytes, &io, progress).await?;
            Ok(manifest)
        }
        .await;
        let checked = match written {
            Ok(m) => self.check_set(&set_dir, &pool, &m, &io, progress).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            // Not complete: whatever it holds, it must not count.
            if let Err(r) = sets::remove_set(&board, &set) {
                log::warn!(
                    "cannot remove the unfinished set {}: {r}",
                    set_dir.display()
                );
            }
            return Err(e);
        }

        let mut report = ExportReport {
            dir: dir.to_path_buf(),
            board_dir: board.clone(),
            set: set.clone(),
            encrypted,
            archives,
            removed_sets: Vec::new(),
            removed_pool_files: 0,
            wal: None,
            notes: Vec::new(),
        };
        self.keep_newest(&board, &pool, &set, &mut report);
        // The point-in-time segments of the set's database archive (if it
        // is a generation's snapshot): the set is complete already, so a
        // failure here is a note and the daemon copies them later.
        match wal::ship(self.backup_dir(), &board, &stick, u64::MAX, progress).await {
            Ok(w) => report.wal = Some(w),
            Err(e) => {
                let n = format!("the point-in-time segments were not all copied to the stick: {e}");
                log::warn!("{n}");
                report.notes.push(n);
            }
        }
        log::info!("{}", report.describe());
        Ok(report)
    }

    /// What a set of encrypted archives is sealed with: the loaded key
    /// ring and the configured recovery public key (`None` unencrypted).
    pub(in crate::ops) fn set_keys(&self, encrypted: bool) -> Result<SetKeys<'_>> {
        if !encrypted {
            return Ok(None);
        }
        let ring = self
            .key
            .as_ref()
            .ok_or_else(|| msg("the archives are encrypted but no key ring is loaded"))?;
        let public = self
            .cfg
            .recovery_public_key
            .as_ref()
            .ok_or_else(|| self.no_recovery_key())?;
        Ok(Some((ring, public)))
    }

    fn no_recovery_key(&self) -> crate::error::Error {
        msg(format!(
            "encryption is on but no recovery_public_key is configured, and a set without the sealed key dies with the card: make the fleet's recovery key once with `rvm-backup keygen --recovery --out FILE` (keep FILE off the board), put the recovery_public_key line it prints into {}, and export (or sync) again",
            self.cfg.file.display()
        ))
    }

    /// Per configured strategy the archive to export (see the module doc).
    async fn choose_for_export(&self, progress: &mut Progress) -> Result<Vec<Chosen>> {
        let state = crate::state::load(self.backup_dir());
        let mut out = Vec::new();
        for s in self.cfg.configured() {
            let listing = self.list(Some(s));
            let verified = state.get(&s).and_then(|r| r.last_verified.as_deref());
            if let Some(snap) = self.pitr_snapshot_for_export(&listing.archives, verified) {
                // The newest point-in-time generation's snapshot: its
                // segments go onto the stick with the set.
                if Some(snap.as_str()) != verified {
                    if let Some(a) = listing.archives.iter().find(|a| a.meta.id == snap) {
                        match crate::verify::verify_chain(a, &listing.archives, self.key.as_ref(), progress).await {
                            Ok(_) => {
                                self.remember_verified(&listing.archives, &a.meta.id);
                                out.push(chosen(a.clone(), &listing.archives)?);
                                continue;
                            }
                            Err(e) => log::warn!(
                                "the point-in-time snapshot {snap} does not verify ({e}); exporting the newest verified database archive instead"
                            ),
                        }
                    }
                }
            }
            let listed = match verified
                .and_then(|v| listing.archives.iter().find(|a| a.meta.id == v))
            {
                Some(a) => a.clone(),
                None => {
                    let a = listing.archives.last().ok_or_else(|| {
                        msg(format!(
                            "there is no {s} archive to export yet: run `rvm-backup backup {s}` first"
                        ))
                    })?;
                    crate::verify::verify_chain(a, &listing.archives, self.key.as_ref(), progress)
                        .await
                        .map_err(|e| {
                            msg(format!(
                                "the newest {s} archive {} does not verify, so it is not exported: {e}; run `rvm-backup backup {s}` and export again",
                                a.meta.id
                            ))
                        })?;
                    self.remember_verified(&listing.archives, &a.meta.id);
                    a.clone()
                }
            };
            out.push(chosen(listed, &listing.archives)?);
        }
        Ok(out)
    }

    /// For the database: the newest point-in-time generation's snapshot,
    /// when it is in the store and the generation reaches at least as far
    /// as the verified archive.
    pub(in crate::ops) fn pitr_snapshot_for_export(
        &self,
        archives: &[Listed],
        verified: Option<&str>,
    ) -> Option<String> {
        self.cfg.database.as_ref().filter(|d| d.pitr_enabled())?;
        let g = crate::pitr::store::generations(self.backup_dir()).pop()?;
        let snap = archives.iter().find(|a| a.meta.id == g.id)?;
        if snap.meta.strategy != Strategy::Database {
            return None;
        }
        // The generation reaches its newest shipped commit: it is worth
        // more than any archive made before that (a scheduled database
        // backup after the snapshot included).
        let reach = g
            .range(self.key(), self.cfg.encryption_enabled)
            .map_or(snap.meta.created, |(_, last)| last.time)
            .max(snap.meta.created);
        let newer = verified
            .and_then(|v| archives.iter().find(|a| a.meta.id == v))
            .is_none_or(|v| v.meta.created <= reach);
        newer.then_some(g.id)
    }

    /// The daemon's stick step: copy at most `budget` new point-in-time
    /// segments to the stick at `export_dir` (see `wal`). `Ok(None)` when
    /// there is nothing to do: no writable stick there, no set of this
    /// board on it, or a disaster restore is unfinished.
    pub async fn ship_wal_to_stick(&self, budget: u64) -> Result<Option<StickWalReport>> {
        let Ok(stick) = stick::check(&self.cfg.export_dir, self.backup_dir()) else {
            return Ok(None);
        };
        if super::restore_interrupted(&self.cfg) {
            return Ok(None);
        }
        let identity = BoardIdentity::current(&self.cfg.machine_id_file)?;
        let board = stick.dir.join(ROOT_DIR).join(identity.dir_name());
        if !std::fs::symlink_metadata(&board).is_ok_and(|m| m.file_type().is_dir()) {
            return Ok(None);
        }
        let mut progress = Progress::silent();
        wal::ship(self.backup_dir(), &board, &stick, budget, &mut progress)
            .await
            .map(Some)
    }

    /// Read every archive through from the pool copy.
    async fn verify_pool(
        &self,
        pool: &Path,
        chosen: &[Chosen],
        io: &StickIo<'_>,
        progress: &mut Progress,
    ) -> Result<()> {
        let store = Store::new(pool);
        for c in chosen {
            let id = &c.listed.meta.id;
            let listing = store.list(Some(c.listed.meta.strategy), self.key.as_ref());
            let Some(a) = listing.archives.iter().find(|a| &a.meta.id == id) else {
                if !io.stick.still_there() {
                    return Err(io.error(
                        "read",
                        pool,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                let why = listing
                    .problems
                    .iter()
                    .find(|(p, _)| p.ends_with(format!("{id}{SIDECAR_EXT}")))
                    .map_or_else(
                        || "its sidecar is missing".to_string(),
                        |(_, e)| e.to_string(),
                    );
                return Err(msg(format!(
                    "archive {id} does not read back from the stick at {}: {why}; the stick may be failing",
                    io.stick.dir.display()
                )));
            };
            crate::verify::verify_chain(a, &listing.archives, self.key.as_ref(), progress)
                .await
                .map_err(|e| {
                    if io.stick.still_there() {
                        msg(format!(
                            "archive {id} does not verify from the stick at {}: {e}; the stick may be failing: use another stick",
                            io.stick.dir.display()
                        ))
                    } else {
                        io.error("read", &a.dir, std::io::Error::from(std::io::ErrorKind::NotFound))
                    }
                })?;
        }
        Ok(())
    }

    /// The set as written: the manifest opens with the key ring and is
    /// the one written; the sealed key and every sidecar hash right (the
    /// parts were checked by the verification against the sidecars).
    async fn check_set(
        &self,
        set_dir: &Path,
        pool: &Path,
        written: &Manifest,
        io: &StickIo<'_>,
        progress: &mut Progress,
    ) -> Result<()> {
        let path = set_dir.join(MANIFEST_FILE);
        let (_, bytes) = read_regular(&path, MAX_MANIFEST_LEN, Follow::No)
            .map_err(|e| io.error("read back", &path, e))?;
        let m = Manifest::open(&bytes, self.key.as_ref(), written.encrypted)
            .map_err(|e| msg(format!("{} does not read back: {e}", path.display())))?;
        if &m != written {
            return Err(msg(format!(
                "{} reads back differently than it was written: the stick may be failing",
                path.display()
            )));
        }
        let mut files: Vec<(PathBuf, &ManifestFile)> = Vec::new();
        if let Some(k) = &m.sealed_key {
            files.push((set_dir.join(&k.name), k));
        }
        for a in &m.archives {
            if let Some(f) = a.files.first() {
                files.push((pool.join(&f.name), f));
            }
        }
        for (p, f) in files {
            let want = Want {
                bytes: f.bytes,
                sha256: f.digest(),
            };
            copy::check_on_stick(&p, &want, io, progress).await?;
        }
        for a in &m.archives {
            for f in &a.files {
                let p = pool.join(&f.name);
                let len = std::fs::symlink_metadata(&p)
                    .map_err(|e| io.error("read back", &p, e))?
                    .len();
                if len != f.bytes {
                    return Err(msg(format!(
                        "{} is {len} bytes on the stick, not {}: the stick may be failing",
                        p.display(),
                        f.bytes
                    )));
                }
            }
        }
        Ok(())
    }

    /// Keep the newest `export_keep` complete sets, then collect the pool.
    /// The new set is complete already: problems here are notes.
    fn keep_newest(&self, board: &Path, pool: &Path, ours: &str, report: &mut ExportReport) {
        let mut note = |n: String| {
            log::warn!("{n}");
            report.notes.push(n);
        };
        let all = match sets::list_sets(board) {
            Ok(s) => s,
            Err(e) => return note(format!("cannot list the sets in {}: {e}", board.display())),
        };
        let complete: Vec<&sets::SetDir> = all.iter().filter(|s| s.complete).collect();
        let keep = usize::try_from(self.cfg.export_keep).unwrap_or(1).max(1);
        let drop_n = complete.len().saturating_sub(keep);
        for s in complete.iter().take(drop_n).filter(|s| s.name != ours) {
            match sets::remove_set(board, &s.name) {
                Ok(()) => report.removed_sets.push(s.name.clone()),
                Err(e) => note(format!("cannot remove the old set {}: {e}", s.name)),
            }
        }
        let remaining = match sets::list_sets(board) {
            Ok(s) => s,
            Err(e) => return note(format!("cannot list the sets in {}: {e}", board.display())),
        };
        match sets::referenced(board, &remaining) {
            Ok(refs) => match sets::collect_pool(pool, &refs) {
                Ok(n) => report.removed_pool_files = n,
                Err(e) => note(format!("cannot clean the pool {}: {e}", pool.display())),
            },
            Err(e) => note(format!("not cleaning the pool on the stick: {e}")),
        }
    }
}

/// What each file of an archive must be: the sidecar as it is on disk,
/// the parts as the sidecar records them.
/// The files of `listed` (sidecar first, then its parts) and, for an
/// incremental archive, those of every archive of its chain (parent,
/// grandparent, ... the full one): the holders of its kind 5 entries are
/// among them, so the set restores on its own.
pub(in crate::ops) fn chosen(listed: Listed, archives: &[Listed]) -> Result<Chosen> {
    let mut files = archive_files(&listed)?;
    if listed.meta.parent.is_some() {
        let chain = crate::chain::plan::chain_of(archives, &listed).ok_or_else(|| {
            msg(format!(
                "archive {} is incremental but its chain is incomplete (an archive it builds on is missing), so it cannot be exported; run `rvm-backup backup --full {}` and export again",
                listed.meta.id, listed.meta.strategy
            ))
        })?;
        let mut cur = listed.meta.parent.clone();
        let mut left = chain.0;
        while let (Some(id), true) = (cur, left > 0) {
            left -= 1;
            let Some(a) = archives.iter().find(|a| a.meta.id == id) else {
                break;
            };
            files.extend(archive_files(a)?);
            cur = a.meta.parent.clone();
        }
    }
    if files.len() > recovery_set::manifest::MAX_FILES_PER_ARCHIVE {
        return Err(msg(format!(
            "archive {} and its chain have {} files, more than a recovery set can name; raise max_part_size or lower full_every_count",
            listed.meta.id,
            files.len()
        )));
    }
    Ok(Chosen { listed, files })
}

type ArchiveFiles = Vec<(String, PathBuf, Want)>;

fn archive_files(listed: &Listed) -> Result<ArchiveFiles> {
    let sidecar = listed.sidecar_path();
    let (_, bytes) = read_regular(
        &sidecar,
        crate::format::sidecar::MAX_SIDECAR_LEN,
        Follow::No,
    )
    .map_err(|e| msg(format!("cannot read {}: {e}", sidecar.display())))?;
    let mut files = vec![(
        format!("{}{SIDECAR_EXT}", listed.meta.id),
        sidecar,
        Want {
            bytes: bytes.len() as u64,
            sha256: crate::crypto::sha256(&bytes),
        },
    )];
    for p in &listed.meta.parts {
        files.push((
            p.name.clone(),
            listed.dir.join(&p.name),
            Want {
                bytes: p.bytes,
                sha256: p.sha256,
            },
        ));
    }
    Ok(files)
}

/// What a set is sealed with: the key ring and the fleet's recovery
/// public key (`None`: the archives are not encrypted).
pub(in crate::ops) type SetKeys<'a> = Option<(
    &'a crate::crypto::KeyRing,
    &'a crate::recovery::RecoveryPublicKey,
)>;

/// The key ring sealed to the recovery public key (`key.sealed`), if any.
pub(in crate::ops) fn sealed_ring(keys: SetKeys<'_>) -> Result<Option<Vec<u8>>> {
    keys.map(|(ring, public)| {
        crate::recovery::seal(ring, public)
            .map_err(|e| msg(format!("cannot seal the key ring: {e}")))
    })
    .transpose()
}

/// A set's manifest, on a stick or in the offsite store: this board, now,
/// the sealed key ring's file and the archives it names.
pub(in crate::ops) fn new_manifest(
    set: String,
    identity: &BoardIdentity,
    encrypted: bool,
    keys: SetKeys<'_>,
    sealed_key: Option<ManifestFile>,
    archives: Vec<ManifestArchive>,
) -> Manifest {
    Manifest {
        version: 1,
        set,
        board: identity.dir_name(),
        hostname: identity.hostname.chars().take(255).collect(),
        machine_id: identity.machine_id.clone(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created: crate::timefmt::now_unix(),
        encrypted,
        key_id: keys.map(|(r, _)| r.writing().id().to_string()),
        recovery_key_id: keys.map(|(_, p)| p.id().to_string()),
        sealed_key,
        archives,
    }
}

pub(in crate::ops) fn manifest_file(name: String, bytes: &[u8]) -> ManifestFile {
    ManifestFile {
        name,
        bytes: bytes.len() as u64,
        sha256: recovery_set::manifest::hex(&crate::crypto::sha256(bytes)),
    }
}

pub(in crate::ops) fn manifest_archive(c: &Chosen) -> ManifestArchive {
    let m = &c.listed.meta;
    ManifestArchive {
        strategy: m.strategy.name().into(),
        id: m.id.clone(),
        created: m.created,
        entries: m.files + m.dirs + m.symlinks + m.hardlinks,
        content_bytes: m.content_bytes,
        files: c
            .files
            .iter()
            .map(|(n, _, w)| ManifestFile {
                name: format!("{}/{n}", m.strategy.name()),
                bytes: w.bytes,
                sha256: recovery_set::manifest::hex(&w.sha256),
            })
            .collect(),
    }
}

/// Fail before writing when the stick says it has too little room (a
/// file system that reports no size, like fusefat, is not judged).
fn check_room(pool: &Path, io: &StickIo<'_>) -> Result<()> {
    let Ok(st) = rustix::fs::statvfs(pool) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if st.f_blocks > 0 && free < io.needed {
        return Err(io.error(
            "write",
            pool,
            std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        ));
    }
    Ok(())
}

/// Create the new set's directory, named later than every set there
/// (and than now); a name taken (two exports in one second) moves on a
/// second.
fn create_set_dir(board: &Path, existing: &[sets::SetDir], io: &StickIo<'_>) -> Result<String> {
    let newest = existing
        .iter()
        .filter_map(|s| s.name.strip_prefix(recovery_set::SET_PREFIX))
        .filter_map(|t| crate::timefmt::parse(t).ok())
        .max();
    let mut t = crate::timefmt::now_unix();
    if let Some(n) = newest {
        t = t.max(n.saturating_add(1));
    }
    for _ in 0..MAX_SET_NAME_TRIES {
        let name = recovery_set::set_name(t);
        let p = board.join(&name);
        match std::fs::create_dir(&p) {
            Ok(()) => {
                copy::sync_dir(board).map_err(|e| io.error("sync", board, e))?;
                return Ok(name);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => t += 1,
            Err(e) => return Err(io.error("create", &p, e)),
        }
    }
    Err(msg(format!(
        "cannot find a free set name in {}: clean it up",
        board.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_set_is_named_after_every_set_there_and_never_collides() {
        let d = std::env::temp_dir().join(format!("rvb-export-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let stick = stick::Stick {
            dir: d.clone(),
            dev: 0,
            mount: stick::parse_line("1 0 0:1 / /x rw - vfat src rw").unwrap(),
        };
        let io = StickIo {
            stick: &stick,
            needed: 0,
        };
        // A set from a clock that was ahead: the next ones follow it.
        std::fs::create_dir(d.join("set-29991231T235958Z")).unwrap();
        let existing = sets::list_sets(&d).unwrap();
        assert_eq!(
            create_set_dir(&d, &existing, &io).unwrap(),
            "set-29991231T235959Z"
        );
        // The same listing again (two exports in one second): the name
        // taken moves on a second.
        assert_eq!(
            create_set_dir(&d, &existing, &io).unwrap(),
            "set-30000101T000000Z"
        );
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        let now = crate::timefmt::now_unix();
        let name = create_set_dir(&d, &[], &io).unwrap();
        let t = crate::timefmt::parse(name.strip_prefix("set-").unwrap()).unwrap();
        assert!(t >= now && t <= now + 5, "{name}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

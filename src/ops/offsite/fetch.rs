//! `disaster-restore --from s3`: bring the newest complete recovery set
//! of this board's prefix down from the offsite store into a staging
//! directory laid out like a recovery stick (`recovery_set`), so that the
//! one disaster-restore path (`ops::disaster`) restores from it.
//!
//! Staging directory: `<backup_dir>/offsite-restore/` (created 0700):
//!
//! ```text
//! rvm-backup/<board>/pool/<strategy>/<archive files>
//! rvm-backup/<board>/set-<UTC time>/key.sealed, MANIFEST (written last)
//! rvm-backup/<board>/wal/<generation>/<seq:012>.rvw
//! ```
//!
//! Order: list `<prefix>sets/`; newest first (at most
//! [`sets::MAX_SETS_TRIED`]), fetch a set's `MANIFEST` and `key.sealed`
//! and open it with the board's key or the recovery key (the same sources
//! and code as the stick path); the first that opens is used, the refused
//! ones are noted. Then every file it names and every WAL segment of its
//! database archive's generation is downloaded, unless the staging
//! directory holds it already with the right size (and hash).
//!
//! Invariants: fixed memory (ranged GETs of [`RANGE`] bytes streamed to a
//! temporary file, hashed in a second pass); crash-safe (temporary name,
//! fsync, size and SHA-256 checked against the manifest, rename, fsync the
//! directory), so a rerun after a power cut or a dropped link only fetches
//! what is missing; the free space is checked before the first download;
//! the staged `MANIFEST` is written only after every file it names is in
//! place, so the staged set is complete exactly when the remote one was;
//! before a set opened with a key, only its `key.sealed` is written (to
//! open it; checked against the manifest's hash, removed when no set
//! opens); only names of our shapes are ever removed, and only inside the
//! staging directory; sizes from the store's listing are bounded (a
//! segment by [`MAX_SEGMENT_OBJECT`]; the fetching pass by what the
//! counting pass found, for which the room was checked).

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::sets::{self, get_small, list_set_objects, set_key, sets_with_manifest};
use super::{s3_err, Target};
use crate::config::Config;
use crate::error::{msg, Result};
use crate::fsutil::{sync_dir, tmp_path};
use crate::offsite::s3::S3Error;
use crate::ops::disaster::{unlock_set, FoundSet, KeySources};
use crate::ops::Session;
use crate::pitr::segment;
use crate::progress::Progress;
use crate::recovery::MAX_SEALED_LEN;
use crate::recovery_set::manifest::MAX_MANIFEST_LEN;
use crate::recovery_set::{
    self, Manifest, ManifestFile, MANIFEST_FILE, POOL_DIR, ROOT_DIR, SEALED_KEY_FILE, WAL_DIR,
};
use crate::store::Store;
use crate::strategy::Strategy;

/// The staging directory's name under `backup_dir`.
pub const STAGE_DIR: &str = "offsite-restore";
/// Bytes asked for per ranged GET (a dropped link costs at most this).
pub const RANGE: u64 = 8 << 20;
/// Tries per range before the download gives up.
const RANGE_TRIES: u32 = 3;
/// Pages of a generation's segment listing read at most.
const MAX_WAL_PAGES: usize = 1024;
/// Room kept free beyond the downloads.
const SPARE_ROOM: u64 = 16 << 20;
/// The largest WAL segment object downloaded: a segment holds at most
/// 4096 frames of at most 64 KiB pages (about 256 MiB before compression);
/// a listing that says more is the store's mistake or an attack on the
/// board's disk.
const MAX_SEGMENT_OBJECT: u64 = 512 << 20;

/// A set brought down from the store into the staging directory.
#[derive(Debug)]
pub struct Staged {
    /// The staging directory: `disaster-restore` reads it as a stick.
    pub dir: PathBuf,
    /// `s3://<bucket>/<prefix>` in words.
    pub store: String,
    pub set: String,
    /// Bytes downloaded now, and bytes found staged already.
    pub downloaded: u64,
    pub reused: u64,
    /// WAL segments of the set's database archive staged.
    pub segments: u64,
    /// Newer sets that were refused, and why.
    pub notes: Vec<String>,
    /// Every file staged but the segments (for [`Staged::remove`]).
    files: Vec<PathBuf>,
    /// The generation's directory of segments (all of them are ours).
    wal_dir: Option<PathBuf>,
}

impl Staged {
    /// One line for the account.
    pub fn describe(&self) -> String {
        format!(
            "set {} brought down from {} into {}: {} downloaded, {} staged already, {} WAL segment(s)",
            self.set,
            self.store,
            self.dir.display(),
            crate::out::human_bytes(self.downloaded),
            crate::out::human_bytes(self.reused),
            self.segments
        )
    }

    /// Remove the staged files and then the directories they were in
    /// (a directory holding anything else stays). Problems are returned.
    pub fn remove(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for f in &self.files {
            if let Err(e) = fs::remove_file(f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    problems.push(format!("cannot remove {}: {e}", f.display()));
                }
            }
        }
        if let Some(w) = &self.wal_dir {
            for n in fs::read_dir(w).into_iter().flatten().flatten() {
                let ours = n.file_name().to_str().is_some_and(|s| {
                    segment::parse_name(s.strip_suffix(crate::fsutil::TMP_SUFFIX).unwrap_or(s))
                        .is_some()
                });
                if ours && n.file_type().is_ok_and(|t| t.is_file()) {
                    if let Err(e) = fs::remove_file(n.path()) {
                        problems.push(format!("cannot remove {}: {e}", n.path().display()));
                    }
                }
            }
        }
        let mut dirs: Vec<PathBuf> = self
            .files
            .iter()
            .chain(self.wal_dir.as_ref().map(|w| w.join("x")).iter())
            .flat_map(|f| f.ancestors().skip(1).map(Path::to_path_buf))
            .filter(|d| d.starts_with(&self.dir))
            .collect();
        dirs.sort();
        dirs.dedup();
        // Deepest first.
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        problems
    }
}

/// A file to stage: its key, where it goes, what it must be.
pub(super) struct Want {
    pub key: String,
    pub dest: PathBuf,
    pub bytes: u64,
    pub sha256: Option<[u8; 32]>,
}

/// Create `parent/name` (0700) unless it is a directory already; refuse
/// anything else there (a symbolic link is never followed).
pub(super) fn ensure_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    let p = parent.join(name);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_dir() => return Ok(p),
        Ok(m) => {
            return Err(msg(format!(
                "{} is {}, not a directory: remove it and run disaster-restore again",
                p.display(),
                crate::fsutil::describe_type(m.file_type())
            )))
        }
        Err(_) => {}
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&p)
        .map_err(|e| msg(format!("cannot create {}: {e}", p.display())))?;
    sync_dir(parent)?;
    Ok(p)
}

/// SHA-256 and length of a regular file (never following a link), or
/// `None` when it is not there.
fn hash_file(path: &Path) -> Result<Option<(u64, [u8; 32])>> {
    let (mut f, _) = match crate::fsutil::open_regular(path, crate::fsutil::Follow::No) {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(msg(format!("cannot read {}: {e}", path.display()))),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::offsite::s3::CHUNK];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| msg(format!("cannot read {}: {e}", path.display())))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok(Some((n, h.finalize().into())))
}

/// Whether `w` is staged already.
pub(super) fn is_staged(w: &Want) -> Result<bool> {
    match w.sha256 {
        Some(sha) => Ok(hash_file(&w.dest)? == Some((w.bytes, sha))),
        None => Ok(fs::symlink_metadata(&w.dest).is_ok_and(|m| m.is_file() && m.len() == w.bytes)),
    }
}

/// Write small bytes crash-safely at `dest`.
fn write_small(dest: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(dest, bytes, 0o600)
}

/// A fresh temporary file beside `dest` (a stale one is removed first;
/// never through a symbolic link).
fn create_tmp(dest: &Path) -> Result<(PathBuf, File)> {
    let tmp = tmp_path(dest);
    if fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_file() || m.file_type().is_symlink()) {
        fs::remove_file(&tmp).map_err(|e| msg(format!("cannot remove {}: {e}", tmp.display())))?;
    }
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(&tmp)
        .map_err(|e| msg(format!("cannot create {}: {e}", tmp.display())))?;
    Ok((tmp, f))
}

/// Whether another try of a range may help.
fn transient(e: &S3Error) -> bool {
    matches!(e, S3Error::Unreachable(_) | S3Error::Other(_))
}

/// Download `w` in ranges into a temporary file, check it, publish it.
pub(super) async fn download(t: &mut Target, w: &Want, progress: &mut Progress) -> Result<()> {
    let (tmp, file) = create_tmp(&w.dest)?;
    let result = async {
        let mut off = 0u64;
        while off < w.bytes {
            let last = (off + RANGE).min(w.bytes) - 1;
            let mut tries = 0;
            loop {
                tries += 1;
                let mut at = off;
                let r = t
                    .s3
                    .get(&w.key, Some((off, last)), &mut |b| {
                        if at + b.len() as u64 > last + 1 {
                            return Err(crate::net::NetError::Protocol(format!(
                                "{} is larger in the store than the manifest says",
                                w.key
                            )));
                        }
                        file.write_all_at(b, at)
                            .map_err(|e| crate::net::NetError::Io(format!("cannot write {}: {e}", tmp.display())))?;
                        at += b.len() as u64;
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(()) if at == last + 1 => break,
                    Ok(()) => {
                        return Err(msg(format!(
                            "{}: the store sent {} bytes of range {off}-{last}: the object is not what the manifest says",
                            w.key,
                            at - off
                        )))
                    }
                    Err(e) if tries < RANGE_TRIES && transient(&e) => {
                        log::warn!("offsite: {} from byte {off}: {e}; trying again", w.key);
                    }
                    Err(e) => {
                        return Err(msg(format!(
                            "cannot download {} from the offsite store: {e}",
                            w.key
                        )))
                    }
                }
            }
            progress.add(last + 1 - off);
            off = last + 1;
        }
        file.sync_all()
            .map_err(|e| msg(format!("cannot sync {}: {e}", tmp.display())))?;
        let got = hash_file(&tmp)?;
        let ok = match (got, w.sha256) {
            (Some((n, _)), None) => n == w.bytes,
            (Some(have), Some(sha)) => have == (w.bytes, sha),
            (None, _) => false,
        };
        if !ok {
            return Err(msg(format!(
                "{} in the offsite store is not what the set's manifest says (size or SHA-256): the store's copy is damaged or was changed",
                w.key
            )));
        }
        fs::rename(&tmp, &w.dest).map_err(|e| {
            msg(format!(
                "cannot rename {} to {}: {e}",
                tmp.display(),
                w.dest.display()
            ))
        })?;
        sync_dir(crate::fsutil::parent(&w.dest))
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// One pass over the segments under `base` in the store (names of our
/// shape only), page by page: with `fetch`, download each one not staged
/// in `dir` yet (adding bytes downloaded and bytes found staged to it,
/// at most its third figure downloaded); without, only count. The number
/// of segments, and the bytes not staged.
async fn wal_pass(
    t: &mut Target,
    base: &str,
    dir: &Path,
    mut fetch: Option<&mut (u64, u64, u64)>,
    progress: &mut Progress,
) -> Result<(u64, u64)> {
    let mut token: Option<String> = None;
    let (mut n, mut missing) = (0u64, 0u64);
    for _ in 0..MAX_WAL_PAGES {
        let (objs, next) =
            t.s3.list_page(base, token.as_deref())
                .await
                .map_err(s3_err)?;
        for o in objs {
            let Some(name) = o.key.strip_prefix(base) else {
                continue;
            };
            if segment::parse_name(name).is_none() {
                continue;
            }
            if o.size > MAX_SEGMENT_OBJECT {
                return Err(msg(format!(
                    "{} in the offsite store is {} bytes, more than a WAL segment can be: not downloaded",
                    o.key, o.size
                )));
            }
            n += 1;
            let w = Want {
                key: o.key.clone(),
                dest: dir.join(name),
                bytes: o.size,
                sha256: None,
            };
            let there = is_staged(&w)?;
            if !there {
                missing += w.bytes;
            }
            if let Some(tally) = fetch.as_deref_mut() {
                if there {
                    tally.1 += w.bytes;
                } else {
                    // No more than the counting pass found (and the room
                    // was checked for): a listing that grew is refused.
                    if tally.0.saturating_add(w.bytes) > tally.2 {
                        return Err(msg(format!(
                            "the WAL segments under {base} in the offsite store grew while they were downloaded; run the restore again"
                        )));
                    }
                    download(t, &w, progress).await?;
                    tally.0 += w.bytes;
                }
            }
        }
        match next {
            Some(tok) if Some(&tok) != token.as_ref() => token = Some(tok),
            Some(_) => return Err(msg("the offsite listing repeats its continuation token")),
            None => return Ok((n, missing)),
        }
    }
    Err(msg(format!(
        "more than {MAX_WAL_PAGES} pages of WAL segments under {base} in the offsite store"
    )))
}

/// Fail before downloading when `dir`'s file system has too little room.
pub(super) fn check_room(dir: &Path, needed: u64) -> Result<()> {
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let want = needed.saturating_add(SPARE_ROOM);
    if st.f_blocks > 0 && free < want {
        return Err(msg(format!(
            "{} has {} free, but the set needs {} to be brought down (and the restore more): free some room on the card (or use a larger one) and run disaster-restore again",
            dir.display(),
            crate::out::human_bytes(free),
            crate::out::human_bytes(want)
        )));
    }
    Ok(())
}

/// Remove what a previous staging left that this set does not use: other
/// sets' manifests and keys, temporaries, pool files and segments not
/// named (names of our shapes only).
fn clean_other(root: &Path, keep: &[PathBuf], keep_dir: Option<&Path>) {
    let rvm = root.join(ROOT_DIR);
    let Ok(boards) = fs::read_dir(&rvm) else {
        return;
    };
    let mut stack: Vec<PathBuf> = boards.flatten().map(|e| e.path()).collect();
    let mut seen = 0usize;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 1_000_000 {
            return;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.file_type().is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
            continue;
        }
        if !m.is_file() || keep.contains(&p) || keep_dir.is_some_and(|d| p.parent() == Some(d)) {
            continue;
        }
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let base = name.strip_suffix(crate::fsutil::TMP_SUFFIX).unwrap_or(name);
        let ours = base == MANIFEST_FILE
            || base == SEALED_KEY_FILE
            || segment::parse_name(base).is_some()
            || base.ends_with(crate::store::SIDECAR_EXT)
            || base.ends_with(crate::store::PART_EXT);
        if ours {
            if let Err(e) = fs::remove_file(&p) {
                log::warn!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// Bring the newest complete set of the configured `[offsite]` prefix
/// into the staging directory (see the module doc).
pub async fn stage_from_offsite(
    cfg: &Config,
    recovery_key: Option<&Path>,
    progress: &mut Progress,
) -> Result<Staged> {
    let session = Session::over_store(cfg.clone(), None, Store::for_config(cfg));
    let mut t = session.offsite_target()?;
    let store = format!("s3://{}/{}", t.s3.bucket(), t.prefix);
    let objects = list_set_objects(&mut t).await?;
    let names = sets_with_manifest(&objects, &t.prefix);
    if names.is_empty() {
        return Err(msg(format!(
            "the offsite store holds no recovery set under {store}{}/ (is the prefix right? A board publishes one with each `offsite sync` once its archives are shipped, when recovery_public_key is configured): nothing was restored",
            sets::SETS_DIR
        )));
    }

    // The staging directory.
    if !cfg.backup_dir.exists() {
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&cfg.backup_dir)
            .map_err(|e| msg(format!("cannot create {}: {e}", cfg.backup_dir.display())))?;
    }
    let stage = ensure_dir(&cfg.backup_dir, STAGE_DIR)?;
    let mut staged = Staged {
        dir: stage.clone(),
        store: store.clone(),
        set: String::new(),
        downloaded: 0,
        reused: 0,
        segments: 0,
        notes: Vec::new(),
        files: Vec::new(),
        wal_dir: None,
    };

    // The newest set that opens.
    let mut first_error: Option<String> = None;
    let mut opened: Option<(Manifest, Vec<u8>, PathBuf)> = None;
    for name in names.iter().take(sets::MAX_SETS_TRIED) {
        let key = set_key(&t.prefix, name, MANIFEST_FILE);
        let refuse = |why: String, staged: &mut Staged, first: &mut Option<String>| {
            let n = format!("set {name} in the store was not used: {why}");
            // A note of the account (or, when no set opens, the error).
            log::info!("{n}");
            staged.notes.push(n);
            first.get_or_insert(why);
        };
        // One set that cannot be read (too large, gone meanwhile) is
        // passed over like one that does not open.
        let bytes = match get_small(&mut t, &key, MAX_MANIFEST_LEN).await {
            Ok(b) => b,
            Err(e) => {
                refuse(
                    format!("its MANIFEST cannot be read ({e})"),
                    &mut staged,
                    &mut first_error,
                );
                continue;
            }
        };
        let m = match Manifest::parse(&bytes) {
            Ok((m, _, _)) if m.set == *name => m,
            Ok(_) => {
                refuse(
                    "its MANIFEST describes another set".into(),
                    &mut staged,
                    &mut first_error,
                );
                continue;
            }
            Err(e) => {
                refuse(
                    format!("its MANIFEST was refused: {e}"),
                    &mut staged,
                    &mut first_error,
                );
                continue;
            }
        };
        let board_dir = ensure_dir(&ensure_dir(&stage, ROOT_DIR)?, &m.board)?;
        let set_dir = ensure_dir(&board_dir, name)?;
        if let Some(f) = &m.sealed_key {
            let k = set_key(&t.prefix, name, SEALED_KEY_FILE);
            let sealed = match get_small(&mut t, &k, MAX_SEALED_LEN).await {
                Ok(b) => b,
                Err(e) => {
                    refuse(
                        format!("its {SEALED_KEY_FILE} cannot be read ({e})"),
                        &mut staged,
                        &mut first_error,
                    );
                    continue;
                }
            };
            if sealed.len() as u64 != f.bytes || crate::crypto::sha256(&sealed) != f.digest() {
                refuse(
                    format!("its {SEALED_KEY_FILE} is not the one its MANIFEST names"),
                    &mut staged,
                    &mut first_error,
                );
                continue;
            }
            let p = set_dir.join(SEALED_KEY_FILE);
            write_small(&p, &sealed)?;
            staged.files.push(p);
        }
        let found = FoundSet {
            dir: set_dir.clone(),
            manifest: m,
            bytes: bytes.clone(),
        };
        let keys = KeySources {
            explicit: recovery_key,
            configured: cfg.recovery_key_file.as_deref(),
            stick: &stage,
        };
        match unlock_set(cfg, &found, &keys) {
            Ok(u) => {
                opened = Some((u.manifest, bytes, set_dir));
                break;
            }
            Err(why) => refuse(why, &mut staged, &mut first_error),
        }
    }
    let Some((m, bytes, set_dir)) = opened else {
        staged.remove();
        return Err(msg(format!(
            "no recovery set in {store}{}/ could be opened: {}",
            sets::SETS_DIR,
            first_error.unwrap_or_else(|| "none was tried".into())
        )));
    };
    staged.set = m.set.clone();
    let board_dir = crate::fsutil::parent(&set_dir).to_path_buf();

    // What to bring down: every file the set names, then the WAL
    // segments of its database archive's generation.
    let pool = ensure_dir(&board_dir, POOL_DIR)?;
    let mut wants: Vec<Want> = Vec::new();
    for a in &m.archives {
        ensure_dir(&pool, &a.strategy)?;
        for f in &a.files {
            wants.push(Want {
                key: format!("{}{}", t.prefix, f.name),
                dest: pool.join(&f.name),
                bytes: f.bytes,
                sha256: Some(ManifestFile::digest(f)),
            });
        }
    }
    // The generation's segments are listed page by page, twice (to
    // count, then to fetch), never all in memory.
    let wal = match m
        .archives
        .iter()
        .find(|a| a.strategy() == Some(Strategy::Database))
    {
        Some(db) => Some((
            format!("{}{}/{}/", t.prefix, crate::pitr::store::WAL_DIR, db.id),
            board_dir.join(WAL_DIR).join(&db.id),
            db.id.clone(),
        )),
        None => None,
    };
    let keep: Vec<PathBuf> = wants
        .iter()
        .map(|w| w.dest.clone())
        .chain(std::iter::once(set_dir.join(SEALED_KEY_FILE)))
        .collect();
    clean_other(&stage, &keep, wal.as_ref().map(|(_, d, _)| d.as_path()));

    progress.start(
        &format!("check what is staged in {}", stage.display()),
        None,
    );
    let mut todo = Vec::new();
    for w in wants {
        if is_staged(&w)? {
            staged.reused += w.bytes;
            staged.files.push(w.dest);
        } else {
            todo.push(w);
        }
    }
    let mut needed: u64 = todo.iter().map(|w| w.bytes).sum();
    let mut wal_bytes = 0u64;
    if let Some((base, dir, id)) = &wal {
        let (n, bytes) = wal_pass(&mut t, base, dir, None, progress).await?;
        wal_bytes = bytes;
        if n > 0 {
            ensure_dir(&ensure_dir(&board_dir, WAL_DIR)?, id)?;
            staged.wal_dir = Some(dir.clone());
        }
        needed = needed.saturating_add(bytes);
    }
    progress.finish();
    check_room(&stage, needed)?;
    progress.start(
        &format!("download set {} from {store}", m.set),
        Some(needed),
    );
    for w in todo {
        download(&mut t, &w, progress).await?;
        staged.downloaded += w.bytes;
        staged.files.push(w.dest);
    }
    if let (Some((base, dir, _)), true) = (&wal, staged.wal_dir.is_some()) {
        let mut tally = (0u64, 0u64, wal_bytes);
        let n = wal_pass(&mut t, base, dir, Some(&mut tally), progress)
            .await?
            .0;
        staged.segments = n;
        staged.downloaded += tally.0;
        staged.reused += tally.1;
    }
    progress.finish();

    // The staged set is complete now: its manifest last.
    let p = set_dir.join(MANIFEST_FILE);
    write_small(&p, &bytes)?;
    staged.files.push(p);
    if !recovery_set::is_set_name(&staged.set) {
        return Err(msg("the chosen set has no valid name"));
    }
    log::info!("offsite: {}", staged.describe());
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-fetch-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_staged_file_counts_only_with_the_right_size_and_hash() {
        let d = scratch("staged");
        let p = d.join("x.000.rvb");
        let w = |bytes: u64, sha256: Option<[u8; 32]>| Want {
            key: "k".into(),
            dest: p.clone(),
            bytes,
            sha256,
        };
        assert!(!is_staged(&w(3, None)).unwrap(), "missing");
        fs::write(&p, b"abc").unwrap();
        let sha = crate::crypto::sha256(b"abc");
        assert!(is_staged(&w(3, Some(sha))).unwrap());
        assert!(is_staged(&w(3, None)).unwrap());
        assert!(!is_staged(&w(4, None)).unwrap());
        assert!(!is_staged(&w(3, Some(crate::crypto::sha256(b"abd")))).unwrap());
        // A symbolic link is never taken for a staged file.
        fs::remove_file(&p).unwrap();
        fs::write(d.join("real"), b"abc").unwrap();
        std::os::unix::fs::symlink(d.join("real"), &p).unwrap();
        assert!(is_staged(&w(3, Some(sha))).is_err() || !is_staged(&w(3, Some(sha))).unwrap());
        assert!(!is_staged(&w(3, None)).unwrap());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn cleaning_and_removal_touch_only_our_names() {
        let d = scratch("clean");
        let board = d.join(ROOT_DIR).join("b-1");
        let old_set = board.join("set-20261126T100000Z");
        let new_set = board.join("set-20261127T100000Z");
        let pool = board.join(POOL_DIR).join("config");
        for dir in [&old_set, &new_set, &pool] {
            fs::create_dir_all(dir).unwrap();
        }
        let keep = pool.join("config-20261127T100000Z-aaaaaa.meta");
        let gone = [
            old_set.join(MANIFEST_FILE),
            old_set.join(SEALED_KEY_FILE),
            pool.join("config-20261126T100000Z-bbbbbb.meta"),
            pool.join("config-20261126T100000Z-bbbbbb.000.rvb"),
            pool.join("config-20261127T100000Z-aaaaaa.000.rvb.tmp"),
        ];
        let foreign = pool.join("notes.txt");
        let wal = board.join(WAL_DIR).join("database-20261127T100000Z-cccccc");
        let old_wal = board.join(WAL_DIR).join("database-20261126T100000Z-dddddd");
        fs::create_dir_all(&wal).unwrap();
        fs::create_dir_all(&old_wal).unwrap();
        let seg = wal.join(segment::file_name(0));
        let old_seg = old_wal.join(segment::file_name(0));
        for f in gone.iter().chain([&keep, &foreign, &seg, &old_seg]) {
            fs::write(f, b"x").unwrap();
        }
        clean_other(&d, std::slice::from_ref(&keep), Some(&wal));
        for f in gone.iter().chain([&old_seg]) {
            assert!(!f.exists(), "{} stayed", f.display());
        }
        assert!(keep.exists() && foreign.exists() && seg.exists());

        let staged = Staged {
            dir: d.clone(),
            store: String::new(),
            set: String::new(),
            downloaded: 0,
            reused: 0,
            segments: 0,
            notes: Vec::new(),
            files: vec![keep.clone()],
            wal_dir: Some(wal.clone()),
        };
        assert!(staged.remove().is_empty());
        assert!(!keep.exists() && !seg.exists() && !wal.exists());
        // The directory with a file that is not ours stays.
        assert!(foreign.exists() && pool.exists());
        fs::remove_dir_all(&d).unwrap();
    }
}

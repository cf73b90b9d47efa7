//! Recovery sets in the offsite store: after a sync, the same manifest and
//! sealed key ring `export` writes onto a stick (`recovery_set`), under
//! `<prefix>sets/set-<UTC time>/` (`docs/format.md`, section 12).
//!
//! ```text
//! <prefix><strategy>/<id>.NNN.rvb, <strategy>/<id>.meta   the pool (sync)
//! <prefix>database-wal/<generation>/<seq:012>.rvw         WAL (sync)
//! <prefix>sets/set-<UTC time>/key.sealed                  written first
//! <prefix>sets/set-<UTC time>/MANIFEST                    written last
//! ```
//!
//! Invariants:
//! - a set names only files the sync record holds as confirmed in the
//!   store (every part and sidecar of its archives and of their chains),
//!   so a complete set is restorable from the store alone;
//! - `MANIFEST` is put last and never over an existing object
//!   (`If-None-Match: *`): a set is complete exactly when its `MANIFEST`
//!   is there and authenticates; it is read back and opened before the
//!   sync counts it;
//! - a new set is published only when its archives differ from the newest
//!   remote set that opens with the key ring (WAL segments need no new
//!   set: a restore takes every segment of the set's database archive's
//!   generation), and it is named later than every remote set;
//! - with encryption on and no recovery public key no set is published
//!   (its key would die with the card), and the sync says so.

use std::collections::BTreeMap;

use super::{s3_err, Target};
use crate::error::{msg, Result};
use crate::offsite::local::Item;
use crate::offsite::pace::Pacer;
use crate::offsite::record::Record;
use crate::offsite::s3::{Body, Object, Put};
use crate::ops::export::{
    chosen, manifest_archive, manifest_file, new_manifest, sealed_ring, Chosen,
};
use crate::ops::Session;
use crate::recovery_set::manifest::MAX_MANIFEST_LEN;
use crate::recovery_set::{
    self, BoardIdentity, Manifest, ManifestArchive, MANIFEST_FILE, SEALED_KEY_FILE,
};
use crate::strategy::Strategy;

/// The folder of the sets under the prefix.
pub(crate) const SETS_DIR: &str = "sets";
/// Most listing pages read under `<prefix>sets/` (a thousand keys each).
const MAX_LIST_PAGES: usize = 64;
/// Most remote sets opened when looking for the newest one that opens
/// (forged or damaged sets newer than it each cost one small GET).
pub(super) const MAX_SETS_TRIED: usize = 32;
/// Most tries to find a free set name (one second later each).
const MAX_NAME_TRIES: i64 = 20;

/// What the sync did about the recovery set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    /// A new set was published and read back.
    Published(String),
    /// The newest remote set already names these archives.
    Unchanged(String),
    /// No set could be published: why (and what to do).
    NotPublished(String),
}

impl SetOutcome {
    /// One line for the sync's report.
    pub fn describe(&self) -> String {
        match self {
            SetOutcome::Published(s) => format!("recovery set {s} published in the store"),
            SetOutcome::Unchanged(s) => {
                format!("recovery set {s} in the store is current")
            }
            SetOutcome::NotPublished(why) => format!("no recovery set published: {why}"),
        }
    }
}

/// The key of a file of set `set` under `prefix`.
pub(crate) fn set_key(prefix: &str, set: &str, file: &str) -> String {
    format!("{prefix}{SETS_DIR}/{set}/{file}")
}

/// The sets in a listing of `<prefix>sets/` that have a `MANIFEST`,
/// newest first (set names sort by time). Keys of any other shape are
/// ignored.
pub(crate) fn sets_with_manifest(objects: &[Object], prefix: &str) -> Vec<String> {
    let base = format!("{prefix}{SETS_DIR}/");
    let mut found: BTreeMap<&str, bool> = BTreeMap::new();
    for o in objects {
        let Some((set, file)) = o.key.strip_prefix(&base).and_then(|r| r.split_once('/')) else {
            continue;
        };
        if !recovery_set::is_set_name(set) {
            continue;
        }
        let e = found.entry(set).or_insert(false);
        *e |= file == MANIFEST_FILE;
    }
    found
        .into_iter()
        .rev()
        .filter(|(_, m)| *m)
        .map(|(s, _)| s.to_string())
        .collect()
}

/// Every object under `<prefix>sets/` (bounded).
pub(super) async fn list_set_objects(t: &mut Target) -> Result<Vec<Object>> {
    let base = format!("{}{SETS_DIR}/", t.prefix);
    list_all(t, &base, MAX_LIST_PAGES).await
}

/// Every object under `prefix`, at most `pages` pages of a listing.
pub(super) async fn list_all(t: &mut Target, prefix: &str, pages: usize) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..pages {
        let (objs, next) =
            t.s3.list_page(prefix, token.as_deref())
                .await
                .map_err(s3_err)?;
        out.extend(objs);
        match next {
            Some(tok) if Some(&tok) != token.as_ref() => token = Some(tok),
            Some(_) => return Err(msg("the offsite listing repeats its continuation token")),
            None => return Ok(out),
        }
    }
    Err(msg(format!(
        "more than {pages} pages of objects under {prefix} in the offsite store: clean it up (lifecycle rules or `offsite prune`)"
    )))
}

/// GET a small object (at most `max` bytes) into memory.
pub(super) async fn get_small(t: &mut Target, key: &str, max: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    t.s3.get(key, None, &mut |b| {
        if bytes.len() + b.len() > max {
            return Err(crate::net::NetError::Protocol(format!(
                "{key} is larger than {max} bytes"
            )));
        }
        bytes.extend_from_slice(b);
        Ok(())
    })
    .await
    .map_err(s3_err)?;
    Ok(bytes)
}

/// Whether every file of `c` is confirmed in the store.
fn confirmed(rec: &Record, c: &Chosen) -> bool {
    let a = manifest_archive(c);
    a.files.iter().all(|f| {
        f.name.split_once('/').is_some_and(|(dir, name)| {
            rec.is_confirmed(&Item {
                dirs: vec![dir.to_string()],
                name: name.to_string(),
                segment: None,
                group: String::new(),
            })
        })
    })
}

/// The archives of two sets are the same (order aside).
fn same_archives(a: &[ManifestArchive], b: &[ManifestArchive]) -> bool {
    let key = |v: &[ManifestArchive]| {
        let mut v: Vec<ManifestArchive> = v.to_vec();
        v.sort_by(|x, y| x.strategy.cmp(&y.strategy));
        v
    };
    key(a) == key(b)
}

/// The sync's last step: publish the set; a failure is one of the sync's
/// problems (the files shipped stay shipped), a set that cannot be
/// published is logged.
pub(super) async fn after_sync(
    session: &Session,
    t: &mut Target,
    rec: &Record,
    problems: &mut Vec<String>,
) -> SetOutcome {
    match session.publish_offsite_set(t, rec).await {
        Ok(o) => {
            match &o {
                SetOutcome::NotPublished(_) => log::warn!("offsite: {}", o.describe()),
                _ => log::info!("offsite: {}", o.describe()),
            }
            o
        }
        Err(e) => {
            let why = format!("the recovery set could not be published: {e}");
            log::warn!("offsite: {why}");
            problems.push(why.clone());
            SetOutcome::NotPublished(why)
        }
    }
}

impl Session {
    /// Publish a recovery set of what the store holds, when it differs
    /// from the newest one there (see the module doc).
    pub(super) async fn publish_offsite_set(
        &self,
        t: &mut Target,
        rec: &Record,
    ) -> Result<SetOutcome> {
        if self.cfg.encryption_enabled && self.cfg.recovery_public_key.is_none() {
            return Ok(SetOutcome::NotPublished(format!(
                "encryption is on but no recovery_public_key is configured, and a sealed key ring that only this card holds dies with it, so the archives in the store could not be restored on a new card. Make the fleet's recovery key once with `rvm-backup keygen --recovery --out FILE` (keep FILE off the board) and put the recovery_public_key line it prints into {}",
                self.cfg.file.display()
            )));
        }
        let (chosen, missing) = self.choose_offsite(rec)?;
        if chosen.is_empty() {
            return Ok(SetOutcome::NotPublished(format!(
                "no archive is in the store yet ({} to come)",
                missing.join(", ")
            )));
        }
        if !missing.is_empty() {
            log::warn!(
                "offsite: the recovery set has no {} archive yet (none is in the store)",
                missing.join(", ")
            );
        }
        let archives: Vec<ManifestArchive> = chosen.iter().map(manifest_archive).collect();
        let encrypted =
            self.cfg.encryption_enabled || chosen.iter().any(|c| c.listed.meta.encrypted);
        let keys = self.set_keys(encrypted)?;

        // The newest remote set that opens: is it these archives? Sets
        // that do not open (damaged, or forged by someone else who can
        // write to the prefix) neither count nor push the new name on.
        let objects = list_set_objects(t).await?;
        let remote = sets_with_manifest(&objects, &t.prefix);
        let mut newest_good: Option<i64> = None;
        for name in remote.iter().take(MAX_SETS_TRIED) {
            let key = set_key(&t.prefix, name, MANIFEST_FILE);
            let bytes = match get_small(t, &key, MAX_MANIFEST_LEN).await {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("offsite: {key} cannot be read ({e}); not used");
                    continue;
                }
            };
            match Manifest::open(&bytes, self.key.as_ref(), encrypted) {
                Ok(m) if m.set == *name => {
                    if same_archives(&m.archives, &archives) {
                        return Ok(SetOutcome::Unchanged(name.clone()));
                    }
                    newest_good = name
                        .strip_prefix(recovery_set::SET_PREFIX)
                        .and_then(|t| crate::timefmt::parse(t).ok());
                    break;
                }
                Ok(_) => log::warn!("offsite: {key} names another set; ignored"),
                Err(e) => log::warn!("offsite: {key} is not used: {e}"),
            }
        }

        // A new set, named after the newest good one (and now).
        let mut when = crate::timefmt::now_unix();
        if let Some(n) = newest_good {
            when = when.max(n.saturating_add(1));
        }
        let identity = BoardIdentity::current(&self.cfg.machine_id_file)?;
        let mut pacer = Pacer::new(t.rate);
        for _ in 0..MAX_NAME_TRIES {
            let set = recovery_set::set_name(when);
            when += 1;
            let sealed_key = match sealed_ring(keys)? {
                Some(bytes) => {
                    let key = set_key(&t.prefix, &set, SEALED_KEY_FILE);
                    match t
                        .s3
                        .put_new(&key, Body::Bytes(&bytes), &mut pacer)
                        .await
                        .map_err(s3_err)?
                    {
                        Put::Created => {}
                        // Taken (two syncs in one second): the next second.
                        Put::Exists => continue,
                    }
                    Some(manifest_file(SEALED_KEY_FILE.into(), &bytes))
                }
                None => None,
            };
            let manifest = new_manifest(
                set.clone(),
                &identity,
                encrypted,
                keys,
                sealed_key,
                archives.clone(),
            );
            let bytes = manifest.seal(keys.map(|(r, _)| r.writing()));
            let key = set_key(&t.prefix, &set, MANIFEST_FILE);
            match t
                .s3
                .put_new(&key, Body::Bytes(&bytes), &mut pacer)
                .await
                .map_err(s3_err)?
            {
                Put::Created => {}
                Put::Exists if keys.is_none() => continue,
                Put::Exists => {
                    return Err(msg(format!(
                        "{key} appeared in the offsite store while this sync wrote its set: check which board writes to this prefix"
                    )))
                }
            }
            // Read back: the set counts once it opens as written.
            let back = get_small(t, &key, MAX_MANIFEST_LEN).await?;
            let m = Manifest::open(&back, self.key.as_ref(), encrypted)
                .map_err(|e| msg(format!("{key} does not read back from the store: {e}")))?;
            if m != manifest {
                return Err(msg(format!(
                    "{key} reads back from the store differently than it was written"
                )));
            }
            if let Some(f) = &m.sealed_key {
                let k = set_key(&t.prefix, &set, SEALED_KEY_FILE);
                match t.s3.head(&k).await.map_err(s3_err)? {
                    Some(o) if o.size == f.bytes => {}
                    _ => {
                        return Err(msg(format!(
                            "{k} is not in the store as written: the set {set} cannot be used"
                        )))
                    }
                }
            }
            log::info!("offsite: recovery set {set} published");
            return Ok(SetOutcome::Published(set));
        }
        Err(msg(format!(
            "cannot find a free set name under {}{SETS_DIR}/ in the offsite store",
            t.prefix
        )))
    }

    /// Per configured strategy the newest archive whose files (and its
    /// chain's) are all confirmed in the store; for the database, the
    /// newest point-in-time generation's snapshot when it reaches further.
    /// Also the strategies that have none yet.
    fn choose_offsite(&self, rec: &Record) -> Result<(Vec<Chosen>, Vec<String>)> {
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for s in self.cfg.configured() {
            let listing = self.list(Some(s));
            let mut pick: Option<Chosen> = None;
            for a in listing.archives.iter().rev() {
                let Ok(c) = chosen(a.clone(), &listing.archives) else {
                    continue;
                };
                if confirmed(rec, &c) {
                    pick = Some(c);
                    break;
                }
            }
            if s == Strategy::Database {
                let newest = pick.as_ref().map(|c| c.listed.meta.id.clone());
                if let Some(snap) =
                    self.pitr_snapshot_for_export(&listing.archives, newest.as_deref())
                {
                    if Some(&snap) != newest.as_ref() {
                        if let Some(c) = listing
                            .archives
                            .iter()
                            .find(|a| a.meta.id == snap)
                            .and_then(|a| chosen(a.clone(), &listing.archives).ok())
                            .filter(|c| confirmed(rec, c))
                        {
                            pick = Some(c);
                        }
                    }
                }
            }
            match pick {
                Some(c) => out.push(c),
                None => missing.push(s.name().to_string()),
            }
        }
        Ok((out, missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> Object {
        Object {
            key: key.into(),
            size: 1,
            etag: String::new(),
            modified: String::new(),
        }
    }

    #[test]
    fn only_sets_with_a_manifest_newest_first() {
        let p = "fleet/b1/";
        let objs: Vec<Object> = [
            "fleet/b1/sets/set-20261126T100000Z/key.sealed",
            "fleet/b1/sets/set-20261126T100000Z/MANIFEST",
            "fleet/b1/sets/set-20261127T100000Z/key.sealed",
            "fleet/b1/sets/set-20261127T100000Z/MANIFEST",
            // Interrupted: key only.
            "fleet/b1/sets/set-20261128T100000Z/key.sealed",
            // Not our shapes.
            "fleet/b1/sets/set-2026/MANIFEST",
            "fleet/b1/sets/MANIFEST",
            "fleet/b1/sets/set-20261129T100000Z/MANIFEST.tmp",
            "fleet/b1/config/config-x.meta",
            "fleet/b2/sets/set-20261130T100000Z/MANIFEST",
        ]
        .iter()
        .map(|k| obj(k))
        .collect();
        assert_eq!(
            sets_with_manifest(&objs, p),
            vec!["set-20261127T100000Z", "set-20261126T100000Z"]
        );
        assert!(sets_with_manifest(&objs[..1], p).is_empty());
        assert!(sets_with_manifest(&[], p).is_empty());
    }

    #[test]
    fn archives_compare_as_sets() {
        let a = |s: &str, id: &str| ManifestArchive {
            strategy: s.into(),
            id: id.into(),
            created: 1,
            entries: 1,
            content_bytes: 1,
            files: Vec::new(),
        };
        let x = vec![a("config", "c1"), a("database", "d1")];
        let y = vec![a("database", "d1"), a("config", "c1")];
        assert!(same_archives(&x, &y));
        assert!(!same_archives(
            &x,
            &[a("config", "c1"), a("database", "d2")]
        ));
        assert!(!same_archives(&x, &x[..1]));
    }

    #[test]
    fn set_keys() {
        assert_eq!(
            set_key("p/", "set-20261126T100000Z", "MANIFEST"),
            "p/sets/set-20261126T100000Z/MANIFEST"
        );
    }
}

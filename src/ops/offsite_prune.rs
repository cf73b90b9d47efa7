//! `offsite prune`: delete from the offsite store what local retention no
//! longer keeps, with credentials of its own (the board's are meant to be
//! write-only: they cannot delete, see `docs/fleet.md`).
//!
//! What goes: archives of a strategy (their sidecar first, then their
//! parts, so a half-deleted archive is never listed as complete) that
//! - are not in the local backup directory any more (local retention
//!   dropped them), and
//! - are not among the newest `keep` archives of that strategy in the
//!   store, and
//! - are not named by any of the newest `keep` recovery sets in the store
//!   (`<prefix>sets/set-*/MANIFEST`; an archive id appearing anywhere in a
//!   manifest's text counts as named), and
//! - are no ancestor of a kept incremental archive (parents come from the
//!   local sidecars, else from the store's copy, authenticated with the
//!   key ring; for a kept archive whose sidecar cannot be read every older
//!   archive of its strategy is kept);
//!
//! "Newest" is by archive id (strategy, then UTC start time to the
//! second; archives started within the same second are ordered by their
//! random suffix)
//!
//! and WAL generations (`database-wal/<generation>/`, the newest segment
//! first) older than the oldest database archive kept, and not present
//! locally.
//!
//! Invariants: nothing is deleted for a strategy of which the local
//! backup directory holds no archive (a fresh or wiped board would
//! otherwise empty the store); only names of the shapes `offsite sync`
//! writes are ever deleted, anything else under the prefix is left alone;
//! `--dry-run` sends no DELETE; one prune or sync at a time (the offsite
//! lock).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use zeroize::Zeroizing;

use super::offsite::s3_err;
use super::Session;
use crate::error::{msg, Result};
use crate::offsite::config::MAX_SECRET_LEN;
use crate::offsite::record;
use crate::offsite::s3::S3Error;
use crate::offsite::sigv4::Credentials;
use crate::strategy::Strategy;

/// Archives of each strategy kept in the store whatever else holds, and
/// recovery sets whose archives are kept: `--keep` when not given.
pub const DEFAULT_KEEP: u32 = 3;
/// Largest `--keep`.
pub const MAX_KEEP: u32 = 1000;
/// Most objects under the prefix prune looks at.
pub const MAX_OBJECTS: usize = 1_000_000;

/// What prune did (or, with `dry_run`, would do).
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Keys deleted (or to delete), in order, with sizes.
    pub deleted: Vec<(String, u64)>,
    /// Archives and WAL generations deleted.
    pub archives: u64,
    pub generations: u64,
    /// Archives kept in the store.
    pub kept: u64,
    /// Why something was not pruned.
    pub notes: Vec<String>,
}

/// Read the prune credentials file: mode 0600 (the key file's rules),
/// the access key id on the first line and the secret on the second.
pub fn load_credentials(path: &Path) -> Result<Credentials> {
    use crate::fsutil::{read_regular, Follow};
    let (meta, bytes) = read_regular(path, MAX_SECRET_LEN, Follow::Yes).map_err(|e| {
        msg(format!(
            "cannot read the prune credentials {}: {e} (a regular file, mode 0600: the access key id on the first line, the secret on the second)",
            path.display()
        ))
    })?;
    let bytes = Zeroizing::new(bytes);
    crate::fsutil::check_secret_mode(path, &meta, "prune credentials file")?;
    let bad = || {
        msg(format!(
            "prune credentials file {} must hold two lines: the access key id, then the secret access key",
            path.display()
        ))
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [id, secret] = lines[..] else {
        return Err(bad());
    };
    let token =
        |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    if !token(id) || !token(secret) {
        return Err(bad());
    }
    Ok(Credentials {
        access_key_id: id.to_string(),
        secret: Zeroizing::new(secret.to_string()),
    })
}

/// One archive in the store.
#[derive(Default)]
struct Remote {
    sidecar: Option<(String, u64)>,
    parts: Vec<(String, u64)>,
}

/// What the listing under the prefix holds, by the shapes sync writes.
#[derive(Default)]
struct Listing {
    /// strategy -> id -> objects (ids of one strategy sort by time).
    archives: BTreeMap<Strategy, BTreeMap<String, Remote>>,
    /// generation -> (seq, key, size).
    wal: BTreeMap<String, Vec<(u64, String, u64)>>,
    /// Recovery set manifests' keys.
    manifests: Vec<String>,
}

fn classify(l: &mut Listing, rel: &str, key: &str, size: u64) {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts[..] {
        [dir, name] => {
            let Some(s) = Strategy::parse(dir) else {
                return;
            };
            let Some((id, rest)) = name.split_once('.') else {
                return;
            };
            if !id.starts_with(&format!("{}-", s.name()))
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return;
            }
            let a = l
                .archives
                .entry(s)
                .or_default()
                .entry(id.to_string())
                .or_default();
            let part = rest
                .strip_suffix(".rvb")
                .is_some_and(|n| n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit()));
            if rest == "meta" {
                a.sidecar = Some((key.to_string(), size));
            } else if part {
                a.parts.push((key.to_string(), size));
            }
        }
        [wal, generation, name] if wal == crate::pitr::store::WAL_DIR => {
            if let (true, Some(seq)) = (
                crate::pitr::store::generation_name(generation),
                crate::pitr::segment::parse_name(name),
            ) {
                l.wal
                    .entry(generation.to_string())
                    .or_default()
                    .push((seq, key.to_string(), size));
            }
        }
        ["sets", set, "MANIFEST"] if set.starts_with("set-") => {
            l.manifests.push(key.to_string());
        }
        _ => {}
    }
}

/// Archive ids and WAL generations in the local backup directory, by
/// their file names only (anything there is kept remotely).
fn local_names(backup_dir: &Path) -> (BTreeMap<Strategy, BTreeSet<String>>, BTreeSet<String>) {
    let mut ids: BTreeMap<Strategy, BTreeSet<String>> = BTreeMap::new();
    for s in Strategy::ALL {
        let Ok(rd) = std::fs::read_dir(backup_dir.join(s.name())) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if let Some((id, _)) = name.split_once('.') {
                if (name.ends_with(".meta") || name.ends_with(".rvb")) && !id.is_empty() {
                    ids.entry(s).or_default().insert(id.to_string());
                }
            }
        }
    }
    let gens = crate::pitr::store::generations(backup_dir)
        .into_iter()
        .map(|g| g.id)
        .collect();
    (ids, gens)
}

impl Session {
    /// `offsite prune`: see the module doc. `keep`: newest archives per
    /// strategy and newest recovery sets that are always kept.
    pub async fn offsite_prune(
        &self,
        creds: Credentials,
        keep: u32,
        dry_run: bool,
    ) -> Result<PruneReport> {
        if !(1..=MAX_KEEP).contains(&keep) {
            return Err(msg(format!("--keep must be 1 to {MAX_KEEP}")));
        }
        let o = self.offsite_section()?;
        if creds.access_key_id == o.access_key_id.0 {
            return Err(msg(
                "the prune credentials are the board's own [offsite] access_key_id: prune needs a separate identity allowed to delete (the board's should not be; see docs/fleet.md)",
            ));
        }
        let mut t = self.offsite_target_as(creds)?;
        let dir = self.cfg.backup_dir.clone();
        let _lock = record::lock(&dir)?;
        // Everything under the prefix.
        let mut l = Listing::default();
        let mut token: Option<String> = None;
        let mut seen = 0usize;
        loop {
            let (objs, next) =
                t.s3.list_page(&t.prefix, token.as_deref())
                    .await
                    .map_err(prune_err)?;
            for obj in &objs {
                seen += 1;
                if let Some(rel) = obj.key.strip_prefix(&t.prefix) {
                    classify(&mut l, rel, &obj.key, obj.size);
                }
            }
            if seen > MAX_OBJECTS {
                return Err(msg(format!(
                    "more than {MAX_OBJECTS} objects under {}: prune with the store's lifecycle rules instead",
                    t.prefix
                )));
            }
            match next {
                Some(tok) if Some(&tok) != token.as_ref() => token = Some(tok),
                Some(_) => return Err(msg("the offsite listing repeats its continuation token")),
                None => break,
            }
        }
        // The newest recovery sets' manifests: the archives they name stay.
        l.manifests.sort();
        let mut named = Vec::new();
        for m in l.manifests.iter().rev().take(keep as usize) {
            let mut text = Vec::new();
            t.s3.get(m, None, &mut |b| {
                if text.len() + b.len() > crate::recovery_set::manifest::MAX_MANIFEST_LEN {
                    return Err(crate::net::NetError::Protocol(format!(
                        "{m} is larger than a recovery set manifest can be"
                    )));
                }
                text.extend_from_slice(b);
                Ok(())
            })
            .await
            .map_err(prune_err)?;
            named.push(text);
        }
        let (local, local_gens) = local_names(&dir);
        let parents: BTreeMap<String, Option<String>> = self
            .store
            .list(None, self.key.as_ref())
            .archives
            .into_iter()
            .map(|a| (a.meta.id, a.meta.parent))
            .collect();
        let mut report = PruneReport::default();
        let mut doomed: Vec<(String, Remote)> = Vec::new();
        let mut kept_db: Vec<String> = Vec::new();
        for (s, archives) in std::mem::take(&mut l.archives) {
            let ids: Vec<&String> = archives.keys().collect();
            let here = local.get(&s);
            let mut kept: BTreeSet<String> = BTreeSet::new();
            if here.is_none_or(BTreeSet::is_empty) {
                report.notes.push(format!(
                    "{}: no archive of it in the local backup directory, nothing of it deleted",
                    s.name()
                ));
                kept.extend(ids.iter().map(|i| (*i).clone()));
            } else {
                kept.extend(ids.iter().rev().take(keep as usize).map(|i| (*i).clone()));
                for id in &ids {
                    let local_here = here.is_some_and(|h| h.contains(*id));
                    let in_set = named
                        .iter()
                        .any(|t| t.windows(id.len()).any(|w| w == id.as_bytes()));
                    if local_here || in_set {
                        kept.insert((*id).clone());
                    }
                }
                // Their ancestors: from the local sidecar, else from the
                // store's copy.
                let mut work: Vec<String> = kept.iter().cloned().collect();
                while let Some(id) = work.pop() {
                    let parent = match parents.get(&id) {
                        Some(p) => Some(p.clone()),
                        None => match archives.get(&id).and_then(|r| r.sidecar.as_ref()) {
                            Some((k, _)) => self.remote_parent(&mut t.s3, k, &id).await,
                            None => None,
                        },
                    };
                    match parent {
                        Some(Some(p)) => {
                            if kept.insert(p.clone()) {
                                work.push(p);
                            }
                        }
                        Some(None) => {}
                        None => {
                            // Its chain is unknown: keep all older.
                            report.notes.push(format!(
                                "{id}: its sidecar cannot be read here, so every older {} archive is kept",
                                s.name()
                            ));
                            for older in ids.iter().filter(|i| ***i < id) {
                                kept.insert((*older).clone());
                            }
                        }
                    }
                }
            }
            if s == Strategy::Database {
                kept_db.extend(kept.iter().cloned());
            }
            report.kept += kept.len() as u64;
            for (id, r) in archives {
                if !kept.contains(&id) {
                    doomed.push((id, r));
                }
            }
        }
        doomed.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, r) in doomed {
            report.archives += 1;
            let mut keys: Vec<(String, u64)> = r.sidecar.into_iter().collect();
            let mut parts = r.parts;
            parts.sort();
            keys.extend(parts.into_iter().rev());
            for (k, size) in keys {
                if !dry_run {
                    t.s3.delete(&k).await.map_err(prune_err)?;
                    log::info!("offsite prune: deleted {k}");
                }
                report.deleted.push((k, size));
            }
        }
        // WAL generations older than the oldest database archive kept.
        match kept_db.iter().min() {
            None if !l.wal.is_empty() => report
                .notes
                .push("no database archive is kept in the store: no WAL deleted".into()),
            None => {}
            Some(oldest) => {
                for (g, mut segs) in std::mem::take(&mut l.wal) {
                    if g >= *oldest || local_gens.contains(&g) {
                        continue;
                    }
                    report.generations += 1;
                    segs.sort();
                    for (_, k, size) in segs.into_iter().rev() {
                        if !dry_run {
                            t.s3.delete(&k).await.map_err(prune_err)?;
                            log::info!("offsite prune: deleted {k}");
                        }
                        report.deleted.push((k, size));
                    }
                }
            }
        }
        Ok(report)
    }
}

impl Session {
    /// The parent of archive `id` from its sidecar in the store
    /// (authenticated with the key ring): `Some(parent)`, or `None` when
    /// it cannot be read or does not authenticate.
    async fn remote_parent(
        &self,
        s3: &mut crate::offsite::s3::S3,
        key: &str,
        id: &str,
    ) -> Option<Option<String>> {
        let max = crate::format::sidecar::MAX_SIDECAR_LEN;
        let mut bytes = Vec::new();
        let got = s3
            .get(key, None, &mut |b| {
                if bytes.len() + b.len() > max {
                    return Err(crate::net::NetError::Protocol(format!(
                        "{key} is larger than a sidecar can be"
                    )));
                }
                bytes.extend_from_slice(b);
                Ok(())
            })
            .await;
        if let Err(e) = got {
            log::warn!("offsite prune: cannot read {key}: {e}");
            return None;
        }
        match crate::format::sidecar::decode(&bytes, self.key.as_ref()) {
            Ok((_, meta)) if meta.id == id => Some(meta.parent),
            Ok(_) => None,
            Err(e) => {
                log::warn!("offsite prune: {key}: {e}");
                None
            }
        }
    }
}

/// Errors of the prune identity name it.
fn prune_err(e: S3Error) -> crate::error::Error {
    match e {
        S3Error::Credentials(m) => msg(format!(
            "{m} (these are the prune credentials given with --credentials)"
        )),
        e => s3_err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_shapes_sync_writes_are_classified() {
        let mut l = Listing::default();
        for rel in [
            "config/config-20260101T000000Z-abcdef.meta",
            "config/config-20260101T000000Z-abcdef.000.rvb",
            "config/config-20260101T000000Z-abcdef.x.rvb",
            "config/logs-20260101T000000Z-abcdef.meta",
            "config/../x.meta",
            "other/config-1.meta",
            "database-wal/database-20260101T000000Z-abcdef/000000000003.rvw",
            "database-wal/database-20260101T000000Z-abcdef/notes.txt",
            "database-wal/evil/000000000003.rvw",
            "sets/set-20260101T000000Z/MANIFEST",
            "sets/set-20260101T000000Z/pool/x",
        ] {
            classify(&mut l, rel, rel, 1);
        }
        let c = &l.archives[&Strategy::Config];
        assert_eq!(c.len(), 1);
        let a = &c["config-20260101T000000Z-abcdef"];
        assert!(a.sidecar.is_some() && a.parts.len() == 1);
        assert_eq!(l.wal.len(), 1);
        assert_eq!(l.manifests.len(), 1);
    }

    #[test]
    fn credentials_file_is_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rvm-prune-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c");
        std::fs::write(&p, "AKPRUNE\nsecret-1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = load_credentials(&p).unwrap();
        assert_eq!(c.access_key_id, "AKPRUNE");
        assert_eq!(c.secret.as_str(), "secret-1");
        std::fs::write(&p, "only-one-line\n").unwrap();
        assert!(load_credentials(&p)
            .unwrap_err()
            .to_string()
            .contains("two lines"));
        std::fs::write(&p, "AK\nsecret with space\n").unwrap();
        assert!(load_credentials(&p).is_err());
        std::fs::write(&p, "AK\nS\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_credentials(&p)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

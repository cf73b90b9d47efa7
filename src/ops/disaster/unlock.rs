//! Opening a chosen set: find the key, check the manifest's tag, hash
//! every file the manifest names.
//!
//! Key order: the board's own key file when its ring holds the key the
//! manifest names; else the recovery private key from `--recovery-key`,
//! the config's `recovery_key_file`, then `rvm-recovery.key` at the stick
//! root, which unseals the set's `key.sealed`. Invariants: nothing is
//! trusted before [`Manifest::open`] passed; every pool file is read
//! through (streaming, fixed memory) and compared to its manifest hash
//! before any archive is used; nothing is written.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::crypto::KeyRing;
use crate::fsutil::{open_regular, read_regular, Follow};
use crate::recovery::{RecoveryError, MAX_SEALED_LEN};
use crate::recovery_set::{Manifest, ManifestFile, SEALED_KEY_FILE, STICK_RECOVERY_KEY};

use super::scan::FoundSet;

/// An opened set: the authenticated manifest and the ring that reads its
/// archives (`None` for an unencrypted, unauthenticated set).
pub(crate) struct Unlocked {
    pub manifest: Manifest,
    pub ring: Option<KeyRing>,
    /// Which key opened it, in words.
    pub key_source: String,
}

/// Where the recovery private key may come from.
pub(crate) struct KeySources<'a> {
    pub explicit: Option<&'a Path>,
    pub configured: Option<&'a Path>,
    pub stick: &'a Path,
}

/// Open `set`: find a key, check the tag. `Err` says why, and how to
/// provide the key when that is what is missing.
pub(crate) fn unlock(cfg: &Config, set: &FoundSet, keys: &KeySources) -> Result<Unlocked, String> {
    let refused = |e: crate::recovery_set::ManifestError| {
        format!(
            "the MANIFEST of {} was refused: {e}. Nothing was restored; use another stick or an older set",
            set.manifest.set
        )
    };
    let (_, _, tag) = Manifest::parse(&set.bytes).map_err(refused)?;
    if tag.is_none() {
        let m = Manifest::open(&set.bytes, None, cfg.encryption_enabled).map_err(refused)?;
        return Ok(Unlocked {
            manifest: m,
            ring: None,
            key_source: "no key needed: the set is not encrypted".into(),
        });
    }
    let wanted = set.manifest.key_id.clone().unwrap_or_default();
    let (ring, key_source) = match own_ring(cfg, &wanted) {
        Some(ring) => (
            ring,
            format!("the board's own key file {}", cfg.key_file.display()),
        ),
        None => unseal(set, keys)?,
    };
    let manifest = Manifest::open(&set.bytes, Some(&ring), true).map_err(refused)?;
    Ok(Unlocked {
        manifest,
        ring: Some(ring),
        key_source,
    })
}

/// The board's own key ring, when it still has one holding `key_id`.
fn own_ring(cfg: &Config, key_id: &str) -> Option<KeyRing> {
    if !cfg.key_file.exists() {
        return None;
    }
    match crate::keys::load(&cfg.key_file) {
        Ok(ring) if ring.ids().iter().any(|id| id.to_string() == key_id) => Some(ring),
        Ok(_) => {
            log::info!(
                "the board's key file {} does not hold key {key_id}: using the recovery key",
                cfg.key_file.display()
            );
            None
        }
        Err(e) => {
            log::warn!("the board's key file cannot be used ({e}): using the recovery key");
            None
        }
    }
}

/// Unseal the set's `key.sealed` with the first recovery key that opens it.
fn unseal(set: &FoundSet, keys: &KeySources) -> Result<(KeyRing, String), String> {
    let sealed_to = set
        .manifest
        .recovery_key_id
        .clone()
        .unwrap_or_else(|| "(not named)".into());
    let how = format!(
        "Put the fleet's recovery private key file (made by `rvm-backup keygen --recovery`) on the stick's top folder as {STICK_RECOVERY_KEY}, or run `rvm-backup disaster-restore --from DIR --recovery-key FILE`, or set recovery_key_file in the config; then run it again"
    );
    let sealed_path = set.dir.join(SEALED_KEY_FILE);
    let sealed = match read_regular(&sealed_path, MAX_SEALED_LEN, Follow::No) {
        Ok((_, b)) => b,
        Err(e) => {
            return Err(format!(
                "the board's own key is gone and the set holds no usable sealed key ({}: {e}); nothing was restored",
                sealed_path.display()
            ))
        }
    };
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(p) = keys.explicit {
        candidates.push((p.to_path_buf(), true));
    }
    if let Some(p) = keys.configured {
        candidates.push((p.to_path_buf(), false));
    }
    candidates.push((keys.stick.join(STICK_RECOVERY_KEY), false));
    let mut tried = Vec::new();
    for (path, explicit) in candidates {
        if !explicit && !path.exists() {
            continue;
        }
        let private = match crate::recovery::load_private(&path) {
            Ok(k) => k,
            Err(e) if explicit => return Err(format!("{e}; nothing was restored")),
            Err(e) => {
                tried.push(format!("{} cannot be used ({e})", path.display()));
                continue;
            }
        };
        match crate::recovery::unseal(&sealed, &private) {
            Ok(ring) => {
                return Ok((
                    ring,
                    format!("recovery key {} from {}", private.id(), path.display()),
                ))
            }
            Err(RecoveryError::WrongRecoveryKey { have, .. }) => tried.push(format!(
                "{} is recovery key {have}, not the one the set is sealed to",
                path.display()
            )),
            Err(e) => {
                return Err(format!(
                    "{} of set {} cannot be opened: {e}; nothing was restored. The set was changed or damaged: use another stick or an older set",
                    SEALED_KEY_FILE, set.manifest.set
                ))
            }
        }
    }
    Err(format!(
        "no key opens this recovery set: the board's own key is gone, and the set is sealed to recovery key {sealed_to}{}. Nothing was restored. {how}",
        if tried.is_empty() {
            ", but no recovery private key was found".to_string()
        } else {
            format!("; tried: {}", tried.join("; "))
        }
    ))
}

/// SHA-256 of a file, read through in blocks, with its length.
fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let (mut f, _) = open_regular(path, Follow::No)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n = n.saturating_add(k as u64);
    }
    Ok((n, h.finalize().into()))
}

/// Check one file against its manifest entry.
fn check_file(path: &Path, f: &ManifestFile) -> Result<(), String> {
    match hash_file(path) {
        Ok((n, digest)) if n == f.bytes && digest == f.digest() => Ok(()),
        Ok(_) => Err(format!(
            "{} on the stick does not match the manifest: it was changed or damaged after export. Nothing was restored; use another stick or an older set",
            path.display()
        )),
        Err(e) => Err(format!(
            "{} cannot be read ({e}); nothing was restored",
            path.display()
        )),
    }
}

/// Hash every file the (opened) manifest names: the sealed key in the set
/// directory and every archive file in the pool. Returns the bytes read.
pub(crate) fn check_files(set_dir: &Path, pool: &Path, m: &Manifest) -> Result<u64, String> {
    let mut total = 0u64;
    if let Some(f) = &m.sealed_key {
        check_file(&set_dir.join(SEALED_KEY_FILE), f)?;
        total = total.saturating_add(f.bytes);
    }
    for f in m.archives.iter().flat_map(|a| &a.files) {
        check_file(&pool.join(&f.name), f)?;
        total = total.saturating_add(f.bytes);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_by_length_and_hash() {
        let d = std::env::temp_dir().join(format!("rvb-unlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("f");
        let data = vec![7u8; 200_000];
        std::fs::write(&p, &data).unwrap();
        let good = ManifestFile {
            name: "f".into(),
            bytes: data.len() as u64,
            sha256: crate::recovery_set::manifest::hex(&crate::crypto::sha256(&data)),
        };
        check_file(&p, &good).unwrap();
        let mut changed = data.clone();
        changed[150_000] ^= 1;
        std::fs::write(&p, &changed).unwrap();
        assert!(check_file(&p, &good)
            .unwrap_err()
            .contains("does not match"));
        std::fs::write(&p, &data[..10]).unwrap();
        assert!(check_file(&p, &good).is_err());
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        assert!(check_file(&p, &good)
            .unwrap_err()
            .contains("cannot be read"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

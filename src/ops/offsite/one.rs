//! `restore STRATEGY [ID|latest|--at TIME] --from offsite`: one archive
//! from the offsite store on a board that still has its key ring (its
//! local copy pruned or lost), through the ordinary restore.
//!
//! The strategy's sidecars are brought into
//! `<backup_dir>/offsite-restore/store/<strategy>/` (small; authenticated
//! by the key ring when listed), the request's selector picks the archive
//! among them, then its parts and those of its chain are brought down
//! (ranged GETs, size and SHA-256 against the sidecar, as in `fetch`) and
//! `Session::restore` runs over that staged store. The staged files are
//! removed after a restore, and stay after a failure for the rerun.
//! Point-in-time replay (`--at` of the database) uses the local WAL only.

use std::path::PathBuf;

use super::fetch::{check_room, download, ensure_dir, is_staged, Want, STAGE_DIR};
use super::sets::list_all;
use super::Target;
use crate::error::{msg, Result};
use crate::ops::export::{chosen, manifest_archive};
use crate::ops::{RestoreRequest, Session};
use crate::progress::Progress;
use crate::restore::Restored;
use crate::store::{Store, SIDECAR_EXT};

/// The folder under the staging directory that holds a staged store.
const STORE_DIR: &str = "store";
/// Listing pages of one strategy's folder read at most.
const MAX_PAGES: usize = 64;

impl Session {
    /// See the module doc.
    pub async fn restore_from_offsite(
        &self,
        req: &RestoreRequest,
        progress: &mut Progress,
    ) -> Result<Restored> {
        let mut t: Target = self.offsite_target()?;
        let s = req.strategy;
        let stage = ensure_dir(&self.cfg.backup_dir, STAGE_DIR)?;
        let root = ensure_dir(&stage, STORE_DIR)?;
        let dir = ensure_dir(&root, s.name())?;
        let base = format!("{}{}/", t.prefix, s.name());
        let mut staged: Vec<PathBuf> = Vec::new();
        for o in list_all(&mut t, &base, MAX_PAGES).await? {
            let Some(name) = o.key.strip_prefix(&base) else {
                continue;
            };
            let Some(id) = name.strip_suffix(SIDECAR_EXT) else {
                continue;
            };
            if !crate::store::is_archive_id(s, id) {
                continue;
            }
            // The listing's size is the store's word: a sidecar is small,
            // and a huge one must not fill the board's disk.
            if o.size > crate::format::sidecar::MAX_SIDECAR_LEN as u64 {
                return Err(msg(format!(
                    "{} in the offsite store is {} bytes, more than a sidecar can be: not downloaded",
                    o.key, o.size
                )));
            }
            let w = Want {
                key: o.key.clone(),
                dest: dir.join(name),
                bytes: o.size,
                sha256: None,
            };
            if !is_staged(&w)? {
                download(&mut t, &w, progress).await?;
            }
            staged.push(w.dest);
        }
        if staged.is_empty() {
            return Err(msg(format!(
                "the offsite store holds no {s} archive under s3://{}/{base}",
                t.s3.bucket()
            )));
        }
        let store = Store::new(&root);
        let mut listing = store.list(Some(s), self.key.as_ref());
        let archive = crate::ops::select::by_selector(&mut listing, s, &req.selector)?.clone();
        let c = chosen(archive, &listing.archives)?;
        let mut todo = Vec::new();
        for f in manifest_archive(&c).files {
            let w = Want {
                key: format!("{}{}", t.prefix, f.name),
                dest: root.join(&f.name),
                bytes: f.bytes,
                sha256: Some(f.digest()),
            };
            if is_staged(&w)? {
                staged.push(w.dest);
            } else {
                todo.push(w);
            }
        }
        check_room(&root, todo.iter().map(|w| w.bytes).sum())?;
        for w in todo {
            download(&mut t, &w, progress).await?;
            staged.push(w.dest);
        }
        // The same ring, for the session over the staged store (a ring is
        // not copied in memory; it is read again from its file).
        let key = match &self.key {
            Some(_) => Some(crate::keys::load(&self.cfg.key_file)?),
            None => None,
        };
        let session = Session::over_store(self.cfg.clone(), key, store);
        let mut one = req.clone();
        one.selector = crate::restore::Selector::Id(c.listed.meta.id.clone());
        let r = session.restore(&one, progress).await?;
        for p in &staged {
            let _ = std::fs::remove_file(p);
        }
        for d in [&dir, &root, &stage] {
            let _ = std::fs::remove_dir(d);
        }
        Ok(r)
    }
}

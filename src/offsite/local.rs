//! What there is to ship from the backup directory, oldest first: for
//! each archive (by creation time) its parts, then its sidecar (so a
//! sidecar is remote only once the parts it describes are); then the WAL
//! segments of each generation in order.
//!
//! Remote names mirror the local layout under the prefix:
//! `<strategy>/<id>.NNN.rvb`, `<strategy>/<id>.meta`,
//! `database-wal/<generation>/<seq>.rvw`. Only names this program writes
//! are listed (sidecars that authenticate with the key ring, their parts,
//! segment names of the right shape), so the names are FAT- and S3-safe.
//!
//! Files are opened relative to the backup directory's descriptor, without
//! following symbolic links, and must be regular files
//! ([`crate::safefs::Dir::open_regular`]).

use std::fs::File;
use std::path::Path;

use crate::crypto::KeyRing;
use crate::error::{msg, Result};
use crate::safefs::Dir;
use crate::store::{Store, SIDECAR_EXT};

/// One file to ship.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Directories under `backup_dir`, then the file name.
    pub dirs: Vec<String>,
    pub name: String,
    /// A WAL segment: its generation and sequence number.
    pub segment: Option<(String, u64)>,
    /// The archive id or generation it belongs to: when one file of a
    /// group cannot be shipped, the rest of the group waits (a sidecar
    /// never goes before its parts, a segment never before the one before).
    pub group: String,
}

impl Item {
    /// The key under the prefix.
    pub fn key(&self) -> String {
        let mut k = self.dirs.join("/");
        k.push('/');
        k.push_str(&self.name);
        k
    }

    /// Open it for reading through the backup directory's descriptor.
    pub fn open(&self, root: &Dir) -> Result<File> {
        let mut d = root
            .try_clone()
            .map_err(|e| msg(format!("cannot use the backup directory: {e}")))?;
        for c in &self.dirs {
            d = d
                .open_child(c.as_bytes())
                .map_err(|e| msg(format!("cannot open {}: {e}", self.key())))?;
        }
        d.open_regular(self.name.as_bytes())
            .map_err(|e| msg(format!("cannot open {}: {e}", self.key())))
    }
}

/// Everything to ship, oldest first, and the problems met (sidecars that
/// cannot be read are reported, not shipped). Nothing leaves the board in
/// plaintext: an archive made while encryption was off is refused by the
/// store's listing, and a WAL generation whose first segment is not
/// encrypted (or does not open) is reported and not listed here.
pub fn items(store: &Store, key: Option<&KeyRing>, backup_dir: &Path) -> (Vec<Item>, Vec<String>) {
    let listing = store.list(None, key);
    let mut archives = listing.archives;
    archives.sort_by(|a, b| (a.meta.created, &a.meta.id).cmp(&(b.meta.created, &b.meta.id)));
    let mut out = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for a in &archives {
        let dir = a.meta.strategy.name().to_string();
        for p in &a.meta.parts {
            out.push(Item {
                dirs: vec![dir.clone()],
                name: p.name.clone(),
                segment: None,
                group: a.meta.id.clone(),
            });
        }
        out.push(Item {
            dirs: vec![dir],
            name: format!("{}{SIDECAR_EXT}", a.meta.id),
            segment: None,
            group: a.meta.id.clone(),
        });
    }
    for g in crate::pitr::store::generations(backup_dir) {
        // A generation begun while encryption was off holds plaintext
        // segments: its first one tells (sidecars are already refused by
        // the store's listing when encryption is on).
        if let Some(first) = g.seqs.first() {
            let p = backup_dir
                .join(crate::pitr::store::WAL_DIR)
                .join(&g.id)
                .join(crate::pitr::segment::file_name(*first));
            if let Err(e) = crate::pitr::segment::open(&p, key, true) {
                problems.push(format!(
                    "WAL generation {}: its segments never go offsite: {e}",
                    g.id
                ));
                continue;
            }
        }
        for seq in &g.seqs {
            out.push(Item {
                dirs: vec![crate::pitr::store::WAL_DIR.to_string(), g.id.clone()],
                name: crate::pitr::segment::file_name(*seq),
                segment: Some((g.id.clone(), *seq)),
                group: g.id.clone(),
            });
        }
    }
    problems.extend(
        listing
            .problems
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.display())),
    );
    (out, problems)
}

//! `offsite sync`, `offsite list`, `offsite verify`: the offsite store
//! operations, for every front end.
//!
//! Sync ships every file [`local::items`] names that the record does not
//! hold as confirmed, oldest first, one at a time, in fixed memory (a file
//! is read in [`s3::CHUNK`] pieces, twice: once to hash, once to send;
//! files larger than `multipart_size` go in parts of that size).
//!
//! Invariants:
//! - nothing is ever overwritten remotely: a HEAD before each upload, and
//!   `If-None-Match: *` on every PUT and completion; an object that exists
//!   with the local size (and, for a single-PUT object, the local MD5 as
//!   its ETag) counts as confirmed, any other is an error that names it;
//! - an object is confirmed in the record only after the server accepted
//!   it whole (a PUT or a completed multipart upload), and the record is
//!   saved crash-safely after each one, and after each new upload id;
//! - a rerun resumes an unfinished multipart upload: ListParts tells which
//!   parts the server holds with the right size, only the others are sent;
//!   an upload the server no longer knows is started afresh; a recorded
//!   upload for a file that is not to be sent any more is aborted;
//! - a sidecar is shipped after its archive's parts, so a remote sidecar
//!   means its parts are there.

mod fetch;
mod one;
mod sets;

pub use fetch::{stage_from_offsite, Staged, STAGE_DIR};
pub use sets::SetOutcome;

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Session;
use crate::error::{msg, Result};
use crate::net::http::Timeouts;
use crate::offsite::config::{load_secret, OffsiteSection};
use crate::offsite::local;
use crate::offsite::pace::Pacer;
use crate::offsite::record::{self, Record, Upload};
use crate::offsite::s3::{self, Body, Object, Part, Put, S3Error, S3};
use crate::offsite::sigv4::Credentials;
use crate::safefs::Dir;

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Objects uploaded now, and their bytes.
    pub uploaded: u64,
    pub bytes: u64,
    /// Objects found remotely already (with the local size).
    pub found: u64,
    /// Objects confirmed before this run.
    pub already: u64,
    /// Local files that could not be shipped, with the reason.
    pub problems: Vec<String>,
    /// The recovery set published after the files (`ops::offsite::sets`).
    pub set: Option<SetOutcome>,
}

/// What `offsite verify` found.
#[derive(Debug, Default)]
pub struct OffsiteVerifyReport {
    pub checked: u64,
    /// Bytes read back (with `--read`).
    pub read_bytes: u64,
    /// Local files not (yet) in the store.
    pub pending: u64,
    pub failures: Vec<String>,
}

/// Keeps the kind (credentials, unreachable, …) for the daemon's monitor.
pub(super) fn s3_err(e: S3Error) -> crate::error::Error {
    crate::error::Error::Offsite(e)
}

pub(super) struct Target {
    pub(super) s3: S3,
    pub(super) prefix: String,
    part_size: u64,
    rate: Option<u64>,
}

impl Session {
    pub(super) fn offsite_section(&self) -> Result<&OffsiteSection> {
        self.cfg.offsite.as_ref().ok_or_else(|| {
            msg(format!(
                "config {} has no [offsite] section: add one with endpoint, bucket, access_key_id and secret_key_file",
                self.cfg.file.display()
            ))
        })
    }

    pub(super) fn offsite_target(&self) -> Result<Target> {
        let o = self.offsite_section()?;
        let creds = Credentials {
            access_key_id: o.access_key_id.0.clone(),
            secret: load_secret(&o.secret_key_file.0)?,
        };
        self.offsite_target_as(creds)
    }

    /// The store, spoken to with `creds` (`offsite prune` has its own).
    pub(super) fn offsite_target_as(&self, creds: Credentials) -> Result<Target> {
        let o = self.offsite_section()?;
        let part_size = o.part_size();
        let rate = o.bandwidth_limit.map(|r| r.0);
        // A part at the bandwidth limit must fit in one exchange (beside
        // the time `s3::MIN_RATE` gives every body).
        let part_secs = rate.map_or(0, |r| part_size / r.max(1));
        let idle = o.timeout();
        let t = Timeouts {
            connect: idle.min(Duration::from_secs(10)),
            io: idle,
            total: (idle * 5).saturating_add(Duration::from_secs(part_secs.saturating_mul(2))),
        };
        let mut s3 = S3::new(o.endpoint.0.clone(), &o.bucket.0, o.region(), creds, t);
        if o.endpoint.0.tls {
            let cfg = crate::net::tls::client_config(o.ca_file.as_ref().map(|p| p.0.as_path()))
                .map_err(msg)?;
            s3 = s3.with_tls(cfg);
        }
        Ok(Target {
            s3,
            prefix: o.prefix()?,
            part_size,
            rate,
        })
    }

    pub(super) fn store_id(&self, t: &Target) -> String {
        format!("{} {} {}", t.s3.endpoint(), t.s3.bucket(), t.prefix)
    }

    /// `offsite sync`: ship what is not confirmed yet.
    pub async fn offsite_sync(&self) -> Result<SyncReport> {
        if !self.cfg.encryption_enabled {
            return Err(msg(format!(
                "encryption_enabled is off in {}: the offsite store would receive the board's data in plaintext, so nothing is shipped; turn encryption on (key_file) before using [offsite]",
                self.cfg.file.display()
            )));
        }
        let mut t = self.offsite_target()?;
        let dir = self.cfg.backup_dir.clone();
        let _lock = record::lock(&dir)?;
        // Credentials, clock and bucket are checked once, up front.
        t.s3.probe(&t.prefix).await.map_err(s3_err)?;
        let mut rec = record::load(&dir, &self.store_id(&t))?;
        let loaded = rec.clone();
        let (items, problems) = local::items(&self.store, self.key.as_ref(), &dir);
        let mut report = SyncReport {
            problems,
            ..SyncReport::default()
        };
        // Forget files that are gone locally (pruned): the record stays
        // bounded by the backup directory.
        rec.retain(&items);
        // A recorded upload of a file that is not to be sent any more.
        if let Some(u) = rec.upload.clone() {
            let wanted = items
                .iter()
                .any(|i| format!("{}{}", t.prefix, i.key()) == u.key && !rec.is_confirmed(i));
            if !wanted || u.part_size != t.part_size {
                t.s3.abort(&u.key, &u.upload_id).await.map_err(s3_err)?;
                rec.upload = None;
            }
        }
        if rec != loaded {
            record::save(&dir, &rec)?;
        }
        let root = Dir::open_path(&dir).map_err(|e| {
            msg(format!(
                "cannot open backup directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut pacer = Pacer::new(t.rate);
        let mut held: Option<&str> = None;
        for item in &items {
            let key = item.key();
            if rec.is_confirmed(item) {
                report.already += 1;
                continue;
            }
            if held == Some(item.group.as_str()) {
                continue;
            }
            let file = match item.open(&root) {
                Ok(f) => f,
                Err(e) => {
                    // Pruned since it was listed, or damaged: the rest of
                    // its group waits; the next sync sees it again.
                    report.problems.push(e.to_string());
                    held = Some(item.group.as_str());
                    continue;
                }
            };
            let size = file
                .metadata()
                .map_err(|e| msg(format!("cannot stat {key}: {e}")))?
                .len();
            let full = format!("{}{key}", t.prefix);
            let sent = ship(&mut t, &mut rec, &dir, &full, &file, size, &mut pacer).await?;
            if sent {
                report.uploaded += 1;
                report.bytes += size;
                log::info!("offsite: shipped {full} ({size} bytes)");
            } else {
                report.found += 1;
            }
            rec.confirm(item, size);
            record::save(&dir, &rec)?;
        }
        report.set = Some(sets::after_sync(self, &mut t, &rec, &mut report.problems).await);
        Ok(report)
    }

    /// `offsite list`: every object under the prefix, page by page.
    pub async fn offsite_list(&self, each: &mut dyn FnMut(&Object)) -> Result<u64> {
        let mut t = self.offsite_target()?;
        let mut token: Option<String> = None;
        let mut n = 0u64;
        loop {
            let (objs, next) =
                t.s3.list_page(&t.prefix, token.as_deref())
                    .await
                    .map_err(s3_err)?;
            for o in &objs {
                each(o);
                n += 1;
            }
            match next {
                Some(tok) if Some(&tok) != token.as_ref() => token = Some(tok),
                Some(_) => return Err(msg("the offsite listing repeats its continuation token")),
                None => return Ok(n),
            }
        }
    }

    /// `offsite verify [--read]`: every local file against its object:
    /// present with the same size; with `read`, downloaded (in fixed
    /// memory) and its SHA-256 compared with the local file's.
    pub async fn offsite_verify(&self, read: bool) -> Result<OffsiteVerifyReport> {
        let mut t = self.offsite_target()?;
        let dir = self.cfg.backup_dir.clone();
        let rec = record::load(&dir, &self.store_id(&t))?;
        let (items, problems) = local::items(&self.store, self.key.as_ref(), &dir);
        let mut report = OffsiteVerifyReport {
            failures: problems,
            ..OffsiteVerifyReport::default()
        };
        t.s3.probe(&t.prefix).await.map_err(s3_err)?;
        let root = Dir::open_path(&dir).map_err(|e| {
            msg(format!(
                "cannot open backup directory {}: {e}",
                dir.display()
            ))
        })?;
        for item in &items {
            let key = item.key();
            let full = format!("{}{key}", t.prefix);
            let file = match item.open(&root) {
                Ok(f) => f,
                Err(e) => {
                    report.failures.push(e.to_string());
                    continue;
                }
            };
            let size = file
                .metadata()
                .map_err(|e| msg(format!("cannot stat {key}: {e}")))?
                .len();
            let Some(obj) = t.s3.head(&full).await.map_err(s3_err)? else {
                if rec.is_confirmed(item) {
                    report.failures.push(format!(
                        "{full}: recorded as shipped but missing from the store"
                    ));
                } else {
                    report.pending += 1;
                }
                continue;
            };
            report.checked += 1;
            if obj.size != size {
                report.failures.push(format!(
                    "{full}: {} bytes in the store, {size} here",
                    obj.size
                ));
                continue;
            }
            if read {
                let local = file_sha256(&file, size).await?;
                let mut h = Sha256::new();
                let mut got = 0u64;
                t.s3.get(&full, None, &mut |b| {
                    got += b.len() as u64;
                    if got > size {
                        // Never read more than the file it must equal.
                        return Err(crate::net::NetError::Protocol(format!(
                            "{full}: the store sends more than the {size} bytes it listed"
                        )));
                    }
                    h.update(b);
                    Ok(())
                })
                .await
                .map_err(s3_err)?;
                report.read_bytes += got;
                if got != size || h.finalize().as_slice() != local.as_slice() {
                    report.failures.push(format!(
                        "{full}: the store's content differs from the local file"
                    ));
                }
            }
        }
        Ok(report)
    }
}

/// Feed the first `size` bytes of `file` to `f` in [`s3::CHUNK`] pieces,
/// yielding after each (the daemon answers its socket meanwhile).
async fn each_chunk(file: &std::fs::File, size: u64, mut f: impl FnMut(&[u8])) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; s3::CHUNK];
    let mut at = 0u64;
    while at < size {
        let want = buf
            .len()
            .min(usize::try_from(size - at).unwrap_or(usize::MAX));
        let n = file
            .read_at(&mut buf[..want], at)
            .map_err(|e| msg(format!("cannot read a local file: {e}")))?;
        if n == 0 {
            return Err(msg("a local file became shorter while it was read"));
        }
        f(&buf[..n]);
        at += n as u64;
        smol::future::yield_now().await;
    }
    Ok(())
}

async fn file_sha256(file: &std::fs::File, size: u64) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    each_chunk(file, size, |b| h.update(b)).await?;
    Ok(h.finalize().into())
}

/// Ship one file unless the store has it: `Ok(true)` when sent now,
/// `Ok(false)` when found there with the local size.
async fn ship(
    t: &mut Target,
    rec: &mut Record,
    dir: &std::path::Path,
    full: &str,
    file: &std::fs::File,
    size: u64,
    pacer: &mut Pacer,
) -> Result<bool> {
    // Asked even when resuming: the server may have completed the upload
    // and the answer been lost (a cut link, a power cut before the record
    // was saved); then the object is there whole and nothing is sent again.
    if let Some(obj) = t.s3.head(full).await.map_err(s3_err)? {
        same_object(full, &obj, file, size).await?;
        if let Some(u) = rec.upload.take_if(|u| u.key == full) {
            // Its id is spent (or someone else's object stands there): drop it.
            t.s3.abort(full, &u.upload_id).await.map_err(s3_err)?;
            record::save(dir, rec)?;
        }
        return Ok(false);
    }
    if size <= t.part_size {
        let body = Body::File {
            file,
            offset: 0,
            len: size,
        };
        return match t.s3.put_new(full, body, pacer).await.map_err(s3_err)? {
            Put::Created => Ok(true),
            Put::Exists => found(t, full, file, size).await,
        };
    }
    // Multipart: resume the recorded upload if the server still knows it.
    let mut have: Vec<Part> = Vec::new();
    let mut id = None;
    if let Some(u) = rec
        .upload
        .clone()
        .filter(|u| u.key == full && u.size == size)
    {
        match t.s3.list_parts(full, &u.upload_id).await.map_err(s3_err)? {
            Some(parts) => {
                log::info!(
                    "offsite: resuming {full}: {} parts on the server",
                    parts.len()
                );
                have = parts;
                id = Some(u.upload_id);
            }
            None => log::info!(
                "offsite: the upload of {full} is gone from the server; starting it again"
            ),
        }
    }
    let id = match id {
        Some(id) => id,
        None => {
            let id = t.s3.create_multipart(full).await.map_err(s3_err)?;
            rec.upload = Some(Upload {
                key: full.to_string(),
                upload_id: id.clone(),
                size,
                part_size: t.part_size,
            });
            record::save(dir, rec)?;
            id
        }
    };
    let count = size.div_ceil(t.part_size);
    let mut parts = Vec::new();
    for n in 1..=count {
        let offset = (n - 1) * t.part_size;
        let len = t.part_size.min(size - offset);
        let number = u32::try_from(n).map_err(|_| msg("too many parts"))?;
        if let Some(p) = have
            .iter()
            .find(|p| p.number == number && p.size == len && !p.etag.is_empty())
        {
            parts.push(p.clone());
            continue;
        }
        let body = Body::File { file, offset, len };
        let etag =
            t.s3.upload_part(full, &id, number, body, pacer)
                .await
                .map_err(s3_err)?;
        parts.push(Part {
            number,
            size: len,
            etag,
        });
    }
    let outcome = t.s3.complete(full, &id, &parts).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if matches!(&e, S3Error::Http { status: 404, .. }) {
                // The upload is gone: the next sync starts it again.
                rec.upload = None;
                record::save(dir, rec)?;
            }
            return Err(s3_err(e));
        }
    };
    rec.upload = None;
    match outcome {
        Put::Created => {
            // Confirm what the server now lists as complete.
            match t.s3.head(full).await.map_err(s3_err)? {
                Some(obj) => same_size(full, &obj, size).map(|()| true),
                None => Err(msg(format!(
                    "{full}: the store accepted the upload but does not show the object; sync again"
                ))),
            }
        }
        Put::Exists => {
            t.s3.abort(full, &id).await.map_err(s3_err)?;
            found(t, full, file, size).await
        }
    }
}

/// After a 412: the object is there; it counts if it is ours (see
/// [`same_object`]).
async fn found(t: &mut Target, full: &str, file: &std::fs::File, size: u64) -> Result<bool> {
    match t.s3.head(full).await.map_err(s3_err)? {
        Some(obj) => same_object(full, &obj, file, size).await.map(|()| false),
        None => Err(msg(format!(
            "{full}: the store refused to overwrite it but does not show it; sync again"
        ))),
    }
}

/// An object found in the store counts as this file's when the sizes
/// match and, where its ETag is a plain MD5 (a single PUT; a multipart
/// ETag ends in `-N`), the local file's MD5 is that ETag.
/// Yields after each chunk (the daemon answers its socket meanwhile).
async fn same_object(full: &str, obj: &Object, file: &std::fs::File, size: u64) -> Result<()> {
    same_size(full, obj, size)?;
    let etag = obj.etag.trim_matches('"');
    if etag.len() != 32 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let mut m = crate::offsite::md5::Md5::new();
    each_chunk(file, size, |b| m.update(b)).await?;
    if crate::offsite::sigv4::hex(&m.finish()).eq_ignore_ascii_case(etag) {
        Ok(())
    } else {
        Err(msg(format!(
            "{full} exists in the offsite store with other content than the local file (same size, other MD5): it is never overwritten; check which board writes to this prefix"
        )))
    }
}

fn same_size(full: &str, obj: &Object, size: u64) -> Result<()> {
    if obj.size == size {
        Ok(())
    } else {
        Err(msg(format!(
            "{full} exists in the offsite store with {} bytes, but the local file has {size}: it is never overwritten; check which board writes to this prefix",
            obj.size
        )))
    }
}

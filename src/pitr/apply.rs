//! Replaying a generation's segments onto its restored snapshot.
//!
//! Each frame's page is written at `(pgno - 1) * page_size`; at each
//! commit frame the file is cut (or grown) to the database size the
//! commit recorded. Frames are full page images applied in WAL order, so
//! replaying frames that the snapshot already contains is harmless: the
//! result is the database as of the last applied commit.
//!
//! Invariants: segments are taken strictly in sequence from 0, each must
//! name this generation and carry the SHA-256 of the file before it, and
//! each archive is authenticated to its end (index, footer, tail) before
//! the next is read; any mismatch is an error naming the segment and
//! nothing is published (the caller works on a scratch copy). Only
//! segments whose batch time is at or before the wanted time are applied.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::segment;
use super::store::Generation;
use crate::crypto::KeyRing;
use crate::error::{msg, IoContext, Result};

/// How far a replay got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reached {
    /// Time of the last applied batch (seconds, nanoseconds).
    pub time: (i64, u32),
    pub segments: u64,
    pub commits: u64,
    pub frames: u64,
}

/// Apply the segments of `g` with a time at or before `until` (seconds;
/// a batch observed within that second counts) to `db`, the snapshot
/// image with pages of `page_size` bytes. Without `db`, only check the
/// whole chain (`verify`).
pub(crate) async fn replay(
    g: &Generation,
    key: Option<&KeyRing>,
    need_encrypted: bool,
    until: i64,
    db: Option<(&File, u32)>,
) -> Result<Reached> {
    let mut reached = Reached::default();
    walk(g, key, need_encrypted, until, db, &mut reached).await?;
    Ok(reached)
}

/// Check `g`'s chain (nothing is written) and say how many leading
/// segments are whole, authenticated and chained, and why the next one
/// is not (`None`: all are). `g.seqs` cut to that count replays cleanly.
pub(crate) async fn good_prefix(
    g: &Generation,
    key: Option<&KeyRing>,
    need_encrypted: bool,
) -> (Reached, Option<crate::error::Error>) {
    let mut reached = Reached::default();
    let bad = walk(g, key, need_encrypted, i64::MAX, None, &mut reached)
        .await
        .err();
    (reached, bad)
}

/// The replay itself; `reached` counts only whole segments.
async fn walk(
    g: &Generation,
    key: Option<&KeyRing>,
    need_encrypted: bool,
    until: i64,
    db: Option<(&File, u32)>,
    reached: &mut Reached,
) -> Result<()> {
    let mut expected_prev = [0u8; 32];
    let mut buf = Vec::new();
    for (i, &seq) in g.seqs.iter().enumerate() {
        let path = g.segment_path(seq);
        if seq != i as u64 {
            return Err(msg(format!(
                "WAL segment {} of generation {} is missing (found {} next); the chain cannot be replayed past it. Restore to an earlier time, or restore the archive {} itself",
                i,
                g.id,
                path.display(),
                g.id
            )));
        }
        let sha = segment::file_sha256(&path)?;
        let mut seg = segment::open(&path, key, need_encrypted)?;
        let m = seg.meta.clone();
        if m.seq != seq || m.generation != g.id || m.prev_sha256 != expected_prev {
            return Err(msg(format!(
                "WAL segment {} does not follow the one before it in generation {} (wrong sequence, generation or chain hash): it was replaced or tampered with; nothing was restored",
                path.display(),
                g.id
            )));
        }
        if let Some((_, page_size)) = db.filter(|(_, ps)| m.page_size != *ps) {
            return Err(msg(format!(
                "WAL segment {} has pages of {} bytes but the snapshot {} has {}",
                path.display(),
                m.page_size,
                g.id,
                page_size
            )));
        }
        if m.time > until {
            break;
        }
        let mut frames = 0;
        while let Some((pgno, db_size)) = seg.next_frame(&mut buf)? {
            if let Some((db, page_size)) = db {
                let ps = u64::from(page_size);
                let at = (u64::from(pgno) - 1) * ps;
                db.write_all_at(&buf[segment::RECORD_HEADER_LEN..], at)
                    .ctx(|| "cannot write the restored database".into())?;
                if db_size != 0 {
                    db.set_len(u64::from(db_size) * ps)
                        .ctx(|| "cannot size the restored database".into())?;
                }
            }
            frames += 1;
        }
        reached.frames += frames;
        reached.segments += 1;
        reached.commits += m.commits;
        reached.time = m.when();
        expected_prev = sha;
        smol::future::yield_now().await;
    }
    Ok(())
}

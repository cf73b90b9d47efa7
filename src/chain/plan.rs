//! Which parent a new backup of a tree strategy is made against, or why it
//! is a full one. Pure: the listing and `now` come in.
//!
//! A backup is incremental against the newest archive of its strategy
//! when: it is not forced full; `full_every_count` is not 0; that archive
//! backs up the same source list; its whole chain is listed (every parent
//! down to a full archive); the chain has fewer than `full_every_count`
//! incrementals; and the chain's full archive is younger than
//! `full_every`. The same rules hold for the database strategy (whose
//! parent must also carry page digests, checked when it is opened).

use crate::config::Config;
use crate::store::Listed;
use crate::strategy::Strategy;

/// The parent to use, or the reason there is none.
pub enum Choice<'a> {
    Parent(&'a Listed),
    Full(String),
}

/// `archives`: the listing (oldest first, any strategies).
pub fn choose<'a>(
    cfg: &Config,
    archives: &'a [Listed],
    strategy: Strategy,
    sources: &[String],
    force_full: bool,
    now: i64,
) -> Choice<'a> {
    let full = |why: &str| Choice::Full(why.to_string());
    if force_full {
        return full("a full backup was asked for");
    }
    if cfg.full_every_count == 0 {
        return full("full_every_count is 0");
    }
    let Some(newest) = archives.iter().rev().find(|a| a.meta.strategy == strategy) else {
        return full("there is no earlier archive");
    };
    if newest.meta.sources != sources {
        return full("the configured paths changed since the last archive");
    }
    let Some((depth, root)) = chain_of(archives, newest) else {
        return full("the last archive's chain is incomplete");
    };
    if depth > cfg.full_every_count as usize {
        return full(&format!(
            "the chain has {} incrementals (full_every_count)",
            depth - 1
        ));
    }
    let age = now.saturating_sub(root.meta.created);
    if age < 0 || age as u64 >= cfg.full_every.as_secs() {
        return full("the chain's full archive is older than full_every");
    }
    Choice::Parent(newest)
}

/// The chain of `a`: how many archives it has (itself included) and its
/// full archive; `None` if a parent is missing, of another strategy, not
/// older, or the chain is longer than [`super::MAX_CHAIN`].
pub fn chain_of<'a>(archives: &'a [Listed], a: &'a Listed) -> Option<(usize, &'a Listed)> {
    let mut cur = a;
    for depth in 1..=super::MAX_CHAIN {
        let Some(parent) = &cur.meta.parent else {
            return Some((depth, cur));
        };
        let p = archives
            .iter()
            .find(|x| &x.meta.id == parent && x.meta.strategy == a.meta.strategy)?;
        if (p.meta.created, p.meta.created_nanos) >= (cur.meta.created, cur.meta.created_nanos) {
            return None;
        }
        cur = p;
    }
    None
}

//! What is not yet confirmed in the offsite store: the local files
//! ([`super::local::items`]) the record ([`super::record`]) does not hold
//! as confirmed, counted with their bytes and the time of the oldest one
//! (the age of the oldest restore point that exists only on this board).
//!
//! Invariants: a pure fold over the items (the caller says each pending
//! file's size and time, see [`of_files`]); nothing is read from the
//! store; a file that cannot be looked at still counts as pending, with
//! no bytes and no time.

use super::local::Item;
use super::record::Record;
use crate::safefs::Dir;

/// Objects waiting to be shipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub objects: u64,
    pub bytes: u64,
    /// Unix time of the oldest pending file (its modification time: when
    /// the archive part, sidecar or WAL segment was written).
    pub oldest: Option<i64>,
}

/// Fold the items not confirmed in `rec`; `look` gives a pending file's
/// size and time (`None`: it cannot be looked at).
pub fn pending(
    items: &[Item],
    rec: &Record,
    mut look: impl FnMut(&Item) -> Option<(u64, i64)>,
) -> Pending {
    let mut p = Pending::default();
    for item in items.iter().filter(|i| !rec.is_confirmed(i)) {
        p.objects = p.objects.saturating_add(1);
        if let Some((size, time)) = look(item) {
            p.bytes = p.bytes.saturating_add(size);
            p.oldest = Some(p.oldest.map_or(time, |o| o.min(time)));
        }
    }
    p
}

/// [`pending`] with each file's size and modification time, opened
/// through the backup directory's descriptor (no symbolic links).
pub fn of_files(items: &[Item], rec: &Record, root: &Dir) -> Pending {
    use std::os::unix::fs::MetadataExt;
    pending(items, rec, |item| {
        let m = item.open(root).ok()?.metadata().ok()?;
        Some((m.len(), m.mtime()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: &str, n: u32) -> Item {
        Item {
            dirs: vec!["config".into()],
            name: format!("{id}.{n:03}.rvb"),
            segment: None,
            group: id.into(),
        }
    }

    fn segment(g: &str, seq: u64) -> Item {
        Item {
            dirs: vec!["database-wal".into(), g.into()],
            name: format!("{seq:08}.rvw"),
            segment: Some((g.into(), seq)),
            group: g.into(),
        }
    }

    #[test]
    fn counts_only_what_the_record_lacks() {
        let items = vec![
            part("a", 1),
            part("b", 1),
            segment("g", 0),
            segment("g", 1),
            segment("g", 2),
        ];
        let mut rec = Record::default();
        rec.confirm(&items[0], 10);
        rec.confirm(&items[2], 5);
        let times = |i: &Item| match i.segment {
            Some((_, seq)) => Some((100, 1000 + seq as i64)),
            None => Some((7, 2000)),
        };
        let p = pending(&items, &rec, times);
        assert_eq!(p.objects, 3, "{p:?}");
        assert_eq!(p.bytes, 7 + 100 + 100);
        assert_eq!(p.oldest, Some(1001));
        // Everything confirmed: nothing pending, no time.
        for i in &items {
            rec.confirm(i, 1);
        }
        assert_eq!(pending(&items, &rec, times), Pending::default());
        // A file that cannot be looked at still counts.
        let p = pending(&items[1..2], &Record::default(), |_| None);
        assert_eq!((p.objects, p.bytes, p.oldest), (1, 0, None));
    }
}

//! The canonical entry order, checked in fixed memory.
//!
//! Archives are written depth first, each directory before its children,
//! names sorted bytewise: within one source root that is the component-wise
//! lexicographic order of paths, and roots follow the sidecar's `sources`
//! order. [`Order::check`] requires every entry to come strictly after the
//! previous one in that order, which makes a repeated entry impossible
//! without remembering every path, and keeps a stack of the previous
//! entry's ancestors (as prefix lengths of that one path) to refuse an
//! entry below a non-directory.
//!
//! Invariants: memory is one path plus one small record per directory
//! level; an accepted sequence has no duplicates and nothing below a
//! symlink or file of the same archive.

use std::cmp::Ordering;

/// Compare two archive paths component by component: `/` sorts before
/// every other byte, which makes a bytewise comparison component-wise.
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: &u8| if *c == b'/' { 0u8 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

#[derive(Default)]
pub struct Order {
    root: Option<usize>,
    prev: Vec<u8>,
    /// Prefix lengths of `prev` that are entries of this archive (its
    /// ancestors and itself), with whether each is a directory.
    stack: Vec<(usize, bool)>,
}

impl Order {
    /// Accept the next entry (`root`: index of its source in the sidecar)
    /// or say why it cannot follow the previous one.
    pub fn check(&mut self, root: usize, path: &[u8], is_dir: bool) -> Result<(), String> {
        let shown = String::from_utf8_lossy(path);
        let order = match self.root {
            None => Ordering::Greater,
            Some(r) if r != root => root.cmp(&r),
            Some(_) => canonical_cmp(path, &self.prev),
        };
        match order {
            Ordering::Equal => return Err(format!("archive holds {shown} twice; refusing it")),
            Ordering::Less => {
                return Err(format!(
                    "archive entry {shown} is out of order (it comes after {}): archives list \
                     each directory before its contents, names sorted; this one was not written \
                     by rvm-backup or is damaged; refusing it, restore from another archive",
                    String::from_utf8_lossy(&self.prev)
                ))
            }
            Ordering::Greater => {}
        }
        if self.root != Some(root) {
            self.stack.clear();
        }
        while let Some(&(len, _)) = self.stack.last() {
            if path.len() > len && path[..len] == self.prev[..len] && path[len] == b'/' {
                break;
            }
            self.stack.pop();
        }
        if let Some(&(len, false)) = self.stack.last() {
            return Err(format!(
                "archive entry {shown} lies below {}, which is not a directory (a symlink \
                 trick?); refusing it",
                String::from_utf8_lossy(&self.prev[..len])
            ));
        }
        self.root = Some(root);
        self.prev.clear();
        self.prev.extend_from_slice(path);
        self.stack.push((path.len(), is_dir));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_order_is_not_byte_order() {
        assert_eq!(canonical_cmp(b"/a/x", b"/a b"), Ordering::Less);
        assert_eq!(canonical_cmp(b"/a", b"/a/x"), Ordering::Less);
        assert_eq!(canonical_cmp(b"/a/b", b"/a/b"), Ordering::Equal);
        assert_eq!(canonical_cmp(b"/b", b"/a/z"), Ordering::Greater);
    }

    #[test]
    fn accepts_walker_order_and_refuses_the_rest() {
        let mut o = Order::default();
        for (p, d) in [
            ("/r", true),
            ("/r/a", true),
            ("/r/a/x", false),
            ("/r/a b", false),
            ("/r/b", false),
        ] {
            o.check(0, p.as_bytes(), d).unwrap();
        }
        assert!(o.check(0, b"/r/b", false).unwrap_err().contains("twice"));
        assert!(o
            .check(0, b"/r/a/y", false)
            .unwrap_err()
            .contains("out of order"));
        let err = o.check(0, b"/r/b/c", false).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        // Another root starts over, and may not go back.
        o.check(1, b"/q", true).unwrap();
        o.check(1, b"/q/z", false).unwrap();
        assert!(o
            .check(0, b"/r/z", false)
            .unwrap_err()
            .contains("out of order"));
    }

    #[test]
    fn memory_does_not_grow_with_entries() {
        let mut o = Order::default();
        o.check(0, b"/r", true).unwrap();
        for i in 0..10_000 {
            o.check(0, format!("/r/{i:08}").as_bytes(), false).unwrap();
        }
        assert!(o.stack.len() <= 2);
    }
}

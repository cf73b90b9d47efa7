//! The canonical entry order (docs/format.md "Entry order") as a total
//! order on paths: first the index of the configured source a path lies
//! in, then the path's bytes with `/` ranked below every other byte (which
//! is the order of the component lists: `a/x` before `a.c`).

use std::cmp::Ordering;

/// Index of the source `path` lies in (`usize::MAX` when in none).
pub fn source_index(sources: &[String], path: &[u8]) -> usize {
    sources
        .iter()
        .position(|s| {
            let s = s.as_bytes();
            path == s || s == b"/" || (path.starts_with(s) && path.get(s.len()) == Some(&b'/'))
        })
        .unwrap_or(usize::MAX)
}

/// Compare two archive paths in canonical order.
pub fn cmp(sources: &[String], a: &[u8], b: &[u8]) -> Ordering {
    source_index(sources, a)
        .cmp(&source_index(sources, b))
        .then_with(|| {
            let key = |c: &u8| if *c == b'/' { 0u8 } else { *c };
            a.iter().map(key).cmp(b.iter().map(key))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_order_like_the_walk() {
        let s = vec!["/z".to_string(), "/a".to_string()];
        let walk: Vec<&[u8]> = vec![
            b"/z", b"/z/B", b"/z/a", b"/z/a/x", b"/z/a.c", b"/a", b"/a/b",
        ];
        for w in walk.windows(2) {
            assert_eq!(cmp(&s, w[0], w[1]), Ordering::Less, "{:?}", w);
            assert_eq!(cmp(&s, w[1], w[0]), Ordering::Greater);
        }
        assert_eq!(cmp(&s, b"/z/a", b"/z/a"), Ordering::Equal);
        assert_eq!(source_index(&s, b"/zz"), usize::MAX);
    }
}

//! Exclude patterns: shell-style globs (`*`, `?`) matched against an entry's
//! file name, or against its whole absolute path when the pattern holds `/`.

#[derive(Clone, Debug, Default)]
pub struct Excludes {
    patterns: Vec<String>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Excludes {
        Excludes {
            patterns: patterns.to_vec(),
        }
    }

    pub fn matches(&self, path: &[u8]) -> bool {
        self.matching(path).is_some()
    }

    /// The first pattern that matches `path`, if any.
    pub fn matching(&self, path: &[u8]) -> Option<&str> {
        let name = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
        self.patterns
            .iter()
            .find(|p| {
                let subject = if p.contains('/') { path } else { name };
                glob(p.as_bytes(), subject)
            })
            .map(String::as_str)
    }
}

/// Iterative glob matching with single-star backtracking: linear in
/// practice, never exponential.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let e = Excludes::new(&[
            "*.pyc".into(),
            "__pycache__".into(),
            "/opt/app/tmp/*".into(),
        ]);
        assert!(e.matches(b"/opt/app/a.pyc"));
        assert!(e.matches(b"/opt/app/__pycache__"));
        assert!(e.matches(b"/opt/app/tmp/x"));
        assert!(!e.matches(b"/opt/app/a.py"));
        assert!(!e.matches(b"/opt/app/pyc"));
        assert_eq!(e.matching(b"/opt/app/tmp/x"), Some("/opt/app/tmp/*"));
        assert_eq!(e.matching(b"/opt/app/b.pyc"), Some("*.pyc"));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
    }
}

//! The Prometheus text exposition format, version 0.0.4: the writer.
//!
//! A metric family is `# HELP name text`, `# TYPE name kind`, then its
//! samples `name{label="value",…} number`, all together. No timestamps.
//!
//! Invariants: a family's header is written only with its first sample,
//! so a family without samples leaves no trace; every family appears
//! once (callers write each name once, all its samples at once); help
//! text escapes `\` and newline, label values `\`, `"` and newline; label
//! values are cut to [`MAX_LABEL_VALUE`] bytes (at a character boundary).

use std::fmt::Write;

/// Longest label value written, in bytes.
pub const MAX_LABEL_VALUE: usize = 128;

/// A sample's value.
#[derive(Clone, Copy, Debug)]
pub enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Num::U(v) => write!(f, "{v}"),
            Num::I(v) => write!(f, "{v}"),
            Num::F(v) if v.is_nan() => f.write_str("NaN"),
            Num::F(v) if v.is_infinite() => f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" }),
            // Rust writes the shortest text that reads back to the same
            // f64, without an exponent: Prometheus's parser takes it.
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

/// The text being built.
#[derive(Default)]
pub struct Expo {
    out: String,
    /// The family whose header is still to be written: name, kind, help.
    pending: Option<(&'static str, &'static str, &'static str)>,
    current: &'static str,
}

impl Expo {
    /// Start a family (`kind`: `gauge`, `counter`, …). Its header is
    /// written with its first sample.
    pub fn family(&mut self, name: &'static str, kind: &'static str, help: &'static str) {
        self.pending = Some((name, kind, help));
        self.current = name;
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: Num) {
        if let Some((name, kind, help)) = self.pending.take() {
            let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }
        self.out.push_str(self.current);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A `# HELP` text: `\` and newline escaped.
pub fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: `\`, `"` and newline escaped, at most
/// [`MAX_LABEL_VALUE`] bytes of the original kept.
pub fn escape_label(s: &str) -> String {
    let mut end = s.len().min(MAX_LABEL_VALUE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 8);
    for c in s[..end].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `name` is a valid metric or label name
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*`; label names take no `:`).
#[cfg(test)]
pub fn valid_name(name: &str, label: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (!label && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_the_format() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        assert_eq!(escape_label("tab\tstays"), "tab\tstays");
        assert_eq!(
            escape_help("50% \\ of\nit \"quoted\""),
            "50% \\\\ of\\nit \"quoted\""
        );
        // Cut at a character boundary, never inside one.
        let long = "é".repeat(100);
        let cut = escape_label(&long);
        assert_eq!(cut.len(), MAX_LABEL_VALUE);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn numbers_read_back() {
        assert_eq!(Num::U(u64::MAX).to_string(), "18446744073709551615");
        assert_eq!(Num::I(-3).to_string(), "-3");
        assert_eq!(Num::F(0.25).to_string(), "0.25");
        assert_eq!(Num::F(f64::NAN).to_string(), "NaN");
        assert_eq!(Num::F(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Num::F(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Num::F(1e21).to_string().parse::<f64>().unwrap(), 1e21);
    }

    #[test]
    fn a_family_without_samples_leaves_nothing() {
        let mut e = Expo::default();
        e.family("x_empty", "gauge", "never sampled");
        e.family("x_one", "gauge", "sampled");
        e.sample(&[("a", "1"), ("b", "q\"")], Num::U(7));
        e.sample(&[], Num::I(1));
        assert_eq!(
            e.finish(),
            "# HELP x_one sampled\n# TYPE x_one gauge\nx_one{a=\"1\",b=\"q\\\"\"} 7\nx_one 1\n"
        );
        assert!(valid_name("rvm_backup_up", false) && valid_name("a:b", false));
        assert!(!valid_name("a:b", true) && !valid_name("1a", false) && !valid_name("", true));
    }
}

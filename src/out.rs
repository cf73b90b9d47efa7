//! Lines for the user on stdout and stderr that can never abort the process.
//!
//! `println!` panics when stdout is closed or full, and the release build
//! aborts on a panic, which once stopped `backup --all` after its first
//! strategy. Front ends print through [`Out`] instead: a write error is
//! remembered and further output dropped, the work goes on, and at the end
//! [`Out::finish`] turns it into the exit status: a closed pipe (the reader
//! went away, as with `| head`) ends quietly with the command's own status;
//! any other error (`> /dev/full`) is reported on stderr and makes it 1.

use std::io::{self, Write};

#[derive(Default)]
pub struct Out {
    failed: Option<io::Error>,
}

impl Out {
    pub fn new() -> Out {
        Out::default()
    }

    /// Print one line on stdout (and push it out at once).
    pub fn line(&mut self, text: &str) {
        if self.failed.is_some() {
            return;
        }
        let mut o = io::stdout().lock();
        if let Err(e) = writeln!(o, "{text}").and_then(|()| o.flush()) {
            self.failed = Some(e);
        }
    }

    /// The exit status for a command that would exit with `code`.
    pub fn finish(self, code: i32) -> i32 {
        match self.failed {
            None => code,
            Some(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
            Some(e) => {
                error_line(&format!("cannot write the output: {e}"));
                code.max(1)
            }
        }
    }
}

/// `rvm-backup: error: …` on stderr; a closed stderr is ignored.
pub fn error_line(text: &str) {
    let _ = writeln!(io::stderr(), "rvm-backup: error: {text}");
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn broken_pipe_is_quiet_and_other_errors_count() {
        let quiet = Out {
            failed: Some(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        assert_eq!(quiet.finish(0), 0);
        let full = Out {
            failed: Some(io::Error::from(io::ErrorKind::StorageFull)),
        };
        assert_eq!(full.finish(0), 1);
        assert_eq!(Out::new().finish(2), 2);
    }
}

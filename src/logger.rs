//! Log lines on stderr: `rvm-backup: warning: …`. Keys are never logged.
//! Under journald (`$JOURNAL_STREAM` set) each line starts with its syslog
//! priority, `<3>` for errors to `<7>` for debug, which journald reads.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            let level = match r.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                let priority = match r.level() {
                    Level::Error => 3,
                    Level::Warn => 4,
                    Level::Info => 6,
                    Level::Debug | Level::Trace => 7,
                };
                // A closed stderr must not abort the work (see `out`).
                let _ = writeln!(std::io::stderr(), "<{priority}>{level}: {}", r.args());
            } else {
                let _ = writeln!(std::io::stderr(), "rvm-backup: {level}: {}", r.args());
            }
        }
    }

    fn flush(&self) {}
}

/// Install the logger (once; later calls only change the level).
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

//! A one-line progress display on a terminal; silent for scripts.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::time::Instant;

/// The current phase of a job ("backup application", "verify <id>") with
/// its bytes done and expected (0: unknown), shared with whoever reports on
/// it (the daemon's `JOB` verb).
#[derive(Clone, Debug, Default)]
pub struct Counter(Rc<RefCell<(String, u64, u64)>>);

impl Counter {
    /// Bytes done and expected in the current phase.
    pub fn get(&self) -> (u64, u64) {
        let c = self.0.borrow();
        (c.1, c.2)
    }

    pub fn phase(&self) -> String {
        self.0.borrow().0.clone()
    }
}

pub struct Progress {
    observer: Option<Counter>,
    enabled: bool,
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_draw: Instant,
}

impl Progress {
    /// Draws only when stderr is a terminal and `quiet` is off.
    pub fn new(quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            observer: None,
            enabled: !quiet && std::io::stderr().is_terminal(),
            label: String::new(),
            total: None,
            done: 0,
            started: now,
            last_draw: now,
        }
    }

    pub fn silent() -> Progress {
        Progress {
            enabled: false,
            ..Progress::new(true)
        }
    }

    /// No terminal output; progress goes to `counter`.
    pub fn observed(counter: Counter) -> Progress {
        Progress {
            observer: Some(counter),
            ..Progress::silent()
        }
    }

    pub fn start(&mut self, label: &str, total: Option<u64>) {
        if let Some(o) = &self.observer {
            *o.0.borrow_mut() = (label.to_string(), 0, total.unwrap_or(0));
        }
        self.label = label.to_string();
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
    }

    pub fn add(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        if let Some(o) = &self.observer {
            o.0.borrow_mut().1 = self.done;
        }
        if self.enabled && self.last_draw.elapsed().as_millis() >= 200 {
            self.last_draw = Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let mib = self.done as f64 / 1048576.0;
        let rate = mib / self.started.elapsed().as_secs_f64().max(0.001);
        let pct = self
            .total
            .filter(|t| *t > 0)
            .map(|t| format!(" {:3.0}%", 100.0 * self.done as f64 / t as f64));
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[K{}: {mib:.1} MiB{} ({rate:.1} MiB/s)",
            self.label,
            pct.unwrap_or_default()
        );
    }

    pub fn finish(&mut self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

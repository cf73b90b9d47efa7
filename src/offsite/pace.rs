//! `bandwidth_limit`: pacing of the bytes sent, averaged over the run.
//!
//! Invariant: after `n` bytes in total the sender has waited until at
//! least `n / rate` seconds of sending time have passed; time spent not
//! sending (waiting for answers, hashing) is not saved up for a burst
//! later beyond one [`SLACK`].

use std::time::{Duration, Instant};

/// Credit that idle time may build up.
pub const SLACK: Duration = Duration::from_millis(250);

pub struct Pacer {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Pacer {
    /// `rate`: bytes per second; `None`: no limit.
    pub fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate: rate.filter(|&r| r > 0),
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Account for `n` bytes about to be sent and wait as long as the rate
    /// asks.
    pub async fn take(&mut self, n: usize) {
        let Some(rate) = self.rate else { return };
        let now = Instant::now();
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate as f64);
        if now > due + SLACK {
            // Idle: move the start so that at most SLACK is saved up.
            self.start += now - due - SLACK;
        }
        self.sent = self.sent.saturating_add(n as u64);
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            smol::Timer::after(due - now).await;
        }
    }
}

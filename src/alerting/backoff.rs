//! When a failed delivery is tried again: exponential backoff from
//! [`FIRST`] doubling to [`CAP`], each delay jittered (drawn from its upper
//! half) so a fleet of boards that lost the same receiver does not come
//! back in step.
//!
//! Invariants: every delay lies in `FIRST/2 ..= CAP`; delays never shrink
//! as attempts grow (before jitter); no overflow for any attempt count.

use std::time::Duration;

/// The delay after the first failure (before jitter).
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest delay.
pub const CAP: Duration = Duration::from_secs(600);

/// The delay (milliseconds) after the `attempts`-th failure (1 = the
/// first), `random` choosing the point in the upper half.
pub fn delay_ms(attempts: u32, random: u64) -> u64 {
    let cap = CAP.as_millis() as u64;
    let base = (FIRST.as_millis() as u64)
        .checked_shl(attempts.saturating_sub(1).min(40))
        .unwrap_or(cap)
        .min(cap);
    let half = base / 2;
    half + random % (base - half + 1)
}

/// A small non-cryptographic generator for jitter.
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    pub fn draw(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schedule_doubles_to_the_cap() {
        let top: Vec<u64> = (1..=12).map(|a| delay_ms(a, u64::MAX)).collect();
        let lows: Vec<u64> = (1..=12).map(|a| delay_ms(a, 0)).collect();
        assert_eq!(lows[0], 500);
        assert_eq!(lows[1], 1000);
        assert_eq!(lows[3], 4000);
        assert_eq!(*lows.last().unwrap(), 300_000);
        assert!(top.iter().all(|&d| d <= 600_000));
        assert_eq!(delay_ms(11, 600_000 - 300_000), 600_000);
        assert_eq!(delay_ms(10, 0), 256_000);
        assert_eq!(delay_ms(u32::MAX, 0), 300_000);
    }

    proptest! {
        #[test]
        fn delays_stay_in_bounds(a in any::<u32>(), r in any::<u64>()) {
            let d = delay_ms(a, r);
            prop_assert!((500..=600_000).contains(&d));
            prop_assert!(delay_ms(a.saturating_add(1), 0) >= delay_ms(a, 0));
        }
    }
}

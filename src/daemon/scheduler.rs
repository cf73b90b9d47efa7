//! The hand-written scheduler: when each strategy is due.
//!
//! Pure logic, driven by the caller's clock readings, so tests can run
//! hours of schedule in microseconds. Two clocks, each for what it is good
//! at: *monotonic* milliseconds for intervals (immune to the wall clock
//! jumping from 1970 to today at NTP sync), *wall* seconds for daily
//! windows and for what happened before a restart.
//!
//! Rules:
//! - interval strategies run every `interval` (+ jitter, so a fleet does not
//!   fire in the same second); a daily `at = "HH:MM"` (UTC) replaces the
//!   interval with one run a day at that time;
//! - after downtime a missed run happens once, soon after start — never once
//!   per missed interval; a last success "in the future" (clock wrong) counts
//!   as recent, so a clock jump neither storms nor skips;
//! - after a failure the next try comes after an exponential backoff, capped
//!   at the interval, and a success resets it;
//! - a strategy whose run is in flight is not due again until it finishes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::state::Remembered;
use crate::strategy::Strategy;

/// Milliseconds of a duration, saturating (config bounds keep them small;
/// the scheduler must not overflow whatever it is given).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How one strategy is scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub interval: Duration,
    /// Daily at (hour, minute) UTC, instead of the interval.
    pub at: Option<(u32, u32)>,
}

struct Entry {
    plan: Plan,
    /// Monotonic ms when due next; `None` while a run is in flight.
    next_due: Option<u64>,
    failures: u32,
}

pub struct Scheduler {
    entries: BTreeMap<Strategy, Entry>,
    jitter_ms: u64,
    rng: u64,
    last_tick: Option<(u64, i64)>,
    /// The recovery drill's schedule, started at the first
    /// [`Scheduler::drill_due`] (a reload starts it again from
    /// `state.json`).
    drill: Option<DrillSchedule>,
    /// The export's schedule (same rules as the drill's), started at the
    /// first [`Scheduler::export_due`].
    export: Option<DrillSchedule>,
    /// A scheduled export found no stick and said so once; quiet until
    /// a stick was there again.
    pub export_skip_noted: bool,
}

impl Scheduler {
    /// `jitter` is the largest random delay added to every due time;
    /// `seed` feeds the jitter's generator.
    pub fn new(
        plans: BTreeMap<Strategy, Plan>,
        memory: &BTreeMap<Strategy, Remembered>,
        jitter: Duration,
        seed: u64,
        mono_ms: u64,
        wall: i64,
    ) -> Scheduler {
        let mut s = Scheduler {
            entries: BTreeMap::new(),
            jitter_ms: millis(jitter),
            rng: seed | 1,
            last_tick: None,
            drill: None,
            export: None,
            export_skip_noted: false,
        };
        for (strategy, plan) in plans {
            let remembered = memory.get(&strategy).cloned().unwrap_or_default();
            let first = s.first_due(&plan, &remembered, mono_ms, wall);
            s.entries.insert(
                strategy,
                Entry {
                    plan,
                    next_due: Some(first),
                    failures: remembered.failures,
                },
            );
        }
        s
    }

    fn jitter(&mut self) -> u64 {
        // xorshift64: jitter needs spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if self.jitter_ms == 0 {
            0
        } else {
            self.rng % self.jitter_ms
        }
    }

    /// When a strategy is first due after start.
    fn first_due(&mut self, plan: &Plan, r: &Remembered, mono_ms: u64, wall: i64) -> u64 {
        let period = match plan.at {
            Some(_) => 86_400_000,
            None => millis(plan.interval),
        };
        let remaining = match r.last_success {
            None => 0,
            // A success "in the future" means the clock was wrong: count it
            // as just now rather than waiting years or firing at once.
            Some(t) => {
                let since = (wall - t).max(0) as u64 * 1000;
                period.saturating_sub(since)
            }
        };
        if plan.at.is_some() && remaining > 0 {
            return u64::MAX; // not missed: the window will fire it
        }
        mono_ms
            .saturating_add(remaining)
            .saturating_add(self.jitter())
    }

    /// Strategies due now; they stay out of the schedule until `finished`.
    pub fn due(&mut self, mono_ms: u64, wall: i64) -> Vec<Strategy> {
        let crossed = self.windows_crossed(mono_ms, wall);
        self.last_tick = Some((mono_ms, wall));
        let mut due = Vec::new();
        for (strategy, e) in self.entries.iter_mut() {
            let window_hit = e
                .plan
                .at
                .is_some_and(|at| crossed.is_some_and(|(from, to)| window_between(at, from, to)));
            if e.next_due.is_some_and(|t| t <= mono_ms) || (window_hit && e.next_due.is_some()) {
                e.next_due = None;
                due.push(*strategy);
            }
        }
        due
    }

    /// The wall-clock span since the last tick, if the wall clock moved
    /// like the monotonic one (no jump); windows fire only inside it.
    fn windows_crossed(&self, mono_ms: u64, wall: i64) -> Option<(i64, i64)> {
        let (last_mono, last_wall) = self.last_tick?;
        let mono_s = (mono_ms.saturating_sub(last_mono) / 1000) as i64;
        let wall_s = wall - last_wall;
        ((wall_s - mono_s).abs() <= 5 && wall_s >= 0).then_some((last_wall, wall))
    }

    /// A run ended: schedule the next one.
    pub fn finished(&mut self, strategy: Strategy, ok: bool, mono_ms: u64) {
        let jitter = self.jitter();
        let Some(e) = self.entries.get_mut(&strategy) else {
            return;
        };
        let interval = millis(e.plan.interval);
        if ok {
            e.failures = 0;
            e.next_due = Some(if e.plan.at.is_some() {
                u64::MAX
            } else {
                mono_ms.saturating_add(interval).saturating_add(jitter)
            });
        } else {
            e.failures += 1;
            let base = (interval / 16).clamp(1000, 300_000);
            let backoff = base
                .saturating_mul(1 << (e.failures - 1).min(20))
                .min(interval.max(base));
            e.next_due = Some(mono_ms.saturating_add(backoff));
        }
    }

    /// A run was cancelled: not a failure; due again after the interval.
    pub fn skipped(&mut self, strategy: Strategy, mono_ms: u64) {
        let jitter = self.jitter();
        if let Some(e) = self.entries.get_mut(&strategy) {
            let interval = millis(e.plan.interval);
            e.next_due = Some(if e.plan.at.is_some() {
                u64::MAX
            } else {
                mono_ms.saturating_add(interval).saturating_add(jitter)
            });
        }
    }

    /// Milliseconds until a strategy is due (`None`: in flight or by window).
    pub fn due_in(&self, strategy: Strategy, mono_ms: u64) -> Option<u64> {
        let t = self.entries.get(&strategy)?.next_due?;
        (t != u64::MAX).then(|| t.saturating_sub(mono_ms))
    }

    pub fn failures(&self, strategy: Strategy) -> u32 {
        self.entries.get(&strategy).map_or(0, |e| e.failures)
    }
}

/// A drill of a board that was never drilled comes this long after the
/// daemon starts (or after `drill_interval`, if that is shorter), so the
/// first backups have had their chance.
pub const FIRST_DRILL_DELAY_MS: u64 = 3_600_000;

/// When the next recovery drill of all strategies is due: every
/// `drill_interval`, on the monotonic clock. After a restart the wall
/// clock and the last drill in `state.json` say how much of the interval
/// is left: an overdue drill runs at once (once, not once per missed
/// interval), a last drill "in the future" (clock wrong) counts as just
/// now. While a drill is in flight the next one is not due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrillSchedule {
    interval_ms: u64,
    /// Monotonic ms when due; `None` while a drill is in flight.
    next_due: Option<u64>,
}

impl DrillSchedule {
    pub fn new(interval: Duration, last_drill: Option<i64>, mono_ms: u64, wall: i64) -> Self {
        Self::with_first_delay(interval, last_drill, mono_ms, wall, FIRST_DRILL_DELAY_MS)
    }

    /// As [`DrillSchedule::new`], with the delay before the first run of
    /// something never run before.
    pub fn with_first_delay(
        interval: Duration,
        last_drill: Option<i64>,
        mono_ms: u64,
        wall: i64,
        first_delay_ms: u64,
    ) -> Self {
        let period = millis(interval).max(1);
        let remaining = match last_drill {
            None => period.min(first_delay_ms),
            Some(t) => {
                let since_s = u64::try_from(wall.saturating_sub(t)).unwrap_or(0);
                period.saturating_sub(since_s.saturating_mul(1000))
            }
        };
        DrillSchedule {
            interval_ms: period,
            next_due: Some(mono_ms.saturating_add(remaining)),
        }
    }

    /// True (once) when a drill is due; then not again until `finished`.
    pub fn due(&mut self, mono_ms: u64) -> bool {
        if self.next_due.is_some_and(|t| t <= mono_ms) {
            self.next_due = None;
            true
        } else {
            false
        }
    }

    /// A drill ended (whatever its outcome): the next one in an interval.
    pub fn finished(&mut self, mono_ms: u64) {
        if self.next_due.is_none() {
            self.next_due = Some(mono_ms.saturating_add(self.interval_ms));
        }
    }

    /// Not run after all (nothing to run on): due again in `ms`.
    pub fn retry_in(&mut self, mono_ms: u64, ms: u64) {
        self.next_due = Some(mono_ms.saturating_add(ms));
    }

    /// Milliseconds until the next drill (`None`: one is in flight).
    pub fn due_in(&self, mono_ms: u64) -> Option<u64> {
        self.next_due.map(|t| t.saturating_sub(mono_ms))
    }
}

impl Scheduler {
    /// Whether the periodic drill is due now. The first call starts the
    /// drill schedule from `last_drill()` (the oldest last drill of the
    /// configured strategies, `None` if one was never drilled).
    pub fn drill_due(
        &mut self,
        interval: Duration,
        last_drill: impl FnOnce() -> Option<i64>,
        mono_ms: u64,
        wall: i64,
    ) -> bool {
        self.drill
            .get_or_insert_with(|| DrillSchedule::new(interval, last_drill(), mono_ms, wall))
            .due(mono_ms)
    }

    /// A drill job ended.
    pub fn drill_finished(&mut self, mono_ms: u64) {
        if let Some(d) = self.drill.as_mut() {
            d.finished(mono_ms);
        }
    }

    /// Milliseconds until the next periodic drill, if it is scheduled.
    pub fn drill_due_in(&self, mono_ms: u64) -> Option<u64> {
        self.drill.as_ref()?.due_in(mono_ms)
    }
}

/// A board that never exported tries this long after the daemon starts
/// (or after `export_interval`, if shorter): its first backups go first.
pub const FIRST_EXPORT_DELAY_MS: u64 = 600_000;
/// A due export that found no stick looks again this much later.
pub const EXPORT_RETRY_MS: u64 = 60_000;

impl Scheduler {
    /// Whether the periodic export is due now (rules of
    /// [`DrillSchedule`]); `last_export()` is asked once, at the start.
    pub fn export_due(
        &mut self,
        interval: Duration,
        last_export: impl FnOnce() -> Option<i64>,
        mono_ms: u64,
        wall: i64,
    ) -> bool {
        self.export
            .get_or_insert_with(|| {
                DrillSchedule::with_first_delay(
                    interval,
                    last_export(),
                    mono_ms,
                    wall,
                    FIRST_EXPORT_DELAY_MS,
                )
            })
            .due(mono_ms)
    }

    /// An export job ended.
    pub fn export_finished(&mut self, mono_ms: u64) {
        if let Some(e) = self.export.as_mut() {
            e.finished(mono_ms);
        }
    }

    /// A due export found no stick: look again in [`EXPORT_RETRY_MS`].
    pub fn export_retry(&mut self, mono_ms: u64) {
        if let Some(e) = self.export.as_mut() {
            e.retry_in(mono_ms, EXPORT_RETRY_MS);
        }
    }

    /// Milliseconds until the next periodic export, if it is scheduled.
    pub fn export_due_in(&self, mono_ms: u64) -> Option<u64> {
        self.export.as_ref()?.due_in(mono_ms)
    }
}

/// True if the daily time `at` (UTC) lies in `(from, to]`.
fn window_between(at: (u32, u32), from: i64, to: i64) -> bool {
    let offset = i64::from(at.0 * 3600 + at.1 * 60);
    let day_start = to.div_euclid(86_400) * 86_400;
    [day_start + offset, day_start - 86_400 + offset]
        .iter()
        .any(|&t| from < t && t <= to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;
    const T0: i64 = 1_795_500_000; // 2026-11-24, some time of day

    fn plans(interval_h: u64, at: Option<(u32, u32)>) -> BTreeMap<Strategy, Plan> {
        [(
            Strategy::Database,
            Plan {
                interval: Duration::from_millis(interval_h * H),
                at,
            },
        )]
        .into()
    }

    fn memory(last_success: Option<i64>) -> BTreeMap<Strategy, Remembered> {
        [(
            Strategy::Database,
            Remembered {
                last_success,
                ..Default::default()
            },
        )]
        .into()
    }

    /// Simulate `hours` hours in 1-minute ticks; successful runs take no
    /// time. Returns the wall times of the runs.
    fn simulate(
        s: &mut Scheduler,
        start_mono: u64,
        start_wall: i64,
        hours: u64,
        fail: impl Fn(usize) -> bool,
    ) -> Vec<i64> {
        let mut runs = Vec::new();
        for minute in 0..=hours * 60 {
            let mono = start_mono + minute * 60_000;
            let wall = start_wall + (minute * 60) as i64;
            for st in s.due(mono, wall) {
                let ok = !fail(runs.len());
                runs.push(wall);
                s.finished(st, ok, mono);
            }
        }
        runs
    }

    #[test]
    fn runs_on_time_within_jitter() {
        let mut s = Scheduler::new(
            plans(6, None),
            &memory(Some(T0)),
            Duration::from_secs(600),
            7,
            0,
            T0,
        );
        let runs = simulate(&mut s, 0, T0, 50, |_| false);
        assert_eq!(runs.len(), 8, "{runs:?}");
        for w in runs.windows(2) {
            let gap = w[1] - w[0];
            assert!((6 * 3600..=6 * 3600 + 660).contains(&gap), "gap {gap}");
        }
    }

    #[test]
    fn missed_runs_after_downtime_happen_once() {
        // Down for three days with a 6 h interval: one catch-up run, soon.
        let mut s = Scheduler::new(
            plans(6, None),
            &memory(Some(T0 - 3 * 86_400)),
            Duration::from_secs(60),
            1,
            0,
            T0,
        );
        let runs = simulate(&mut s, 0, T0, 5, |_| false);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert!(runs[0] - T0 <= 120);
    }

    #[test]
    fn first_start_runs_soon_and_recent_success_waits() {
        let mut s = Scheduler::new(plans(6, None), &memory(None), Duration::ZERO, 1, 0, T0);
        assert_eq!(s.due(0, T0), vec![Strategy::Database]);
        let s = Scheduler::new(
            plans(6, None),
            &memory(Some(T0 - 3600)),
            Duration::ZERO,
            1,
            0,
            T0,
        );
        assert_eq!(s.due_in(Strategy::Database, 0), Some(5 * H));
    }

    #[test]
    fn failures_back_off_and_recover() {
        let mut s = Scheduler::new(plans(6, None), &memory(Some(T0)), Duration::ZERO, 1, 0, T0);
        // First run due at +6h fails, then 4 more fail, then success.
        let runs = simulate(&mut s, 0, T0, 24, |n| n < 5);
        let gaps: Vec<i64> = runs.windows(2).map(|w| w[1] - w[0]).collect();
        // Backoff: interval/16 capped at 5 min as the base, doubling, capped
        // at the interval; the sixth run succeeds.
        assert_eq!(&gaps[..5], &[300, 600, 1200, 2400, 4800], "{gaps:?}");
        assert!(
            gaps[5..].iter().all(|g| *g == 21_600),
            "back to the interval after success: {gaps:?}"
        );
        assert_eq!(s.failures(Strategy::Database), 0);
    }

    #[test]
    fn clock_jump_of_years_neither_storms_nor_skips() {
        // Booted with the clock in 1970; last success recorded in 2026.
        let mut s = Scheduler::new(plans(6, None), &memory(Some(T0)), Duration::ZERO, 1, 0, 100);
        assert_eq!(
            s.due_in(Strategy::Database, 0),
            Some(6 * H),
            "a future success counts as recent"
        );
        // After 1 h NTP jumps the wall clock to 2026; the interval still holds.
        let mut runs = simulate(&mut s, 0, 100, 1, |_| false);
        runs.extend(simulate(&mut s, H, T0 + 7200, 12, |_| false));
        assert_eq!(runs.len(), 2, "{runs:?}");
    }

    #[test]
    fn daily_windows_fire_once_a_day_and_not_on_jumps() {
        let start = T0 - T0.rem_euclid(86_400); // 00:00 UTC
        let mut s = Scheduler::new(
            plans(6, Some((2, 30))),
            &memory(Some(start - 3600)),
            Duration::ZERO,
            1,
            0,
            start,
        );
        let runs = simulate(&mut s, 0, start, 72, |_| false);
        assert_eq!(runs.len(), 3, "{runs:?}");
        for r in &runs {
            assert_eq!(r.rem_euclid(86_400), 2 * 3600 + 30 * 60);
        }
        // A wall-clock jump across 02:30 does not fire the window.
        let mut s = Scheduler::new(
            plans(6, Some((2, 30))),
            &memory(Some(start)),
            Duration::ZERO,
            1,
            0,
            start,
        );
        s.due(0, start + 3600);
        assert!(s.due(60_000, start + 4 * 3600).is_empty());
    }

    const DAY: u64 = 24 * H;

    /// Simulate `days` days in 1-minute ticks; drills take `takes` ms.
    /// Returns the monotonic times at which drills started.
    fn simulate_drills(d: &mut DrillSchedule, days: u64, takes: u64) -> Vec<u64> {
        let mut starts = Vec::new();
        let mut running_until = None;
        for minute in 0..=days * 24 * 60 {
            let mono = minute * 60_000;
            if let Some(end) = running_until {
                if mono >= end {
                    d.finished(mono);
                    running_until = None;
                }
            }
            if d.due(mono) {
                assert!(running_until.is_none(), "a drill was due while one ran");
                starts.push(mono);
                running_until = Some(mono + takes);
            }
        }
        starts
    }

    #[test]
    fn drills_come_every_interval_and_never_overlap() {
        let week = Duration::from_secs(7 * 86_400);
        // Drilled two days ago: next in five days, then weekly.
        let mut d = DrillSchedule::new(week, Some(T0 - 2 * 86_400), 0, T0);
        let starts = simulate_drills(&mut d, 30, 10 * 60_000);
        assert_eq!(starts[0], 5 * DAY);
        for w in starts.windows(2) {
            assert_eq!(w[1] - w[0], 7 * DAY + 10 * 60_000, "{starts:?}");
        }
        assert_eq!(starts.len(), 4);
    }

    #[test]
    fn first_overdue_and_future_drills() {
        let week = Duration::from_secs(7 * 86_400);
        // Never drilled: after the first-drill delay, not at once.
        let mut d = DrillSchedule::new(week, None, 1000, T0);
        assert!(!d.due(1000));
        assert_eq!(d.due_in(1000), Some(H));
        assert!(d.due(1000 + H));
        assert!(!d.due(1000 + H + 1), "in flight: not due again");
        assert_eq!(d.due_in(1000 + H), None);
        // A short interval is not stretched by that delay.
        let mut d = DrillSchedule::new(Duration::from_secs(60), None, 0, T0);
        assert!(d.due(60_000));
        // Overdue by months after downtime: once, at once.
        let mut d = DrillSchedule::new(week, Some(T0 - 90 * 86_400), 5, T0);
        assert!(d.due(5));
        assert!(!d.due(6));
        d.finished(10);
        assert_eq!(d.due_in(10), Some(7 * DAY));
        // A last drill years in the future (clock was wrong): a full
        // interval, neither at once nor never.
        let mut d = DrillSchedule::new(week, Some(T0 + 3 * 365 * 86_400), 0, T0);
        assert_eq!(d.due_in(0), Some(7 * DAY));
        assert!(!d.due(7 * DAY - 1) && d.due(7 * DAY));
        // Extreme values do not overflow.
        let mut d = DrillSchedule::new(Duration::MAX, Some(i64::MIN), u64::MAX, i64::MAX);
        assert!(!d.due(u64::MAX - 1));
    }

    #[test]
    fn the_scheduler_starts_the_drill_schedule_once_from_state() {
        let mut s = Scheduler::new(
            plans(6, None),
            &memory(Some(T0)),
            Duration::from_secs(1),
            1,
            0,
            T0,
        );
        let week = Duration::from_secs(7 * 86_400);
        let mut reads = 0;
        assert!(!s.drill_due(
            week,
            || {
                reads += 1;
                Some(T0 - 7 * 86_400 + 60)
            },
            0,
            T0
        ));
        assert_eq!(s.drill_due_in(0), Some(60_000));
        assert!(s.drill_due(
            week,
            || {
                reads += 1;
                None
            },
            60_000,
            T0 + 60
        ));
        assert_eq!(reads, 1, "state is read once");
        s.drill_finished(70_000);
        assert_eq!(s.drill_due_in(70_000), Some(7 * DAY));
    }
}

//! Retention: which archives of one strategy to keep and which to delete.
//!
//! This module owns the retention policy (`Policy`), the decision for each
//! archive (`Decision`, with the names of every rule that keeps it) and the
//! UTC calendar buckets those rules use (hour, day, ISO week, month). The
//! policies are modelled on restic's `forget`: keep-last, keep-hourly,
//! keep-daily, keep-weekly, keep-monthly and keep-within.
//!
//! Invariants:
//! - The newest archive and the newest verified archive are never deleted,
//!   whatever the policy says (even an all-zero policy).
//! - Archives created after `now` (a wrong board clock) are never deleted.
//! - A chain is one unit: an archive that a kept archive names as its
//!   parent, directly or through other parents, is kept ("parent of a
//!   kept archive"), so no kept incremental loses what it refers to.
//! - Decisions come back newest first, by (created, created_nanos, id)
//!   descending, whatever the input order.
//! - Pure: no I/O, no clock; `now` is passed in. Nothing here panics on any
//!   input (times near `i64::MIN`/`i64::MAX` included).

use std::cmp::Reverse;

use crate::timefmt::{civil_from_days, days_from_civil};

/// One archive as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Unix seconds, UTC.
    pub created: i64,
    pub created_nanos: u32,
    pub verified: bool,
    /// The archive this one is incremental on (`None`: a full archive).
    pub parent: Option<String>,
}

/// How many archives to keep. Every field 0 means "keep only what the safety
/// rules keep" (the newest and the newest verified archive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest archives.
    pub keep_last: u32,
    /// For the N most recent hours that have archives, keep the newest of each.
    pub keep_hourly: u32,
    /// Same per UTC day.
    pub keep_daily: u32,
    /// Same per ISO week (weeks start Monday, UTC).
    pub keep_weekly: u32,
    /// Same per calendar month (UTC).
    pub keep_monthly: u32,
    /// Keep every archive created within the last N days before `now`; 0 = off.
    pub within_days: u32,
}

/// The verdict for one archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    /// Kept: every rule that keeps it. Deleted: `["no rule keeps it"]`.
    pub reasons: Vec<String>,
}

const SECS_PER_DAY: i64 = 86_400;
const NO_RULE: &str = "no rule keeps it";

/// Decide for all archives of ONE strategy. `now` is unix seconds.
pub fn decide(candidates: &[Candidate], policy: &Policy, now: i64) -> Vec<Decision> {
    let sorted = newest_first(candidates);
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];
    keep_safety(&sorted, now, &mut reasons);
    keep_last(policy.keep_last, &mut reasons);
    for (period, count) in [
        (Period::Hour, policy.keep_hourly),
        (Period::Day, policy.keep_daily),
        (Period::Week, policy.keep_weekly),
        (Period::Month, policy.keep_monthly),
    ] {
        keep_per_period(&sorted, period, count, &mut reasons);
    }
    keep_within(&sorted, policy.within_days, now, &mut reasons);
    keep_parents(&sorted, &mut reasons);
    sorted
        .iter()
        .zip(reasons)
        .map(|(c, r)| to_decision(c, r))
        .collect()
}

/// Keep every parent of a kept archive, transitively. Passes until
/// nothing changes (at most one per archive, whatever the ids say, so a
/// parent that claims to be newer, or a cycle, cannot loop).
fn keep_parents(sorted: &[&Candidate], reasons: &mut [Vec<String>]) {
    const WHY: &str = "parent of a kept archive";
    for _ in 0..sorted.len() {
        let mut changed = false;
        for i in 0..sorted.len() {
            if reasons[i].is_empty() {
                continue;
            }
            let Some(parent) = &sorted[i].parent else {
                continue;
            };
            if let Some(j) = sorted.iter().position(|c| &c.id == parent) {
                if !reasons[j].iter().any(|r| r == WHY) {
                    reasons[j].push(WHY.to_string());
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
}

/// (kept, deleted).
pub fn summary(decisions: &[Decision]) -> (usize, usize) {
    let kept = decisions.iter().filter(|d| d.keep).count();
    (kept, decisions.len() - kept)
}

fn newest_first(candidates: &[Candidate]) -> Vec<&Candidate> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by_key(|c| Reverse((c.created, c.created_nanos, c.id.as_str())));
    sorted
}

fn to_decision(c: &Candidate, reasons: Vec<String>) -> Decision {
    let keep = !reasons.is_empty();
    let reasons = if keep {
        reasons
    } else {
        vec![NO_RULE.to_string()]
    };
    Decision {
        id: c.id.clone(),
        keep,
        reasons,
    }
}

/// Rules no policy can switch off.
fn keep_safety(sorted: &[&Candidate], now: i64, reasons: &mut [Vec<String>]) {
    if let Some(first) = reasons.first_mut() {
        first.push("newest archive".to_string());
    }
    if let Some(i) = sorted.iter().position(|c| c.verified) {
        reasons[i].push("newest verified archive".to_string());
    }
    for (c, r) in sorted.iter().zip(reasons.iter_mut()) {
        if c.created > now {
            r.push("created after now (clock?)".to_string());
        }
    }
}

fn keep_last(count: u32, reasons: &mut [Vec<String>]) {
    for r in reasons.iter_mut().take(count as usize) {
        r.push(format!("last {count}"));
    }
}

/// Walk newest first; keep the first archive of each new bucket until
/// `count` buckets are counted. Sorted input means buckets come in runs, so
/// comparing with the previous bucket is enough.
fn keep_per_period(sorted: &[&Candidate], period: Period, count: u32, reasons: &mut [Vec<String>]) {
    let mut counted = 0u32;
    let mut previous: Option<String> = None;
    for (c, r) in sorted.iter().zip(reasons.iter_mut()) {
        if counted >= count {
            break;
        }
        let label = period.label(c.created);
        if previous.as_deref() != Some(label.as_str()) {
            r.push(format!("{} {label}", period.name()));
            counted += 1;
            previous = Some(label);
        }
    }
}

fn keep_within(sorted: &[&Candidate], days: u32, now: i64, reasons: &mut [Vec<String>]) {
    if days == 0 {
        return;
    }
    let oldest_kept = now.saturating_sub(i64::from(days) * SECS_PER_DAY);
    for (c, r) in sorted.iter().zip(reasons.iter_mut()) {
        if c.created >= oldest_kept && c.created <= now {
            r.push(format!("within {days} days"));
        }
    }
}

/// A calendar bucket size, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
        }
    }

    /// "YYYY-MM-DDTHH", "YYYY-MM-DD", "YYYY-Www" (ISO) or "YYYY-MM".
    fn label(self, t: i64) -> String {
        let days = t.div_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        match self {
            Period::Hour => {
                let hour = t.rem_euclid(SECS_PER_DAY) / 3600;
                format!("{y:04}-{m:02}-{d:02}T{hour:02}")
            }
            Period::Day => format!("{y:04}-{m:02}-{d:02}"),
            Period::Week => {
                let (iso_year, week) = iso_week(days);
                format!("{iso_year:04}-W{week:02}")
            }
            Period::Month => format!("{y:04}-{m:02}"),
        }
    }
}

/// ISO 8601 (week-numbering year, week 1..=53) of a day. A week belongs to
/// the year that holds its Thursday.
fn iso_week(days: i64) -> (i64, u32) {
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday; 1970-01-01 was a Thursday
    let thursday = days - weekday + 3;
    let (iso_year, _, _) = civil_from_days(thursday);
    let day_in_year = thursday - days_from_civil(iso_year, 1, 1); // 0-based
    (iso_year, (day_in_year / 7 + 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// "YYYY-MM-DDTHH:MM:SS" (UTC) to unix seconds.
    fn ts(s: &str) -> i64 {
        let field = |range: std::ops::Range<usize>| -> i64 {
            s.get(range)
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("bad time {s:?}"))
        };
        assert_eq!(s.len(), 19, "bad time {s:?}");
        let days = days_from_civil(field(0..4), field(5..7) as u32, field(8..10) as u32);
        days * SECS_PER_DAY + field(11..13) * 3600 + field(14..16) * 60 + field(17..19)
    }

    /// Spec "TIME" or "TIME v" (verified); the id is the time string.
    fn candidate(spec: &str) -> Candidate {
        let (time, verified) = match spec.strip_suffix(" v") {
            Some(time) => (time, true),
            None => (spec, false),
        };
        Candidate {
            id: time.to_string(),
            created: ts(time),
            created_nanos: 0,
            verified,
            parent: None,
        }
    }

    struct Case {
        name: &'static str,
        archives: &'static [&'static str],
        policy: Policy,
        now: &'static str,
        keep: &'static [&'static str],
    }

    fn cases() -> Vec<Case> {
        let p = Policy::default;
        vec![
            Case {
                name: "keep_last only",
                archives: &[
                    "2026-11-20T10:00:00",
                    "2026-11-21T10:00:00",
                    "2026-11-22T10:00:00",
                    "2026-11-23T10:00:00",
                    "2026-11-24T10:00:00",
                ],
                policy: Policy {
                    keep_last: 3,
                    ..p()
                },
                now: "2026-11-25T00:00:00",
                keep: &[
                    "2026-11-24T10:00:00",
                    "2026-11-23T10:00:00",
                    "2026-11-22T10:00:00",
                ],
            },
            Case {
                name: "keep_last larger than the list",
                archives: &["2026-11-20T10:00:00", "2026-11-21T10:00:00"],
                policy: Policy {
                    keep_last: 10,
                    ..p()
                },
                now: "2026-11-25T00:00:00",
                keep: &["2026-11-20T10:00:00", "2026-11-21T10:00:00"],
            },
            Case {
                name: "hourly, several archives per hour",
                archives: &[
                    "2026-11-24T12:00:00",
                    "2026-11-24T13:30:00",
                    "2026-11-24T14:10:00",
                    "2026-11-24T14:50:00",
                    "2026-11-24T15:05:00",
                    "2026-11-24T15:40:00",
                    "2026-11-24T15:55:00",
                ],
                policy: Policy {
                    keep_hourly: 3,
                    ..p()
                },
                now: "2026-11-24T16:00:00",
                keep: &[
                    "2026-11-24T15:55:00",
                    "2026-11-24T14:50:00",
                    "2026-11-24T13:30:00",
                ],
            },
            Case {
                name: "hourly skips hours without archives",
                archives: &[
                    "2026-11-24T03:20:00",
                    "2026-11-24T09:10:00",
                    "2026-11-24T09:20:00",
                    "2026-11-24T15:00:00",
                ],
                policy: Policy {
                    keep_hourly: 2,
                    ..p()
                },
                now: "2026-11-24T16:00:00",
                keep: &["2026-11-24T15:00:00", "2026-11-24T09:20:00"],
            },
            Case {
                name: "daily across a month boundary",
                archives: &[
                    "2026-11-29T08:00:00",
                    "2026-11-29T20:00:00",
                    "2026-11-30T00:00:00",
                    "2026-11-30T23:59:59",
                    "2026-12-01T00:00:00",
                    "2026-12-01T12:00:00",
                    "2026-12-02T06:00:00",
                ],
                policy: Policy {
                    keep_daily: 3,
                    ..p()
                },
                now: "2026-12-02T07:00:00",
                keep: &[
                    "2026-12-02T06:00:00",
                    "2026-12-01T12:00:00",
                    "2026-11-30T23:59:59",
                ],
            },
            Case {
                name: "weekly across a year boundary (ISO week 53)",
                archives: &[
                    "2026-12-20T10:00:00", // 2026-W51
                    "2026-12-27T10:00:00", // 2026-W52 (Sunday)
                    "2026-12-28T10:00:00", // 2026-W53 (Monday)
                    "2027-01-01T10:00:00", // 2026-W53
                    "2027-01-03T23:59:59", // 2026-W53 (Sunday)
                    "2027-01-04T00:00:00", // 2027-W01 (Monday)
                ],
                policy: Policy {
                    keep_weekly: 3,
                    ..p()
                },
                now: "2027-01-05T00:00:00",
                keep: &[
                    "2027-01-04T00:00:00",
                    "2027-01-03T23:59:59",
                    "2026-12-27T10:00:00",
                ],
            },
            Case {
                name: "monthly",
                archives: &[
                    "2026-08-15T00:00:00",
                    "2026-09-01T00:00:00",
                    "2026-09-30T23:59:59",
                    "2026-10-01T00:00:00",
                    "2026-10-31T12:00:00",
                    "2026-11-02T00:00:00",
                ],
                policy: Policy {
                    keep_monthly: 3,
                    ..p()
                },
                now: "2026-11-24T00:00:00",
                keep: &[
                    "2026-11-02T00:00:00",
                    "2026-10-31T12:00:00",
                    "2026-09-30T23:59:59",
                ],
            },
            Case {
                name: "within_days including the boundary second",
                archives: &[
                    "2026-11-01T00:00:00",
                    "2026-11-17T11:59:59",
                    "2026-11-17T12:00:00",
                    "2026-11-20T00:00:00",
                    "2026-11-24T12:00:00",
                ],
                policy: Policy {
                    within_days: 7,
                    ..p()
                },
                now: "2026-11-24T12:00:00",
                keep: &[
                    "2026-11-24T12:00:00",
                    "2026-11-20T00:00:00",
                    "2026-11-17T12:00:00",
                ],
            },
            Case {
                name: "combination is the union of rules",
                archives: &[
                    "2026-09-10T00:00:00",
                    "2026-10-10T00:00:00",
                    "2026-10-20T00:00:00",
                    "2026-11-22T09:00:00",
                    "2026-11-23T09:00:00",
                    "2026-11-23T18:00:00",
                    "2026-11-24T09:00:00",
                    "2026-11-24T10:00:00",
                ],
                policy: Policy {
                    keep_last: 2,
                    keep_daily: 2,
                    keep_monthly: 2,
                    within_days: 2,
                    ..p()
                },
                now: "2026-11-24T12:00:00",
                keep: &[
                    "2026-11-24T10:00:00", // last, daily, monthly, within
                    "2026-11-24T09:00:00", // last, within
                    "2026-11-23T18:00:00", // daily, within
                    "2026-11-23T09:00:00", // within
                    "2026-10-20T00:00:00", // monthly
                ],
            },
            Case {
                name: "all-zero policy keeps only the newest",
                archives: &[
                    "2026-11-22T09:00:00",
                    "2026-11-23T09:00:00",
                    "2026-11-24T09:00:00",
                ],
                policy: p(),
                now: "2026-11-24T12:00:00",
                keep: &["2026-11-24T09:00:00"],
            },
            Case {
                name: "newest verified kept even when old",
                archives: &[
                    "2025-01-01T00:00:00 v",
                    "2025-06-01T00:00:00 v",
                    "2026-11-22T09:00:00",
                    "2026-11-23T09:00:00",
                    "2026-11-24T09:00:00",
                ],
                policy: Policy {
                    keep_last: 2,
                    ..p()
                },
                now: "2026-11-24T12:00:00",
                keep: &[
                    "2026-11-24T09:00:00",
                    "2026-11-23T09:00:00",
                    "2025-06-01T00:00:00",
                ],
            },
            Case {
                name: "future-dated archives kept",
                archives: &[
                    "2026-11-20T00:00:00",
                    "2026-11-24T09:00:00",
                    "2030-01-01T00:00:00",
                    "2031-01-01T00:00:00",
                ],
                policy: Policy {
                    within_days: 1,
                    ..p()
                },
                now: "2026-11-24T12:00:00",
                keep: &[
                    "2031-01-01T00:00:00",
                    "2030-01-01T00:00:00",
                    "2026-11-24T09:00:00",
                ],
            },
            Case {
                name: "unsorted input",
                archives: &[
                    "2026-11-23T09:00:00",
                    "2026-11-24T10:00:00",
                    "2026-11-20T09:00:00",
                    "2026-11-24T09:00:00",
                    "2026-11-22T09:00:00",
                ],
                policy: Policy {
                    keep_last: 1,
                    keep_daily: 3,
                    ..p()
                },
                now: "2026-11-24T12:00:00",
                keep: &[
                    "2026-11-24T10:00:00",
                    "2026-11-23T09:00:00",
                    "2026-11-22T09:00:00",
                ],
            },
            Case {
                name: "empty input",
                archives: &[],
                policy: Policy {
                    keep_last: 3,
                    within_days: 3,
                    ..p()
                },
                now: "2026-11-24T12:00:00",
                keep: &[],
            },
            Case {
                name: "negative times (before 1970)",
                archives: &[
                    "1969-12-28T10:00:00", // 1969-W52
                    "1969-12-29T10:00:00", // 1970-W01
                    "1969-12-31T23:59:59", // 1970-W01
                    "1970-01-05T00:00:00", // 1970-W02
                ],
                policy: Policy {
                    keep_weekly: 3,
                    ..p()
                },
                now: "1970-01-06T00:00:00",
                keep: &[
                    "1970-01-05T00:00:00",
                    "1969-12-31T23:59:59",
                    "1969-12-28T10:00:00",
                ],
            },
        ]
    }

    #[test]
    fn policy_table() {
        for case in cases() {
            let input: Vec<Candidate> = case.archives.iter().map(|s| candidate(s)).collect();
            let decisions = decide(&input, &case.policy, ts(case.now));
            assert_eq!(decisions.len(), input.len(), "{}", case.name);
            let kept: BTreeSet<&str> = decisions
                .iter()
                .filter(|d| d.keep)
                .map(|d| d.id.as_str())
                .collect();
            let want: BTreeSet<&str> = case.keep.iter().copied().collect();
            assert_eq!(kept, want, "case {:?}", case.name);
            assert_newest_first(&decisions, case.name);
            assert_reasons_consistent(&decisions, case.name);
            assert_eq!(
                summary(&decisions),
                (want.len(), input.len() - want.len()),
                "{}",
                case.name
            );
        }
    }

    /// Ids here are ISO times, so newest first is descending string order.
    fn assert_newest_first(decisions: &[Decision], name: &str) {
        for pair in decisions.windows(2) {
            assert!(
                pair[0].id > pair[1].id,
                "{name}: not newest first: {pair:?}"
            );
        }
    }

    fn assert_reasons_consistent(decisions: &[Decision], name: &str) {
        for d in decisions {
            if d.keep {
                assert!(!d.reasons.is_empty(), "{name}: kept without reason: {d:?}");
                assert!(!d.reasons.iter().any(|r| r == NO_RULE), "{name}: {d:?}");
            } else {
                assert_eq!(d.reasons, vec![NO_RULE.to_string()], "{name}");
            }
        }
    }

    fn reasons_of<'a>(decisions: &'a [Decision], id: &str) -> &'a [String] {
        decisions
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.reasons.as_slice())
            .unwrap_or_else(|| panic!("no decision for {id}"))
    }

    #[test]
    fn reasons_name_every_rule() {
        let input: Vec<Candidate> = [
            "2026-11-17T09:00:00 v",
            "2026-11-24T15:30:00",
            "2026-11-24T15:10:00",
        ]
        .iter()
        .map(|s| candidate(s))
        .collect();
        let policy = Policy {
            keep_last: 3,
            keep_hourly: 1,
            keep_daily: 1,
            keep_weekly: 2,
            keep_monthly: 1,
            within_days: 7,
        };
        let decisions = decide(&input, &policy, ts("2026-11-24T16:00:00"));
        let newest = [
            "newest archive",
            "last 3",
            "hourly 2026-11-24T15",
            "daily 2026-11-24",
            "weekly 2026-W48",
            "monthly 2026-11",
            "within 7 days",
        ];
        assert_eq!(reasons_of(&decisions, "2026-11-24T15:30:00"), newest);
        assert_eq!(
            reasons_of(&decisions, "2026-11-24T15:10:00"),
            ["last 3", "within 7 days"]
        );
        assert_eq!(
            reasons_of(&decisions, "2026-11-17T09:00:00"),
            ["newest verified archive", "last 3", "weekly 2026-W47"]
        );
    }

    #[test]
    fn future_and_deleted_reasons() {
        let input: Vec<Candidate> = [
            "2031-01-01T00:00:00",
            "2030-01-01T00:00:00",
            "2020-01-01T00:00:00",
        ]
        .iter()
        .map(|s| candidate(s))
        .collect();
        let decisions = decide(&input, &Policy::default(), ts("2026-11-24T12:00:00"));
        assert_eq!(
            reasons_of(&decisions, "2031-01-01T00:00:00"),
            ["newest archive", "created after now (clock?)"]
        );
        assert_eq!(
            reasons_of(&decisions, "2030-01-01T00:00:00"),
            ["created after now (clock?)"]
        );
        assert_eq!(reasons_of(&decisions, "2020-01-01T00:00:00"), [NO_RULE]);
        assert_eq!(summary(&decisions), (2, 1));
    }

    #[test]
    fn order_breaks_ties_by_nanos_then_id() {
        let make = |id: &str, nanos: u32| Candidate {
            id: id.to_string(),
            created: 1_000,
            created_nanos: nanos,
            verified: false,
            parent: None,
        };
        let input = vec![make("a", 5), make("c", 1), make("b", 5), make("d", 9)];
        let decisions = decide(
            &input,
            &Policy {
                keep_last: 2,
                ..Policy::default()
            },
            2_000,
        );
        let order: Vec<&str> = decisions.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(order, ["d", "b", "a", "c"]);
        let kept: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(kept, [true, true, false, false]);
    }

    #[test]
    fn empty_input_and_summary() {
        assert!(decide(&[], &Policy::default(), 0).is_empty());
        assert_eq!(summary(&[]), (0, 0));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let input: Vec<Candidate> = [i64::MIN, -1, 0, i64::MAX]
            .iter()
            .enumerate()
            .map(|(i, &t)| Candidate {
                id: i.to_string(),
                created: t,
                created_nanos: 0,
                verified: true,
                parent: None,
            })
            .collect();
        let policy = Policy {
            keep_last: u32::MAX,
            keep_hourly: u32::MAX,
            keep_daily: u32::MAX,
            keep_weekly: u32::MAX,
            keep_monthly: u32::MAX,
            within_days: u32::MAX,
        };
        for now in [i64::MIN, 0, i64::MAX] {
            let decisions = decide(&input, &policy, now);
            assert_eq!(summary(&decisions), (4, 0));
        }
    }

    /// Expected labels from Python:
    /// `datetime.date(y, m, d).isocalendar()` and `calendar.timegm(...)`.
    #[test]
    fn iso_week_labels_match_python() {
        let table: &[(&str, i64, &str)] = &[
            ("2026-11-24", 1_795_478_400, "2026-W48"),
            ("2027-01-01", 1_798_761_600, "2026-W53"),
            ("2027-01-03", 1_798_934_400, "2026-W53"),
            ("2027-01-04", 1_799_020_800, "2027-W01"),
            ("2026-12-28", 1_798_416_000, "2026-W53"),
            ("2026-12-27", 1_798_329_600, "2026-W52"),
            ("2021-01-03", 1_609_632_000, "2020-W53"),
            ("2020-12-31", 1_609_372_800, "2020-W53"),
            ("2024-12-30", 1_735_516_800, "2025-W01"),
            ("2008-12-29", 1_230_508_800, "2009-W01"),
            ("2010-01-03", 1_262_476_800, "2009-W53"),
            ("2000-02-29", 951_782_400, "2000-W09"),
            ("1970-01-01", 0, "1970-W01"),
            ("1969-12-29", -259_200, "1970-W01"),
            ("1969-12-28", -345_600, "1969-W52"),
            ("1900-01-01", -2_208_988_800, "1900-W01"),
            ("1600-01-01", -11_676_096_000, "1599-W52"),
        ];
        for &(date, unix, week) in table {
            assert_eq!(ts(&format!("{date}T00:00:00")), unix, "{date}");
            assert_eq!(Period::Day.label(unix), date);
            assert_eq!(Period::Week.label(unix), week, "{date}");
            // The last second of the day is in the same week.
            assert_eq!(Period::Week.label(unix + SECS_PER_DAY - 1), week, "{date}");
        }
    }

    #[test]
    fn hour_day_month_labels() {
        // 2026-11-24T15:30:45Z = 1795534245 (Python calendar.timegm).
        assert_eq!(Period::Hour.label(1_795_534_245), "2026-11-24T15");
        assert_eq!(Period::Day.label(1_795_534_245), "2026-11-24");
        assert_eq!(Period::Month.label(1_795_534_245), "2026-11");
        assert_eq!(Period::Hour.label(-1), "1969-12-31T23");
        assert_eq!(Period::Day.label(-1), "1969-12-31");
        assert_eq!(Period::Month.label(-1), "1969-12");
        assert_eq!(Period::Hour.label(0), "1970-01-01T00");
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn a_kept_archive_keeps_its_whole_chain() {
        let day = 86_400;
        let c = |id: &str, t: i64, parent: Option<&str>| Candidate {
            id: id.to_string(),
            created: t,
            created_nanos: 0,
            verified: false,
            parent: parent.map(str::to_string),
        };
        // full f1 <- i1 <- i2 (newest); an old unrelated full f0.
        let input = vec![
            c("f0", 0, None),
            c("f1", day, None),
            c("i1", 2 * day, Some("f1")),
            c("i2", 3 * day, Some("i1")),
        ];
        let d = decide(&input, &Policy::default(), 10 * day);
        let kept: Vec<&str> = d.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        assert_eq!(kept, vec!["i2", "i1", "f1"], "{d:?}");
        // A cycle or a parent claiming to be newer cannot loop.
        let cyc = vec![c("a", day, Some("b")), c("b", 0, Some("a"))];
        let d = decide(&cyc, &Policy::default(), 10 * day);
        assert!(d.iter().all(|d| d.keep));
    }
}

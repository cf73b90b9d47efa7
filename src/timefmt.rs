//! UTC time stamps without a calendar crate: the compact form used in file
//! names (`20261124T150000Z`) and RFC 3339 (`2026-11-24T15:00:00Z`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds and nanoseconds since the Unix epoch, now.
pub fn now_precise() -> (i64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs() as i64, d.subsec_nanos()))
}

/// (year, month, day, hour, minute, second) in UTC.
fn civil(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let secs = t.rem_euclid(86_400) as u32;
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian, after
/// Howard Hinnant's public-domain algorithm: years are shifted to start on
/// March 1 so the leap day falls last, then split into 400-year eras.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // 0000-03-01 is day 0
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153; // 0 = March .. 11 = February
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01; inverse of `civil_from_days`.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn compact(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

pub fn rfc3339(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Parse `2026-11-24T15:00:00Z`, `2026-11-24 15:00:00`, `2026-11-24T15:00Z`,
/// `2026-11-24` or `20261124T150000Z`, all as UTC.
pub fn parse(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid time {s:?}: write it like 2026-11-24T15:00:00Z (UTC)");
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let ok_chars = s.chars().all(|c| c.is_ascii_digit() || "-:TZ ".contains(c));
    if !ok_chars || !matches!(digits.len(), 8 | 12 | 14) {
        return Err(bad());
    }
    let num = |a: usize, b: usize| digits[a..b].parse::<u32>().map_err(|_| bad());
    let (y, mo, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let h = if digits.len() >= 12 { num(8, 10)? } else { 0 };
    let mi = if digits.len() >= 12 { num(10, 12)? } else { 0 };
    let sec = if digits.len() == 14 { num(12, 14)? } else { 0 };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(compact(0), "19700101T000000Z");
        assert_eq!(rfc3339(1_795_532_400), "2026-11-24T15:00:00Z");
        assert_eq!(parse("2026-11-24T15:00:00Z").unwrap(), 1_795_532_400);
        assert_eq!(parse("20261124T150000Z").unwrap(), 1_795_532_400);
        assert_eq!(parse("2026-11-24").unwrap(), 1_795_478_400);
        assert!(parse("yesterday").is_err());
        assert!(parse("2026-13-01").is_err());
    }

    #[test]
    fn roundtrip_many() {
        for t in (0..4_000_000_000i64).step_by(7_777_777) {
            assert_eq!(parse(&rfc3339(t)).unwrap(), t);
        }
    }
}

//! Integrity of what backups rest on: the source database's own check
//! (the newest database archive's `db_check` is not "ok": critical, the
//! live database is damaged), sidecars among the newest archives that
//! cannot be read (warning), and the key file (critical when encryption
//! needs it and it is missing, or when group or others may read it).

use serde_json::json;

use super::{finding, DATABASE_CHECK, KEY_FILE, SIDECARS};
use crate::monitor::facts::{Facts, KeyFile, StrategyFacts};
use crate::monitor::{Finding, Severity};
use crate::strategy::Strategy;

/// Only for the database strategy.
pub fn database_check(s: &StrategyFacts) -> Option<Finding> {
    if s.strategy != Strategy::Database {
        return None;
    }
    let newest = s.newest();
    let check = newest.and_then(|a| a.db_check.as_deref());
    let figures = json!({"archive": newest.map(|a| &a.id), "db_check": check});
    Some(match (newest, check) {
        (Some(a), Some(c)) if c != "ok" => finding(
            DATABASE_CHECK,
            s.strategy.name(),
            Severity::Critical,
            format!(
                "the source database failed its integrity check in backup {} ({}): repair it (or restore the newest good archive) before retention removes the good ones",
                a.id,
                c.chars().take(200).collect::<String>()
            ),
            figures,
        ),
        (Some(_), Some(_)) => finding(DATABASE_CHECK, "database", Severity::Ok, "the source database passed its integrity check".into(), figures),
        _ => finding(DATABASE_CHECK, "database", Severity::Ok, "no checked backup yet".into(), figures),
    })
}

pub fn sidecars(s: &StrategyFacts) -> Finding {
    let name = s.strategy.name();
    match s.unreadable.first() {
        Some(first) => finding(
            SIDECARS,
            name,
            Severity::Warning,
            format!(
                "{} of the newest sidecars cannot be read, e.g. {first}; run `rvm-backup verify --all`",
                s.unreadable.len()
            ),
            json!({"unreadable": s.unreadable.len()}),
        ),
        None => finding(SIDECARS, name, Severity::Ok, "the newest sidecars read".into(), json!({"unreadable": 0})),
    }
}

pub fn key_file(f: &Facts) -> Finding {
    let (sev, reason, mode) = match &f.key_file {
        KeyFile::NotUsed => (Severity::Ok, "encryption is off and there is no key file".to_string(), None),
        KeyFile::Mode(m) if m & 0o077 != 0 => (
            Severity::Critical,
            format!("the key file is readable by group or others (mode {m:04o}): chmod 600 it, and rotate the key if it may have leaked"),
            Some(*m),
        ),
        KeyFile::Mode(m) => (Severity::Ok, format!("the key file has mode {m:04o}"), Some(*m)),
        KeyFile::Missing => (
            Severity::Critical,
            "the key file is missing, but encryption_enabled is on: backups fail and no archive can be read; restore key_file from escrow".to_string(),
            None,
        ),
        KeyFile::Error(e) => (Severity::Unknown, format!("the key file cannot be looked at: {e}"), None),
    };
    finding(
        KEY_FILE,
        "key",
        sev,
        reason,
        json!({"mode": mode.map(|m| format!("{m:04o}"))}),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn damaged_database_unreadable_sidecars_and_key_modes() {
        let mut s = strategy(Strategy::Database, 3600);
        assert_eq!(database_check(&s).unwrap().severity, Severity::Ok);
        assert!(database_check(&strategy(Strategy::Logs, 60)).is_none());
        let mut a = archive(NOW, 1 << 20);
        a.db_check = Some("ok".into());
        s.archives.push(a.clone());
        assert_eq!(database_check(&s).unwrap().severity, Severity::Ok);
        a.db_check =
            Some("*** in database main *** Page 5: btreeInitPage() returns error code 11".into());
        s.archives.push(a);
        let x = database_check(&s).unwrap();
        assert_eq!(x.severity, Severity::Critical);
        assert!(x.reason.contains("Page 5"), "{}", x.reason);

        assert_eq!(sidecars(&s).severity, Severity::Ok);
        s.unreadable
            .push("/b/database/x.meta: authentication failed".into());
        assert_eq!(sidecars(&s).severity, Severity::Warning);

        let mut f = healthy();
        assert_eq!(key_file(&f).severity, Severity::Ok);
        f.key_file = KeyFile::Mode(0o640);
        let x = key_file(&f);
        assert_eq!(x.severity, Severity::Critical);
        assert!(x.reason.contains("0640"), "{}", x.reason);
        f.key_file = KeyFile::Missing;
        assert_eq!(key_file(&f).severity, Severity::Critical);
        f.key_file = KeyFile::NotUsed;
        assert_eq!(key_file(&f).severity, Severity::Ok);
    }
}

use super::*;

fn remembered() -> Remembered {
    Remembered {
        last_success: Some(1_795_000_000),
        last_failure: Some(1_794_990_000),
        failures: 0,
        last_verified: Some("database-20261118T060000Z-0a1b2c".into()),
        last_drill: Some(1_794_900_000),
        last_drill_ok: Some(false),
        last_drill_seconds: Some(2.5),
        last_export: Some(1_794_950_000),
        last_export_ok: Some(true),
        ..Remembered::default()
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        strategies: vec![
            PerStrategy {
                strategy: Strategy::Database,
                remembered: remembered(),
                archives: 3,
                stored_bytes: 3_000_000,
                newest: Some(Newest {
                    created: 1_794_999_990,
                    created_nanos: 5,
                    duration_ms: 1250,
                    content_bytes: 4_096_000,
                    archive_bytes: 1_000_000,
                }),
                last_verified_at: Some(1_794_999_990),
            },
            // Configured, never run: only what is known.
            PerStrategy {
                strategy: Strategy::Logs,
                remembered: Remembered {
                    failures: 2,
                    last_failure: Some(1_795_000_100),
                    ..Remembered::default()
                },
                archives: 0,
                stored_bytes: 0,
                newest: None,
                last_verified_at: None,
            },
        ],
        unreadable: 1,
        space: Some(Space {
            free: 1 << 30,
            total: 8 << 30,
        }),
        pitr: None,
        offsite: None,
    }
}

fn finding(rule: &str, subject: &str, severity: Severity) -> Finding {
    Finding {
        rule: rule.into(),
        subject: subject.into(),
        severity,
        reason: "r".into(),
        figures: serde_json::Map::new(),
    }
}

const GOLDEN: &str = r#"# HELP rvm_backup_up 1: rvm-backup answered.
# TYPE rvm_backup_up gauge
rvm_backup_up 1
# HELP rvm_backup_build_info Always 1; the version of rvm-backup in a label.
# TYPE rvm_backup_build_info gauge
rvm_backup_build_info{version="VERSION"} 1
# HELP rvm_backup_last_success_timestamp_seconds Unix time of the strategy's last successful (verified) backup.
# TYPE rvm_backup_last_success_timestamp_seconds gauge
rvm_backup_last_success_timestamp_seconds{strategy="database"} 1795000000
# HELP rvm_backup_last_failure_timestamp_seconds Unix time of the strategy's last failed backup.
# TYPE rvm_backup_last_failure_timestamp_seconds gauge
rvm_backup_last_failure_timestamp_seconds{strategy="database"} 1794990000
rvm_backup_last_failure_timestamp_seconds{strategy="logs"} 1795000100
# HELP rvm_backup_consecutive_failures Backups of the strategy that failed in a row since its last success.
# TYPE rvm_backup_consecutive_failures gauge
rvm_backup_consecutive_failures{strategy="database"} 0
rvm_backup_consecutive_failures{strategy="logs"} 2
# HELP rvm_backup_last_archive_timestamp_seconds Unix time the newest archive of the strategy was started.
# TYPE rvm_backup_last_archive_timestamp_seconds gauge
rvm_backup_last_archive_timestamp_seconds{strategy="database"} 1794999990
# HELP rvm_backup_last_duration_seconds How long the backup that made the newest archive took.
# TYPE rvm_backup_last_duration_seconds gauge
rvm_backup_last_duration_seconds{strategy="database"} 1.25
# HELP rvm_backup_last_content_bytes Bytes of file content read from the sources for the newest archive.
# TYPE rvm_backup_last_content_bytes gauge
rvm_backup_last_content_bytes{strategy="database"} 4096000
# HELP rvm_backup_last_archive_bytes Bytes of the newest archive in the store (all parts).
# TYPE rvm_backup_last_archive_bytes gauge
rvm_backup_last_archive_bytes{strategy="database"} 1000000
# HELP rvm_backup_archives Archives of the strategy in the store.
# TYPE rvm_backup_archives gauge
rvm_backup_archives{strategy="database"} 3
rvm_backup_archives{strategy="logs"} 0
# HELP rvm_backup_stored_bytes Bytes of all archives of the strategy in the store.
# TYPE rvm_backup_stored_bytes gauge
rvm_backup_stored_bytes{strategy="database"} 3000000
rvm_backup_stored_bytes{strategy="logs"} 0
# HELP rvm_backup_last_verified_archive_timestamp_seconds Unix time the newest archive that passed verification was started.
# TYPE rvm_backup_last_verified_archive_timestamp_seconds gauge
rvm_backup_last_verified_archive_timestamp_seconds{strategy="database"} 1794999990
# HELP rvm_backup_last_drill_timestamp_seconds Unix time of the strategy's last recovery drill.
# TYPE rvm_backup_last_drill_timestamp_seconds gauge
rvm_backup_last_drill_timestamp_seconds{strategy="database"} 1794900000
# HELP rvm_backup_last_drill_success 1 if the last recovery drill of the strategy passed, 0 if it failed.
# TYPE rvm_backup_last_drill_success gauge
rvm_backup_last_drill_success{strategy="database"} 0
# HELP rvm_backup_last_drill_duration_seconds How long the last recovery drill's restore and checks took (recovery time).
# TYPE rvm_backup_last_drill_duration_seconds gauge
rvm_backup_last_drill_duration_seconds{strategy="database"} 2.5
# HELP rvm_backup_last_export_timestamp_seconds Unix time of the last export of a recovery set holding the strategy.
# TYPE rvm_backup_last_export_timestamp_seconds gauge
rvm_backup_last_export_timestamp_seconds{strategy="database"} 1794950000
# HELP rvm_backup_last_export_success 1 if the last export wrote a complete, verified recovery set, 0 if it failed.
# TYPE rvm_backup_last_export_success gauge
rvm_backup_last_export_success{strategy="database"} 1
# HELP rvm_backup_unreadable_sidecars Sidecars in the store that could not be read (damage, wrong key, foreign files).
# TYPE rvm_backup_unreadable_sidecars gauge
rvm_backup_unreadable_sidecars 1
# HELP rvm_backup_filesystem_free_bytes Bytes available to unprivileged users on backup_dir's file system.
# TYPE rvm_backup_filesystem_free_bytes gauge
rvm_backup_filesystem_free_bytes 1073741824
# HELP rvm_backup_filesystem_size_bytes Size in bytes of backup_dir's file system.
# TYPE rvm_backup_filesystem_size_bytes gauge
rvm_backup_filesystem_size_bytes 8589934592
# HELP rvm_backup_rule_state State of a monitoring rule for a subject: 0 ok, 1 warning, 2 critical, 3 unknown.
# TYPE rvm_backup_rule_state gauge
rvm_backup_rule_state{rule="backup_age",subject="database"} 2
rvm_backup_rule_state{rule="failures",subject="logs"} 1
rvm_backup_rule_state{rule="odd \"rule\"\\",subject="two\nlines"} 3
rvm_backup_rule_state{rule="storage",subject="store"} 0
# HELP rvm_backup_alert_outbox_depth Alerts written to the outbox and not yet delivered to every sink.
# TYPE rvm_backup_alert_outbox_depth gauge
rvm_backup_alert_outbox_depth 4
"#;

#[test]
fn golden_sample() {
    let findings = [
        finding("storage", "store", Severity::Ok),
        finding("failures", "logs", Severity::Warning),
        finding("backup_age", "database", Severity::Warning),
        // The same key twice: the worst state wins, one series.
        finding("backup_age", "database", Severity::Critical),
        finding("odd \"rule\"\\", "two\nlines", Severity::Unknown),
    ];
    let text = render(&snapshot(), &findings, Some(4));
    let want = GOLDEN.replace("VERSION", env!("CARGO_PKG_VERSION"));
    for (n, (got, want)) in text.lines().zip(want.lines()).enumerate() {
        assert_eq!(got, want, "line {}", n + 1);
    }
    assert_eq!(text, want);
}

#[test]
fn unknowns_are_left_out() {
    let mut snap = snapshot();
    snap.space = None;
    snap.strategies.truncate(1);
    let text = render(&snap, &[], None);
    for absent in [
        "rvm_backup_filesystem_",
        "rvm_backup_alert_outbox_depth",
        "rvm_backup_rule_state",
        "strategy=\"logs\"",
    ] {
        assert!(!text.contains(absent), "{absent} in:\n{text}");
    }
    // Every family once, names valid, every line a comment or a sample.
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(expo::valid_name(name, false), "{name}");
            assert!(seen.insert(name.to_string()), "{name} twice");
        } else if !line.starts_with("# HELP ") {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(seen.contains(name), "{line}: sample before its TYPE");
        }
    }
}

#[test]
fn rule_series_are_bounded() {
    let many: Vec<Finding> = (0..MAX_RULE_SERIES + 50)
        .map(|i| finding("size", &format!("s{i}"), Severity::Ok))
        .collect();
    let text = render(&snapshot(), &many, None);
    let series = text
        .lines()
        .filter(|l| l.starts_with("rvm_backup_rule_state{"))
        .count();
    assert_eq!(series, MAX_RULE_SERIES);
}

#[test]
fn gathers_from_a_real_store() {
    use crate::config::Config;
    let dir = std::env::temp_dir().join(format!("rvb-metrics-gather-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/a"), "hello").unwrap();
    let text = format!(
        "backup_dir = \"{d}/backups\"\nencryption_enabled = false\n[config]\npaths = [\"{d}/etc\"]\n",
        d = dir.display()
    );
    let cfg = Config::parse(&text, Path::new("test.toml")).unwrap();
    let session = Session::open(cfg).unwrap();
    let mut progress = crate::progress::Progress::silent();
    for _ in 0..2 {
        smol::block_on(session.backup(Strategy::Config, &mut progress)).unwrap();
    }
    std::fs::write(dir.join("backups/config/junk.meta"), "not a sidecar").unwrap();
    let listing = session.list(None);
    let snap = gather(&session);
    assert_eq!(snap.unreadable, 1);
    assert_eq!(snap.strategies.len(), 1);
    let p = &snap.strategies[0];
    assert_eq!(p.archives, 2);
    let newest = &listing.archives.last().unwrap().meta;
    assert_eq!(
        p.stored_bytes,
        listing
            .archives
            .iter()
            .map(|a| a.meta.archive_bytes)
            .sum::<u64>()
    );
    let n = p.newest.as_ref().unwrap();
    assert_eq!(
        (n.created, n.archive_bytes),
        (newest.created, newest.archive_bytes)
    );
    assert_eq!(n.content_bytes, 5);
    assert_eq!(p.last_verified_at, Some(newest.created));
    assert!(p.remembered.last_success.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pitr_gauges_when_the_shipper_runs() {
    let mut snap = snapshot();
    assert!(!render(&snap, &[], None).contains("rvm_backup_pitr_"));
    snap.pitr = Some(crate::pitr::PitrStatus {
        enabled: true,
        segments: 7,
        generations_started: 2,
        last_commit_unix_ms: Some(1_795_000_000_250),
        last_ok_unix_ms: Some(1_795_000_001_500),
        stick_error: Some("full".into()),
        ..crate::pitr::PitrStatus::default()
    });
    let text = render(&snap, &[], None);
    for line in [
        "rvm_backup_pitr_last_ship_timestamp_seconds 1795000001.5",
        "rvm_backup_pitr_last_shipped_commit_timestamp_seconds 1795000000.25",
        "rvm_backup_pitr_segments 7",
        "# TYPE rvm_backup_pitr_generations_started_total counter",
        "rvm_backup_pitr_generations_started_total 2",
        "rvm_backup_pitr_error 0",
        "rvm_backup_pitr_stick_error 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // Unknown: no sample.
    assert!(!text.contains("rvm_backup_pitr_stick_segments "), "{text}");
}

#[test]
fn offsite_figures_when_the_daemon_syncs() {
    let mut snap = snapshot();
    assert!(!render(&snap, &[], None).contains("rvm_backup_offsite_"));
    snap.offsite = Some(crate::offsite::status::OffsiteStatus {
        enabled: true,
        bytes_shipped: 12_345,
        objects_shipped: 4,
        last_success: Some(1_795_000_000),
        consecutive_failures: 3,
        last_error_kind: Some(crate::offsite::status::FailureKind::Credentials),
        pending: Some(crate::offsite::pending::Pending {
            objects: 2,
            bytes: 900,
            oldest: Some(1_794_999_000),
        }),
        ..Default::default()
    });
    let text = render(&snap, &[], None);
    for line in [
        "# TYPE rvm_backup_offsite_shipped_bytes_total counter",
        "rvm_backup_offsite_shipped_bytes_total 12345",
        "rvm_backup_offsite_shipped_objects_total 4",
        "rvm_backup_offsite_pending_bytes 900",
        "rvm_backup_offsite_pending_objects 2",
        "rvm_backup_offsite_oldest_pending_timestamp_seconds 1794999000",
        "rvm_backup_offsite_last_success_timestamp_seconds 1795000000",
        "rvm_backup_offsite_consecutive_failures 3",
        "rvm_backup_offsite_credentials_rejected 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

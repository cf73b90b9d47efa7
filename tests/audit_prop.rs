//! Property tests of the audit log reader: whatever bytes the log, its
//! rotated files and its head file hold, `verify` and `open` give a result
//! or an error, never a panic (debug builds check every overflow).

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;
use rvm_backup::audit::{self, Actor, AuditLog};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rvb-audit-prop-{name}-{}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    d
}

/// A real three-record log, to mutate.
fn valid_log(name: &str) -> (PathBuf, Vec<u8>) {
    let d = dir(name);
    let p = d.join("audit.log");
    let _ = fs::remove_file(&p);
    let _ = fs::remove_file(d.join("audit.log.head"));
    let mut log = AuditLog::open(&p).unwrap();
    for what in ["start", "BACKUP config", "stop"] {
        log.record(&Actor::Daemon, what, "ok").unwrap();
    }
    let bytes = fs::read(&p).unwrap();
    (p, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_log_and_head_bytes_never_panic(
        log in proptest::collection::vec(any::<u8>(), 0..600),
        rotated in proptest::collection::vec(any::<u8>(), 0..300),
        head in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let d = dir("bytes");
        let p = d.join("audit.log");
        fs::write(&p, &log).unwrap();
        fs::write(audit::rotated_path(&p, 1), &rotated).unwrap();
        fs::write(d.join("audit.log.head"), &head).unwrap();
        let _ = audit::verify(&p);
        let _ = AuditLog::open(&p);
        let _ = audit::verify(&p);
    }

    #[test]
    fn any_head_of_a_valid_log_never_panics(
        count in prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(0u64), 0u64..6, any::<u64>()],
        hash in "[0-9a-f]{0,64}",
        junk in "\\PC{0,20}",
    ) {
        let (p, _) = valid_log("head");
        fs::write(p.with_file_name("audit.log.head"), format!("{count} {hash}{junk}")).unwrap();
        let r = audit::verify(&p);
        if !(2..=3).contains(&count) {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn mutated_logs_never_panic_and_edits_are_caught(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let (p, mut bytes) = valid_log("mutate");
        let original = bytes.clone();
        for (at, x) in &edits {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        fs::write(&p, &bytes).unwrap();
        let r = audit::verify(&p);
        if bytes != original {
            prop_assert!(r.is_err(), "an edit went unnoticed");
        }
        let _ = AuditLog::open(&p);
    }
}

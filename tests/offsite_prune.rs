//! `offsite prune` against a real SeaweedFS with two identities (see
//! `common::s3::Seaweed::new_with_prune`): it deletes what local
//! retention dropped, sidecar before parts, keeps the newest `--keep` per
//! strategy, archives a recovery set names, and WAL generations not older
//! than the oldest kept database archive; it refuses the board's own
//! credentials, names the prune credentials when they are rejected, and
//! deletes nothing for a strategy the local backup directory has no
//! archive of (a fresh board); `--dry-run` deletes nothing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::offsite::{ok, run};
use common::s3::Seaweed;
use common::Board;

const PREFIX: &str = "fleet/board-1/";

fn configure(b: &Board, endpoint: &str, bucket: &str) {
    common::offsite::configure(b, endpoint, bucket, PREFIX, common::s3::SECRET, "");
}

fn credentials(b: &Board, id: &str, secret: &str) -> PathBuf {
    let p = b
        .tmp
        .path()
        .join(format!("prune-{id}-{}.cred", secret.len()));
    fs::write(&p, format!("{id}\n{secret}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn fails(b: &Board, args: &[&str]) -> String {
    let o = run(b, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    err
}

fn keys(s3: &Seaweed) -> Vec<String> {
    let mut k: Vec<String> = s3
        .objects(PREFIX)
        .into_iter()
        .map(|o| o.key.strip_prefix(PREFIX).unwrap().to_string())
        .collect();
    k.sort();
    k
}

fn prune(b: &Board, cred: &Path, extra: &[&str]) -> String {
    let mut args = vec!["offsite", "prune", "--credentials", cred.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(b, &args)
}

#[test]
fn prune_deletes_what_retention_dropped_with_its_own_identity() {
    let Some(s3) = Seaweed::new_with_prune("prune") else {
        return;
    };
    let b = Board::with_config("offsite-prune", "keep_last = 1\nretention_days = 0");
    b.populate();
    // A second apart: "newest" in the store is by id, to the second.
    for _ in 0..5 {
        b.ok(&["backup", "--full", "config"]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    b.ok(&["backup", "logs"]);
    b.ok(&["backup", "database"]);
    configure(&b, &s3.endpoint(), &s3.bucket);
    ok(&b, &["offsite", "sync"]);
    let ids = b.ids("config");
    assert_eq!(ids.len(), 5);
    // An old WAL generation (older than any database archive) and a
    // recovery set naming the second config archive.
    let old_gen = "database-wal/database-20000101T000000Z-aaaaaa";
    for seq in 0..2 {
        s3.put(&format!("{PREFIX}{old_gen}/{seq:012}.rvw"), b"old segment");
    }
    s3.put(
        &format!("{PREFIX}sets/set-20991231T000000Z/MANIFEST"),
        format!(
            "rvm-backup recovery set v1\n{{\"archives\":[{{\"id\":\"{}\"}}]}}\nunauthenticated\n",
            ids[1]
        )
        .as_bytes(),
    );
    s3.put(&format!("{PREFIX}notes/readme.txt"), b"left alone");
    b.ok(&["prune"]);
    assert_eq!(b.ids("config"), ids[4..].to_vec());
    let before = keys(&s3);
    let cred = credentials(&b, common::s3::PRUNE_KEY, common::s3::PRUNE_SECRET);

    // The board's own identity is refused; a wrong secret is named.
    let own = credentials(&b, common::s3::ACCESS_KEY, common::s3::SECRET);
    let err = fails(
        &b,
        &["offsite", "prune", "--credentials", own.to_str().unwrap()],
    );
    assert!(err.contains("separate identity"), "{err}");
    let wrong = credentials(&b, common::s3::PRUNE_KEY, "not-the-secret");
    let err = fails(
        &b,
        &["offsite", "prune", "--credentials", wrong.to_str().unwrap()],
    );
    assert!(
        err.contains("rejected the credentials") && err.contains("prune credentials"),
        "{err}"
    );
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(
        &b,
        &["offsite", "prune", "--credentials", cred.to_str().unwrap()],
    );
    assert!(err.contains("chmod 600"), "{err}");
    fs::set_permissions(&cred, fs::Permissions::from_mode(0o600)).unwrap();

    // Dry run: what would go, nothing gone. Kept: the newest two config
    // archives (--keep 2), the one the set names, the local one.
    let dry = prune(&b, &cred, &["--keep", "2", "--dry-run"]);
    assert_eq!(keys(&s3), before, "a dry run deletes nothing");
    let doomed = [&ids[0], &ids[2]];
    for id in &ids {
        let listed = dry.contains(&format!("would delete {PREFIX}config/{id}."));
        assert_eq!(listed, doomed.contains(&id), "{id}: {dry}");
    }
    // Sidecar first, then its parts.
    for id in doomed {
        let lines: Vec<&str> = dry.lines().filter(|l| l.contains(id.as_str())).collect();
        assert!(lines.len() >= 2 && lines[0].contains(".meta"), "{lines:?}");
    }
    let seg1 = dry
        .find(&format!("{old_gen}/000000000001.rvw"))
        .expect("the old generation goes");
    let seg0 = dry.find(&format!("{old_gen}/000000000000.rvw")).unwrap();
    assert!(seg1 < seg0, "the newest segment first: {dry}");
    assert!(
        dry.contains("would delete 2 archive(s) and 1 WAL generation(s)"),
        "{dry}"
    );

    let out = prune(&b, &cred, &["--keep", "2"]);
    assert!(out.contains("deleted 2 archive(s)"), "{out}");
    let after = keys(&s3);
    for id in &ids {
        let there = after.iter().any(|k| k.contains(id.as_str()));
        assert_eq!(there, !doomed.contains(&id), "{id}: {after:?}");
    }
    assert!(after.iter().all(|k| !k.starts_with(old_gen)));
    for left in ["notes/readme.txt", "sets/set-20991231T000000Z/MANIFEST"] {
        assert!(after.iter().any(|k| k == left), "{left}: {after:?}");
    }
    assert!(after.iter().any(|k| k.starts_with("logs/")));
    assert!(after.iter().any(|k| k.starts_with("database/")));
    // The rest still verifies; a second prune finds nothing.
    let out = ok(&b, &["offsite", "verify", "--read"]);
    assert!(out.contains("0 problem(s)"), "{out}");
    let out = prune(&b, &cred, &["--keep", "2"]);
    assert!(out.contains("deleted 0 archive(s)"), "{out}");

    // A fresh board on the same prefix (nothing local): nothing deleted.
    let fresh = Board::new("offsite-prune-fresh");
    fs::create_dir_all(&fresh.backups).unwrap();
    configure(&fresh, &s3.endpoint(), &s3.bucket);
    let cred = credentials(&fresh, common::s3::PRUNE_KEY, common::s3::PRUNE_SECRET);
    let out = prune(&fresh, &cred, &["--keep", "1"]);
    assert!(
        out.contains("deleted 0 archive(s)") && out.contains("note: config: no archive of it"),
        "{out}"
    );
    assert_eq!(keys(&s3), after);
}

#[test]
fn prune_keeps_the_parents_of_kept_incrementals() {
    let Some(s3) = Seaweed::new_with_prune("prune-chain") else {
        return;
    };
    let b = Board::with_config("offsite-prune-chain", "keep_last = 1\nretention_days = 0");
    b.populate();
    let conf = b.root.join("etc/myrvm/plain.env");
    // F1 <- I1 <- I2, then F2 <- I3, a second apart (ids order by second).
    for (i, full) in [true, false, false, true, false].into_iter().enumerate() {
        fs::write(&conf, format!("A={i}\n")).unwrap();
        if full {
            b.ok(&["backup", "--full", "config"]);
        } else {
            b.ok(&["backup", "config"]);
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let ids = b.ids("config");
    assert_eq!(ids.len(), 5);
    let parent = |id: &str| -> Option<String> {
        b.list()
            .into_iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["parent"].as_str().map(str::to_string))
    };
    assert_eq!(parent(&ids[1]).as_deref(), Some(ids[0].as_str()));
    assert_eq!(parent(&ids[2]).as_deref(), Some(ids[1].as_str()));
    assert_eq!(parent(&ids[4]).as_deref(), Some(ids[3].as_str()));
    configure(&b, &s3.endpoint(), &s3.bucket);
    ok(&b, &["offsite", "sync"]);
    b.ok(&["prune"]);
    assert_eq!(
        b.ids("config"),
        ids[3..].to_vec(),
        "local: the newest chain"
    );
    let cred = credentials(&b, common::s3::PRUNE_KEY, common::s3::PRUNE_SECRET);
    // --keep 3 keeps I2, which is not local any more: its parents come
    // from its sidecar in the store, so I1 and F1 stay too.
    let out = prune(&b, &cred, &["--keep", "3", "--dry-run"]);
    assert!(
        out.contains("would delete 0 archive(s)") && !out.contains("note:"),
        "{out}"
    );
    // --keep 2: the newest chain only.
    let out = prune(&b, &cred, &["--keep", "2"]);
    assert!(out.contains("deleted 3 archive(s)"), "{out}");
    let left = keys(&s3);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            left.iter().any(|k| k.contains(id.as_str())),
            i >= 3,
            "{id}: {left:?}"
        );
    }
}

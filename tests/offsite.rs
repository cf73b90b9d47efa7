//! `offsite sync`, `list` and `verify` against a real SeaweedFS (see
//! `common::s3`): what lands in the bucket, that nothing is sent twice,
//! clear one-line errors for wrong credentials, a missing bucket and an
//! unreachable endpoint, and a server killed in the middle of a
//! multipart upload.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::offsite::{ok, one_error_line, run, shippable};
use common::s3::Seaweed;
use common::{bin, Board};

const PREFIX: &str = "fleet/board-1/";

/// Add an `[offsite]` section to the board's config (and a secret file).
fn configure(b: &Board, endpoint: &str, bucket: &str, secret: &str, extra: &str) -> PathBuf {
    common::offsite::configure(b, endpoint, bucket, PREFIX, secret, extra)
}

/// A populated board with a backup of each of `strategies`.
fn backed_up(name: &str, strategies: &[&str]) -> Board {
    let b = Board::new(name);
    b.populate();
    for s in strategies {
        b.ok(&["backup", s]);
    }
    b
}

/// [`backed_up`], with an `[offsite]` section for `s3`'s bucket.
fn backed_up_for(s3: &Seaweed, name: &str, strategies: &[&str]) -> Board {
    let b = backed_up(name, strategies);
    configure(&b, &s3.endpoint(), &s3.bucket, common::s3::SECRET, "");
    b
}

/// Nothing leaves the board in plaintext: with encryption off the sync
/// refuses with one line and ships nothing; once it is on, an archive made
/// while it was off stays home (named, exit 1) while the rest ships.
#[test]
fn nothing_unencrypted_is_ever_shipped() {
    let Some(s3) = Seaweed::new("plain") else {
        return;
    };
    let b = Board::with_config("offsite-plain", "encryption_enabled = false");
    b.populate();
    b.ok(&["backup", "config"]);
    let plain_id = b.ids("config")[0].clone();
    configure(&b, &s3.endpoint(), &s3.bucket, common::s3::SECRET, "");
    let e = one_error_line(&run(&b, &["offsite", "sync"]));
    assert!(
        e.contains("plaintext") && e.contains("encryption_enabled"),
        "{e}"
    );
    assert!(s3.objects(PREFIX).is_empty(), "shipped with encryption off");

    let text = fs::read_to_string(&b.config).unwrap();
    fs::write(
        &b.config,
        text.replace("encryption_enabled = false", "encryption_enabled = true"),
    )
    .unwrap();
    b.ok(&["backup", "config", "--full"]);
    let o = run(&b, &["offsite", "sync"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("not shipped:")
            && l.contains(&plain_id)
            && l.contains("not encrypted")),
        "{out}"
    );
    let keys: Vec<String> = s3.objects(PREFIX).into_iter().map(|o| o.key).collect();
    assert!(
        keys.iter().any(|k| k.ends_with(".meta")),
        "the encrypted archive did not ship: {keys:?}"
    );
    assert!(
        keys.iter().all(|k| !k.contains(&plain_id)),
        "the plaintext archive went offsite: {keys:?}"
    );
}

#[test]
fn sync_ships_every_archive_as_ciphertext_once() {
    let Some(s3) = Seaweed::new("ship") else {
        return;
    };
    let b = backed_up_for(&s3, "offsite-ship", &["--all"]);
    let out = ok(&b, &["offsite", "sync"]);
    assert!(out.contains("shipped"), "{out}");
    let local = shippable(&b.backups);
    assert!(
        local.iter().filter(|(k, _)| k.ends_with(".meta")).count() >= 4,
        "{local:?}"
    );
    let remote: Vec<(String, u64)> = s3
        .objects(PREFIX)
        .into_iter()
        .map(|o| (o.key.strip_prefix(PREFIX).unwrap().to_string(), o.size))
        .collect();
    let mut remote_sorted = remote.clone();
    remote_sorted.sort();
    assert_eq!(
        remote_sorted, local,
        "the bucket holds exactly the local files"
    );
    // Nothing in the bucket holds the board's plaintext.
    let markers: [&[u8]; 3] = [b"deposit id=", b"A=1\nB=2", b"SQLite format 3"];
    for (k, _) in &remote {
        let bytes = s3.get(&format!("{PREFIX}{k}"));
        for m in markers {
            assert!(
                !bytes.windows(m.len()).any(|w| w == m),
                "{k} holds plaintext {:?}",
                String::from_utf8_lossy(m)
            );
        }
    }
    // The listing command shows them.
    let listed = ok(&b, &["offsite", "list", "--json"]);
    let n = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["key"].as_str().unwrap().starts_with(PREFIX))
        .count();
    assert_eq!(n, local.len());
    // A second sync sends nothing.
    let out = ok(&b, &["offsite", "sync"]);
    assert!(out.contains("0 object(s) shipped"), "{out}");
    let out = ok(&b, &["offsite", "verify", "--read"]);
    assert!(
        out.contains(&format!("{} object(s) checked and read back", local.len()))
            && out.contains("0 problem(s)"),
        "{out}"
    );
    // A local file whose bytes differ from the object's (same size):
    // `verify` (sizes) passes, `verify --read` fails and names it.
    let (part, _) = local.iter().find(|(k, _)| k.ends_with(".rvb")).unwrap();
    let path = b.backups.join(part);
    let saved = fs::read(&path).unwrap();
    let mut bad = saved.clone();
    bad[saved.len() / 2] ^= 1;
    fs::write(&path, &bad).unwrap();
    ok(&b, &["offsite", "verify"]);
    let o = run(&b, &["offsite", "verify", "--read"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success()
            && out.contains(&format!(
                "FAILED {PREFIX}{part}: the store's content differs"
            )),
        "{out}"
    );
    fs::write(&path, &saved).unwrap();
    // With the record lost, a sync finds everything there and sends nothing.
    fs::remove_file(b.backups.join("offsite.json")).unwrap();
    let out = ok(&b, &["offsite", "sync"]);
    assert!(
        out.contains(&format!("0 object(s) shipped (0 B), {} found", local.len())),
        "{out}"
    );
}

#[test]
fn an_object_of_another_size_is_never_overwritten() {
    let Some(s3) = Seaweed::new("clash") else {
        return;
    };
    let b = backed_up_for(&s3, "offsite-clash", &["config"]);
    let (first, _) = shippable(&b.backups).into_iter().next().unwrap();
    let key = format!("{PREFIX}{first}");
    s3.put(&key, b"not the archive");
    let o = run(&b, &["offsite", "sync"]);
    let err = one_error_line(&o);
    assert!(
        err.contains("never overwritten") && err.contains(&key),
        "{err}"
    );
    assert_eq!(s3.get(&key), b"not the archive");
    // The same size with other bytes: refused too (its ETag is an MD5).
    let b2 = backed_up_for(&s3, "offsite-clash2", &["config"]);
    let (first, size) = shippable(&b2.backups).into_iter().next().unwrap();
    let key = format!("{PREFIX}{first}");
    s3.put(&key, &vec![0u8; usize::try_from(size).unwrap()]);
    let err = one_error_line(&run(&b2, &["offsite", "sync"]));
    assert!(err.contains("other content") && err.contains(&key), "{err}");
}

#[test]
fn wrong_credentials_missing_bucket_and_no_server_are_one_clear_line() {
    let Some(s3) = Seaweed::new("refuse") else {
        return;
    };
    let b = backed_up("offsite-refuse", &["config"]);
    // No [offsite] section; a wrong subcommand (a usage error, exit 2).
    let err = one_error_line(&run(&b, &["offsite", "sync"]));
    assert!(err.contains("has no [offsite] section"), "{err}");
    let o = run(&b, &["offsite", "upload"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(one_error_line(&o).contains("unknown offsite subcommand"));
    configure(&b, &s3.endpoint(), &s3.bucket, "wrong-secret", "");
    let err = one_error_line(&run(&b, &["offsite", "sync"]));
    assert!(err.contains("rejected the credentials"), "{err}");
    configure(&b, &s3.endpoint(), "no-such-bucket", common::s3::SECRET, "");
    let err = one_error_line(&run(&b, &["offsite", "sync"]));
    assert!(err.contains("\"no-such-bucket\" does not exist"), "{err}");
    // A secret file others can read is refused before anything is sent.
    let secret = configure(&b, &s3.endpoint(), &s3.bucket, common::s3::SECRET, "");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let err = one_error_line(&run(&b, &["offsite", "sync"]));
    assert!(err.contains("chmod 600"), "{err}");
    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    configure(
        &b,
        &format!("http://127.0.0.1:{port}"),
        &s3.bucket,
        common::s3::SECRET,
        "",
    );
    let err = one_error_line(&run(&b, &["offsite", "sync"]));
    assert!(err.contains("cannot reach the offsite store"), "{err}");
    assert!(s3.objects("").is_empty());
}

#[test]
fn a_server_killed_mid_multipart_upload_resumes_without_resending() {
    let Some(mut s3) = Seaweed::new("resume") else {
        return;
    };
    let b = Board::with_config("offsite-resume", "log_level = \"info\"");
    b.populate();
    // 14 MiB that does not compress: an archive of three 5 MiB parts.
    let big = b.root.join("opt/myrvm/model.bin");
    fs::write(&big, common::pseudo_random(14 << 20, 7)).unwrap();
    b.ok(&["backup", "application"]);
    configure(
        &b,
        &s3.endpoint(),
        &s3.bucket,
        common::s3::SECRET,
        "multipart_size = \"5M\"\nbandwidth_limit = \"2M\"",
    );
    let part = shippable(&b.backups)
        .into_iter()
        .find(|(k, s)| k.ends_with(".rvb") && *s > 10 << 20)
        .expect("a large part");
    let key = format!("{PREFIX}{}", part.0);
    let mut sync = bin();
    sync.arg("--config")
        .arg(&b.config)
        .args(["offsite", "sync"]);
    sync.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = sync.spawn().unwrap();
    // Wait until the server holds a part of the upload, then kill it.
    let record = b.backups.join("offsite.json");
    let t0 = Instant::now();
    let upload_id = loop {
        assert!(
            t0.elapsed() < common::run_limit(),
            "the upload never started"
        );
        let r: Option<serde_json::Value> = fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(id) = r.as_ref().and_then(|r| r["upload"]["upload_id"].as_str()) {
            if s3.parts(&key, id).is_some_and(|p| !p.is_empty()) {
                break id.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    s3.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the sync should have failed with the server gone"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && err.contains("error:"), "{err}");
    s3.start();
    // Nothing incomplete is listed as complete.
    assert!(s3.objects(PREFIX).iter().all(|o| o.key != key));
    let done_parts = s3.parts(&key, &upload_id).unwrap_or_default();
    let o = run(&b, &["offsite", "sync"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The server kept the parts it had confirmed, and only the others
    // were sent again.
    assert!(!done_parts.is_empty());
    assert!(
        err.contains(&format!(
            "resuming {key}: {} parts on the server",
            done_parts.len()
        )),
        "{err}"
    );
    assert!(s3
        .objects(PREFIX)
        .iter()
        .any(|o| o.key == key && o.size == part.1));
    let out = ok(&b, &["offsite", "verify", "--read"]);
    assert!(
        out.contains("0 problem(s)") && out.contains("0 not shipped"),
        "{out}"
    );
    assert!(s3.get(&key) == fs::read(b.backups.join(&part.0)).unwrap());
}

#[test]
fn wal_segments_are_shipped_after_the_archives() {
    let Some(s3) = Seaweed::new("wal") else {
        return;
    };
    let b = Board::with_config("offsite-wal", "backup_enabled = false");
    b.enable_pitr();
    let socket = b.add_socket();
    b.populate();
    let mut w = common::writer::Writer::open(&b.db_path());
    w.commit(20);
    b.ok(&["backup", "--all"]);
    let d = common::daemon::Daemon::start(&b, &socket);
    // Commit until the daemon has shipped at least two segments.
    let t0 = Instant::now();
    while shippable(&b.backups)
        .iter()
        .filter(|(k, _)| k.ends_with(".rvw"))
        .count()
        < 2
    {
        assert!(
            t0.elapsed() < common::run_limit(),
            "no WAL segments shipped"
        );
        w.commit(10);
        std::thread::sleep(Duration::from_millis(100));
    }
    d.terminate();
    configure(&b, &s3.endpoint(), &s3.bucket, common::s3::SECRET, "");
    ok(&b, &["offsite", "sync"]);
    let local = shippable(&b.backups);
    let remote: Vec<String> = s3.objects(PREFIX).into_iter().map(|o| o.key).collect();
    for (k, _) in &local {
        assert!(
            remote.contains(&format!("{PREFIX}{k}")),
            "{k} not shipped: {remote:?}"
        );
    }
    assert!(remote
        .iter()
        .any(|k| k.contains("/database-wal/") && k.ends_with(".rvw")));
    let out = ok(&b, &["offsite", "verify", "--read"]);
    assert!(out.contains("0 problem(s)"), "{out}");
}

#[test]
fn https_with_the_fleet_ca_and_refused_without_it() {
    let Some(s3) = Seaweed::new_tls("tls") else {
        return;
    };
    let ca = s3.ca.clone().unwrap();
    let b = backed_up("offsite-tls", &["config"]);
    // The test CA is in no system bundle: the certificate is refused.
    configure(&b, &s3.https_endpoint(), &s3.bucket, common::s3::SECRET, "");
    let err = one_error_line(&run(&b, &["offsite", "sync"]));
    assert!(err.contains("TLS with") && err.contains("ca_file"), "{err}");
    assert!(s3.objects("").is_empty());
    // With the CA as ca_file: shipped over TLS, read back over TLS.
    let extra = format!("ca_file = \"{}\"", ca.display());
    configure(
        &b,
        &s3.https_endpoint(),
        &s3.bucket,
        common::s3::SECRET,
        &extra,
    );
    ok(&b, &["offsite", "sync"]);
    let local = shippable(&b.backups);
    assert_eq!(s3.objects(PREFIX).len(), local.len());
    let out = ok(&b, &["offsite", "verify", "--read"]);
    assert!(
        out.contains(&format!("{} object(s) checked and read back", local.len()))
            && out.contains("0 problem(s)"),
        "{out}"
    );
    // Plain HTTP to the TLS port: a clear error, no hang.
    let plain = s3.https_endpoint().replace("https://", "http://");
    configure(&b, &plain, &s3.bucket, common::s3::SECRET, "");
    let err = one_error_line(&run(&b, &["offsite", "list"]));
    assert!(err.contains("offsite store"), "{err}");
}

#[test]
fn bandwidth_limit_paces_the_upload() {
    let Some(s3) = Seaweed::new("pace") else {
        return;
    };
    let b = Board::new("offsite-pace");
    b.populate();
    fs::write(
        b.root.join("opt/myrvm/blob.bin"),
        common::pseudo_random(3 << 20, 11),
    )
    .unwrap();
    b.ok(&["backup", "application"]);
    configure(
        &b,
        &s3.endpoint(),
        &s3.bucket,
        common::s3::SECRET,
        "bandwidth_limit = \"1M\"",
    );
    let total: u64 = shippable(&b.backups).iter().map(|(_, n)| n).sum();
    let t0 = Instant::now();
    ok(&b, &["offsite", "sync"]);
    let secs = t0.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    eprintln!(
        "shipped {total} bytes in {secs:.2}s: {rate:.0} B/s (limit {})",
        1 << 20
    );
    // Never faster than the limit (a slow machine only makes it slower);
    // 250 ms of credit may go out at once.
    assert!(
        secs + 0.3 >= total as f64 / f64::from(1 << 20),
        "{total} bytes in {secs:.2}s is faster than 1M/s"
    );
}

#[test]
fn a_file_that_cannot_be_read_holds_back_its_archive_only() {
    let Some(s3) = Seaweed::new("held") else {
        return;
    };
    let b = backed_up_for(&s3, "offsite-held", &["config", "logs"]);
    // The config archive's part is replaced by a symbolic link (never
    // followed in the backup directory).
    let local = shippable(&b.backups);
    let (part, _) = local
        .iter()
        .find(|(k, _)| k.starts_with("config/") && k.ends_with(".rvb"))
        .unwrap();
    let path = b.backups.join(part);
    let saved = fs::read(&path).unwrap();
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
    let o = run(&b, &["offsite", "sync"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("not shipped:") && out.contains(part.as_str()),
        "{out}"
    );
    let remote: Vec<String> = s3.objects(PREFIX).into_iter().map(|o| o.key).collect();
    // Its sidecar waits; the logs archive went.
    assert!(
        remote
            .iter()
            .all(|k| !k.starts_with(&format!("{PREFIX}config/"))),
        "{remote:?}"
    );
    assert!(remote
        .iter()
        .any(|k| k.starts_with(&format!("{PREFIX}logs/")) && k.ends_with(".meta")));
    // Put back, the next sync ships the rest.
    fs::remove_file(&path).unwrap();
    fs::write(&path, saved).unwrap();
    ok(&b, &["offsite", "sync"]);
    assert_eq!(s3.objects(PREFIX).len(), local.len());
}

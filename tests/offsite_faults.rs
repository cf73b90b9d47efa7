//! `offsite sync` over a bad link: a TCP proxy (`common::proxy`) between
//! the binary and a real SeaweedFS cuts the link in the middle of a
//! multipart upload, answers requests with 500 and 503 itself, throttles,
//! and stalls completely. What must hold: the next sync completes without
//! sending the confirmed parts again and `offsite verify --read` passes;
//! nothing incomplete is ever listed as complete; 500/503 are retried and
//! the sync succeeds; a slow link finishes, a dead one gives one clear
//! error line after `timeout`, never a hang.

mod common;

use std::fs;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::offsite::{ok_both as ok, run, shippable};
use common::proxy::Proxy;
use common::s3::Seaweed;
use common::{bin, Board};

const PREFIX: &str = "fleet/board-1/";

/// Add an `[offsite]` section to the board's config (and a secret file).
fn configure(b: &Board, endpoint: &str, bucket: &str, extra: &str) {
    common::offsite::configure(b, endpoint, bucket, PREFIX, common::s3::SECRET, extra);
}

/// One clear error line (the log's info lines aside), no panic.
fn error_line(o: &Output) -> String {
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(lines.len(), 1, "not one error line: {err}");
    lines[0].to_string()
}

/// A board whose application archive holds `mib` MiB that do not compress.
fn board_with_big_archive(name: &str, mib: usize, seed: u64) -> Board {
    let b = Board::with_config(name, "log_level = \"info\"");
    b.populate();
    fs::write(
        b.root.join("opt/myrvm/model.bin"),
        common::pseudo_random(mib << 20, seed),
    )
    .unwrap();
    b.ok(&["backup", "application"]);
    b
}

fn remote_keys(s3: &Seaweed) -> Vec<String> {
    s3.objects(PREFIX).into_iter().map(|o| o.key).collect()
}

/// Lists the bucket over and over (directly, not through the proxy) until
/// stopped; every listing must show only whole objects (the local size)
/// and a sidecar only with all of its archive's parts. The problems seen.
struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    t: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Watcher {
    fn start(s3: &Seaweed, local: Vec<(String, u64)>) -> Watcher {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut c = s3.client();
        let t = std::thread::spawn(move || {
            let mut problems = Vec::new();
            let mut rounds = 0;
            while !flag.load(Ordering::SeqCst) {
                let Ok((objs, _)) = smol::block_on(c.list_page(PREFIX, None)) else {
                    continue;
                };
                rounds += 1;
                let listed: Vec<(String, u64)> = objs
                    .into_iter()
                    .map(|o| (o.key.strip_prefix(PREFIX).unwrap_or("").to_string(), o.size))
                    .collect();
                for (k, n) in &listed {
                    if let Some((_, want)) = local.iter().find(|(l, _)| l == k) {
                        if want != n {
                            problems.push(format!("{k} listed with {n} of {want} bytes"));
                        }
                    }
                    if let Some(id) = k.strip_suffix(".meta") {
                        for (part, _) in local.iter().filter(|(l, _)| {
                            l.starts_with(&format!("{id}.")) && l.ends_with(".rvb")
                        }) {
                            if !listed.iter().any(|(l, _)| l == part) {
                                problems.push(format!("{k} listed before its part {part}"));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (rounds, problems)
        });
        Watcher { stop, t }
    }

    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (rounds, problems) = self.t.join().unwrap();
        assert!(rounds > 0, "the watcher never listed the bucket");
        assert!(problems.is_empty(), "{problems:?}");
    }
}

#[test]
fn a_link_cut_mid_multipart_upload_resumes_without_resending_confirmed_parts() {
    let Some(s3) = Seaweed::new("cut") else {
        return;
    };
    let proxy = Proxy::start(s3.port());
    let b = board_with_big_archive("offsite-cut", 14, 21);
    configure(
        &b,
        &proxy.endpoint(),
        &s3.bucket,
        "multipart_size = \"5M\"\ntimeout = \"5s\"",
    );
    let local = shippable(&b.backups);
    let (part, size) = local
        .iter()
        .find(|(k, s)| k.ends_with(".rvb") && *s > 10 << 20)
        .cloned()
        .expect("a part of three multipart pieces");
    let key = format!("{PREFIX}{part}");
    // Cut in the middle of the second piece.
    proxy.cut_after(8 << 20);
    let watcher = Watcher::start(&s3, local.clone());
    let err = error_line(&run(&b, &["offsite", "sync"]));
    eprintln!("the sync over the cut link: {err}");
    assert!(proxy.is_cut(), "the sync ended before the cut: {err}");
    assert!(
        err.contains("offsite store") && err.contains("sync again"),
        "{err}"
    );
    // Nothing of that archive is listed: not the part, not its sidecar.
    let sidecar = part.split('.').next().unwrap().to_string() + ".meta";
    let listed = remote_keys(&s3);
    assert!(
        listed.iter().all(|k| k != &key
            && !k.ends_with(&sidecar)
            && !k.starts_with(&format!("{PREFIX}application/"))),
        "{listed:?}"
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(b.backups.join("offsite.json")).unwrap()).unwrap();
    let id = rec["upload"]["upload_id"]
        .as_str()
        .expect("the upload is recorded");
    let on_server = s3.parts(&key, id).expect("the upload is still open");
    assert_eq!(on_server.len(), 1, "{on_server:?}");
    // The link is back: the next sync sends the other pieces and the
    // sidecar only.
    proxy.heal();
    let before = proxy.up_bytes();
    let (_, log) = ok(&b, &["offsite", "sync"]);
    let sent = proxy.up_bytes() - before;
    assert!(
        log.contains(&format!("resuming {key}: 1 parts on the server")),
        "{log}"
    );
    let rest = size - (5 << 20);
    assert!(
        sent >= rest && sent < rest + (1 << 20),
        "sent {sent} bytes again; the pieces not confirmed are {rest}"
    );
    watcher.finish();
    let mut listed: Vec<(String, u64)> = s3
        .objects(PREFIX)
        .into_iter()
        .map(|o| (o.key.strip_prefix(PREFIX).unwrap().to_string(), o.size))
        .collect();
    listed.sort();
    assert_eq!(listed, local);
    let (out, _) = ok(&b, &["offsite", "verify", "--read"]);
    assert!(
        out.contains("0 not shipped") && out.contains("0 problem(s)"),
        "{out}"
    );
    assert!(s3.get(&key) == fs::read(b.backups.join(&part)).unwrap());
}

/// The server completed a multipart upload but its answer never came back
/// (the link dropped, or the power went, before the record was saved): the
/// record still names the upload, which the server no longer knows. The
/// next sync finds the object whole and sends nothing again.
#[test]
fn a_completed_upload_whose_answer_was_lost_is_not_sent_again() {
    let Some(s3) = Seaweed::new("lostanswer") else {
        return;
    };
    let proxy = Proxy::start(s3.port());
    let b = board_with_big_archive("offsite-lostanswer", 14, 23);
    configure(
        &b,
        &proxy.endpoint(),
        &s3.bucket,
        "multipart_size = \"5M\"\ntimeout = \"5s\"",
    );
    ok(&b, &["offsite", "sync"]);
    let (part, size) = shippable(&b.backups)
        .into_iter()
        .find(|(k, s)| k.ends_with(".rvb") && *s > 10 << 20)
        .expect("a part of three multipart pieces");
    // The record as it was between the completion and its answer.
    let rec_path = b.backups.join("offsite.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    let key = format!("{PREFIX}{part}");
    assert!(
        rec["confirmed"]
            .as_object_mut()
            .unwrap()
            .remove(&part)
            .is_some(),
        "{rec}"
    );
    rec["upload"] = serde_json::json!({
        "key": key,
        "upload_id": "completed-and-forgotten",
        "size": size,
        "part_size": 5u64 << 20,
    });
    fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let before = proxy.up_bytes();
    let (out, log) = ok(&b, &["offsite", "sync"]);
    let sent = proxy.up_bytes() - before;
    assert!(
        sent < 1 << 20,
        "sent {sent} bytes of a {size}-byte object the store already held whole\n{out}{log}"
    );
    assert!(out.contains("1 found in the store"), "{out}");
    let rec: serde_json::Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    assert!(rec["upload"].is_null(), "{rec}");
    assert!(s3.get(&key) == fs::read(b.backups.join(&part)).unwrap());
}

/// A slow link downward: `verify --read` of an object that takes longer
/// than five idle bounds still finishes (a download gets the time an
/// upload of its size gets).
#[test]
fn a_slow_download_finishes_within_its_own_time_allowance() {
    let Some(s3) = Seaweed::new("slowdown") else {
        return;
    };
    let proxy = Proxy::start(s3.port());
    let b = board_with_big_archive("offsite-slowdown", 3, 24);
    configure(&b, &proxy.endpoint(), &s3.bucket, "timeout = \"1s\"");
    ok(&b, &["offsite", "sync"]);
    let big: u64 = shippable(&b.backups)
        .iter()
        .filter(|(k, _)| k.ends_with(".rvb"))
        .map(|(_, s)| *s)
        .max()
        .unwrap();
    // Well over the 5 s an exchange had before (five idle bounds).
    let rate = big / 8;
    proxy.throttle_down(rate);
    let started = Instant::now();
    let (out, _) = ok(&b, &["offsite", "verify", "--read"]);
    proxy.throttle_down(0);
    assert!(
        out.contains("0 problem(s)"),
        "{out} (after {:?})",
        started.elapsed()
    );
}

#[test]
fn a_link_cut_during_a_single_put_is_resent_whole_and_never_half_listed() {
    let Some(s3) = Seaweed::new("cutput") else {
        return;
    };
    let proxy = Proxy::start(s3.port());
    let b = board_with_big_archive("offsite-cutput", 3, 22);
    configure(&b, &proxy.endpoint(), &s3.bucket, "timeout = \"5s\"");
    proxy.cut_after(1 << 20);
    error_line(&run(&b, &["offsite", "sync"]));
    assert!(proxy.is_cut());
    assert!(
        remote_keys(&s3)
            .iter()
            .all(|k| !k.starts_with(&format!("{PREFIX}application/"))),
        "a cut PUT left an object"
    );
    proxy.heal();
    ok(&b, &["offsite", "sync"]);
    let (out, _) = ok(&b, &["offsite", "verify", "--read"]);
    assert!(
        out.contains("0 not shipped") && out.contains("0 problem(s)"),
        "{out}"
    );
}

#[test]
fn errors_500_and_503_are_retried_and_the_sync_succeeds() {
    let Some(s3) = Seaweed::new("busy") else {
        return;
    };
    let proxy = Proxy::start(s3.port());
    let b = board_with_big_archive("offsite-busy", 12, 23);
    configure(&b, &proxy.endpoint(), &s3.bucket, "multipart_size = \"5M\"");
    // The second piece of the multipart upload: SlowDown twice.
    proxy.fail_next("partNumber=2", 2, "503 Slow Down", "SlowDown");
    let (_, log) = ok(&b, &["offsite", "sync"]);
    assert_eq!(proxy.failed(), 2);
    assert!(log.contains("offsite store busy (503 SlowDown)"), "{log}");
    // A single PUT: InternalError twice.
    b.ok(&["backup", "config"]);
    proxy.fail_next("PUT ", 2, "500 Internal Server Error", "InternalError");
    let (_, log) = ok(&b, &["offsite", "sync"]);
    assert_eq!(proxy.failed(), 4);
    assert!(
        log.contains("offsite store busy (500 InternalError)"),
        "{log}"
    );
    // The listing itself: 503 without a body code.
    proxy.fail_next("list-type=2", 1, "503 Service Unavailable", "");
    ok(&b, &["offsite", "list"]);
    assert_eq!(proxy.failed(), 5);
    let (out, _) = ok(&b, &["offsite", "verify", "--read"]);
    assert!(
        out.contains("0 not shipped") && out.contains("0 problem(s)"),
        "{out}"
    );
}

#[test]
fn a_throttled_link_finishes_and_a_stalled_one_fails_clearly() {
    let Some(s3) = Seaweed::new("stall") else {
        return;
    };
    let proxy = Proxy::start(s3.port());
    let b = board_with_big_archive("offsite-stall", 4, 24);
    // Slow but moving: neither the idle timeout (3s) fires nor the total
    // bound of an exchange (five of it, 15s, plus time for the body at
    // the slowest rate worth waiting for), although the upload takes 16s.
    configure(&b, &proxy.endpoint(), &s3.bucket, "timeout = \"3s\"");
    proxy.throttle(256 << 10);
    ok(&b, &["offsite", "sync"]);
    let (out, _) = ok(&b, &["offsite", "verify", "--read"]);
    assert!(out.contains("0 problem(s)"), "{out}");
    // A new archive; the link stalls in the middle of its upload.
    fs::write(
        b.root.join("opt/myrvm/model.bin"),
        common::pseudo_random(3 << 20, 25),
    )
    .unwrap();
    b.ok(&["backup", "application"]);
    let before = proxy.up_bytes();
    let mut c = bin();
    c.arg("--config")
        .arg(&b.config)
        .args(["offsite", "sync"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let t0 = Instant::now();
    while proxy.up_bytes() < before + (512 << 10) {
        assert!(
            t0.elapsed() < common::run_limit(),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.stall(true);
    let o = common::wait_output_within(child, "offsite sync over a stalled link");
    let err = error_line(&o);
    assert!(
        err.contains("cannot reach the offsite store")
            && err.contains("no progress sending for 3s"),
        "{err}"
    );
    // Nothing of the new archive is listed as complete.
    let new_meta: Vec<String> = shippable(&b.backups)
        .into_iter()
        .map(|(k, _)| format!("{PREFIX}{k}"))
        .filter(|k| k.ends_with(".meta"))
        .collect();
    let listed = remote_keys(&s3);
    assert!(
        new_meta.iter().filter(|k| !listed.contains(k)).count() == 1,
        "{listed:?}"
    );
    // A stall before any answer: the listing fails the same way.
    let o = run(&b, &["offsite", "list"]);
    assert!(error_line(&o).contains("for 3s"));
    proxy.stall(false);
    proxy.throttle(0);
    ok(&b, &["offsite", "sync"]);
    let (out, _) = ok(&b, &["offsite", "verify", "--read"]);
    assert!(
        out.contains("0 not shipped") && out.contains("0 problem(s)"),
        "{out}"
    );
}

/// Peak resident set (`VmHWM`) of `child`, sampled until it exits; its
/// output.
fn peak_rss_kib(mut child: std::process::Child, what: &str) -> (u64, Output) {
    let status = format!("/proc/{}/status", child.id());
    let out = child.stdout.take();
    let err = child.stderr.take();
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(out.map(|o| Box::new(o) as Box<dyn std::io::Read + Send>));
    let err = drain(err.map(|e| Box::new(e) as Box<dyn std::io::Read + Send>));
    let t0 = Instant::now();
    let mut peak = 0u64;
    let code = loop {
        if let Ok(s) = fs::read_to_string(&status) {
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < common::run_limit(), "{what} hangs");
        std::thread::sleep(Duration::from_millis(5));
    };
    let o = Output {
        status: code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (peak, o)
}

/// Sync and `verify --read` of a 64 MiB archive stream it: their peak RSS
/// stays far below the archive (the bound is issue 10's 16 MiB for a
/// 1 GB archive; the optimised build CI runs natively; a debug build gets
/// twice; under the emulator the process measured is qemu, so there the
/// figures are only printed).
#[test]
fn sync_and_verify_of_a_large_archive_run_in_fixed_memory() {
    let Some(s3) = Seaweed::new("rss") else {
        return;
    };
    let b = board_with_big_archive("offsite-rss", 64, 26);
    configure(&b, &s3.endpoint(), &s3.bucket, "");
    let limit_kib: u64 = if cfg!(debug_assertions) {
        32 << 10
    } else {
        16 << 10
    };
    let emulated = std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some();
    for args in [
        &["offsite", "sync"][..],
        &["offsite", "verify", "--read"][..],
    ] {
        let child = bin()
            .arg("--config")
            .arg(&b.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (kib, o) = peak_rss_kib(child, &format!("{args:?}"));
        eprintln!("{args:?}: peak RSS {kib} KiB (limit {limit_kib} KiB)");
        assert!(kib > 0, "no RSS sample of {args:?}");
        if !emulated {
            assert!(kib < limit_kib, "{args:?} peaked at {kib} KiB");
        }
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("offsite"), "{out}");
    }
    let total: u64 = shippable(&b.backups).iter().map(|(_, n)| n).sum();
    assert!(
        total > 64 << 20,
        "the archive is smaller than the data: {total}"
    );
}

//! Shared setup for the offsite integration tests (`tests/offsite*.rs`):
//! the `[offsite]` section and its 0600 secret file, running the binary
//! without `--quiet` (the summary lines are what is checked), the one
//! clear error line, and the files a sync ships.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::{bin, output_within, Board};

/// Write the `[offsite]` section (replacing any earlier one and all that
/// follows it) with `extra` lines after the keys, and the secret file
/// (mode 0600) it names; the secret file's path.
pub fn configure(
    b: &Board,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    secret: &str,
    extra: &str,
) -> PathBuf {
    let secret_file = b.tmp.path().join("s3.secret");
    fs::write(&secret_file, format!("{secret}\n")).unwrap();
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = fs::read_to_string(&b.config).unwrap();
    if let Some(i) = text.find("\n[offsite]") {
        text.truncate(i);
    }
    text.push_str(&format!(
        "\n[offsite]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\naccess_key_id = \"{}\"\nsecret_key_file = \"{}\"\n{extra}\n",
        super::s3::ACCESS_KEY,
        secret_file.display()
    ));
    fs::write(&b.config, text).unwrap();
    secret_file
}

/// Run with `--config` and without `--quiet`.
pub fn run(b: &Board, args: &[&str]) -> Output {
    let mut c = bin();
    c.arg("--config").arg(&b.config).args(args);
    output_within(c, &format!("rvm-backup {args:?}"))
}

/// Run and expect success; stdout and stderr.
pub fn ok_both(b: &Board, args: &[&str]) -> (String, String) {
    let o = run(b, args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?}: {out}{err}");
    (out, err)
}

/// Run and expect success; stdout.
pub fn ok(b: &Board, args: &[&str]) -> String {
    ok_both(b, args).0
}

/// A failure with one clear error line (nothing else on stderr) and no
/// panic; the line.
pub fn one_error_line(o: &Output) -> String {
    assert!(!o.status.success(), "{}", super::text(o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    assert!(lines[0].contains("error:"), "{err}");
    lines[0].to_string()
}

/// Every file sync ships (archive parts, sidecars, WAL segments) with its
/// size, relative to the backup directory, sorted.
pub fn shippable(backups: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![backups.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(backups)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if rel.ends_with(".rvb") || rel.ends_with(".meta") || rel.ends_with(".rvw") {
                out.push((rel, e.metadata().unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

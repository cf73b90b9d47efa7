//! The board integration files in `board/`, checked without a board:
//! - every systemd unit passes `systemd-analyze verify` (the binary's path
//!   pointed at the built binary, a stub for the platform's unit), and
//!   deliberately broken copies fail the same check, so it can fail;
//! - the units say what the boot integration relies on: a bounded oneshot
//!   restore ordered before the platform and the daemon, with no
//!   udev-settle; an export that cannot loop; the daemon `Type=notify` with a
//!   watchdog and write access to the stick;
//! - `install.sh` installs exactly the units there are;
//! - the udev rule: `udevadm verify` where this systemd has it (254 and
//!   later), and always a parse of every line, the mount command's options
//!   against `systemd-mount --help`, and an evaluation of the rule on sample
//!   devices (which get mounted, how, and which start the export).
//!
//! `systemd-analyze` and `systemd-mount` come with the `systemd` package: a
//! test that needs one fails under CI (`CI` set) when it is missing, and is
//! skipped with a message elsewhere.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TempDir;

/// Where the units point at the binary; the copies point at the built one.
const BIN_IN_UNITS: &str = "/usr/local/bin/rvm-backup";
/// The platform's unit as the recovery unit names it (install.sh replaces it).
const PLATFORM_UNIT: &str = "myrvm.service";
const MOUNT_POINT: &str = "/media/rvm-recovery";

fn board_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("board")
}

/// The unit files in `board/`, by name, sorted.
fn unit_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(board_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            [
                ".service", ".timer", ".mount", ".socket", ".path", ".target",
            ]
            .iter()
            .any(|s| n.ends_with(s))
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 4,
        "board/ should hold the units, found {names:?}"
    );
    names
}

fn read_board(name: &str) -> String {
    fs::read_to_string(board_dir().join(name)).unwrap_or_else(|e| panic!("board/{name}: {e}"))
}

/// A tool from the systemd package: its path, or `None` (skipped) outside
/// CI when it is missing.
fn systemd_tool(tool: &str, test: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return Some(p);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {tool}; CI installs it (package systemd)"
    );
    eprintln!("SKIPPED {test}: {tool} is not installed (package systemd)");
    None
}

// ---------------------------------------------------------------------------
// systemd-analyze verify

/// Copies of the units in a scratch directory, the binary's path replaced
/// by a link to the built binary, `edit(name, text)` applied, and a stub of
/// the platform's unit. Returns the files to verify.
fn stage_units(tmp: &Path, edit: &dyn Fn(&str, String) -> String) -> Vec<PathBuf> {
    let bin_dir = tmp.join("bin");
    let unit_dir = tmp.join("units");
    fs::create_dir_all(&bin_dir).unwrap();
    fs::create_dir_all(&unit_dir).unwrap();
    let link = bin_dir.join("rvm-backup");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rvm-backup"), &link).unwrap();
    let link = link.to_str().unwrap().to_string();
    assert!(
        !link.contains(char::is_whitespace),
        "scratch path {link} holds a space, which ExecStart would split"
    );
    let mut files = Vec::new();
    for name in unit_names() {
        let text = read_board(&name).replace(BIN_IN_UNITS, &link);
        let path = unit_dir.join(&name);
        fs::write(&path, edit(&name, text)).unwrap();
        files.push(path);
    }
    let stub = unit_dir.join(PLATFORM_UNIT);
    fs::write(
        &stub,
        "[Unit]\nDescription=stand-in for the platform's unit\n\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    files.push(stub);
    files
}

/// `systemd-analyze verify` on `files`: Err with its output when it exits
/// non-zero or says anything about one of them. systemd-analyze exits 0 on
/// an unknown key or a value it cannot parse ("…, ignoring"), so every line
/// naming one of our files counts. Lines about the host's own units are
/// shown but not held against ours.
fn verify(analyze: &Path, tmp: &Path, files: &[PathBuf]) -> Result<(), String> {
    let out = Command::new(analyze)
        .args([
            "verify",
            "--man=no",
            "--generators=no",
            "--recursive-errors=no",
        ])
        .args(files)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let tmp = tmp.to_string_lossy();
    let mut problems = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.contains(&*tmp) || ours.iter().any(|n| line.contains(n.as_str())) {
            problems.push(line.to_string());
        } else {
            eprintln!("systemd-analyze (about a host unit, not ours): {line}");
        }
    }
    if out.status.success() && problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} {}", out.status, problems.join("\n")))
    }
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_tool(
        "systemd-analyze",
        "every_unit_passes_systemd_analyze_verify",
    ) else {
        return;
    };
    let tmp = TempDir::new("units-ok");
    let files = stage_units(tmp.path(), &|_, t| t);
    if let Err(e) = verify(&analyze, tmp.path(), &files) {
        panic!("systemd-analyze verify rejects the board's units:\n{e}");
    }
}

#[test]
fn a_broken_unit_fails_the_verify_check() {
    let Some(analyze) = systemd_tool("systemd-analyze", "a_broken_unit_fails_the_verify_check")
    else {
        return;
    };
    // (what is broken, the unit, the text replaced, its replacement)
    let cases = [
        (
            "a time span systemd cannot parse (only a warning)",
            "rvm-backup-recovery.service",
            "TimeoutStartSec=2h",
            "TimeoutStartSec=two hours",
        ),
        (
            "a misspelt key (only a warning)",
            "rvm-backup-export.service",
            "Type=oneshot",
            "Typ=oneshot",
        ),
        (
            "a service type that does not exist",
            "rvm-backup.service",
            "Type=notify",
            "Type=notfy",
        ),
        (
            "an ExecStart program that does not exist",
            "rvm-backup-recovery.service",
            "bin/rvm-backup disaster-restore",
            "bin/rvm-backup-missing disaster-restore",
        ),
    ];
    for (what, unit, from, to) in cases {
        let tmp = TempDir::new("units-broken");
        let files = stage_units(tmp.path(), &|name, text| {
            if name != unit {
                return text;
            }
            assert!(
                text.contains(from),
                "{unit} no longer holds {from:?}: update this test"
            );
            text.replacen(from, to, 1)
        });
        match verify(&analyze, tmp.path(), &files) {
            Ok(()) => panic!("{what} in {unit} passed systemd-analyze verify"),
            Err(e) => eprintln!("{what}: rejected as it should be: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// What the boot integration relies on

/// `(section, key, value)` of every setting in a unit file.
fn entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a setting: {line}"));
        assert!(
            !line.ends_with('\\'),
            "no continuation lines expected: {line}"
        );
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

/// Every value of `key` in `section`, and for list settings every word.
fn values(unit: &str, section: &str, key: &str) -> Vec<String> {
    entries(&read_board(unit))
        .into_iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v)
        .collect()
}

fn words(unit: &str, section: &str, key: &str) -> BTreeSet<String> {
    values(unit, section, key)
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

fn one(unit: &str, section: &str, key: &str) -> String {
    let v = values(unit, section, key);
    assert_eq!(
        v.len(),
        1,
        "{unit}: [{section}] {key}= should be set once: {v:?}"
    );
    v[0].clone()
}

/// A systemd time span in seconds, for the forms the units use.
fn seconds(span: &str) -> u64 {
    let mut total = 0;
    for part in span.split_whitespace() {
        let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let n: u64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("time span {span:?}"));
        total += n * match &part[digits.len()..] {
            "" | "s" | "sec" => 1,
            "min" | "m" => 60,
            "h" => 3600,
            unit => panic!("time span {span:?}: unit {unit:?}"),
        };
    }
    total
}

#[test]
fn the_recovery_unit_is_a_bounded_oneshot_before_the_platform() {
    let u = "rvm-backup-recovery.service";
    assert_eq!(one(u, "Service", "Type"), "oneshot");
    assert_eq!(one(u, "Service", "RemainAfterExit"), "yes");
    assert_eq!(
        one(u, "Service", "ExecStart"),
        format!("{BIN_IN_UNITS} disaster-restore --boot --from {MOUNT_POINT}")
    );
    // Bounded: more than the default recovery_timeout (5 min) of waiting for
    // the stick, and never infinity or 0 (which means no limit).
    let timeout = one(u, "Service", "TimeoutStartSec");
    let secs = seconds(&timeout);
    assert!(
        (600..=4 * 3600).contains(&secs),
        "TimeoutStartSec={timeout} should be bounded and leave room for the restore"
    );
    let before = words(u, "Unit", "Before");
    for needed in [
        PLATFORM_UNIT,
        "rvm-backup.service",
        "rvm-backup-backup.service",
    ] {
        assert!(
            before.contains(needed),
            "{u} must be Before={needed}: {before:?}"
        );
    }
    assert!(words(u, "Unit", "After").contains("local-fs.target"));
    // Enabled, it makes the platform and the daemon require it: a failed
    // restore keeps the platform from starting on a half-restored or empty
    // board, and the daemon from exporting that board onto the stick.
    for needed in [PLATFORM_UNIT, "rvm-backup.service"] {
        assert!(
            words(u, "Install", "RequiredBy").contains(needed),
            "{u} must be RequiredBy={needed}"
        );
    }
    // It must not pull in what it orders against, nor need the stick's mount.
    for key in ["Wants", "Requires", "BindsTo", "RequiresMountsFor"] {
        assert!(
            values(u, "Unit", key).is_empty(),
            "{u} should not have {key}="
        );
    }
    assert_eq!(one(u, "Install", "WantedBy"), "multi-user.target");
    // The daemon starts after it (its own side of the ordering).
    assert!(words("rvm-backup.service", "Unit", "After").contains(u));
}

#[test]
fn no_unit_waits_for_udev_settle_or_names_the_old_units() {
    for name in unit_names() {
        let text = read_board(&name);
        for (_, key, value) in entries(&text) {
            assert!(
                !value.contains("udev-settle"),
                "{name}: {key}={value}: no udev-settle"
            );
            assert!(
                !value.contains("infinity"),
                "{name}: {key}={value}: no unbounded time"
            );
        }
        assert!(
            !text.contains("usb-restore") && !text.contains("RVM-RESTORE"),
            "{name} still names the old restore unit or its marker"
        );
    }
    let rules = read_board("99-rvm-backup-usb.rules");
    assert!(!rules.contains("usb-restore") && !rules.contains("udev-settle"));
}

#[test]
fn the_export_unit_asks_the_daemon_once_and_never_loops() {
    let u = "rvm-backup-export.service";
    assert_eq!(one(u, "Service", "Type"), "oneshot");
    assert_eq!(
        one(u, "Service", "ExecStart"),
        format!("{BIN_IN_UNITS} ctl EXPORT")
    );
    assert!(
        values(u, "Service", "Restart").is_empty(),
        "{u} must not restart"
    );
    assert!(seconds(&one(u, "Service", "TimeoutStartSec")) <= 600);
    assert_eq!(one(u, "Unit", "ConditionPathIsMountPoint"), MOUNT_POINT);
    let after = words(u, "Unit", "After");
    for needed in [
        "media-rvm\\x2drecovery.mount",
        "rvm-backup.service",
        "rvm-backup-recovery.service",
    ] {
        assert!(
            after.contains(needed),
            "{u} must be After={needed}: {after:?}"
        );
    }
    assert!(values(u, "Unit", "StartLimitBurst").len() == 1);
    // Started by the udev rule only: nothing enables it.
    assert!(entries(&read_board(u))
        .iter()
        .all(|(s, _, _)| s != "Install"));
    // The daemon may write to the stick, and make a fresh card's master key.
    let rw = words("rvm-backup.service", "Service", "ReadWritePaths");
    assert!(rw.contains(&format!("-{MOUNT_POINT}")));
    assert!(rw.contains("/etc/rvm-backup"), "{rw:?}");
}

#[test]
fn the_daemon_unit_is_notify_with_a_watchdog() {
    let u = "rvm-backup.service";
    assert_eq!(one(u, "Service", "Type"), "notify");
    assert_eq!(
        one(u, "Service", "ExecStart"),
        format!("{BIN_IN_UNITS} daemon")
    );
    assert!(seconds(&one(u, "Service", "WatchdogSec")) > 0);
    assert_eq!(one(u, "Service", "Restart"), "on-failure");
}

#[test]
fn install_sh_installs_exactly_the_units_there_are() {
    let script = read_board("install.sh");
    let start = script
        .find("\nUNITS=(")
        .expect("install.sh has no UNITS=( list");
    let list = &script[start + 8..];
    let list = &list[..list.find(')').unwrap()];
    let listed: Vec<String> = list
        .split_whitespace()
        .map(|w| w.trim_matches('\'').replace("\\\\", "\\"))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        unit_names(),
        "install.sh's UNITS and the unit files in board/ differ"
    );
    assert!(script.contains("PLATFORM_PLACEHOLDER=myrvm.service"));
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(board_dir().join("install.sh"))
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
}

#[test]
fn install_sh_dry_run_names_the_platform_unit_and_refuses_a_bad_one() {
    let script = board_dir().join("install.sh");
    let exe = env!("CARGO_BIN_EXE_rvm-backup");
    let out = Command::new("bash")
        .arg(&script)
        .args([
            "--dry-run",
            "--binary",
            exe,
            "--platform-unit",
            "vending@main.service",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needed in [
        "/etc/systemd/system/rvm-backup-recovery.service",
        "/etc/systemd/system/rvm-backup-export.service",
        "/etc/udev/rules.d/99-rvm-backup-usb.rules",
        "before vending@main.service starts",
        "systemctl enable rvm-backup-recovery.service",
    ] {
        assert!(
            stdout.contains(needed),
            "dry run does not mention {needed}:\n{stdout}"
        );
    }
    for bad in [
        "a b.service",
        "x;reboot.service",
        "evil/../x.service",
        "myrvm",
    ] {
        let out = Command::new("bash")
            .arg(&script)
            .args(["--dry-run", "--binary", exe, "--platform-unit", bad])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "--platform-unit {bad:?} was accepted"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--platform-unit must be a unit name")
        );
    }
}

// ---------------------------------------------------------------------------
// The udev rule

#[derive(Debug, Clone)]
struct Token {
    key: String,
    attr: Option<String>,
    op: String,
    value: String,
}

/// Keys that only match, only assign, or do both, as udev(7) defines them.
const MATCH_KEYS: &[&str] = &[
    "ACTION",
    "DEVPATH",
    "KERNEL",
    "KERNELS",
    "SUBSYSTEM",
    "SUBSYSTEMS",
    "DRIVER",
    "DRIVERS",
    "ATTRS",
    "TAGS",
    "TEST",
    "PROGRAM",
    "RESULT",
    "CONST",
];
const ASSIGN_KEYS: &[&str] = &[
    "RUN", "GOTO", "LABEL", "NAME", "SYMLINK", "OWNER", "GROUP", "MODE", "OPTIONS", "IMPORT",
    "SECLABEL",
];
const BOTH_KEYS: &[&str] = &["ENV", "TAG", "ATTR", "SYSCTL"];

/// One rule line: comma-separated `KEY[{attr}]OP"value"`.
fn tokenize(line: &str, n: usize) -> Vec<Token> {
    let err = |what: &str| -> ! { panic!("udev rule line {n}: {what}: {line}") };
    let b = line.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b',') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let k0 = i;
        while i < b.len() && (b[i].is_ascii_uppercase() || b[i] == b'_') {
            i += 1;
        }
        let key = line[k0..i].to_string();
        if key.is_empty() {
            err("expected a key");
        }
        let attr = if b.get(i) == Some(&b'{') {
            let close = line[i..].find('}').unwrap_or_else(|| err("unclosed {"));
            let a = line[i + 1..i + close].to_string();
            i += close + 1;
            Some(a)
        } else {
            None
        };
        let op = ["==", "!=", "+=", "-=", ":=", "="]
            .into_iter()
            .find(|o| line[i..].starts_with(o))
            .unwrap_or_else(|| err("expected an operator"));
        i += op.len();
        if b.get(i) != Some(&b'"') {
            err("the value must be in double quotes");
        }
        let close = line[i + 1..]
            .find('"')
            .unwrap_or_else(|| err("unclosed quote"));
        let value = line[i + 1..i + 1 + close].to_string();
        i += close + 2;
        if i < b.len() && b[i] != b',' && b[i] != b' ' {
            err("expected a comma after a value");
        }
        out.push(Token {
            key,
            attr,
            op: op.to_string(),
            value,
        });
    }
    out
}

/// The rule file's lines as tokens, each checked against udev(7)'s grammar.
fn parse_rules(text: &str) -> Vec<Vec<Token>> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {n}: no continuation lines expected"
        );
        let tokens = tokenize(line, n);
        for t in &tokens {
            let matching = t.op == "==" || t.op == "!=";
            let k = t.key.as_str();
            if MATCH_KEYS.contains(&k) {
                assert!(matching, "line {n}: {k} only matches (== or !=)");
            } else if ASSIGN_KEYS.contains(&k) {
                assert!(!matching, "line {n}: {k} only assigns");
            } else {
                assert!(BOTH_KEYS.contains(&k), "line {n}: unknown key {k}");
            }
            let needs_attr = matches!(k, "ENV" | "ATTR" | "ATTRS" | "SYSCTL" | "TEST" | "IMPORT");
            match (&t.attr, needs_attr) {
                (None, true) => panic!("line {n}: {k} needs {{…}}"),
                (Some(a), false) if k != "RUN" => panic!("line {n}: {k} takes no {{{a}}}"),
                (Some(a), _) if k == "RUN" => {
                    assert!(a == "program" || a == "builtin", "line {n}: RUN{{{a}}}")
                }
                _ => {}
            }
            if k == "GOTO" || k == "LABEL" {
                assert_eq!(t.op, "=", "line {n}: {k} takes =");
            }
            if k == "LABEL" {
                assert_eq!(tokens.len(), 1, "line {n}: LABEL stands alone");
            }
            if k == "RUN" {
                assert!(
                    t.value.starts_with('/'),
                    "line {n}: RUN needs an absolute program"
                );
            }
        }
        rules.push(tokens);
    }
    // Every GOTO jumps forward to a LABEL of this file.
    for (i, r) in rules.iter().enumerate() {
        for t in r.iter().filter(|t| t.key == "GOTO") {
            assert!(
                rules[i + 1..]
                    .iter()
                    .any(|r| r.iter().any(|l| l.key == "LABEL" && l.value == t.value)),
                "GOTO=\"{}\" has no LABEL after it",
                t.value
            );
        }
    }
    rules
}

/// udev's pattern: `|`-separated alternatives with `*` and `?`.
fn pattern_matches(pattern: &str, s: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
            (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    pattern
        .split('|')
        .any(|alt| glob(alt.as_bytes(), s.as_bytes()))
}

#[derive(Debug, Default)]
struct Outcome {
    run: Vec<String>,
    wants: Vec<String>,
    tags: Vec<String>,
}

/// Runs the rules on one device's properties, as udev would.
fn evaluate(rules: &[Vec<Token>], dev: &HashMap<&str, &str>) -> Outcome {
    let get = |k: &str| dev.get(k).copied().unwrap_or("");
    let subst = |v: &str| {
        let mut s = v.replace("$devnode", get("DEVNAME"));
        while let Some(start) = s.find("$env{") {
            let end = start + s[start..].find('}').unwrap();
            let name = s[start + 5..end].to_string();
            s.replace_range(start..=end, get(&name));
        }
        assert!(
            !s.contains('$'),
            "substitution the evaluator does not know: {v}"
        );
        s
    };
    let mut out = Outcome::default();
    let mut skip_to: Option<String> = None;
    for rule in rules {
        if let Some(label) = &skip_to {
            if rule.iter().any(|t| t.key == "LABEL" && &t.value == label) {
                skip_to = None;
            }
            continue;
        }
        let matched = rule
            .iter()
            .filter(|t| t.op == "==" || t.op == "!=")
            .all(|t| {
                let actual = match (t.key.as_str(), &t.attr) {
                    ("ACTION", _) => get("ACTION"),
                    ("SUBSYSTEM", _) => get("SUBSYSTEM"),
                    ("ENV", Some(a)) => get(a),
                    (k, _) => panic!("the evaluator does not know the match key {k}: teach it"),
                };
                pattern_matches(&t.value, actual) == (t.op == "==")
            });
        if !matched {
            continue;
        }
        for t in rule.iter().filter(|t| t.op != "==" && t.op != "!=") {
            match (t.key.as_str(), t.attr.as_deref()) {
                ("RUN", _) => out.run.push(subst(&t.value)),
                ("ENV", Some("SYSTEMD_WANTS")) => out.wants.push(t.value.clone()),
                ("TAG", _) => out.tags.push(t.value.clone()),
                ("GOTO", _) => skip_to = Some(t.value.clone()),
                ("LABEL", _) => {}
                (k, a) => panic!("the evaluator does not know the assignment {k}{a:?}: teach it"),
            }
        }
    }
    out
}

fn usb_stick(devtype: &str, fs_type: &str, label: &str) -> HashMap<&'static str, String> {
    HashMap::from([
        ("ACTION", "add".to_string()),
        ("SUBSYSTEM", "block".to_string()),
        ("DEVTYPE", devtype.to_string()),
        ("DEVNAME", "/dev/sdb1".to_string()),
        ("ID_BUS", "usb".to_string()),
        ("ID_FS_TYPE", fs_type.to_string()),
        ("ID_FS_LABEL", label.to_string()),
    ])
}

fn run_rules(dev: &HashMap<&'static str, String>) -> Outcome {
    let rules = parse_rules(&read_board("99-rvm-backup-usb.rules"));
    let dev: HashMap<&str, &str> = dev.iter().map(|(k, v)| (*k, v.as_str())).collect();
    evaluate(&rules, &dev)
}

/// The one systemd-mount command of an outcome, checked for what every
/// mount needs; returns its `-t` type and its `-o` options.
fn mount_command(o: &Outcome) -> (String, BTreeSet<String>) {
    assert_eq!(o.run.len(), 1, "exactly one RUN expected: {o:?}");
    let words: Vec<&str> = o.run[0].split_whitespace().collect();
    assert_eq!(words[0], "/usr/bin/systemd-mount", "{o:?}");
    for needed in ["--no-block", "--automount=no", "--collect"] {
        assert!(
            words.contains(&needed),
            "systemd-mount without {needed}: {o:?}"
        );
    }
    assert_eq!(
        &words[words.len() - 2..],
        ["/dev/sdb1", MOUNT_POINT],
        "{o:?}"
    );
    let after = |flag: &str| {
        let i = words
            .iter()
            .position(|w| *w == flag)
            .unwrap_or_else(|| panic!("no {flag}"));
        words[i + 1].to_string()
    };
    let options = after("-o").split(',').map(str::to_string).collect();
    assert_eq!(o.wants, ["rvm-backup-export.service"], "{o:?}");
    assert!(o.tags.iter().any(|t| t == "systemd"), "{o:?}");
    (after("-t"), options)
}

#[test]
fn the_udev_rule_mounts_usb_sticks_labelled_rvmbackup_read_write() {
    // A FAT32 partition and a stick formatted without a partition table.
    for devtype in ["partition", "disk"] {
        let (fs, opts) = mount_command(&run_rules(&usb_stick(devtype, "vfat", "RVMBACKUP")));
        assert_eq!(fs, "vfat");
        for needed in ["noexec", "nosuid", "nodev", "flush"] {
            assert!(
                opts.contains(needed),
                "vfat mount without {needed}: {opts:?}"
            );
        }
        assert!(
            !opts.contains("ro"),
            "the stick must be mounted read-write: {opts:?}"
        );
        // Files the recovery key could be in must look private (no group/other bits).
        assert!(
            opts.contains("fmask=0177") && opts.contains("dmask=0077"),
            "{opts:?}"
        );
        let known = [
            "noexec",
            "nosuid",
            "nodev",
            "flush",
            "fmask=0177",
            "dmask=0077",
        ];
        assert!(
            opts.iter().all(|o| known.contains(&o.as_str())),
            "unexpected option in {opts:?}"
        );
    }
    for fs_type in ["ext2", "ext3", "ext4"] {
        let (fs, opts) = mount_command(&run_rules(&usb_stick("partition", fs_type, "RVMBACKUP")));
        assert_eq!(fs, fs_type);
        let want: BTreeSet<String> = ["noexec", "nosuid", "nodev"]
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(opts, want, "ext mounts take no FAT options");
    }
}

#[test]
fn the_udev_rule_leaves_every_other_device_alone() {
    let mut cases: Vec<(&str, HashMap<&'static str, String>)> = Vec::new();
    let base = || usb_stick("partition", "vfat", "RVMBACKUP");
    for (what, key, value) in [
        ("a change event", "ACTION", "change"),
        ("a remove event", "ACTION", "remove"),
        ("another label", "ID_FS_LABEL", "KINGSTON"),
        ("a lowercase label", "ID_FS_LABEL", "rvmbackup"),
        ("no label", "ID_FS_LABEL", ""),
        ("a SATA disk", "ID_BUS", "ata"),
        ("the SD card", "ID_BUS", ""),
        ("NTFS", "ID_FS_TYPE", "ntfs"),
        ("exFAT", "ID_FS_TYPE", "exfat"),
        ("not a block device", "SUBSYSTEM", "usb"),
    ] {
        let mut dev = base();
        dev.insert(key, value.to_string());
        cases.push((what, dev));
    }
    let mut missing = base();
    missing.remove("ID_FS_TYPE");
    cases.push(("no file system", missing));
    for (what, dev) in cases {
        let o = run_rules(&dev);
        assert!(o.run.is_empty() && o.wants.is_empty(), "{what}: {o:?}");
    }
}

#[test]
fn the_udev_rule_names_real_units_and_real_systemd_mount_options() {
    let rules = parse_rules(&read_board("99-rvm-backup-usb.rules"));
    let units = unit_names();
    for t in rules.iter().flatten() {
        if t.attr.as_deref() == Some("SYSTEMD_WANTS") {
            assert!(
                units.contains(&t.value),
                "SYSTEMD_WANTS={} is not in board/",
                t.value
            );
        }
    }
    let Some(mount) = systemd_tool(
        "systemd-mount",
        "the_udev_rule_names_real_units_and_real_systemd_mount_options",
    ) else {
        return;
    };
    let help = Command::new(&mount).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for t in rules.iter().flatten().filter(|t| t.key == "RUN") {
        for w in t.value.split_whitespace().filter(|w| w.starts_with('-')) {
            let name = w.split('=').next().unwrap();
            let listed = help
                .split(|c: char| c.is_whitespace() || c == '=' || c == ',')
                .any(|h| h == name);
            assert!(
                listed,
                "systemd-mount --help does not list {name} (from {w})"
            );
        }
    }
}

#[test]
fn udevadm_verify_accepts_the_rule_where_this_systemd_has_it() {
    let Some(udevadm) = ["/usr/bin/udevadm", "/bin/udevadm", "/sbin/udevadm"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        eprintln!("SKIPPED udevadm verify: no udevadm here (the parse tests above still ran)");
        return;
    };
    let has_verify = Command::new(udevadm)
        .args(["verify", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_verify {
        eprintln!("SKIPPED udevadm verify: this udevadm predates it (systemd < 254)");
        return;
    }
    let out = Command::new(udevadm)
        .arg("verify")
        .arg(board_dir().join("99-rvm-backup-usb.rules"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "udevadm verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

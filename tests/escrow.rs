//! Key escrow and the key ring, through the real binary where an operator
//! would use it: `keygen --recovery`, sealing the ring to the printed public
//! key and unsealing it with the private file; the sealed-key test vector;
//! `keygen --rotate` and `keygen --list` with old and new archives.

mod common;

use std::fs;
use std::path::Path;

use common::{bin, Board, TempDir};
use rvm_backup::crypto::{KeyRing, MasterKey};
use rvm_backup::recovery::{
    load_private, seal, seal_with_ephemeral, unseal, RecoveryError, RecoveryPrivateKey,
    RecoveryPublicKey,
};

fn vector_bytes(name: &str) -> Vec<u8> {
    let text = fs::read_to_string(Path::new("tests/vectors").join(name)).unwrap();
    let hex: String = text.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn vector_ring() -> KeyRing {
    KeyRing::new(vec![
        MasterKey::from_bytes([0x42; 32]),
        MasterKey::from_bytes([0x43; 32]),
    ])
    .unwrap()
}

/// `keygen --recovery --out FILE` prints a config line; sealing a board's
/// key ring to that public key and unsealing it with FILE gives the same
/// key ids back. Another recovery key is named as such; no flipped byte of
/// the sealed ring ever opens to a key.
#[test]
fn recovery_keygen_seal_and_unseal() {
    let t = TempDir::new("escrow-keygen");
    let private_file = t.path().join("fleet-recovery.key");
    let out = bin()
        .args(["keygen", "--recovery", "--out"])
        .arg(&private_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    // The printed line is TOML for the config, with the key id as a comment.
    let value: toml::Value = toml::from_str(&line).unwrap();
    let public = RecoveryPublicKey::parse(value["recovery_public_key"].as_str().unwrap()).unwrap();
    assert!(line.contains(&public.id().to_string()), "{line}");
    let text = fs::read_to_string(&private_file).unwrap();
    assert!(
        !line.contains(text.lines().nth(1).unwrap()),
        "the private half is never printed"
    );

    // A board with two keys (after a rotation).
    let b = Board::new("escrow-board");
    b.ok(&["keygen", "--rotate"]);
    let ring = rvm_backup::keys::load(&b.key).unwrap();
    assert_eq!(ring.ids().len(), 2);

    let sealed = seal(&ring, &public).unwrap();
    let private = load_private(&private_file).unwrap();
    let opened = unseal(&sealed, &private).unwrap();
    assert_eq!(opened.ids(), ring.ids());
    assert_eq!(opened.writing().id(), ring.writing().id());
    assert_eq!(opened.writing().bytes(), ring.writing().bytes());

    // The refusal to overwrite covers the recovery key too.
    let again = bin()
        .args(["keygen", "--recovery", "--out"])
        .arg(&private_file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    // Another recovery key: a clear error naming both ids.
    let other = RecoveryPrivateKey::from_bytes([0x55; 32]);
    let e = unseal(&sealed, &other).unwrap_err();
    assert!(matches!(e, RecoveryError::WrongRecoveryKey { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&public.id().to_string()) && msg.contains(&other.id().to_string()),
        "{msg}"
    );

    // Every byte flipped (every bit of it, in turn): an error, never a ring.
    for i in 0..sealed.len() {
        for bit in 0..8 {
            let mut t = sealed.clone();
            t[i] ^= 1 << bit;
            assert!(unseal(&t, &private).is_err(), "byte {i} bit {bit}");
        }
    }
}

/// The sealed-key vector of docs/format.md, section 10 (computed with
/// Python's `cryptography`, independently of this crate): the sealer
/// reproduces it byte for byte and the opener returns the ring.
#[test]
fn sealed_key_vector() {
    let expected = vector_bytes("sealed-key.hex");
    let private = RecoveryPrivateKey::from_bytes([0x31; 32]);
    let public = private.public();
    assert_eq!(
        public.to_string(),
        fs::read_to_string("tests/vectors/recovery-public.txt")
            .unwrap()
            .trim()
    );
    let sealed = seal_with_ephemeral(&vector_ring(), &public, &[0x21; 32]).unwrap();
    assert_eq!(sealed, expected);
    let ring = unseal(&expected, &private).unwrap();
    let ids: Vec<String> = ring.ids().iter().map(|i| i.to_string()).collect();
    assert_eq!(ids, ["b5555c21d7267390", "019e2548e96eac51"]);
    assert_eq!(ring.writing().bytes(), &[0x43; 32]);
    assert_eq!(
        rvm_backup::recovery::sealed_key_ids(&expected).unwrap(),
        ring.ids()
    );
}

/// The second reader opens the vector too, when Python has X25519.
#[test]
fn sealed_key_vector_second_reader() {
    let out = std::process::Command::new("python3")
        .args([
            "tests/vectors/read_v1.py",
            "--unseal",
            "tests/vectors/sealed-key.hex",
        ])
        .output();
    // Under CI a missing python3 or `cryptography` is a failure (.ci/run
    // installs both); on a developer's machine the test says it skipped.
    let ci = std::env::var_os("CI").is_some();
    let Ok(out) = out else {
        assert!(!ci, "python3 is needed for the second reader under CI");
        eprintln!("SKIPPED: python3 not found; second reader not run");
        return;
    };
    if out.status.code() == Some(3) {
        assert!(!ci, "{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("SKIPPED: {}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "b5555c21d7267390\n019e2548e96eac51\n"
    );
}

/// Rotation: archives made before and after both verify and restore; the
/// new one is written with the new key; `keygen --list` counts each key's
/// archives; a ring missing the old key names it.
#[test]
fn rotate_backup_old_and_new_restore() {
    let b = Board::new("escrow-rotate");
    b.populate();
    b.ok(&["backup", "config"]);
    let old_id = b.ok(&["keygen", "--list"]);
    let first_key = rvm_backup::keys::load(&b.key)
        .unwrap()
        .writing()
        .id()
        .to_string();
    assert!(
        old_id.contains(&format!("{first_key}  writing  1 archive")),
        "{old_id}"
    );

    let rotated = b.ok(&["keygen", "--rotate"]);
    let new_key = rotated.lines().next().unwrap().to_string();
    assert_eq!(new_key.len(), 16);
    assert_ne!(new_key, first_key);
    assert_eq!(
        fs::metadata(&b.key)
            .map(|m| std::os::unix::fs::MetadataExt::mode(&m) & 0o777)
            .unwrap(),
        0o600
    );
    b.ok(&["backup", "config"]);

    let list = b.list();
    assert_eq!(list.len(), 2);
    let keys: Vec<&str> = list.iter().map(|a| a["key_id"].as_str().unwrap()).collect();
    assert_eq!(keys, [first_key.as_str(), new_key.as_str()]);
    // A rotation starts a new chain: the archive written with the new key
    // is a full one, so dropping the old key later leaves it whole.
    assert!(list[1]["parent"].is_null(), "{}", list[1]);
    b.ok(&["verify", "--all"]);
    for a in &list {
        let id = a["id"].as_str().unwrap();
        let target = b.tmp.path().join(format!("restored-{id}"));
        b.ok(&[
            "restore",
            "config",
            id,
            "--target",
            target.to_str().unwrap(),
        ]);
        common::assert_same_tree(
            &b.root.join("etc/myrvm"),
            &b.in_target(&target, &b.root.join("etc/myrvm")),
        );
    }
    let listed = b.ok(&["keygen", "--list"]);
    assert!(
        listed.contains(&format!("{first_key}           1 archive")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{new_key}  writing  1 archive")),
        "{listed}"
    );

    // Drop the old key from the ring: the old archive names the key it
    // needs; the new one still verifies; --list shows the key as missing.
    let text = fs::read_to_string(&b.key).unwrap();
    let last = text.lines().last().unwrap().to_string();
    fs::write(&b.key, format!("{last}\n")).unwrap();
    let old = list[0]["id"].as_str().unwrap();
    let err = b.fails(&["verify", old]);
    assert!(
        err.contains(&first_key) && err.contains("key_file"),
        "{err}"
    );
    b.ok(&["verify", list[1]["id"].as_str().unwrap()]);
    let listed = b.ok(&["keygen", "--list"]);
    assert!(
        listed.contains(&format!("{first_key}  MISSING  1 archive")),
        "{listed}"
    );
}

#[test]
fn keygen_usage_and_config_keys() {
    let b = Board::new("escrow-usage");
    for args in [
        &["keygen"][..],
        &["keygen", "--rotate", "--list"],
        &["keygen", "--rotate", "--out", "/tmp/x"],
        &["keygen", "--recovery"],
        &["keygen", "--list", "extra"],
    ] {
        let out = b.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // recovery_public_key is checked where the config is read, naming the
    // key; a good one and recovery_key_file parse.
    b.write_config("recovery_public_key = \"rvmrec1:00\"");
    let err = b.fails(&["list"]);
    assert!(
        err.contains("recovery_public_key") && err.contains("rvmrec1:"),
        "{err}"
    );
    b.write_config("recovery_key_file = \"relative/path\"");
    assert!(b.fails(&["list"]).contains("recovery_key_file"));
    let public = fs::read_to_string("tests/vectors/recovery-public.txt").unwrap();
    b.write_config(&format!(
        "recovery_public_key = \"{}\"\nrecovery_key_file = \"/media/stick/fleet.key\"",
        public.trim()
    ));
    let cfg = rvm_backup::config::Config::load(&b.config).unwrap();
    assert_eq!(cfg.recovery_public_key.unwrap().to_string(), public.trim());
    assert_eq!(
        cfg.recovery_key_file.unwrap(),
        Path::new("/media/stick/fleet.key")
    );
    // With a recovery key configured, rotation reminds to export again.
    let rotated = b.ok(&["keygen", "--rotate"]);
    assert!(rotated.contains("export again"), "{rotated}");
}

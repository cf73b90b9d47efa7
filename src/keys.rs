//! The master key file: creation, loading as a key ring, and rotation, with
//! the permission rules.
//!
//! The file holds one key per line, each as 64 hex digits and a newline,
//! oldest first; the **last** line is the key new archives are written
//! with (the writing key), and the others keep older archives readable. A
//! one-line file, what `keygen --out` writes, is a ring of one key. Mode
//! 0600: a key file that group or others can read is refused (a key that
//! leaked is not a key). Keys are never printed, only their ids.
//!
//! `rotate` appends a fresh key crash-safely: the whole new file is written
//! under a temporary name in the same directory (mode 0600, fsync), renamed
//! over the key file, and the directory fsynced. At every instant the key
//! file is either the old ring or the new one, never a torn file; a
//! temporary file left by a crash is never read and is replaced by the next
//! rotation.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::{KeyRing, MasterKey, KEY_LEN, MAX_RING_KEYS};
use crate::error::{msg, IoContext, Result};
use crate::fsutil::{parent, read_regular, sync_dir, Follow};

/// Create a new key file holding one new key; refuses to overwrite an
/// existing one.
pub fn generate(out: &Path) -> Result<MasterKey> {
    let key = MasterKey::generate().ctx(|| "cannot generate a key".into())?;
    let text = ring_text(std::slice::from_ref(&key));
    crate::fsutil::create_secret(
        out,
        text.as_bytes(),
        "key file",
        "archives made with it would be lost",
    )?;
    Ok(key)
}

/// The key file's text: one line of 64 hex digits per key, in order.
fn ring_text(keys: &[MasterKey]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(keys.len() * (2 * KEY_LEN + 1)));
    for key in keys {
        for b in key.bytes() {
            text.push_str(&format!("{b:02x}"));
        }
        text.push('\n');
    }
    text
}

/// Largest key file read: a full ring of [`MAX_RING_KEYS`] lines of 65
/// bytes (and a `\r` each), never a read that cannot end.
pub const MAX_KEY_FILE_LEN: usize = 32 << 10;

/// Load the key file as a key ring, refusing one that group or others can
/// read, and anything that is not a small regular file (a FIFO, a device
/// such as `/dev/zero`, a directory). A symlink to the key is followed; the
/// file it leads to is what gets checked.
pub fn load(path: &Path) -> Result<KeyRing> {
    let (meta, bytes) = read_regular(path, MAX_KEY_FILE_LEN, Follow::Yes).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => msg(format!(
            "key file {} does not exist: create it with `rvm-backup keygen --out {}` (or restore it from your key escrow)",
            path.display(),
            path.display()
        )),
        _ => crate::error::Error::Io {
            what: format!(
                "cannot read key file {} (it must be a regular file of lines of 64 hex digits, mode 0600)",
                path.display()
            ),
            source: e,
        },
    })?;
    let bytes = Zeroizing::new(bytes);
    crate::fsutil::check_secret_mode(path, &meta, "key file")?;
    parse_ring(&bytes).map_err(|why| {
        msg(format!(
            "key file {} is not a key ring: {why}",
            path.display()
        ))
    })
}

/// Parse a key file's bytes: lines of 64 hex digits (a trailing `\r` and
/// blank lines are allowed), oldest first.
fn parse_ring(bytes: &[u8]) -> std::result::Result<KeyRing, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "it must hold lines of 64 hex digits, one key per line".to_string())?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if keys.len() == MAX_RING_KEYS {
            return Err(format!("it holds more than {MAX_RING_KEYS} keys"));
        }
        let key = parse(line).ok_or_else(|| {
            format!(
                "line {} is not a key: each line must hold 64 hex digits",
                n.saturating_add(1)
            )
        })?;
        keys.push(key);
    }
    KeyRing::new(keys).map_err(|e| e.to_string())
}

fn parse(hex: &str) -> Option<MasterKey> {
    // Exactly hex digits (`from_str_radix` alone would take a leading `+`).
    if hex.len() != 2 * KEY_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(MasterKey::from_bytes(*bytes))
}

/// Where `rotate` writes the new ring before renaming it over `file`.
pub fn rotate_tmp_path(file: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(file.file_name().unwrap_or_default());
    name.push(".rotate.tmp");
    parent(file).join(name)
}

/// Add a new random key to the ring in `path` as its writing key, crash-
/// safely (see the module doc). Returns the new ring. A symlink as the key
/// file is followed: the file it leads to is rewritten in its own
/// directory, and the link stays.
pub fn rotate(path: &Path) -> Result<KeyRing> {
    let old = load(path)?;
    let real = std::fs::canonicalize(path).at("resolve key file", path)?;
    let key = MasterKey::generate().ctx(|| "cannot generate a key".into())?;
    let ring = old
        .with_new(key)
        .map_err(|e| msg(format!("cannot add a key to {}: {e}", path.display())))?;
    write_ring(&real, &ring)?;
    Ok(ring)
}

/// What [`adopt`] did to the key file.
#[derive(Debug, PartialEq, Eq)]
pub enum Adopted {
    /// There was no key file: it now holds the ring.
    Written,
    /// The key file lacked this many of the ring's keys: they were added
    /// before its own keys (its writing key stays the writing key).
    Merged(usize),
    /// The key file already held every key of the ring.
    Unchanged,
}

/// Make the key file at `path` able to read everything `ring` reads: a
/// board restored from a recovery set must go on with the key ring the
/// set was sealed with, or its daemon cannot start and its restored
/// archives stay unreadable. Crash-safe like [`rotate`]: at every instant
/// the key file is the old one (or absent) or the new one.
pub fn adopt(path: &Path, ring: &KeyRing) -> Result<Adopted> {
    let existing = match std::fs::symlink_metadata(path) {
        Ok(_) => Some(load(path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).at("inspect", path),
    };
    let Some(existing) = existing else {
        write_ring(path, ring)?;
        return Ok(Adopted::Written);
    };
    let have = existing.ids();
    let missing: Vec<MasterKey> = ring
        .keys()
        .iter()
        .filter(|k| !have.contains(&k.id()))
        .map(|k| MasterKey::from_bytes(*k.bytes()))
        .collect();
    if missing.is_empty() {
        return Ok(Adopted::Unchanged);
    }
    let n = missing.len();
    let mut keys = missing;
    keys.extend(
        existing
            .keys()
            .iter()
            .map(|k| MasterKey::from_bytes(*k.bytes())),
    );
    let merged = KeyRing::new(keys).map_err(|e| {
        msg(format!(
            "cannot add the recovered keys to {}: {e}",
            path.display()
        ))
    })?;
    let real = std::fs::canonicalize(path).at("resolve key file", path)?;
    write_ring(&real, &merged)?;
    Ok(Adopted::Merged(n))
}

/// Replace the key file `real` (not a symlink) with `ring`: temporary file
/// (mode 0600, created fresh), fsync, rename, fsync of the directory.
fn write_ring(real: &Path, ring: &KeyRing) -> Result<()> {
    let tmp = rotate_tmp_path(real);
    // A leftover of a rotation that crashed before its rename: its key was
    // never the writing key of anything, so it can go.
    match std::fs::remove_file(&tmp) {
        Ok(()) => log::warn!(
            "removed {} left by an interrupted key rotation",
            tmp.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at("remove the leftover", &tmp),
    }
    let text = ring_text(ring.keys());
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .at("create", &tmp)?;
        f.write_all(text.as_bytes()).at("write", &tmp)?;
        f.sync_all().at("sync", &tmp)?;
        drop(f);
        // Read back what was written before it replaces the old ring.
        let (_, back) = read_regular(&tmp, MAX_KEY_FILE_LEN, Follow::No).at("read back", &tmp)?;
        let back = Zeroizing::new(back);
        if parse_ring(&back).map(|r| r.ids()).ok() != Some(ring.ids()) {
            return Err(msg(format!(
                "{} does not read back as the new key ring; the key file was not changed",
                tmp.display()
            )));
        }
        std::fs::rename(&tmp, real)
            .ctx(|| format!("cannot rename {} to {}", tmp.display(), real.display()))?;
        sync_dir(parent(real))
    })();
    if result.is_err() && tmp.exists() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn adopt_writes_merges_and_keeps_the_writing_key() {
        let d = std::env::temp_dir().join(format!("rvb-adopt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("master.key");
        let a = KeyRing::new(vec![
            MasterKey::from_bytes([1; 32]),
            MasterKey::from_bytes([2; 32]),
        ])
        .unwrap();
        assert_eq!(adopt(&path, &a).unwrap(), Adopted::Written);
        assert_eq!(load(&path).unwrap().ids(), a.ids());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(adopt(&path, &a).unwrap(), Adopted::Unchanged);
        // A board that already has a key of its own keeps writing with it.
        std::fs::remove_file(&path).unwrap();
        generate(&path).unwrap();
        let own = load(&path).unwrap().writing().id();
        assert_eq!(adopt(&path, &a).unwrap(), Adopted::Merged(2));
        let ring = load(&path).unwrap();
        assert_eq!(ring.writing().id(), own);
        for id in a.ids() {
            assert!(ring.get(id).is_some());
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_key_line_is_exactly_64_hex_digits() {
        let good = "0f".repeat(32);
        assert!(parse(&good).is_some());
        let plus = format!("+f{}", &good[2..]);
        assert!(parse(&plus).is_none(), "a sign is not a hex digit");
        assert!(parse(&format!("{}g", &good[1..])).is_none());
        assert!(parse(&good[2..]).is_none());
    }

    #[test]
    fn generate_load_and_refuse() {
        let dir = std::env::temp_dir().join(format!("rvb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let _ = std::fs::remove_file(&path);
        let k = generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(load(&path).unwrap().writing().id(), k.id());
        assert!(generate(&path)
            .unwrap_err()
            .to_string()
            .contains("refusing"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("chmod 600"));
        std::fs::write(&path, "nothex").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tmpdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rvb-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Rotation keeps every old key, in order, and adds one writing key;
    /// the file stays 0600.
    #[test]
    fn rotate_appends_a_writing_key() {
        let dir = tmpdir("rotate");
        let path = dir.join("master.key");
        let first = generate(&path).unwrap().id();
        let r2 = rotate(&path).unwrap();
        let r3 = rotate(&path).unwrap();
        let ids = load(&path).unwrap().ids();
        assert_eq!(ids, r3.ids());
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], first);
        assert_eq!(ids[..2], r2.ids()[..]);
        assert_eq!(load(&path).unwrap().writing().id(), ids[2]);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(!rotate_tmp_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A crash in the middle of a rotation leaves its temporary file
    /// behind (torn, or whole but never renamed): the key file still loads
    /// as the old ring, and the next rotation replaces the leftover.
    #[test]
    fn leftover_rotation_file_breaks_nothing() {
        let dir = tmpdir("crash");
        let path = dir.join("master.key");
        let first = generate(&path).unwrap().id();
        let tmp = rotate_tmp_path(&path);
        for leftover in [&b"0123"[..], &[b'a'; 65][..], b"garbage\n"] {
            std::fs::write(&tmp, leftover).unwrap();
            assert_eq!(load(&path).unwrap().ids(), vec![first]);
        }
        let ring = rotate(&path).unwrap();
        assert_eq!(ring.ids()[0], first);
        assert_eq!(load(&path).unwrap().ids(), ring.ids());
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A symlinked key file: the file it leads to is rewritten, the link
    /// stays a link.
    #[test]
    fn rotate_through_a_symlink() {
        let dir = tmpdir("link");
        let real = dir.join("real.key");
        let link = dir.join("master.key");
        generate(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let ring = rotate(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(load(&real).unwrap().ids(), ring.ids());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ring_file_rules() {
        let k1 = "11".repeat(32);
        let k2 = "22".repeat(32);
        let two = parse_ring(format!("{k1}\n{k2}\n").as_bytes()).unwrap();
        assert_eq!(two.ids().len(), 2);
        assert_eq!(two.writing().id(), parse(&k2).unwrap().id());
        // CRLF and blank lines are fine; one line (the old format) too.
        assert_eq!(
            parse_ring(format!("{k1}\r\n\r\n{k2}").as_bytes())
                .unwrap()
                .ids(),
            two.ids()
        );
        assert_eq!(parse_ring(k1.as_bytes()).unwrap().ids().len(), 1);
        let e = parse_ring(format!("{k1}\nxyz\n").as_bytes()).err().unwrap();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_ring(format!("{k1}\n{k1}\n").as_bytes())
            .err()
            .unwrap();
        assert!(e.contains("twice"), "{e}");
        assert!(parse_ring(b"\n\n").err().unwrap().contains("no key"));
        assert!(parse_ring(&[0xff, 0xfe]).is_err());
    }

    /// A FIFO or a device as the key file fails at once with a clear
    /// error instead of blocking forever or reading until out of memory.
    #[test]
    fn special_key_files_fail_fast() {
        let dir = std::env::temp_dir().join(format!("rvb-keys-special-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.key");
        crate::fsutil::make_fifo(&fifo);
        let zero = dir.join("zero.key");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let big = dir.join("big.key");
        std::fs::write(&big, vec![b'a'; 100_000]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        for (p, want) in [
            (&fifo, "FIFO"),
            (&zero, "character device"),
            (&big, "larger than"),
        ] {
            let start = std::time::Instant::now();
            let e = load(p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("key file"), "{e}");
            assert!(start.elapsed() < std::time::Duration::from_secs(5));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The master key file: creation and loading, with the permission rules.
//!
//! The file holds the key as 64 hex digits and a newline, mode 0600. A key
//! file that group or others can read is refused: a key that leaked is not a
//! key. The key itself is never printed, only its id.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::crypto::{MasterKey, KEY_LEN};
use crate::error::{msg, IoContext, Result};
use crate::fsutil::{parent, read_regular, sync_dir, Follow};

/// Create a new key file; refuses to overwrite an existing one.
pub fn generate(out: &Path) -> Result<MasterKey> {
    let key = MasterKey::generate().ctx(|| "cannot generate a key".into())?;
    let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
    for b in key.bytes() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(msg(format!(
            "{} already exists; refusing to overwrite a key (archives made with it would be lost)",
            out.display()
        )))
        }
        Err(e) => return Err(e).at("create key file", out),
    };
    f.write_all(text.as_bytes()).at("write key file", out)?;
    f.sync_all().at("sync key file", out)?;
    sync_dir(parent(out))?;
    Ok(key)
}

/// Largest key file read: the key is 65 bytes; a little room for a
/// trailing newline or `\r\n`, never a read that cannot end.
pub const MAX_KEY_FILE_LEN: usize = 4096;

/// Load the key file, refusing one that group or others can read, and
/// anything that is not a small regular file (a FIFO, a device such as
/// `/dev/zero`, a directory). A symlink to the key is followed; the file it
/// leads to is what gets checked.
pub fn load(path: &Path) -> Result<MasterKey> {
    let (meta, bytes) = read_regular(path, MAX_KEY_FILE_LEN, Follow::Yes).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => msg(format!(
            "key file {} does not exist: create it with `rvm-backup keygen --out {}` (or restore it from your key escrow)",
            path.display(),
            path.display()
        )),
        _ => crate::error::Error::Io {
            what: format!(
                "cannot read key file {} (it must be a regular file of 64 hex digits, mode 0600)",
                path.display()
            ),
            source: e,
        },
    })?;
    let bytes = Zeroizing::new(bytes);
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(msg(format!(
            "key file {} is readable by group or others (mode {mode:04o}); fix it with: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    let text = std::str::from_utf8(&bytes).unwrap_or_default();
    parse(text.trim()).ok_or_else(|| {
        msg(format!(
            "key file {} is not a key: it must hold 64 hex digits",
            path.display()
        ))
    })
}

fn parse(hex: &str) -> Option<MasterKey> {
    if hex.len() != 2 * KEY_LEN {
        return None;
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(MasterKey::from_bytes(*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_load_and_refuse() {
        let dir = std::env::temp_dir().join(format!("rvb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let _ = std::fs::remove_file(&path);
        let k = generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(load(&path).unwrap().id(), k.id());
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

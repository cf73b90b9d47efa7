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
use crate::fsutil::{parent, sync_dir};

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

/// Load the key file, refusing one that group or others can read.
pub fn load(path: &Path) -> Result<MasterKey> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => msg(format!(
            "key file {} does not exist: create it with `rvm-backup keygen --out {}` (or restore it from your key escrow)",
            path.display(),
            path.display()
        )),
        _ => crate::error::Error::Io { what: format!("cannot read key file {}", path.display()), source: e },
    })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(msg(format!(
            "key file {} is readable by group or others (mode {mode:04o}); fix it with: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).at("read key file", path)?);
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
}

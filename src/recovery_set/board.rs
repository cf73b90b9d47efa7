//! Which board this is: hostname and machine id, and the FAT-safe name of
//! the board's directory on a recovery stick.
//!
//! A freshly imaged card usually gets a new machine id at first boot, so a
//! set whose machine id differs is not foreign by itself; the id only
//! decides between several boards' sets on one stick.

use std::path::Path;

use crate::error::{msg, Result};
use crate::fsutil::{read_regular, Follow};

/// Largest machine-id file read (it is 33 bytes).
const MAX_MACHINE_ID_FILE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardIdentity {
    /// `/proc/sys/kernel/hostname`, trimmed ("" when unknown).
    pub hostname: String,
    /// The 32 lowercase hex digits of the machine id ("" when the file is
    /// missing or empty, as on an image before its first boot).
    pub machine_id: String,
}

impl BoardIdentity {
    /// Read this machine's identity; `machine_id_file` is the config's.
    pub fn current(machine_id_file: &Path) -> Result<BoardIdentity> {
        let hostname = hostname();
        let machine_id = match read_regular(machine_id_file, MAX_MACHINE_ID_FILE, Follow::Yes) {
            Ok((_, bytes)) => parse_machine_id(&bytes)
                .map_err(|e| msg(format!("{}: {e}", machine_id_file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(msg(format!(
                    "cannot read the machine id from {}: {e}",
                    machine_id_file.display()
                )))
            }
        };
        Ok(BoardIdentity {
            hostname,
            machine_id,
        })
    }

    /// [`BoardIdentity::current`], or the hostname alone (and a warning)
    /// when the machine-id file cannot be used.
    pub fn current_or_hostname(machine_id_file: &Path) -> BoardIdentity {
        BoardIdentity::current(machine_id_file).unwrap_or_else(|e| {
            log::warn!("{e}; going by the hostname only");
            BoardIdentity {
                hostname: hostname(),
                machine_id: String::new(),
            }
        })
    }

    /// The board's directory name on a stick: the hostname made FAT-safe
    /// (at most 40 characters) and the first 12 hex digits of the machine
    /// id, e.g. `rvm-0042-3d1219c7c4c5`. Stable for one board.
    pub fn dir_name(&self) -> String {
        let mut host: String = self
            .hostname
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if host.is_empty() {
            host.push_str("board");
        }
        let id: String = if self.machine_id.is_empty() {
            "unknown".into()
        } else {
            self.machine_id.chars().take(12).collect()
        };
        format!("{host}-{id}")
    }
}

/// This machine's hostname (`/proc/sys/kernel/hostname`, trimmed; "" when
/// it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A machine id: 32 hex digits and optional surrounding whitespace;
/// empty (an image before first boot) reads as "".
pub fn parse_machine_id(bytes: &[u8]) -> std::result::Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the machine id is not text".to_string())?;
    let id = text.trim();
    if id.is_empty() || id == "uninitialized" {
        return Ok(String::new());
    }
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{id:?} is not a machine id (32 hex digits)"));
    }
    Ok(id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids() {
        assert_eq!(
            parse_machine_id(b"3D1219C7C4C5404AAA1F6D2A48ADFDA4\n").unwrap(),
            "3d1219c7c4c5404aaa1f6d2a48adfda4"
        );
        assert_eq!(parse_machine_id(b"\n").unwrap(), "");
        assert_eq!(parse_machine_id(b"uninitialized\n").unwrap(), "");
        assert!(parse_machine_id(b"xyz").is_err());
        assert!(parse_machine_id(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn dir_names_are_fat_safe() {
        let b = BoardIdentity {
            hostname: "rvm 0042.shop/x".into(),
            machine_id: "3d1219c7c4c5404aaa1f6d2a48adfda4".into(),
        };
        assert_eq!(b.dir_name(), "rvm_0042_shop_x-3d1219c7c4c5");
        assert!(super::super::is_fat_safe(&b.dir_name()));
        let anon = BoardIdentity {
            hostname: String::new(),
            machine_id: String::new(),
        };
        assert_eq!(anon.dir_name(), "board-unknown");
    }
}

//! Recovery sets: what `export` writes onto a USB stick and
//! `disaster-restore` reads back (`docs/format.md`, section 11).
//!
//! Layout under the stick's mount point `DIR`:
//!
//! ```text
//! DIR/rvm-backup/<board>/pool/<strategy>/<archive files>   shared by the sets
//! DIR/rvm-backup/<board>/set-<UTC time>/key.sealed         key ring, sealed
//! DIR/rvm-backup/<board>/set-<UTC time>/MANIFEST           written last
//! DIR/rvm-backup/<board>/wal/<generation>/<seq:012>.rvw    WAL segments
//! DIR/RESULT-<UTC time>.txt                                disaster-restore's account
//! DIR/RESTORE-REQUEST[.txt]                                a technician's explicit request
//! ```
//!
//! This module owns the names and the manifest; `ops::export` writes sets
//! and `ops::disaster` reads them. Invariants:
//! - every name is FAT-safe (`[A-Za-z0-9._-]`, no leading dot except this
//!   program's temporary names), so a set survives any FAT32 stick;
//! - a set is complete exactly when its `MANIFEST` exists and checks out:
//!   the manifest is written last (temporary name, fsync, rename, fsync the
//!   directory), after every file it names is on the stick and read back;
//! - the pool mirrors a store's layout (`<strategy>/<id>.meta`, parts), so
//!   a pool is read with the same store code as `backup_dir`.

pub mod board;
pub mod manifest;
pub mod stick;

pub use board::BoardIdentity;
pub use manifest::{Manifest, ManifestArchive, ManifestError, ManifestFile};

use std::path::{Path, PathBuf};

/// The directory on the stick that holds everything this program writes.
pub const ROOT_DIR: &str = "rvm-backup";
/// The pool of archive files inside a board's directory.
pub const POOL_DIR: &str = "pool";
/// WAL segments of the point-in-time generations whose snapshot is a
/// set's database archive: `wal/<generation>/<seq:012>.rvw`.
pub const WAL_DIR: &str = "wal";
/// The manifest of a set; its presence makes the set complete.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// The key ring sealed to the fleet's recovery public key.
pub const SEALED_KEY_FILE: &str = "key.sealed";
/// Prefix of a set's directory name; the rest is its UTC creation time.
pub const SET_PREFIX: &str = "set-";
/// A technician's explicit request to restore a board that is not freshly
/// imaged (or was restored from this set before). Either name is accepted.
pub const REQUEST_FILES: [&str; 2] = ["RESTORE-REQUEST", "RESTORE-REQUEST.txt"];
/// The name a consumed request marker is renamed to (plus a UTC time).
pub const REQUEST_DONE_PREFIX: &str = "RESTORE-REQUEST-DONE-";
/// Prefix of the result files `disaster-restore` writes to the stick root.
pub const RESULT_PREFIX: &str = "RESULT-";
/// A recovery private key a technician may bring on a stick.
pub const STICK_RECOVERY_KEY: &str = "rvm-recovery.key";

/// `DIR/rvm-backup`.
pub fn root(stick: &Path) -> PathBuf {
    stick.join(ROOT_DIR)
}

/// The name of a set created at `t` (Unix seconds).
pub fn set_name(t: i64) -> String {
    format!("{SET_PREFIX}{}", crate::timefmt::compact(t))
}

/// True for a set directory name this program writes
/// (`set-YYYYMMDDTHHMMSSZ`).
pub fn is_set_name(name: &str) -> bool {
    let Some(t) = name.strip_prefix(SET_PREFIX) else {
        return false;
    };
    t.len() == 16
        && t.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

/// True for a name that is safe on FAT and in a manifest: 1 to 200 bytes
/// of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn is_fat_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_round_trip() {
        let n = set_name(1_795_000_000);
        assert!(is_set_name(&n), "{n}");
        assert!(is_fat_safe(&n));
        for bad in [
            "set-",
            "set-2026",
            "set-20261126T150000",
            "Set-20261126T150000Z",
            "set-2026112xT150000Z",
            "set-20261126T150000Z.tmp",
        ] {
            assert!(!is_set_name(bad), "{bad}");
        }
    }

    #[test]
    fn fat_safe_names() {
        assert!(is_fat_safe("database-20261126T150000Z-a1b2c3.meta"));
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "ä",
            "..",
            "a:b",
            &"x".repeat(201),
        ] {
            assert!(!is_fat_safe(bad), "{bad:?}");
        }
    }
}

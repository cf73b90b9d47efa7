//! The manifest of a recovery set: which archives, the hash of every file,
//! which board, which key; authenticated with a key derived from the
//! master key (`docs/format.md`, section 11.2).
//!
//! The file is three lines of ASCII:
//!
//! ```text
//! rvm-backup recovery set v1
//! {"version":1,"set":"set-…",…}            one line of JSON
//! hmac-sha256 <64 lowercase hex>           or: unauthenticated
//! ```
//!
//! The tag is HMAC-SHA256 over the first two lines (with their newlines)
//! under `HKDF-SHA256(salt = "rvm-backup recovery set v1", ikm = master key
//! named by key_id, info = "manifest")`. An unauthenticated manifest is
//! only written and accepted when encryption is off.
//!
//! Invariants: [`Manifest::parse`] bounds the size and every count, checks
//! every name (FAT-safe, a pool file belongs to its archive and strategy)
//! and every hex field, and never panics on any input; [`Manifest::open`]
//! compares the tag in constant time before the manifest is used.

use serde::{Deserialize, Serialize};

use crate::crypto::{ct_eq, hkdf_sha256, hmac_tagger, KeyId, KeyRing, MasterKey, KEY_LEN};
use crate::strategy::Strategy;

/// First line of a manifest.
pub const MAGIC_LINE: &str = "rvm-backup recovery set v1";
/// Largest manifest file read.
pub const MAX_MANIFEST_LEN: usize = 1 << 20;
/// Most archives one set holds (one per strategy today).
pub const MAX_ARCHIVES: usize = 16;
/// Most pool files one archive may name (parts plus the sidecar).
pub const MAX_FILES_PER_ARCHIVE: usize = 4096;

const MAC_SALT: &[u8] = b"rvm-backup recovery set v1";
const MAC_INFO: &[u8] = b"manifest";
const TAG_PREFIX: &str = "hmac-sha256 ";
const NO_TAG: &str = "unauthenticated";

/// One file on the stick the manifest vouches for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative to the board's pool (`<strategy>/<file>`), or
    /// `key.sealed` for the sealed key ring (relative to the set).
    pub name: String,
    pub bytes: u64,
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
}

/// One archive of the set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestArchive {
    pub strategy: String,
    pub id: String,
    /// When the archive was made (Unix seconds).
    pub created: i64,
    /// Entries and content bytes, as the sidecar says (for the result
    /// file and `--dry-run`).
    pub entries: u64,
    pub content_bytes: u64,
    /// The sidecar and every part, in the pool.
    pub files: Vec<ManifestFile>,
}

/// A recovery set's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// The set's directory name (`set-<UTC time>`).
    pub set: String,
    /// The board's directory name on the stick.
    pub board: String,
    pub hostname: String,
    /// 32 hex digits, or "" when the board had none.
    pub machine_id: String,
    pub tool_version: String,
    /// When the set was written (Unix seconds).
    pub created: i64,
    /// Whether the archives are encrypted (then the manifest is
    /// authenticated and `key_id` names the key that tags it).
    pub encrypted: bool,
    pub key_id: Option<String>,
    /// The recovery key the ring is sealed to, and the sealed file.
    pub recovery_key_id: Option<String>,
    pub sealed_key: Option<ManifestFile>,
    pub archives: Vec<ManifestArchive>,
}

/// Why a manifest was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// Not a manifest of this version, or malformed: the reason.
    Malformed(String),
    /// The tag does not check: the set was changed after it was written,
    /// or it was written with another key than the one that opens it.
    BadTag,
    /// The manifest names a key the ring does not hold.
    UnknownKey(String),
    /// Authenticated but no key to check it with, or unauthenticated where
    /// archives must be encrypted.
    NeedsKey,
    Unauthenticated,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::Malformed(m) => write!(f, "the manifest is malformed: {m}"),
            ManifestError::BadTag => f.write_str(
                "the manifest's tag does not check: the set was changed after it was written (or it belongs to another key)",
            ),
            ManifestError::UnknownKey(id) => write!(
                f,
                "the manifest is tagged with key {id}, which the key ring does not hold"
            ),
            ManifestError::NeedsKey => {
                f.write_str("the manifest is authenticated but no key was given to check it")
            }
            ManifestError::Unauthenticated => f.write_str(
                "the manifest is not authenticated, but this board encrypts its archives: refusing a set anyone could have written",
            ),
        }
    }
}

impl std::error::Error for ManifestError {}

fn malformed(m: impl Into<String>) -> ManifestError {
    ManifestError::Malformed(m.into())
}

/// The key that tags a manifest, derived from a master key.
fn mac_key(master: &MasterKey) -> zeroize::Zeroizing<[u8; KEY_LEN]> {
    let mut k = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    hkdf_sha256(MAC_SALT, master.bytes(), MAC_INFO, &mut k[..]);
    k
}

fn tag(master: &MasterKey, body: &[u8]) -> [u8; 32] {
    let mut t = hmac_tagger(&mac_key(master));
    t.update(body);
    t.finish()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Manifest {
    /// The file's bytes: tagged with `key` (the ring's writing key) when
    /// given, `unauthenticated` otherwise. `key_id` must already name it.
    pub fn seal(&self, key: Option<&MasterKey>) -> Vec<u8> {
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut out = format!("{MAGIC_LINE}\n{json}\n").into_bytes();
        let last = match key {
            Some(k) => format!("{TAG_PREFIX}{}\n", hex(&tag(k, &out))),
            None => format!("{NO_TAG}\n"),
        };
        out.extend_from_slice(last.as_bytes());
        out
    }

    /// Parse and check a manifest file. With a key ring, the tag must
    /// check under the key the manifest names; without one, only an
    /// unauthenticated manifest is accepted, and only when
    /// `require_auth` is off.
    pub fn open(
        bytes: &[u8],
        ring: Option<&KeyRing>,
        require_auth: bool,
    ) -> Result<Manifest, ManifestError> {
        let (m, body_len, tag_line) = Manifest::parse(bytes)?;
        match tag_line {
            None if require_auth || m.encrypted => Err(ManifestError::Unauthenticated),
            None => Ok(m),
            Some(want) => {
                let ring = ring.ok_or(ManifestError::NeedsKey)?;
                let id_text = m.key_id.clone().unwrap_or_default();
                let id = unhex::<8>(&id_text)
                    .map(KeyId)
                    .ok_or_else(|| malformed("an authenticated manifest must name its key_id"))?;
                let key = ring
                    .get(id)
                    .ok_or_else(|| ManifestError::UnknownKey(id_text.clone()))?;
                if ct_eq(&tag(key, &bytes[..body_len]), &want) {
                    Ok(m)
                } else {
                    Err(ManifestError::BadTag)
                }
            }
        }
    }

    /// Parse without checking the tag: the manifest, the length of the
    /// tagged part and the tag (`None`: unauthenticated). Everything but
    /// the tag is checked. For choosing a set before a key is at hand;
    /// nothing may be trusted until [`Manifest::open`] passed.
    pub fn parse(bytes: &[u8]) -> Result<(Manifest, usize, Option<[u8; 32]>), ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(malformed(format!("larger than {MAX_MANIFEST_LEN} bytes")));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8 text"))?;
        let mut lines = text.split_inclusive('\n');
        let (Some(first), Some(json), Some(last), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed("it must be exactly three lines"));
        };
        if first != format!("{MAGIC_LINE}\n") {
            return Err(malformed(format!(
                "the first line is not {MAGIC_LINE:?} (a newer or foreign format?)"
            )));
        }
        let body_len = first.len() + json.len();
        let tag = match last.strip_suffix('\n') {
            Some(NO_TAG) => None,
            Some(l) => Some(
                l.strip_prefix(TAG_PREFIX)
                    .and_then(unhex::<32>)
                    .ok_or_else(|| malformed("the last line is not a tag"))?,
            ),
            None => return Err(malformed("the last line is cut short")),
        };
        let m: Manifest = serde_json::from_str(json.trim_end_matches('\n'))
            .map_err(|e| malformed(e.to_string()))?;
        m.check()?;
        Ok((m, body_len, tag))
    }

    /// Every field within bounds and every name well-formed.
    fn check(&self) -> Result<(), ManifestError> {
        if self.version != 1 {
            return Err(malformed(format!("version {} is not 1", self.version)));
        }
        if !super::is_set_name(&self.set) {
            return Err(malformed(format!("{:?} is not a set name", self.set)));
        }
        if !super::is_fat_safe(&self.board) {
            return Err(malformed(format!("{:?} is not a board name", self.board)));
        }
        if self.hostname.len() > 255 || self.tool_version.len() > 64 {
            return Err(malformed("hostname or tool_version too long"));
        }
        if !(self.machine_id.is_empty()
            || super::board::parse_machine_id(self.machine_id.as_bytes()).as_deref()
                == Ok(self.machine_id.as_str()))
        {
            return Err(malformed("machine_id is not 32 lowercase hex digits"));
        }
        for id in [&self.key_id, &self.recovery_key_id].into_iter().flatten() {
            if unhex::<8>(id).is_none() {
                return Err(malformed(format!("key id {id:?} is not 16 hex digits")));
            }
        }
        if self.encrypted && self.key_id.is_none() {
            return Err(malformed("an encrypted set must name its key_id"));
        }
        if let Some(f) = &self.sealed_key {
            if f.name != super::SEALED_KEY_FILE {
                return Err(malformed(format!(
                    "the sealed key must be {}",
                    super::SEALED_KEY_FILE
                )));
            }
            check_file(f)?;
        }
        if self.archives.is_empty() || self.archives.len() > MAX_ARCHIVES {
            return Err(malformed(format!(
                "{} archives (1 to {MAX_ARCHIVES} expected)",
                self.archives.len()
            )));
        }
        let mut seen = Vec::new();
        for a in &self.archives {
            let s = a
                .strategy()
                .ok_or_else(|| malformed(format!("unknown strategy {:?}", a.strategy)))?;
            if seen.contains(&s) {
                return Err(malformed(format!("two archives of strategy {s}")));
            }
            seen.push(s);
            if !crate::store::is_archive_id(s, &a.id) {
                return Err(malformed(format!("{:?} is not a {s} archive id", a.id)));
            }
            if a.files.is_empty() || a.files.len() > MAX_FILES_PER_ARCHIVE {
                return Err(malformed(format!(
                    "archive {} names {} files",
                    a.id,
                    a.files.len()
                )));
            }
            for f in &a.files {
                check_file(f)?;
                let ok = f.name.split_once('/').is_some_and(|(dir, file)| {
                    dir == s.name()
                        && (file.starts_with(&a.id) || is_chain_file(s, file))
                        && super::is_fat_safe(file)
                });
                if !ok {
                    return Err(malformed(format!(
                        "{:?} is not a file of archive {} in the pool",
                        f.name, a.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The archives in the order of a full restore (config, application,
    /// database, logs).
    pub fn in_restore_order(&self) -> Vec<&ManifestArchive> {
        let mut v: Vec<&ManifestArchive> = self.archives.iter().collect();
        v.sort_by_key(|a| {
            a.strategy()
                .and_then(|s| crate::ops::RESTORE_ALL_ORDER.iter().position(|o| *o == s))
                .unwrap_or(usize::MAX)
        });
        v
    }
}

/// A file of another archive of the same strategy (`<id>.meta` or
/// `<id>.NNN.rvb`): an incremental archive's set also names the archives
/// of its chain.
fn is_chain_file(s: Strategy, file: &str) -> bool {
    let id = match file.strip_suffix(crate::store::SIDECAR_EXT) {
        Some(id) => id,
        None => match file.strip_suffix(crate::store::PART_EXT) {
            Some(rest) => match rest.rsplit_once('.') {
                Some((id, n)) if n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()) => id,
                _ => return false,
            },
            None => return false,
        },
    };
    crate::store::is_archive_id(s, id)
}

impl ManifestArchive {
    pub fn strategy(&self) -> Option<Strategy> {
        Strategy::parse(&self.strategy)
    }
}

impl ManifestFile {
    /// The file's SHA-256 (checked to be hex when the manifest was parsed).
    pub fn digest(&self) -> [u8; 32] {
        unhex::<32>(&self.sha256).unwrap_or([0; 32])
    }
}

fn check_file(f: &ManifestFile) -> Result<(), ManifestError> {
    if unhex::<32>(&f.sha256).is_none() {
        return Err(malformed(format!(
            "{}: sha256 is not 64 lowercase hex digits",
            f.name
        )));
    }
    if f.name.len() > 256 {
        return Err(malformed("a file name is too long"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        let file = |name: &str| ManifestFile {
            name: name.into(),
            bytes: 10,
            sha256: "ab".repeat(32),
        };
        Manifest {
            version: 1,
            set: "set-20261126T150000Z".into(),
            board: "rvm-0042-3d1219c7c4c5".into(),
            hostname: "rvm-0042".into(),
            machine_id: "3d1219c7c4c5404aaa1f6d2a48adfda4".into(),
            tool_version: "0.1.0".into(),
            created: 1_795_000_000,
            encrypted: true,
            key_id: Some("0011223344556677".into()),
            recovery_key_id: Some("8899aabbccddeeff".into()),
            sealed_key: Some(file("key.sealed")),
            archives: vec![ManifestArchive {
                strategy: "database".into(),
                id: "database-20261126T140000Z-a1b2c3".into(),
                created: 1_794_999_000,
                entries: 1,
                content_bytes: 4096,
                files: vec![
                    file("database/database-20261126T140000Z-a1b2c3.meta"),
                    file("database/database-20261126T140000Z-a1b2c3.000.rvb"),
                ],
            }],
        }
    }

    fn ring() -> KeyRing {
        KeyRing::new(vec![MasterKey::from_bytes([7; 32])]).unwrap()
    }

    fn with_key_id(mut m: Manifest, r: &KeyRing) -> Manifest {
        m.key_id = Some(r.writing().id().to_string());
        m
    }

    #[test]
    fn seal_then_open() {
        let r = ring();
        let m = with_key_id(sample(), &r);
        let bytes = m.seal(Some(r.writing()));
        assert_eq!(Manifest::open(&bytes, Some(&r), true).unwrap(), m);
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let r = ring();
        let bytes = with_key_id(sample(), &r).seal(Some(r.writing()));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                Manifest::open(&b, Some(&r), true).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn another_key_is_refused() {
        let r = ring();
        let bytes = with_key_id(sample(), &r).seal(Some(r.writing()));
        let other = KeyRing::new(vec![MasterKey::from_bytes([8; 32])]).unwrap();
        assert!(matches!(
            Manifest::open(&bytes, Some(&other), true),
            Err(ManifestError::UnknownKey(_))
        ));
        assert_eq!(
            Manifest::open(&bytes, None, true),
            Err(ManifestError::NeedsKey)
        );
    }

    #[test]
    fn unauthenticated_only_when_allowed() {
        let mut m = sample();
        m.encrypted = false;
        m.key_id = None;
        let bytes = m.seal(None);
        assert_eq!(Manifest::open(&bytes, None, false).unwrap(), m);
        assert_eq!(
            Manifest::open(&bytes, None, true),
            Err(ManifestError::Unauthenticated)
        );
        let mut enc = sample();
        enc.encrypted = true;
        let bytes = enc.seal(None);
        assert_eq!(
            Manifest::open(&bytes, None, false),
            Err(ManifestError::Unauthenticated)
        );
    }

    #[test]
    fn names_outside_the_pool_are_refused() {
        let r = ring();
        for bad in [
            "../etc/passwd",
            "database/../../x",
            "config/database-20261126T140000Z-a1b2c3.meta",
            "database/other.meta",
            "database/database-20261126T140000Z-a1b2c3/x",
            "/database/database-20261126T140000Z-a1b2c3.meta",
        ] {
            let mut m = with_key_id(sample(), &r);
            m.archives[0].files[0].name = bad.into();
            let bytes = m.seal(Some(r.writing()));
            assert!(
                matches!(
                    Manifest::open(&bytes, Some(&r), true),
                    Err(ManifestError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_archive_may_name_the_files_of_its_chain() {
        let r = ring();
        for good in [
            "database/database-20261125T140000Z-0a0b0c.meta",
            "database/database-20261125T140000Z-0a0b0c.000.rvb",
        ] {
            let mut m = with_key_id(sample(), &r);
            m.archives[0].files.push(ManifestFile {
                name: good.into(),
                bytes: 1,
                sha256: "cd".repeat(32),
            });
            let bytes = m.seal(Some(r.writing()));
            assert!(Manifest::open(&bytes, Some(&r), true).is_ok(), "{good}");
        }
        for bad in [
            "database/config-20261125T140000Z-0a0b0c.meta",
            "database/database-20261125T140000Z-0a0b0c.rvb",
            "database/database-20261125T140000Z-0a0b0c.00x.rvb",
            "database/database-20261125T140000Z-0a0b0c.meta.tmp",
        ] {
            let mut m = with_key_id(sample(), &r);
            m.archives[0].files.push(ManifestFile {
                name: bad.into(),
                bytes: 1,
                sha256: "cd".repeat(32),
            });
            let bytes = m.seal(Some(r.writing()));
            assert!(Manifest::open(&bytes, Some(&r), true).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Manifest::parse(&bytes);
        }

        #[test]
        fn parse_survives_mutated_manifests(pos in 0usize..2000, val in any::<u8>(), cut in 0usize..2000) {
            let r = ring();
            let mut b = with_key_id(sample(), &r).seal(Some(r.writing()));
            let p = pos % b.len();
            b[p] = val;
            b.truncate(cut.max(1).min(b.len()));
            let _ = Manifest::open(&b, Some(&r), true);
        }
    }
}

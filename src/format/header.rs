//! The 64-byte plaintext header at the start of every archive.
//!
//! It is the only unencrypted part besides frame lengths and the tail, and it
//! is bound into every frame tag, so changing any header byte fails the first
//! frame's authentication.

use super::FormatError;
use crate::crypto::{ArchiveKeys, KeyId, KeyRing, MasterKey, Protection, KEY_ID_LEN};

pub const MAGIC: [u8; 8] = *b"\x89RVB\r\n\x1a\n";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
pub const SALT_LEN: usize = 32;

pub const FLAG_COMPRESSED: u16 = 1;
pub const FLAG_ENCRYPTED: u16 = 2;
const KNOWN_FLAGS: u16 = FLAG_COMPRESSED | FLAG_ENCRYPTED;

/// Frame plaintext sizes a reader accepts; bounds a reader's memory.
pub const MIN_FRAME_SIZE: u32 = 4096;
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
/// What the writer uses: big enough for deflate to find matches, small
/// enough to keep the pipeline's buffers in a few hundred KiB.
pub const DEFAULT_FRAME_SIZE: u32 = 128 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub flags: u16,
    pub frame_size: u32,
    pub key_id: KeyId,
    pub salt: [u8; SALT_LEN],
    /// Unix seconds when the backup started.
    pub created: i64,
}

impl Header {
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.frame_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.key_id.0);
        b[24..56].copy_from_slice(&self.salt);
        b[56..64].copy_from_slice(&self.created.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, FormatError> {
        if b[0..8] != MAGIC {
            return Err(FormatError::NotAnArchive);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let flags = u16::from_le_bytes([b[10], b[11]]);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::BadHeader("unknown flag bits are set"));
        }
        let frame_size = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&frame_size) {
            return Err(FormatError::BadHeader("frame size out of range"));
        }
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&b[16..24]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&b[24..56]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&b[56..64]);
        Ok(Header {
            flags,
            frame_size,
            key_id: KeyId(key_id),
            salt,
            created: i64::from_le_bytes(created),
        })
    }

    /// The protection this archive needs, with the key of `ring` whose id
    /// the header names (an error naming that id when the ring lacks it).
    pub fn protection(&self, ring: Option<&KeyRing>) -> Result<Protection, FormatError> {
        if !self.encrypted() {
            return Ok(Protection::Integrity);
        }
        let ring = ring.ok_or(FormatError::NeedKey(self.key_id))?;
        let key = ring.get(self.key_id).ok_or_else(|| FormatError::WrongKey {
            needed: self.key_id,
            have: ring.ids(),
        })?;
        Ok(Protection::Encrypted(ArchiveKeys::derive(key, &self.salt)))
    }

    /// The protection with one given key (the writer's: a ring's writing
    /// key), which must be the one the header names.
    pub fn protection_with_key(&self, key: Option<&MasterKey>) -> Result<Protection, FormatError> {
        if !self.encrypted() {
            return Ok(Protection::Integrity);
        }
        let key = key.ok_or(FormatError::NeedKey(self.key_id))?;
        if key.id() != self.key_id {
            return Err(FormatError::WrongKey {
                needed: self.key_id,
                have: vec![key.id()],
            });
        }
        Ok(Protection::Encrypted(ArchiveKeys::derive(key, &self.salt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            flags: 3,
            frame_size: DEFAULT_FRAME_SIZE,
            key_id: KeyId([9; 8]),
            salt: [5; 32],
            created: 1_800_000_000,
        }
    }

    #[test]
    fn roundtrip() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn rejects_foreign_and_future() {
        let mut b = sample().encode();
        b[8] = 2;
        assert!(matches!(
            Header::decode(&b),
            Err(FormatError::UnsupportedVersion(2))
        ));
        b[0] = b'P';
        assert!(matches!(Header::decode(&b), Err(FormatError::NotAnArchive)));
    }

    #[test]
    fn wrong_key_names_needed_key() {
        let k = KeyRing::from(MasterKey::from_bytes([1; 32]));
        let mut h = sample();
        h.key_id = MasterKey::from_bytes([2; 32]).id();
        let err = h.protection(Some(&k)).err().unwrap().to_string();
        assert!(err.contains(&h.key_id.to_string()), "{err}");
        assert!(h
            .protection(None)
            .err()
            .unwrap()
            .to_string()
            .contains(&h.key_id.to_string()));
    }

    /// A ring picks the key the header names, whichever position it has.
    #[test]
    fn ring_picks_the_named_key() {
        let ring = KeyRing::new(vec![
            MasterKey::from_bytes([1; 32]),
            MasterKey::from_bytes([2; 32]),
            MasterKey::from_bytes([3; 32]),
        ])
        .unwrap();
        let mut h = sample();
        for b in 1..=3u8 {
            h.key_id = MasterKey::from_bytes([b; 32]).id();
            assert!(h.protection(Some(&ring)).is_ok());
        }
        h.key_id = MasterKey::from_bytes([4; 32]).id();
        let err = h.protection(Some(&ring)).err().unwrap().to_string();
        assert!(
            err.contains(&h.key_id.to_string()) && err.contains("key ring holds"),
            "{err}"
        );
    }
}

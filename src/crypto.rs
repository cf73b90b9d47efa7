//! Keys and frame protection: the only module that touches AES, HMAC and HKDF.
//!
//! Invariants this module owns:
//! - every archive gets its own encryption, frame-MAC and sidecar-MAC keys,
//!   derived with HKDF-SHA256 from the master key and the archive's random
//!   32-byte salt, so two archives never share a key;
//! - within an archive the AES-CTR counter block is `frame index (u64 BE) ||
//!   block number (u64 BE)`; a frame holds far fewer than 2^64 blocks, so no
//!   counter block is ever used twice under one key;
//! - tags are compared in constant time;
//! - key material lives in `Zeroizing` buffers and is never formatted.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// Bytes in a master key and in each derived key.
pub const KEY_LEN: usize = 32;
/// Bytes in every frame and sidecar tag.
pub const TAG_LEN: usize = 32;
/// Bytes in a key id: enough to tell keys apart, too few to learn anything.
pub const KEY_ID_LEN: usize = 8;

const KEY_ID_DOMAIN: &[u8] = b"rvm-backup key id v1";
const ARCHIVE_KEYS_INFO: &[u8] = b"rvm-backup v1 archive keys";

/// The 256-bit master key of a board. Never printed; wiped on drop.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// A fresh key from the kernel's CSPRNG.
    pub fn generate() -> std::io::Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut bytes[..])?;
        Ok(MasterKey(bytes))
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Public identifier of this key: the first 8 bytes of
    /// SHA-256("rvm-backup key id v1" || key).
    pub fn id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(&self.0[..])
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

/// Most keys a key ring holds (a rotation a day for most of a year; the key
/// file and a sealed key stay small and bounded).
pub const MAX_RING_KEYS: usize = 256;

/// Every master key of a board, oldest first. The last one is the **writing
/// key**: new archives are encrypted with it. Archives name the key they
/// need by id, and readers pick it from the ring. Never empty; no id twice.
pub struct KeyRing {
    keys: Vec<MasterKey>,
}

/// Why a list of keys is not a key ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    Empty,
    TooMany(usize),
    Duplicate(KeyId),
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Empty => write!(f, "it holds no key"),
            RingError::TooMany(n) => write!(f, "it holds {n} keys, more than {MAX_RING_KEYS}"),
            RingError::Duplicate(id) => write!(f, "it holds key {id} twice"),
        }
    }
}

impl KeyRing {
    /// A ring of `keys`, oldest first; the last is the writing key.
    pub fn new(keys: Vec<MasterKey>) -> Result<Self, RingError> {
        if keys.is_empty() {
            return Err(RingError::Empty);
        }
        if keys.len() > MAX_RING_KEYS {
            return Err(RingError::TooMany(keys.len()));
        }
        for (i, k) in keys.iter().enumerate() {
            let id = k.id();
            if keys[..i].iter().any(|o| o.id() == id) {
                return Err(RingError::Duplicate(id));
            }
        }
        Ok(KeyRing { keys })
    }

    /// The key new archives are written with: the newest.
    pub fn writing(&self) -> &MasterKey {
        // `new` refuses an empty ring, so there is a last key; the index
        // form keeps this free of a panic path anyway.
        &self.keys[self.keys.len() - 1]
    }

    /// The key with this id, if the ring holds it.
    pub fn get(&self, id: KeyId) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// Every key id, oldest first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(MasterKey::id).collect()
    }

    /// This ring with `key` added as the new writing key.
    pub fn with_new(&self, key: MasterKey) -> Result<Self, RingError> {
        let mut keys: Vec<MasterKey> = self
            .keys
            .iter()
            .map(|k| MasterKey::from_bytes(*k.bytes()))
            .collect();
        keys.push(key);
        KeyRing::new(keys)
    }
}

impl From<MasterKey> for KeyRing {
    fn from(key: MasterKey) -> Self {
        KeyRing { keys: vec![key] }
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

/// Which key an archive was written with; all zeros for unencrypted archives.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Fill `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf)
        .map_err(|e| std::io::Error::other(format!("no randomness from the kernel: {e}")))
}

/// How the frames and the sidecar of one archive are protected.
pub enum Protection {
    /// AES-256-CTR and HMAC-SHA256 with keys derived for this archive.
    Encrypted(ArchiveKeys),
    /// No secrecy: tags are plain SHA-256, which catches corruption but not
    /// deliberate tampering.
    Integrity,
}

/// The three keys of one archive.
pub struct ArchiveKeys {
    enc: Zeroizing<[u8; KEY_LEN]>,
    frame_mac: Zeroizing<[u8; KEY_LEN]>,
    meta_mac: Zeroizing<[u8; KEY_LEN]>,
}

impl ArchiveKeys {
    /// HKDF-SHA256(salt, master) expanded with info "rvm-backup v1 archive
    /// keys" to 96 bytes: encryption key, frame MAC key, sidecar MAC key.
    pub fn derive(master: &MasterKey, salt: &[u8]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), master.bytes());
        let mut okm = Zeroizing::new([0u8; 3 * KEY_LEN]);
        // 96 bytes is far below HKDF-SHA256's limit of 255 * 32: cannot fail.
        hk.expand(ARCHIVE_KEYS_INFO, &mut okm[..])
            .expect("96 bytes is a valid HKDF-SHA256 output length");
        let split = |i: usize| {
            let mut k = Zeroizing::new([0u8; KEY_LEN]);
            k.copy_from_slice(&okm[i * KEY_LEN..(i + 1) * KEY_LEN]);
            k
        };
        ArchiveKeys {
            enc: split(0),
            frame_mac: split(1),
            meta_mac: split(2),
        }
    }
}

/// A running tag computation: HMAC-SHA256 or SHA-256 depending on protection.
pub enum Tagger {
    Keyed(HmacSha256),
    Plain(Sha256),
}

impl Tagger {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Tagger::Keyed(m) => m.update(data),
            Tagger::Plain(h) => h.update(data),
        }
    }

    pub fn finish(self) -> [u8; TAG_LEN] {
        match self {
            Tagger::Keyed(m) => m.finalize().into_bytes().into(),
            Tagger::Plain(h) => h.finalize().into(),
        }
    }
}

impl Clone for Tagger {
    fn clone(&self) -> Self {
        match self {
            Tagger::Keyed(m) => Tagger::Keyed(m.clone()),
            Tagger::Plain(h) => Tagger::Plain(h.clone()),
        }
    }
}

impl Protection {
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Protection::Encrypted(_))
    }

    /// Encrypt or decrypt (the same operation in CTR mode) the payload of
    /// frame `frame_index` in place. A no-op without encryption.
    pub fn apply_keystream(&self, frame_index: u64, data: &mut [u8]) {
        if let Protection::Encrypted(keys) = self {
            aes_ctr_frame(&keys.enc, frame_index, data);
        }
    }

    /// A fresh tagger for frames.
    pub fn frame_tagger(&self) -> Tagger {
        match self {
            Protection::Encrypted(keys) => Tagger::Keyed(new_hmac(&keys.frame_mac)),
            Protection::Integrity => Tagger::Plain(Sha256::new()),
        }
    }

    /// A fresh tagger for the sidecar.
    pub fn meta_tagger(&self) -> Tagger {
        match self {
            Protection::Encrypted(keys) => Tagger::Keyed(new_hmac(&keys.meta_mac)),
            Protection::Integrity => Tagger::Plain(Sha256::new()),
        }
    }
}

fn new_hmac(key: &[u8; KEY_LEN]) -> HmacSha256 {
    // HMAC accepts keys of any length: cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// AES-256-CTR over `data` in place, counter block `u64be(frame_index) ||
/// u64be(0)` as in archive frames. Used by the sealed key (`recovery`),
/// which is one such frame under its own key.
pub fn aes_ctr_frame(key: &[u8; KEY_LEN], frame_index: u64, data: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&frame_index.to_be_bytes());
    let mut cipher = Aes256Ctr::new(key.into(), (&iv).into());
    cipher.apply_keystream(data);
}

/// A keyed tagger (HMAC-SHA256) under `key`.
pub fn hmac_tagger(key: &[u8; KEY_LEN]) -> Tagger {
    Tagger::Keyed(new_hmac(key))
}

/// HKDF-SHA256 (RFC 5869) of `ikm` with `salt` and `info`, into `out`
/// (at most 255 × 32 bytes).
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    // Callers ask for 64 bytes, far below HKDF-SHA256's limit: cannot fail.
    hk.expand(info, out)
        .expect("HKDF output length within 255 * 32 bytes");
}

/// Compare two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// SHA-256 of one buffer.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_per_salt() {
        let master = MasterKey::from_bytes([7; 32]);
        let a = ArchiveKeys::derive(&master, &[1; 32]);
        let b = ArchiveKeys::derive(&master, &[2; 32]);
        assert_ne!(*a.enc, *b.enc);
        assert_ne!(*a.enc, *a.frame_mac);
        assert_ne!(*a.frame_mac, *a.meta_mac);
    }

    #[test]
    fn keystream_differs_per_frame_and_roundtrips() {
        let p = Protection::Encrypted(ArchiveKeys::derive(
            &MasterKey::from_bytes([1; 32]),
            &[0; 32],
        ));
        let mut f0 = vec![0u8; 64];
        let mut f1 = vec![0u8; 64];
        p.apply_keystream(0, &mut f0);
        p.apply_keystream(1, &mut f1);
        assert_ne!(f0, f1);
        // Frame 1 must not start with frame 0's second block (no overlap).
        assert_ne!(&f1[..16], &f0[16..32]);
        p.apply_keystream(0, &mut f0);
        assert_eq!(f0, vec![0u8; 64]);
    }

    #[test]
    fn ring_picks_by_id_and_writes_with_the_last() {
        let ring = KeyRing::new(vec![
            MasterKey::from_bytes([1; 32]),
            MasterKey::from_bytes([2; 32]),
        ])
        .unwrap();
        let id1 = MasterKey::from_bytes([1; 32]).id();
        assert_eq!(ring.writing().id(), MasterKey::from_bytes([2; 32]).id());
        assert_eq!(ring.get(id1).unwrap().id(), id1);
        assert!(ring.get(MasterKey::from_bytes([3; 32]).id()).is_none());
        assert_eq!(KeyRing::new(vec![]).unwrap_err(), RingError::Empty);
        let dup = KeyRing::new(vec![
            MasterKey::from_bytes([1; 32]),
            MasterKey::from_bytes([1; 32]),
        ]);
        assert_eq!(dup.unwrap_err(), RingError::Duplicate(id1));
        let bigger = ring.with_new(MasterKey::from_bytes([3; 32])).unwrap();
        assert_eq!(bigger.ids().len(), 3);
        assert_eq!(bigger.writing().id(), MasterKey::from_bytes([3; 32]).id());
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn key_id_is_stable() {
        let id = MasterKey::from_bytes([0; 32]).id();
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(id, MasterKey::from_bytes([0; 32]).id());
        assert_ne!(id, MasterKey::from_bytes([1; 32]).id());
    }
}

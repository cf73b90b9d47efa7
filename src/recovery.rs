//! Recovery keys (key escrow): the fleet's X25519 recovery key pair, and
//! the board's master key ring sealed to its public half.
//!
//! The fleet operator keeps the private half offline (`keygen --recovery`
//! writes it, mode 0600); boards hold only the public half
//! (`recovery_public_key` in the config). `export` stores the key ring
//! sealed to that public key on the USB stick, never the key ring itself.
//! So the stick alone opens nothing, a stolen board (public half only)
//! opens no other board's stick, and the private half plus the stick
//! restores. The byte layout is `docs/format.md`, section 10.
//!
//! Invariants this module owns:
//! - every seal uses a fresh ephemeral X25519 key, so no two seals share an
//!   encryption or MAC key, and all-zero (non-contributory) shared secrets
//!   are refused on both sides;
//! - nothing decrypted is returned, or even decrypted, before the tag over
//!   every preceding byte has checked (constant-time comparison);
//! - every length is checked against the key count before any slicing, and
//!   a sealed key ring is at most [`MAX_SEALED_LEN`] bytes;
//! - private keys are never printed or logged, only their ids; they live in
//!   zeroizing buffers.

use std::path::Path;

use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto::{
    aes_ctr_frame, ct_eq, fill_random, hkdf_sha256, hmac_tagger, KeyId, KeyRing, MasterKey,
    KEY_ID_LEN, KEY_LEN, MAX_RING_KEYS, TAG_LEN,
};
use crate::error::{msg, IoContext, Result};
use crate::fsutil::{read_regular, Follow};

/// Magic and version of a sealed key ring.
pub const SEALED_MAGIC: &[u8; 8] = b"RVBSEAL1";
/// Bytes before the key ids: magic, recovery key id, ephemeral public key,
/// key count.
pub const SEALED_HEAD_LEN: usize = 8 + KEY_ID_LEN + 32 + 2;
/// Largest sealed key ring: a full ring of [`MAX_RING_KEYS`] keys.
pub const MAX_SEALED_LEN: usize =
    SEALED_HEAD_LEN + MAX_RING_KEYS * (KEY_ID_LEN + KEY_LEN) + TAG_LEN;
/// First line of a recovery private key file.
pub const PRIVATE_LABEL: &str = "rvm-backup recovery key v1";
/// Prefix of a recovery public key in the config.
pub const PUBLIC_PREFIX: &str = "rvmrec1:";

const RECOVERY_ID_DOMAIN: &[u8] = b"rvm-backup recovery key id v1";
const SEAL_INFO: &[u8] = b"rvm-backup v1 sealed key ring";
/// Largest private key file read (it is 92 bytes).
const MAX_PRIVATE_FILE_LEN: usize = 4096;

/// Public identifier of a recovery key pair: the first 8 bytes of
/// SHA-256("rvm-backup recovery key id v1" || public key).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecoveryKeyId(pub [u8; KEY_ID_LEN]);

impl std::fmt::Display for RecoveryKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        KeyId(self.0).fmt(f)
    }
}

/// The public half of a recovery key pair: what boards hold.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryPublicKey([u8; 32]);

impl RecoveryPublicKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn id(&self) -> RecoveryKeyId {
        let d = Sha256::new()
            .chain_update(RECOVERY_ID_DOMAIN)
            .chain_update(self.0)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&d[..KEY_ID_LEN]);
        RecoveryKeyId(id)
    }

    /// Parse `rvmrec1:<64 hex digits>`. A key of small order (one that
    /// would make every shared secret zero) is refused.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let why = || {
            format!(
                "a recovery public key is {PUBLIC_PREFIX:?} and 64 hex digits, as `rvm-backup keygen --recovery` prints it"
            )
        };
        let hex = text.strip_prefix(PUBLIC_PREFIX).ok_or_else(why)?;
        let bytes = parse_hex32(hex).ok_or_else(why)?;
        let key = RecoveryPublicKey(*bytes);
        // Every clamped scalar is a multiple of the cofactor, so any one of
        // them gives zero exactly on the small-order points.
        let probe = StaticSecret::from([1u8; 32]);
        if !probe
            .diffie_hellman(&PublicKey::from(key.0))
            .was_contributory()
        {
            return Err("this recovery public key is a point of small order, not a real key; make a new pair with `rvm-backup keygen --recovery`".into());
        }
        Ok(key)
    }
}

impl std::fmt::Display for RecoveryPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(PUBLIC_PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for RecoveryPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryPublicKey({self})")
    }
}

impl<'de> serde::Deserialize<'de> for RecoveryPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RecoveryPublicKey::parse(text.trim()).map_err(serde::de::Error::custom)
    }
}

/// The private half of a recovery key pair: kept offline by the fleet
/// operator. Never printed (its `Debug` shows the id); wiped on drop.
pub struct RecoveryPrivateKey(StaticSecret);

impl RecoveryPrivateKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RecoveryPrivateKey(StaticSecret::from(bytes))
    }

    pub fn public(&self) -> RecoveryPublicKey {
        RecoveryPublicKey(PublicKey::from(&self.0).to_bytes())
    }

    pub fn id(&self) -> RecoveryKeyId {
        self.public().id()
    }
}

impl std::fmt::Debug for RecoveryPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryPrivateKey({})", self.id())
    }
}

/// Why a key ring could not be sealed or a sealed one not opened.
#[derive(Debug)]
pub enum RecoveryError {
    /// Not a sealed key ring at all (no `RVBSEAL1` magic).
    NotSealed,
    /// A sealed key ring of a later format (`RVBSEAL<v>`).
    UnsupportedVersion(u8),
    /// Lengths or counts that cannot be right: cut off or damaged.
    Damaged(&'static str),
    /// Sealed to another recovery key than the one given.
    WrongRecoveryKey {
        sealed_to: RecoveryKeyId,
        have: RecoveryKeyId,
    },
    /// The tag does not check (or an authenticated field is impossible):
    /// damaged or tampered with. Nothing was decrypted.
    Tampered,
    /// The kernel gave no randomness for the ephemeral key.
    Random(std::io::Error),
}

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryError::NotSealed => write!(f, "not a sealed key ring (no RVBSEAL1 magic); point at the sealed key file on the recovery stick"),
            RecoveryError::UnsupportedVersion(v) => write!(
                f,
                "sealed key ring format RVBSEAL{} is not supported by this rvm-backup; upgrade rvm-backup",
                char::from(*v)
            ),
            RecoveryError::Damaged(why) => write!(
                f,
                "the sealed key ring is damaged ({why}); use another copy or another recovery stick"
            ),
            RecoveryError::WrongRecoveryKey { sealed_to, have } => write!(
                f,
                "the key ring is sealed to recovery key {sealed_to}, but the recovery key given is {have}; use the recovery private key with id {sealed_to}"
            ),
            RecoveryError::Tampered => write!(
                f,
                "the sealed key ring fails authentication: it was damaged or tampered with; use another copy or another recovery stick"
            ),
            RecoveryError::Random(e) => write!(f, "cannot seal the key ring: {e}"),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// The two keys of one seal, from the shared secret and both public keys.
fn seal_keys(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> (Zeroizing<[u8; KEY_LEN]>, Zeroizing<[u8; KEY_LEN]>) {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut okm = Zeroizing::new([0u8; 2 * KEY_LEN]);
    hkdf_sha256(&salt, shared, SEAL_INFO, &mut okm[..]);
    let mut enc = Zeroizing::new([0u8; KEY_LEN]);
    let mut mac = Zeroizing::new([0u8; KEY_LEN]);
    enc.copy_from_slice(&okm[..KEY_LEN]);
    mac.copy_from_slice(&okm[KEY_LEN..]);
    (enc, mac)
}

/// Seal `ring` to `recipient` with a fresh ephemeral key.
pub fn seal(
    ring: &KeyRing,
    recipient: &RecoveryPublicKey,
) -> std::result::Result<Vec<u8>, RecoveryError> {
    let mut eph = Zeroizing::new([0u8; 32]);
    fill_random(&mut eph[..]).map_err(RecoveryError::Random)?;
    seal_with_ephemeral(ring, recipient, &eph)
}

/// Seal `ring` to `recipient` with the given ephemeral secret. Only for test
/// vectors: an ephemeral secret must never be used twice.
pub fn seal_with_ephemeral(
    ring: &KeyRing,
    recipient: &RecoveryPublicKey,
    ephemeral_secret: &[u8; 32],
) -> std::result::Result<Vec<u8>, RecoveryError> {
    let eph = StaticSecret::from(*ephemeral_secret);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(recipient.0));
    if !shared.was_contributory() {
        // `RecoveryPublicKey::parse` refuses such keys; a caller that built
        // one by hand gets the refusal here instead of a zero secret.
        return Err(RecoveryError::Damaged(
            "the recovery public key is of small order",
        ));
    }
    let (enc, mac) = seal_keys(shared.as_bytes(), &eph_pub, &recipient.0);
    let keys = ring.keys();
    // A ring holds at most MAX_RING_KEYS (256) keys: fits in u16.
    let count = u16::try_from(keys.len()).map_err(|_| RecoveryError::Damaged("too many keys"))?;
    let mut out =
        Vec::with_capacity(SEALED_HEAD_LEN + keys.len() * (KEY_ID_LEN + KEY_LEN) + TAG_LEN);
    out.extend_from_slice(SEALED_MAGIC);
    out.extend_from_slice(&recipient.id().0);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&count.to_le_bytes());
    for k in keys {
        out.extend_from_slice(&k.id().0);
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(keys.len() * KEY_LEN));
    for k in keys {
        plain.extend_from_slice(k.bytes());
    }
    aes_ctr_frame(&enc, 0, &mut plain);
    out.extend_from_slice(&plain);
    let mut t = hmac_tagger(&mac);
    t.update(&out);
    out.extend_from_slice(&t.finish());
    Ok(out)
}

/// Open a sealed key ring with the recovery private key. The tag is checked
/// before anything is decrypted; the ring returned has the ids the sealed
/// bytes list, in order.
pub fn unseal(
    bytes: &[u8],
    private: &RecoveryPrivateKey,
) -> std::result::Result<KeyRing, RecoveryError> {
    if bytes.len() < 8 || &bytes[..7] != b"RVBSEAL" {
        return Err(RecoveryError::NotSealed);
    }
    if bytes[..8] != SEALED_MAGIC[..] {
        return Err(RecoveryError::UnsupportedVersion(bytes[7]));
    }
    if bytes.len() > MAX_SEALED_LEN {
        return Err(RecoveryError::Damaged("longer than any sealed key ring"));
    }
    if bytes.len() < SEALED_HEAD_LEN + TAG_LEN {
        return Err(RecoveryError::Damaged("cut off"));
    }
    let count = usize::from(u16::from_le_bytes([bytes[48], bytes[49]]));
    if count == 0 || count > MAX_RING_KEYS {
        return Err(RecoveryError::Damaged("impossible key count"));
    }
    let ids_end = SEALED_HEAD_LEN + count * KEY_ID_LEN;
    let cipher_end = ids_end + count * KEY_LEN;
    if bytes.len() != cipher_end + TAG_LEN {
        return Err(RecoveryError::Damaged(
            "its length does not match its key count",
        ));
    }
    let mut sealed_to = [0u8; KEY_ID_LEN];
    sealed_to.copy_from_slice(&bytes[8..16]);
    let sealed_to = RecoveryKeyId(sealed_to);
    let public = private.public();
    if sealed_to != public.id() {
        return Err(RecoveryError::WrongRecoveryKey {
            sealed_to,
            have: public.id(),
        });
    }
    let mut eph_pub = [0u8; 32];
    eph_pub.copy_from_slice(&bytes[16..48]);
    let shared = private.0.diffie_hellman(&PublicKey::from(eph_pub));
    if !shared.was_contributory() {
        return Err(RecoveryError::Tampered);
    }
    let (enc, mac) = seal_keys(shared.as_bytes(), &eph_pub, &public.0);
    let (signed, tag) = bytes.split_at(cipher_end);
    let mut t = hmac_tagger(&mac);
    t.update(signed);
    if !ct_eq(&t.finish(), tag) {
        return Err(RecoveryError::Tampered);
    }
    let mut plain = Zeroizing::new(bytes[ids_end..cipher_end].to_vec());
    aes_ctr_frame(&enc, 0, &mut plain);
    let mut keys = Vec::with_capacity(count);
    for (i, chunk) in plain.chunks_exact(KEY_LEN).enumerate() {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(chunk);
        let key = MasterKey::from_bytes(*k);
        let listed =
            &bytes[SEALED_HEAD_LEN + i * KEY_ID_LEN..SEALED_HEAD_LEN + (i + 1) * KEY_ID_LEN];
        if key.id().0[..] != *listed {
            return Err(RecoveryError::Tampered);
        }
        keys.push(key);
    }
    KeyRing::new(keys).map_err(|_| RecoveryError::Tampered)
}

/// The key ids a sealed key ring lists, without opening it (they are public
/// like the ids in archive headers; not authenticated until `unseal`).
pub fn sealed_key_ids(bytes: &[u8]) -> std::result::Result<Vec<KeyId>, RecoveryError> {
    if bytes.len() < 8 || bytes[..8] != SEALED_MAGIC[..] {
        return Err(RecoveryError::NotSealed);
    }
    if bytes.len() < SEALED_HEAD_LEN || bytes.len() > MAX_SEALED_LEN {
        return Err(RecoveryError::Damaged("cut off"));
    }
    let count = usize::from(u16::from_le_bytes([bytes[48], bytes[49]]));
    let ids = bytes
        .get(SEALED_HEAD_LEN..SEALED_HEAD_LEN + count * KEY_ID_LEN)
        .ok_or(RecoveryError::Damaged("cut off"))?;
    Ok(ids
        .chunks_exact(KEY_ID_LEN)
        .map(|c| {
            let mut id = [0u8; KEY_ID_LEN];
            id.copy_from_slice(c);
            KeyId(id)
        })
        .collect())
}

fn parse_hex32(hex: &str) -> Option<Zeroizing<[u8; 32]>> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The private key file's text: the label line, then the key as 64 hex
/// digits.
fn private_text(key: &[u8; 32]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(PRIVATE_LABEL.len() + 66));
    text.push_str(PRIVATE_LABEL);
    text.push('\n');
    for b in key {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    text
}

/// Make a new recovery key pair: the private half into `out` (created new,
/// mode 0600, fsynced with its directory; never overwrites), the public
/// half returned for the config.
pub fn generate(out: &Path) -> Result<RecoveryPublicKey> {
    let mut secret = Zeroizing::new([0u8; 32]);
    fill_random(&mut secret[..]).ctx(|| "cannot generate a recovery key".into())?;
    let private = RecoveryPrivateKey::from_bytes(*secret);
    let public = private.public();
    if RecoveryPublicKey::parse(&public.to_string()).is_err() {
        // Cannot happen for a clamped random scalar times the base point;
        // refuse rather than hand out a key that seals nothing.
        return Err(msg(
            "the new recovery key is unusable; run keygen --recovery again",
        ));
    }
    let text = private_text(&secret);
    crate::fsutil::create_secret(
        out,
        text.as_bytes(),
        "recovery key file",
        "sticks sealed to it could no longer be opened",
    )?;
    Ok(public)
}

/// Load a recovery private key file, refusing one that group or others can
/// read and anything that is not exactly the label line and 64 hex digits.
pub fn load_private(path: &Path) -> Result<RecoveryPrivateKey> {
    let (meta, bytes) = read_regular(path, MAX_PRIVATE_FILE_LEN, Follow::Yes).map_err(|e| {
        crate::error::Error::Io {
            what: format!("cannot read recovery key file {}", path.display()),
            source: e,
        }
    })?;
    let bytes = Zeroizing::new(bytes);
    crate::fsutil::check_secret_mode(path, &meta, "recovery key file")?;
    parse_private(&bytes).ok_or_else(|| {
        msg(format!(
            "{} is not a recovery private key: it must be the line {PRIVATE_LABEL:?} and a line of 64 hex digits, as `rvm-backup keygen --recovery` writes it",
            path.display()
        ))
    })
}

fn parse_private(bytes: &[u8]) -> Option<RecoveryPrivateKey> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next()? != PRIVATE_LABEL {
        return None;
    }
    let key = parse_hex32(lines.next()?)?;
    if lines.next().is_some() {
        return None;
    }
    Some(RecoveryPrivateKey::from_bytes(*key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn ring(n: u8) -> KeyRing {
        KeyRing::new((1..=n).map(|b| MasterKey::from_bytes([b; 32])).collect()).unwrap()
    }

    #[test]
    fn seal_unseal_roundtrip_and_fresh_ephemeral() {
        let private = RecoveryPrivateKey::from_bytes([7; 32]);
        let public = private.public();
        let r = ring(3);
        let a = seal(&r, &public).unwrap();
        let b = seal(&r, &public).unwrap();
        assert_ne!(a, b, "each seal has its own ephemeral key");
        assert_eq!(unseal(&a, &private).unwrap().ids(), r.ids());
        assert_eq!(sealed_key_ids(&a).unwrap(), r.ids());
    }

    #[test]
    fn wrong_recovery_key_is_named() {
        let public = RecoveryPrivateKey::from_bytes([7; 32]).public();
        let other = RecoveryPrivateKey::from_bytes([8; 32]);
        let s = seal(&ring(1), &public).unwrap();
        match unseal(&s, &other) {
            Err(RecoveryError::WrongRecoveryKey { sealed_to, have }) => {
                assert_eq!(sealed_to, public.id());
                assert_eq!(have, other.id());
            }
            other => panic!("{other:?}"),
        }
    }

    /// Every byte flipped, and every truncation: an error, never a ring.
    #[test]
    fn every_flip_and_cut_fails() {
        let private = RecoveryPrivateKey::from_bytes([7; 32]);
        let s = seal(&ring(2), &private.public()).unwrap();
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert!(unseal(&t, &private).is_err(), "flip at {i}");
            t[i] ^= 0x81;
            assert!(unseal(&t, &private).is_err(), "flip at {i}");
        }
        for n in 0..s.len() {
            assert!(unseal(&s[..n], &private).is_err(), "cut at {n}");
        }
        let mut longer = s.clone();
        longer.push(0);
        assert!(unseal(&longer, &private).is_err());
        assert!(matches!(
            unseal(b"hello world", &private),
            Err(RecoveryError::NotSealed)
        ));
    }

    /// A low-order ephemeral key (shared secret zero) is refused even with
    /// a tag computed from the zero secret.
    #[test]
    fn zero_shared_secret_refused() {
        let private = RecoveryPrivateKey::from_bytes([7; 32]);
        let mut s = seal(&ring(1), &private.public()).unwrap();
        s[16..48].copy_from_slice(&[0u8; 32]);
        assert!(matches!(unseal(&s, &private), Err(RecoveryError::Tampered)));
    }

    #[test]
    fn public_key_text() {
        let public = RecoveryPrivateKey::from_bytes([7; 32]).public();
        let text = public.to_string();
        assert!(text.starts_with("rvmrec1:") && text.len() == 8 + 64);
        assert_eq!(RecoveryPublicKey::parse(&text).unwrap(), public);
        for bad in [
            "",
            "rvmrec1:",
            "rvmrec2:00",
            &text[1..],
            &format!("{text}0"),
        ] {
            assert!(RecoveryPublicKey::parse(bad).is_err(), "{bad}");
        }
        let zero = format!("rvmrec1:{}", "00".repeat(32));
        assert!(RecoveryPublicKey::parse(&zero)
            .unwrap_err()
            .contains("small order"));
    }

    #[test]
    fn private_file_rules() {
        let dir = std::env::temp_dir().join(format!("rvb-recovery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fleet.key");
        let public = generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(PRIVATE_LABEL));
        assert!(
            !text.contains(&public.to_string()[8..]),
            "the file holds the private half only"
        );
        assert_eq!(load_private(&path).unwrap().public(), public);
        assert!(generate(&path)
            .unwrap_err()
            .to_string()
            .contains("refusing"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_private(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        let master = dir.join("master.key");
        crate::keys::generate(&master).unwrap();
        let e = load_private(&master).unwrap_err().to_string();
        assert!(e.contains("not a recovery private key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

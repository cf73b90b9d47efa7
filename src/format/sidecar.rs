//! The sidecar: compact, authenticated metadata next to every archive.
//!
//! Layout: `"RVBMETA1" | archive header (64 bytes) | body_len u32 LE |
//! body (postcard of [`Meta`]) | tag[32]`. The tag is HMAC-SHA256 with the
//! archive's sidecar key (plain SHA-256 for unencrypted archives) over all
//! bytes before it. The copied header gives the salt to derive that key and
//! binds the sidecar to its archive, whose parts it lists with their SHA-256.
//! `list` reads only sidecars; `verify` checks the sidecar and the archive.

use serde::{Deserialize, Serialize};

use super::header::{Header, HEADER_LEN};
use super::FormatError;
use crate::crypto::{ct_eq, KeyId, MasterKey, Protection, TAG_LEN};

pub const SIDECAR_MAGIC: [u8; 8] = *b"RVBMETA1";
/// Sidecars are small; anything bigger is not one of ours.
pub const MAX_SIDECAR_LEN: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub name: String,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub page_size: u32,
    pub page_count: u64,
    pub journal_mode: String,
}

/// Everything `list`, retention and monitoring need to know about an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub strategy: String,
    /// Unix seconds when the backup started (also in the header).
    pub created: i64,
    /// Sub-second part of the start time: orders archives made in one second.
    pub created_nanos: u32,
    pub duration_ms: u64,
    pub host: String,
    pub tool_version: String,
    /// The configured paths this archive was taken from.
    pub sources: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Entries skipped (sockets, fifos, devices, unreadable files).
    pub skipped: u64,
    /// Files that changed while they were read (stored, marked).
    pub changed_while_read: u64,
    /// Bytes of file content read from the sources.
    pub content_bytes: u64,
    /// Bytes of all archive parts together.
    pub archive_bytes: u64,
    pub compressed: bool,
    pub encrypted: bool,
    pub key_id: KeyId,
    pub parts: Vec<PartInfo>,
    pub database: Option<DatabaseInfo>,
}

/// Serialize and tag a sidecar.
pub fn encode(meta: &Meta, header: &Header, protection: &Protection) -> Vec<u8> {
    // postcard into a Vec cannot fail for these plain types.
    let body = postcard::to_stdvec(meta).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + HEADER_LEN + 4 + body.len() + TAG_LEN);
    out.extend_from_slice(&SIDECAR_MAGIC);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let mut t = protection.meta_tagger();
    t.update(&out);
    out.extend_from_slice(&t.finish());
    out
}

/// Check and parse a sidecar. Nothing in the body is parsed before its tag
/// has been checked.
pub fn decode(bytes: &[u8], key: Option<&MasterKey>) -> Result<(Header, Meta), FormatError> {
    let fixed = 8 + HEADER_LEN + 4;
    if bytes.len() < fixed + TAG_LEN || bytes.len() > MAX_SIDECAR_LEN || bytes[..8] != SIDECAR_MAGIC
    {
        return Err(FormatError::SidecarTampered);
    }
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&bytes[8..8 + HEADER_LEN]);
    let header = Header::decode(&head).map_err(|e| match e {
        FormatError::UnsupportedVersion(_) => e,
        _ => FormatError::SidecarTampered,
    })?;
    let protection = header.protection(key)?;
    let body_len = u32::from_le_bytes([
        bytes[fixed - 4],
        bytes[fixed - 3],
        bytes[fixed - 2],
        bytes[fixed - 1],
    ]) as usize;
    if fixed + body_len + TAG_LEN != bytes.len() {
        return Err(FormatError::SidecarTampered);
    }
    let (signed, tag) = bytes.split_at(fixed + body_len);
    let mut t = protection.meta_tagger();
    t.update(signed);
    if !ct_eq(&t.finish(), tag) {
        return Err(FormatError::SidecarTampered);
    }
    let meta: Meta = postcard::from_bytes(&signed[fixed..])
        .map_err(|e| FormatError::Corrupt(format!("sidecar body does not parse: {e}")))?;
    if meta.created != header.created
        || meta.encrypted != header.encrypted()
        || meta.key_id != header.key_id
    {
        return Err(FormatError::Corrupt(
            "sidecar disagrees with its own header".into(),
        ));
    }
    Ok((header, meta))
}

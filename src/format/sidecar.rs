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
use crate::crypto::{ct_eq, KeyId, KeyRing, Protection, TAG_LEN};
use crate::strategy::Strategy;

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
///
/// On the wire the body is the postcard encoding of the first-generation
/// fields ([`WireV1`], unchanged since format 1) followed by zero or more
/// extension blocks, each the postcard encoding of one `WireExtN` struct in
/// order. A reader fills the fields of blocks that are absent with their
/// defaults, and ignores blocks newer than it knows (an older rvm-backup can
/// still list a newer archive). See docs/format.md "Sidecar".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub strategy: Strategy,
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
    // --- extension block 2 ---
    /// Hard-link entries (second names of files stored earlier).
    pub hardlinks: u64,
    /// Database archives: the outcome of `PRAGMA quick_check` inside the
    /// backup's read transaction: `"ok"`, or the first problem reported.
    /// `None` for other strategies and for archives made before the check.
    pub db_check: Option<String>,
    // --- extension block 3 ---
    /// Database archives: SHA-256 of the schema as it was backed up (the
    /// `sqlite_schema` rows `type, name, tbl_name, sql`, in the order and
    /// encoding of `crate::sources::database::schema_sha256`), read inside
    /// the backup's read transaction. A drill compares the restored
    /// database with it. `None` for other strategies, for archives made
    /// before block 3, and when it could not be read.
    pub schema_sha256: Option<[u8; 32]>,
    /// Database archives: `(table, rows)` for each ordinary table, by name,
    /// counted in the same transaction (at most
    /// `crate::sources::database::MAX_TABLES` tables; names of at most
    /// `MAX_TABLE_NAME` bytes). Empty otherwise.
    pub tables: Vec<(String, u64)>,
    // --- extension block 4 ---
    /// Incremental archives: the id of the archive of the same strategy
    /// this one was made against (its *parent*); entries unchanged since
    /// then point into the parent chain instead of storing the content
    /// again. `None` for a full archive and for archives made before
    /// block 4.
    pub parent: Option<String>,
}

/// The body's first block: the fields of the first sidecar generation, in
/// their original order and types (the strategy as its name).
#[derive(Serialize, Deserialize)]
struct WireV1 {
    id: String,
    strategy: String,
    created: i64,
    created_nanos: u32,
    duration_ms: u64,
    host: String,
    tool_version: String,
    sources: Vec<String>,
    files: u64,
    dirs: u64,
    symlinks: u64,
    skipped: u64,
    changed_while_read: u64,
    content_bytes: u64,
    archive_bytes: u64,
    compressed: bool,
    encrypted: bool,
    key_id: KeyId,
    parts: Vec<PartInfo>,
    database: Option<DatabaseInfo>,
}

/// Extension block 2: hard links and the source database's check.
#[derive(Default, Serialize, Deserialize)]
struct WireExt2 {
    hardlinks: u64,
    db_check: Option<String>,
}

/// Extension block 3: what a recovery drill checks a restored database
/// against.
#[derive(Default, Serialize, Deserialize)]
struct WireExt3 {
    schema_sha256: Option<[u8; 32]>,
    tables: Vec<(String, u64)>,
}

/// Extension block 4: the parent of an incremental archive.
#[derive(Default, Serialize, Deserialize)]
struct WireExt4 {
    parent: Option<String>,
}

impl Meta {
    fn to_wire(&self) -> (WireV1, WireExt2) {
        (
            WireV1 {
                id: self.id.clone(),
                strategy: self.strategy.name().to_string(),
                created: self.created,
                created_nanos: self.created_nanos,
                duration_ms: self.duration_ms,
                host: self.host.clone(),
                tool_version: self.tool_version.clone(),
                sources: self.sources.clone(),
                files: self.files,
                dirs: self.dirs,
                symlinks: self.symlinks,
                skipped: self.skipped,
                changed_while_read: self.changed_while_read,
                content_bytes: self.content_bytes,
                archive_bytes: self.archive_bytes,
                compressed: self.compressed,
                encrypted: self.encrypted,
                key_id: self.key_id,
                parts: self.parts.clone(),
                database: self.database.clone(),
            },
            WireExt2 {
                hardlinks: self.hardlinks,
                db_check: self.db_check.clone(),
            },
        )
    }

    fn to_ext3(&self) -> WireExt3 {
        WireExt3 {
            schema_sha256: self.schema_sha256,
            tables: self.tables.clone(),
        }
    }

    fn to_ext4(&self) -> WireExt4 {
        WireExt4 {
            parent: self.parent.clone(),
        }
    }

    fn from_wire(
        v1: WireV1,
        ext2: WireExt2,
        ext3: WireExt3,
        ext4: WireExt4,
    ) -> Result<Meta, FormatError> {
        let strategy = Strategy::parse(&v1.strategy).ok_or_else(|| {
            FormatError::Corrupt(format!(
                "sidecar names an unknown strategy {:?}",
                v1.strategy
            ))
        })?;
        Ok(Meta {
            id: v1.id,
            strategy,
            created: v1.created,
            created_nanos: v1.created_nanos,
            duration_ms: v1.duration_ms,
            host: v1.host,
            tool_version: v1.tool_version,
            sources: v1.sources,
            files: v1.files,
            dirs: v1.dirs,
            symlinks: v1.symlinks,
            skipped: v1.skipped,
            changed_while_read: v1.changed_while_read,
            content_bytes: v1.content_bytes,
            archive_bytes: v1.archive_bytes,
            compressed: v1.compressed,
            encrypted: v1.encrypted,
            key_id: v1.key_id,
            parts: v1.parts,
            database: v1.database,
            hardlinks: ext2.hardlinks,
            db_check: ext2.db_check,
            schema_sha256: ext3.schema_sha256,
            tables: ext3.tables,
            parent: ext4.parent,
        })
    }
}

/// The body bytes of a sidecar (postcard into a Vec cannot fail for these
/// plain types).
fn encode_body(meta: &Meta) -> Vec<u8> {
    let (v1, ext2) = meta.to_wire();
    let mut body = postcard::to_stdvec(&v1).unwrap_or_default();
    body.extend_from_slice(&postcard::to_stdvec(&ext2).unwrap_or_default());
    body.extend_from_slice(&postcard::to_stdvec(&meta.to_ext3()).unwrap_or_default());
    body.extend_from_slice(&postcard::to_stdvec(&meta.to_ext4()).unwrap_or_default());
    body
}

fn decode_body(body: &[u8]) -> Result<Meta, FormatError> {
    let bad =
        |e: postcard::Error| FormatError::Corrupt(format!("sidecar body does not parse: {e}"));
    let (v1, rest): (WireV1, &[u8]) = postcard::take_from_bytes(body).map_err(bad)?;
    let (ext2, rest) = if rest.is_empty() {
        (WireExt2::default(), rest)
    } else {
        postcard::take_from_bytes::<WireExt2>(rest).map_err(bad)?
    };
    let (ext3, rest) = if rest.is_empty() {
        (WireExt3::default(), rest)
    } else {
        postcard::take_from_bytes::<WireExt3>(rest).map_err(bad)?
    };
    let ext4 = if rest.is_empty() {
        WireExt4::default()
    } else {
        // Blocks after this one are newer than this reader and ignored.
        postcard::take_from_bytes::<WireExt4>(rest).map_err(bad)?.0
    };
    Meta::from_wire(v1, ext2, ext3, ext4)
}

/// Serialize and tag a sidecar.
pub fn encode(meta: &Meta, header: &Header, protection: &Protection) -> Vec<u8> {
    let body = encode_body(meta);
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
pub fn decode(bytes: &[u8], key: Option<&KeyRing>) -> Result<(Header, Meta), FormatError> {
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
    let meta = decode_body(&signed[fixed..])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::format::header::Header;

    fn ring(k: &MasterKey) -> KeyRing {
        KeyRing::from(MasterKey::from_bytes(*k.bytes()))
    }

    fn meta(key: &MasterKey) -> Meta {
        Meta {
            id: "database-20261124T150000Z-0a0b0c".into(),
            strategy: Strategy::Database,
            created: 1_795_532_400,
            created_nanos: 7,
            duration_ms: 12,
            host: "rvm-0001".into(),
            tool_version: "0.1.0".into(),
            sources: vec!["/var/lib/myrvm/rvm.sqlite".into()],
            files: 1,
            dirs: 0,
            symlinks: 0,
            skipped: 0,
            changed_while_read: 0,
            content_bytes: 4096,
            archive_bytes: 900,
            compressed: true,
            encrypted: true,
            key_id: key.id(),
            parts: vec![],
            database: Some(DatabaseInfo {
                page_size: 4096,
                page_count: 1,
                journal_mode: "wal".into(),
            }),
            hardlinks: 2,
            db_check: Some("ok".into()),
            schema_sha256: Some([3; 32]),
            tables: vec![("deposits".into(), 12), ("refunds".into(), 0)],
            parent: Some("database-20261124T090000Z-0a0b0b".into()),
        }
    }

    fn header(key: &MasterKey) -> Header {
        Header {
            flags: 3,
            frame_size: 4096,
            key_id: key.id(),
            salt: [9; 32],
            created: 1_795_532_400,
        }
    }

    /// Sign `body` as a sidecar of `h`.
    fn seal(body: &[u8], h: &Header, key: &MasterKey) -> Vec<u8> {
        let mut out = SIDECAR_MAGIC.to_vec();
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        let mut t = h.protection_with_key(Some(key)).unwrap().meta_tagger();
        t.update(&out);
        out.extend_from_slice(&t.finish());
        out
    }

    #[test]
    fn roundtrip_with_extension() {
        let key = MasterKey::from_bytes([5; 32]);
        let m = meta(&key);
        let h = header(&key);
        let bytes = encode(&m, &h, &h.protection(Some(&ring(&key))).unwrap());
        assert_eq!(decode(&bytes, Some(&ring(&key))).unwrap().1, m);
    }

    #[test]
    fn first_generation_body_still_reads() {
        let key = MasterKey::from_bytes([5; 32]);
        let m = meta(&key);
        let h = header(&key);
        let (v1, _) = m.to_wire();
        let body = postcard::to_stdvec(&v1).unwrap();
        let got = decode(&seal(&body, &h, &key), Some(&ring(&key))).unwrap().1;
        assert_eq!(got.hardlinks, 0);
        assert_eq!(got.db_check, None);
        assert_eq!(got.schema_sha256, None);
        assert!(got.tables.is_empty());
        assert_eq!(got.parent, None);
        assert_eq!(got.id, m.id);
        assert_eq!(got.strategy, Strategy::Database);
    }

    #[test]
    fn second_generation_body_still_reads() {
        let key = MasterKey::from_bytes([5; 32]);
        let m = meta(&key);
        let h = header(&key);
        let (v1, ext2) = m.to_wire();
        let mut body = postcard::to_stdvec(&v1).unwrap();
        body.extend_from_slice(&postcard::to_stdvec(&ext2).unwrap());
        let got = decode(&seal(&body, &h, &key), Some(&ring(&key))).unwrap().1;
        assert_eq!(got.db_check.as_deref(), Some("ok"));
        assert_eq!(got.hardlinks, 2);
        assert_eq!(got.schema_sha256, None);
        assert!(got.tables.is_empty());
        assert_eq!(got.parent, None);
        // A body that ends inside block 4 is an error, not a default.
        let mut cut = encode_body(&m);
        cut.pop();
        assert!(decode(&seal(&cut, &h, &key), Some(&ring(&key))).is_err());
    }

    #[test]
    fn newer_blocks_are_ignored_and_bad_strategy_refused() {
        let key = MasterKey::from_bytes([5; 32]);
        let m = meta(&key);
        let h = header(&key);
        let mut body = encode_body(&m);
        body.extend_from_slice(b"\x03future block");
        assert_eq!(
            decode(&seal(&body, &h, &key), Some(&ring(&key))).unwrap().1,
            m
        );
        let (mut v1, ext) = m.to_wire();
        v1.strategy = "photos".into();
        let mut body = postcard::to_stdvec(&v1).unwrap();
        body.extend_from_slice(&postcard::to_stdvec(&ext).unwrap());
        body.extend_from_slice(&postcard::to_stdvec(&m.to_ext3()).unwrap());
        body.extend_from_slice(&postcard::to_stdvec(&m.to_ext4()).unwrap());
        let e = decode(&seal(&body, &h, &key), Some(&ring(&key))).unwrap_err();
        assert!(e.to_string().contains("unknown strategy"), "{e}");
    }
}

//! One frame: deflate, then AES-256-CTR, then a tag over its position.
//!
//! On disk a frame is
//! `stored_len u32 LE | plain_len u32 LE | flags u8 | stored bytes | tag[32]`,
//! and its tag is MAC(header || frame index u64 LE || the 9 frame-header bytes
//! || stored bytes). Binding the index and the final flag into the tag is what
//! makes a dropped, duplicated, reordered or truncated frame fail
//! authentication: a reader counts frames itself and must end on exactly one
//! frame flagged final. Nothing is decrypted or inflated before its tag checks.

use std::io::{Read, Write};
use std::sync::Arc;

use miniz_oxide::deflate::core::{
    compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
};

use super::header::HEADER_LEN;
use super::FormatError;
use crate::crypto::{ct_eq, Protection, Tagger, TAG_LEN};

pub const FRAME_HEADER_LEN: usize = 9;
pub const FLAG_DEFLATED: u8 = 1;
pub const FLAG_FINAL: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_DEFLATED | FLAG_FINAL;

/// Seals plaintext chunks into frames, numbering them from 0.
pub struct FrameSealer {
    protection: Protection,
    header_tagger: Tagger,
    compressor: Option<Box<CompressorOxide>>,
    scratch: Vec<u8>,
    next_index: u64,
}

impl FrameSealer {
    /// `level` is the deflate level (1..=10); `None` stores every frame raw.
    pub fn new(
        protection: Protection,
        header: &[u8; HEADER_LEN],
        frame_size: u32,
        level: Option<u8>,
    ) -> Self {
        let mut header_tagger = protection.frame_tagger();
        header_tagger.update(header);
        let compressor = level.map(|l| {
            // window_bits 0: raw deflate, no zlib wrapper (the tag already
            // guards integrity).
            Box::new(CompressorOxide::new(create_comp_flags_from_zip_params(
                i32::from(l),
                0,
                0,
            )))
        });
        FrameSealer {
            protection,
            header_tagger,
            compressor,
            scratch: vec![0; frame_size as usize],
            next_index: 0,
        }
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Seal `plain` as the next frame and write it; returns bytes written.
    pub fn seal(&mut self, plain: &[u8], last: bool, out: &mut impl Write) -> std::io::Result<u64> {
        debug_assert!(plain.len() <= self.scratch.len());
        let mut flags = if last { FLAG_FINAL } else { 0 };
        let stored_len = match self.deflate_into_scratch(plain, last) {
            Some(n) => {
                flags |= FLAG_DEFLATED;
                n
            }
            None => {
                self.scratch[..plain.len()].copy_from_slice(plain);
                plain.len()
            }
        };
        let index = self.next_index;
        self.next_index = index
            .checked_add(1)
            .ok_or_else(|| std::io::Error::other("too many frames"))?;
        let stored = &mut self.scratch[..stored_len];
        self.protection.apply_keystream(index, stored);
        let head = frame_head(stored_len as u32, plain.len() as u32, flags);
        let tag = frame_tag(&self.header_tagger, index, &head, stored);
        out.write_all(&head)?;
        out.write_all(stored)?;
        out.write_all(&tag)?;
        Ok((FRAME_HEADER_LEN + stored_len + TAG_LEN) as u64)
    }

    /// Deflate into scratch; `Some(len)` only if the result is smaller.
    fn deflate_into_scratch(&mut self, plain: &[u8], last: bool) -> Option<usize> {
        let c = self
            .compressor
            .as_mut()
            .filter(|_| !last && plain.len() > 1)?;
        c.reset();
        // An output buffer one byte shorter than the input: if deflate does
        // not finish inside it, the frame does not shrink and is stored raw.
        let limit = plain.len() - 1;
        let (status, _, out_len) =
            compress(c, plain, &mut self.scratch[..limit], TDEFLFlush::Finish);
        (status == TDEFLStatus::Done).then_some(out_len)
    }
}

fn frame_head(stored_len: u32, plain_len: u32, flags: u8) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&stored_len.to_le_bytes());
    h[4..8].copy_from_slice(&plain_len.to_le_bytes());
    h[8] = flags;
    h
}

fn frame_tag(header_tagger: &Tagger, index: u64, head: &[u8], stored: &[u8]) -> [u8; TAG_LEN] {
    let mut t = header_tagger.clone();
    t.update(&index.to_le_bytes());
    t.update(head);
    t.update(stored);
    t.finish()
}

/// What [`FrameOpener::open_next`] found; the plaintext is in [`FrameOpener::plain`].
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    pub last: bool,
    /// Bytes the frame occupied in the archive stream.
    pub stored_bytes: u64,
}

/// What opening one frame needs besides its bytes: the archive's keys,
/// the tag state over its header, its frame size and whether frames may be
/// deflated. Shared (read only) with the read-ahead thread
/// ([`super::ahead`]).
pub struct FrameCodec {
    protection: Protection,
    header_tagger: Tagger,
    frame_size: usize,
    compressed: bool,
}

/// The lengths and flags of a frame head whose lengths are within the
/// frame size (a bad one is reported as a tag failure: a flipped bit).
#[derive(Clone, Copy, Debug)]
pub struct FrameHead {
    pub bytes: [u8; FRAME_HEADER_LEN],
    pub stored_len: usize,
    pub plain_len: usize,
    pub flags: u8,
}

impl FrameHead {
    /// The frame says it is the final one (not yet authenticated).
    pub fn says_last(&self) -> bool {
        self.flags & FLAG_FINAL != 0
    }
}

/// Where an opened frame's plaintext is, and how long.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    pub last: bool,
    /// In the plain buffer (inflated) rather than the stored one.
    pub in_plain: bool,
    pub len: usize,
}

impl FrameCodec {
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Parse the head of frame `index`, checking its lengths before
    /// anything is read by them.
    pub fn head(&self, index: u64, head: [u8; FRAME_HEADER_LEN]) -> Result<FrameHead, FormatError> {
        let stored_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let plain_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let flags = head[8];
        let sane = stored_len <= self.frame_size
            && plain_len <= self.frame_size
            && flags & !KNOWN_FLAGS == 0
            && (flags & FLAG_DEFLATED != 0 || stored_len == plain_len);
        if !sane {
            return Err(FormatError::Tampered { frame: index });
        }
        Ok(FrameHead {
            bytes: head,
            stored_len,
            plain_len,
            flags,
        })
    }

    /// Authenticate frame `index` (`stored`: exactly its stored bytes),
    /// then decrypt it in place and inflate it into `plain` (at least
    /// `frame_size` long). Nothing is decrypted or inflated before the
    /// tag checks.
    pub fn open(
        &self,
        index: u64,
        head: &FrameHead,
        stored: &mut [u8],
        tag: &[u8; TAG_LEN],
        plain: &mut [u8],
    ) -> Result<Decoded, FormatError> {
        let expected = frame_tag(&self.header_tagger, index, &head.bytes, stored);
        if !ct_eq(&expected, tag) {
            return Err(FormatError::Tampered { frame: index });
        }
        self.protection.apply_keystream(index, stored);
        let last = head.flags & FLAG_FINAL != 0;
        if head.flags & FLAG_DEFLATED == 0 {
            return Ok(Decoded {
                last,
                in_plain: false,
                len: head.stored_len,
            });
        }
        if !self.compressed || last {
            return Err(FormatError::Corrupt(format!(
                "frame {index} is deflated but must not be"
            )));
        }
        let out = &mut plain[..head.plain_len];
        let n = miniz_oxide::inflate::decompress_slice_iter_to_slice(
            out,
            std::iter::once(&*stored),
            false,
            true,
        )
        .map_err(|e| FormatError::Corrupt(format!("frame {index} does not inflate: {e:?}")))?;
        if n != head.plain_len {
            return Err(FormatError::Corrupt(format!(
                "frame {index} inflates to {n} bytes, not {}",
                head.plain_len
            )));
        }
        Ok(Decoded {
            last,
            in_plain: true,
            len: n,
        })
    }
}

/// Read frame bytes after its head: `stored` (exactly its stored length)
/// and the tag.
pub fn read_body(
    r: &mut impl Read,
    stored: &mut [u8],
    tag: &mut [u8; TAG_LEN],
) -> std::io::Result<()> {
    r.read_exact(stored)?;
    r.read_exact(tag)
}

/// Opens frames in order, checking each tag before touching the bytes.
pub struct FrameOpener {
    codec: Arc<FrameCodec>,
    next_index: u64,
    stored: Vec<u8>,
    plain: Vec<u8>,
    /// Where the last opened frame's plaintext is: (in `plain`?, length).
    current: (bool, usize),
}

impl FrameOpener {
    pub fn new(
        protection: Protection,
        header: &[u8; HEADER_LEN],
        frame_size: u32,
        compressed: bool,
    ) -> Self {
        let mut header_tagger = protection.frame_tagger();
        header_tagger.update(header);
        let size = frame_size as usize;
        FrameOpener {
            codec: Arc::new(FrameCodec {
                protection,
                header_tagger,
                frame_size: size,
                compressed,
            }),
            next_index: 0,
            stored: vec![0; size],
            plain: vec![0; size],
            current: (false, 0),
        }
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Continue at frame `index` (after the caller sought to its offset).
    pub fn reposition(&mut self, index: u64) {
        self.next_index = index;
    }

    /// The keys and sizes, for a read-ahead thread.
    pub fn codec(&self) -> Arc<FrameCodec> {
        Arc::clone(&self.codec)
    }

    /// Read, authenticate, decrypt and inflate the next frame.
    pub fn open_next(&mut self, r: &mut impl Read) -> Result<Opened, FormatError> {
        self.current = (false, 0);
        let index = self.next_index;
        let mut head = [0u8; FRAME_HEADER_LEN];
        r.read_exact(&mut head)?;
        let head = self.codec.head(index, head)?;
        let stored = &mut self.stored[..head.stored_len];
        let mut tag = [0u8; TAG_LEN];
        read_body(r, stored, &mut tag)?;
        let d = self
            .codec
            .open(index, &head, stored, &tag, &mut self.plain)?;
        self.next_index = index
            .checked_add(1)
            .ok_or(FormatError::Corrupt("frame index overflows".into()))?;
        self.current = (d.in_plain, d.len);
        Ok(Opened {
            last: d.last,
            stored_bytes: (FRAME_HEADER_LEN + head.stored_len + TAG_LEN) as u64,
        })
    }
}

impl FrameOpener {
    /// Plaintext of the frame last opened (empty after a failed open).
    pub fn plain(&self) -> &[u8] {
        match self.current {
            (true, n) => &self.plain[..n],
            (false, n) => &self.stored[..n],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ArchiveKeys, MasterKey};

    fn prot() -> Protection {
        Protection::Encrypted(ArchiveKeys::derive(
            &MasterKey::from_bytes([3; 32]),
            &[4; 32],
        ))
    }

    fn sealed(frames: &[(&[u8], bool)]) -> Vec<u8> {
        let mut s = FrameSealer::new(prot(), &[0; 64], 4096, Some(1));
        let mut out = Vec::new();
        for (p, last) in frames {
            s.seal(p, *last, &mut out).unwrap();
        }
        out
    }

    fn open_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, FormatError> {
        let mut o = FrameOpener::new(prot(), &[0; 64], 4096, true);
        let mut r = bytes;
        let mut got = Vec::new();
        loop {
            let f = o.open_next(&mut r)?;
            got.push(o.plain().to_vec());
            if f.last {
                return Ok(got);
            }
        }
    }

    #[test]
    fn roundtrip_compressible_and_random() {
        let text = vec![b'a'; 4000];
        let mut noise = vec![0u8; 4000];
        crate::crypto::fill_random(&mut noise).unwrap();
        let bytes = sealed(&[(&text, false), (&noise, false), (b"end", true)]);
        let got = open_all(&bytes).unwrap();
        assert_eq!(got, vec![text, noise, b"end".to_vec()]);
    }

    #[test]
    fn reordered_frames_fail() {
        let a = sealed(&[(b"first", false), (b"second", false), (b"end", true)]);
        let len0 = FRAME_HEADER_LEN + 5 + TAG_LEN;
        let len1 = FRAME_HEADER_LEN + 6 + TAG_LEN;
        let mut swapped = a[len0..len0 + len1].to_vec();
        swapped.extend_from_slice(&a[..len0]);
        swapped.extend_from_slice(&a[len0 + len1..]);
        assert!(matches!(
            open_all(&swapped),
            Err(FormatError::Tampered { frame: 0 })
        ));
    }

    #[test]
    fn every_flipped_bit_fails() {
        let a = sealed(&[(b"hello world", false), (b"end", true)]);
        for i in 0..a.len() * 8 {
            let mut b = a.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(open_all(&b).is_err(), "bit {i} not detected");
        }
    }

    #[test]
    fn truncation_fails() {
        let a = sealed(&[(b"hello world", false), (b"end", true)]);
        for cut in 0..a.len() {
            assert!(open_all(&a[..cut]).is_err());
        }
    }
}

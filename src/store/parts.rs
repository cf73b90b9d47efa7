//! An archive stream spread over numbered part files (FAT32 caps a file at
//! 4 GiB). Writing rolls over to a new part at the limit; reading presents
//! the parts as one seekable stream and hashes each part as it goes, so one
//! sequential pass checks the SHA-256 the sidecar records for every part.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::format::sidecar::PartInfo;
use crate::fsutil::{sync_dir, tmp_path};

/// File name of part `n` of archive `id`.
pub fn part_name(id: &str, n: usize) -> String {
    format!("{id}.{n:03}.rvb")
}

struct Current {
    file: File,
    tmp: PathBuf,
    name: String,
    written: u64,
    hasher: Sha256,
}

/// Writes parts under temporary names; `finish` publishes them.
pub struct PartWriter {
    dir: PathBuf,
    id: String,
    limit: u64,
    current: Option<Current>,
    done: Vec<(PathBuf, PartInfo)>,
}

impl PartWriter {
    pub fn new(dir: &Path, id: &str, limit: u64) -> Self {
        PartWriter {
            dir: dir.to_path_buf(),
            id: id.to_string(),
            limit,
            current: None,
            done: Vec::new(),
        }
    }

    fn open_next(&mut self) -> io::Result<()> {
        let name = part_name(&self.id, self.done.len());
        let tmp = tmp_path(&self.dir.join(&name));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        self.current = Some(Current {
            file,
            tmp,
            name,
            written: 0,
            hasher: Sha256::new(),
        });
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(c) = self.current.take() {
            c.file.sync_all()?;
            let info = PartInfo {
                name: c.name,
                bytes: c.written,
                sha256: c.hasher.finalize().into(),
            };
            self.done.push((c.tmp, info));
        }
        Ok(())
    }

    /// fsync and rename every part to its final name; fsync the directory.
    pub fn finish(mut self) -> Result<Vec<PartInfo>> {
        self.close_current().at("sync archive part in", &self.dir)?;
        for (tmp, info) in &self.done {
            let to = self.dir.join(&info.name);
            fs::rename(tmp, &to).ctx(|| format!("cannot publish {}", to.display()))?;
        }
        sync_dir(&self.dir)?;
        let done = std::mem::take(&mut self.done);
        Ok(done.into_iter().map(|(_, info)| info).collect())
    }

    /// Remove everything written so far (after a failure).
    pub fn abort(mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        if let Some(c) = self.current.take() {
            let _ = fs::remove_file(&c.tmp);
        }
        for (tmp, _) in self.done.drain(..) {
            let _ = fs::remove_file(tmp);
        }
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // A writer dropped without `finish` (error, cancel) leaves nothing.
        self.discard();
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.written >= self.limit)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let limit = self.limit;
        let Some(c) = self.current.as_mut() else {
            return Err(io::Error::other("no open part"));
        };
        let room = usize::try_from(limit - c.written).unwrap_or(usize::MAX);
        let n = c.file.write(&buf[..buf.len().min(room)])?;
        c.hasher.update(&buf[..n]);
        c.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ReadPart {
    path: PathBuf,
    len: u64,
    start: u64,
    hasher: Sha256,
    hashed: u64,
}

/// The parts of one archive as a single `Read + Seek` stream.
pub struct PartReader {
    parts: Vec<ReadPart>,
    pos: u64,
    total: u64,
    open: Option<(usize, File)>,
}

impl PartReader {
    /// Open parts, checking each exists with the size the sidecar records.
    pub fn open(dir: &Path, infos: &[PartInfo]) -> Result<Self> {
        let mut parts = Vec::with_capacity(infos.len());
        let mut start = 0;
        for info in infos {
            let path = dir.join(&info.name);
            let len = fs::metadata(&path).at("open archive part", &path)?.len();
            if len != info.bytes {
                return Err(crate::error::msg(format!(
                    "archive part {} is {len} bytes but its sidecar says {}: it is truncated or damaged",
                    path.display(),
                    info.bytes
                )));
            }
            parts.push(ReadPart {
                path,
                len,
                start,
                hasher: Sha256::new(),
                hashed: 0,
            });
            start += len;
        }
        Ok(PartReader {
            parts,
            pos: 0,
            total: start,
            open: None,
        })
    }

    /// SHA-256 of each part, if every byte of it was read in order.
    pub fn part_hashes(&self) -> Vec<Option<[u8; 32]>> {
        self.parts
            .iter()
            .map(|p| (p.hashed == p.len).then(|| p.hasher.clone().finalize().into()))
            .collect()
    }

    fn part_at(&self, pos: u64) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| pos >= p.start && pos < p.start + p.len)
    }
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(i) = self.part_at(self.pos) else {
            return Ok(0);
        };
        if self.open.as_ref().map(|(j, _)| *j) != Some(i) {
            let f = File::open(&self.parts[i].path)?;
            // Archives are mostly read front to back: a larger kernel
            // read-ahead keeps a cold read of a part from waiting on the
            // disk at every step. Only advice: its failure changes nothing.
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Sequential);
            self.open = Some((i, f));
        }
        let part = &mut self.parts[i];
        let offset = self.pos - part.start;
        let want = buf
            .len()
            .min(usize::try_from(part.len - offset).unwrap_or(usize::MAX));
        let Some((_, file)) = self.open.as_mut() else {
            return Ok(0);
        };
        file.seek(SeekFrom::Start(offset))?;
        let n = file.read(&mut buf[..want])?;
        if offset == part.hashed {
            part.hasher.update(&buf[..n]);
            part.hashed += n as u64;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.total.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_rejoin() {
        let dir = std::env::temp_dir().join(format!("rvb-parts-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = PartWriter::new(&dir, "x", 65_536);
        w.write_all(&data).unwrap();
        let infos = w.finish().unwrap();
        assert_eq!(infos.len(), 5);
        let mut r = PartReader::open(&dir, &infos).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        for (h, info) in r.part_hashes().iter().zip(&infos) {
            assert_eq!(h.unwrap(), info.sha256);
        }
        r.seek(SeekFrom::Start(70_000)).unwrap();
        let mut b = [0u8; 10];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b[..], &data[70_000..70_010]);
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! The writer's index while entries are written: encoded index records in
//! memory up to a limit, then in a temporary file, so memory stays fixed
//! however many files a tree holds. The file (named by the caller, with a
//! `.tmp` suffix so a killed run's copy is cleaned as a leftover) is removed
//! once the index has been copied into the archive.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

/// Bytes of encoded index kept in memory before spilling to the file.
pub const IN_MEMORY_LIMIT: usize = 256 * 1024;

pub struct IndexSpill {
    memory: Vec<u8>,
    path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    records: u64,
}

impl IndexSpill {
    /// `path`: where to spill; `None` keeps everything in memory.
    pub fn new(path: Option<PathBuf>) -> IndexSpill {
        IndexSpill {
            memory: Vec::new(),
            path,
            file: None,
            records: 0,
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Append one encoded index record.
    pub fn push(&mut self, encoded: &[u8]) -> io::Result<()> {
        self.records += 1;
        if self.file.is_none() && self.memory.len() + encoded.len() > IN_MEMORY_LIMIT {
            if let Some(path) = &self.path {
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)?;
                let mut w = BufWriter::new(f);
                w.write_all(&self.memory)?;
                self.memory = Vec::new();
                self.file = Some(w);
            }
        }
        match self.file.as_mut() {
            Some(w) => w.write_all(encoded),
            None => {
                self.memory.extend_from_slice(encoded);
                Ok(())
            }
        }
    }

    /// Hand every encoded byte to `sink` in order, then remove the file.
    pub fn drain<E: From<io::Error>>(
        mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(w) = self.file.take() else {
            return sink(&self.memory);
        };
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let path = self.path.clone().unwrap_or_default();
        let mut f = File::open(&path)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sink(&buf[..n])?;
        }
        Ok(())
    }
}

impl Drop for IndexSpill {
    fn drop(&mut self) {
        if self.file.is_some() || self.path.as_ref().is_some_and(|p| p.exists()) {
            if let Some(p) = &self.path {
                let _ = fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_and_drains_in_order() {
        let path = std::env::temp_dir().join(format!("rvb-spill-{}.tmp", std::process::id()));
        let mut s = IndexSpill::new(Some(path.clone()));
        let mut expected = Vec::new();
        for i in 0..100_000u32 {
            let rec = i.to_le_bytes();
            s.push(&rec).unwrap();
            expected.extend_from_slice(&rec);
        }
        assert!(path.exists(), "400 KB of records must spill");
        assert_eq!(s.records(), 100_000);
        let mut got = Vec::new();
        s.drain(|b| {
            got.extend_from_slice(b);
            Ok::<(), io::Error>(())
        })
        .unwrap();
        assert_eq!(got, expected);
        assert!(!path.exists(), "the spill file is removed");
    }
}

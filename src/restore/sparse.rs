//! Writing restored content with holes: every whole, aligned 4 KiB block
//! of zeros is skipped (a seek instead of a write), and the file gets its
//! full length at the end, so a mostly-empty file (a preallocated log, a
//! disk image) takes little space.
//!
//! Invariants: the bytes read back equal the bytes written; only blocks
//! that start at a multiple of [`BLOCK`] and are entirely zero become
//! holes; memory is one block.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

pub const BLOCK: usize = 4096;

pub struct SparseWriter<'a> {
    file: &'a mut File,
    /// The start of a block not yet complete (never a whole block).
    partial: Vec<u8>,
    /// Zero bytes skipped and not yet seeked over.
    hole: u64,
    written: u64,
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

impl<'a> SparseWriter<'a> {
    pub fn new(file: &'a mut File) -> SparseWriter<'a> {
        SparseWriter {
            file,
            partial: Vec::with_capacity(BLOCK),
            hole: 0,
            written: 0,
        }
    }

    fn emit(&mut self, data: &[u8]) -> io::Result<()> {
        if is_zero(data) {
            self.hole += data.len() as u64;
        } else {
            if self.hole > 0 {
                self.file.seek(SeekFrom::Current(self.hole as i64))?;
                self.hole = 0;
            }
            self.file.write_all(data)?;
        }
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < BLOCK {
                return Ok(());
            }
            let block = std::mem::take(&mut self.partial);
            self.emit(&block)?;
            self.partial = block;
            self.partial.clear();
        }
        let whole = data.len() / BLOCK * BLOCK;
        let mut i = 0;
        while i < whole {
            let zero = is_zero(&data[i..i + BLOCK]);
            let mut j = i + BLOCK;
            while j < whole && is_zero(&data[j..j + BLOCK]) == zero {
                j += BLOCK;
            }
            self.emit(&data[i..j])?;
            i = j;
        }
        self.partial.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// Write what is left and give the file its length; returns it.
    pub fn finish(mut self) -> io::Result<u64> {
        let tail = std::mem::take(&mut self.partial);
        self.emit(&tail)?;
        self.file.set_len(self.written)?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn holes_read_back_as_zeros_and_take_no_space() {
        let path = std::env::temp_dir().join(format!("rvb-sparse-{}", std::process::id()));
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut expected = Vec::new();
        {
            let mut w = SparseWriter::new(&mut f);
            // Odd chunk sizes so blocks straddle chunks.
            let pieces: Vec<Vec<u8>> = vec![
                b"head".to_vec(),
                vec![0; 3 * 1024 * 1024 + 17],
                vec![7; 5000],
                vec![0; 8 * 1024 * 1024],
                b"tail".to_vec(),
                vec![0; 100],
            ];
            for p in &pieces {
                for c in p.chunks(12_345) {
                    w.write(c).unwrap();
                }
                expected.extend_from_slice(p);
            }
            assert_eq!(w.finish().unwrap(), expected.len() as u64);
        }
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == expected, "content differs");
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert!(blocks * 512 < 1024 * 1024, "{blocks} blocks: no holes made");
        let _ = std::fs::remove_file(&path);
    }
}

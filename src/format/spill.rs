//! The writer's index while entries are written: encoded index records in
//! memory up to a limit, then in a spill sink the caller provides, so memory
//! stays fixed however many files a tree holds. This module never touches
//! the file system itself: the sink is any `Read + Write + Seek` (the
//! backup gives it an unlinked temporary file, see `store::spill`; tests a
//! `Cursor`), opened only once the in-memory limit is reached.

use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

/// Bytes of encoded index kept in memory before spilling to the sink.
pub const IN_MEMORY_LIMIT: usize = 256 * 1024;

/// Where the index goes past [`IN_MEMORY_LIMIT`]: written once in order,
/// then rewound and read back once.
pub trait SpillFile: Read + Write + Seek {}
impl<T: Read + Write + Seek> SpillFile for T {}

/// Opens the spill sink when it is first needed.
pub type SpillOpener = Box<dyn FnOnce() -> io::Result<Box<dyn SpillFile>>>;

pub struct IndexSpill {
    memory: Vec<u8>,
    opener: Option<SpillOpener>,
    file: Option<BufWriter<Box<dyn SpillFile>>>,
    records: u64,
}

impl IndexSpill {
    /// `opener`: where to spill; `None` keeps everything in memory.
    pub fn new(opener: Option<SpillOpener>) -> IndexSpill {
        IndexSpill {
            memory: Vec::new(),
            opener,
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
            if let Some(open) = self.opener.take() {
                let mut w = BufWriter::with_capacity(64 * 1024, open()?);
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

    /// Hand every encoded byte to `sink` in order.
    pub fn drain<E: From<io::Error>>(
        mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(w) = self.file.take() else {
            return sink(&self.memory);
        };
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn spills_and_drains_in_order() {
        let opened = Rc::new(Cell::new(false));
        let flag = opened.clone();
        let opener: SpillOpener = Box::new(move || {
            flag.set(true);
            Ok(Box::new(io::Cursor::new(Vec::new())) as Box<dyn SpillFile>)
        });
        let mut s = IndexSpill::new(Some(opener));
        let mut expected = Vec::new();
        for i in 0..100_000u32 {
            let rec = i.to_le_bytes();
            s.push(&rec).unwrap();
            expected.extend_from_slice(&rec);
            if expected.len() <= IN_MEMORY_LIMIT {
                assert!(!opened.get(), "opened before the limit");
            }
        }
        assert!(opened.get(), "400 KB of records must spill");
        assert!(s.memory.is_empty(), "memory is released once spilled");
        assert_eq!(s.records(), 100_000);
        let mut got = Vec::new();
        s.drain(|b| {
            got.extend_from_slice(b);
            Ok::<(), io::Error>(())
        })
        .unwrap();
        assert_eq!(got, expected);
    }
}

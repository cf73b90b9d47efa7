//! The file behind the archive writer's index spill (`format::spill`).
//!
//! Created beside the archive's parts (same disk, same free space), under a
//! `.tmp` name, and unlinked as soon as it is open: the descriptor keeps the
//! data, so nothing is left behind however the backup ends. (Should the
//! unlink fail, the `.tmp` name is swept as a leftover by the next lock
//! holder.)

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::format::spill::{SpillFile, SpillOpener};
use crate::fsutil::tmp_path;

/// An opener for the index spill of archive `id` in `dir`.
pub fn index_spill(dir: &Path, id: &str) -> SpillOpener {
    let path = tmp_path(&dir.join(format!("{id}.index")));
    Box::new(move || {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        if let Err(e) = fs::remove_file(&path) {
            log::debug!("cannot unlink the index spill {}: {e}", path.display());
        }
        Ok(Box::new(f) as Box<dyn SpillFile>)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn spill_file_leaves_no_name_behind() {
        let dir = std::env::temp_dir().join(format!("rvb-spill-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut f = index_spill(&dir, "x-1")().unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "unlinked at once");
        f.write_all(b"hello").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        drop(f);
        fs::remove_dir_all(&dir).unwrap();
    }
}

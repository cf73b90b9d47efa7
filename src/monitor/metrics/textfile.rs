//! The node_exporter textfile: `textfile_dir/rvm_backup.prom`, replaced
//! atomically so node_exporter never reads half a file.
//!
//! Invariants: the text is written under [`TMP_NAME`] in the same
//! directory (it does not end in `.prom`, so node_exporter's collector,
//! which reads only `*.prom`, never sees it), fsynced, renamed over
//! [`FILE_NAME`], and the directory fsynced. Everything happens relative
//! to one opened directory descriptor; the temporary file is created
//! with `O_EXCL | O_NOFOLLOW`, so a symlink planted there is never
//! followed; only a stale temporary file or symlink of our own name is
//! removed, and on failure only the file we created. Mode 0644: the
//! exporter runs as another user.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{msg, IoContext, Result};
use rustix::fs::FileType;

use crate::safefs::Dir;

/// The file node_exporter reads.
pub const FILE_NAME: &str = "rvm_backup.prom";
/// Its temporary name while written.
pub const TMP_NAME: &str = ".rvm_backup.prom.tmp";

/// Replace `dir/rvm_backup.prom` with `text`, crash-safely.
pub fn write(dir: &Path, text: &str) -> Result<()> {
    let d = Dir::open_path(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => msg(format!(
            "textfile_dir {} does not exist: create it (node_exporter's --collector.textfile.directory) or remove textfile_dir from the config",
            dir.display()
        )),
        std::io::ErrorKind::NotADirectory => msg(format!(
            "textfile_dir {} is not a directory: give node_exporter's --collector.textfile.directory",
            dir.display()
        )),
        _ => crate::error::Error::Io {
            what: format!("cannot open textfile_dir {}", dir.display()),
            source: e,
        },
    })?;
    let tmp = dir.join(TMP_NAME);
    match d.stat(TMP_NAME.as_bytes()).at("inspect", &tmp)? {
        None => {}
        // What a crash left (or a planted link: unlink never follows it).
        Some(st)
            if matches!(
                FileType::from_raw_mode(st.st_mode),
                FileType::RegularFile | FileType::Symlink
            ) =>
        {
            d.unlink(TMP_NAME.as_bytes()).at("remove stale", &tmp)?;
        }
        Some(_) => {
            return Err(msg(format!(
                "{} is in the way and is not a file rvm-backup wrote: remove it",
                tmp.display()
            )))
        }
    }
    let mut f = d
        .create_file(TMP_NAME.as_bytes(), 0o644)
        .at("create", &tmp)?;
    let (dev, ino) = crate::safefs::file_id(&f).at("inspect", &tmp)?;
    let result = (|| {
        // The umask may have narrowed the mode; node_exporter must read it.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .at("set the mode of", &tmp)?;
        f.write_all(text.as_bytes()).at("write", &tmp)?;
        f.sync_all().at("sync", &tmp)?;
        d.rename(TMP_NAME.as_bytes(), FILE_NAME.as_bytes())
            .ctx(|| format!("cannot rename {} to {FILE_NAME}", tmp.display()))?;
        d.fsync().at("sync directory", dir)
    })();
    if result.is_err() {
        let _ = d.unlink_if(TMP_NAME.as_bytes(), dev, ino);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-textfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let d = scratch("replace");
        write(&d, "a 1\n").unwrap();
        write(&d, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(d.join(FILE_NAME)).unwrap(), "a 2\n");
        assert_eq!(
            std::fs::metadata(d.join(FILE_NAME)).unwrap().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        assert!(!TMP_NAME.ends_with(".prom"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_planted_link_is_not_followed_and_odd_dirs_are_clear_errors() {
        let d = scratch("planted");
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.join(TMP_NAME)).unwrap();
        write(&d, "a 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(d.join(FILE_NAME)).unwrap(), "a 1\n");
        // A directory in the way is not removed.
        std::fs::create_dir(d.join(TMP_NAME)).unwrap();
        let e = write(&d, "a 2\n").unwrap_err().to_string();
        assert!(e.contains("in the way"), "{e}");
        assert!(d.join(TMP_NAME).is_dir());
        let e = write(&d.join("missing"), "x").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = write(&victim, "x").unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! Is there a stick at `DIR`? The check `export` makes before it writes a
//! byte, and the daemon makes before it schedules an export.
//!
//! `DIR`'s file system is found in `/proc/self/mountinfo` by the device
//! number of `DIR` (`major:minor`; FUSE mounts such as fusefat have `0:NN`).
//! A stick is refused when:
//! - `DIR` is missing, or lies on the device of `/` or of `backup_dir` (then
//!   nothing is mounted there, and writing would fill the card it protects):
//!   [`StickError::NoStick`];
//! - its file system is not one a stick carries (FAT or ext):
//!   [`StickError::WrongType`];
//! - it is mounted read-only: [`StickError::ReadOnly`].
//!
//! Invariants: the mountinfo parser is total (any line, however hostile,
//! gives an entry or `None`, never a panic); at most
//! [`MAX_MOUNTINFO_LEN`] bytes and [`MAX_MOUNTS`] lines are read.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// File systems a recovery stick may carry.
pub const ALLOWED_FSTYPES: [&str; 8] = [
    "vfat",
    "msdos",
    "exfat",
    "ext2",
    "ext3",
    "ext4",
    "fuse.fusefat",
    "fuseblk",
];

/// Largest mountinfo read.
pub const MAX_MOUNTINFO_LEN: usize = 4 << 20;
/// Most mount lines looked at.
pub const MAX_MOUNTS: usize = 10_000;

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub major: u32,
    pub minor: u32,
    /// The mount point, unescaped (`\040` is a space).
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,noatime`).
    pub mount_options: String,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        ro(&self.mount_options) || ro(&self.super_options)
    }
}

/// Undo the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash). A backslash not followed by three octal
/// digits that fit a byte is kept as it is.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let digits = b.get(i + 1..i + 4).unwrap_or_default();
            if digits.len() == 3 && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parse one mountinfo line; `None` when it is not one.
pub fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let (major, minor) = fields[2].split_once(':')?;
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(fields[4]))),
        mount_options: fields[5].to_string(),
        fstype: String::from_utf8_lossy(&unescape(fields[sep + 1])).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
        super_options: fields[sep + 3].to_string(),
    })
}

/// Parse a whole mountinfo text (at most [`MAX_MOUNTS`] lines).
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .take(MAX_MOUNTS)
        .filter_map(parse_line)
        .collect()
}

/// Why `DIR` is no place to export to.
#[derive(Debug, PartialEq, Eq)]
pub enum StickError {
    /// Nothing is mounted there: the reason.
    NoStick { dir: PathBuf, why: String },
    /// Mounted, but not a file system a stick carries.
    WrongType { dir: PathBuf, fstype: String },
    /// Mounted read-only.
    ReadOnly { dir: PathBuf },
}

impl std::fmt::Display for StickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StickError::NoStick { dir, why } => write!(
                f,
                "no stick mounted at {}: {why}; plug in the recovery stick (FAT32 or ext4) and mount it there",
                dir.display()
            ),
            StickError::WrongType { dir, fstype } => write!(
                f,
                "the file system at {} is {fstype}, not FAT/ext: use a stick formatted FAT32, exFAT or ext4",
                dir.display()
            ),
            StickError::ReadOnly { dir } => write!(
                f,
                "the stick at {} is read-only: remount it read-write (mount -o remount,rw {}) or check the stick's write-protect switch",
                dir.display(),
                dir.display()
            ),
        }
    }
}

impl std::error::Error for StickError {}

/// The stick found at `DIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stick {
    pub dir: PathBuf,
    /// `st_dev` of `DIR`: the stick is still there while `DIR` has it.
    pub dev: u64,
    pub mount: MountEntry,
}

impl Stick {
    /// Whether `DIR` is still on the stick found (a pulled or lazily
    /// unmounted stick leaves the empty mount point behind).
    pub fn still_there(&self) -> bool {
        std::fs::metadata(&self.dir).is_ok_and(|m| m.dev() == self.dev)
    }
}

/// The device of `p`, or of its nearest existing ancestor.
fn device_of(p: &Path) -> Option<u64> {
    p.ancestors()
        .find_map(|a| std::fs::metadata(a).ok())
        .map(|m| m.dev())
}

/// Check that a writable stick of an allowed type is mounted at `dir`
/// (see the module doc).
pub fn check(dir: &Path, backup_dir: &Path) -> Result<Stick, StickError> {
    let no = |why: String| StickError::NoStick {
        dir: dir.to_path_buf(),
        why,
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(no("the directory does not exist".into()))
        }
        Err(e) => return Err(no(format!("it cannot be looked at ({e})"))),
    };
    if !meta.is_dir() {
        return Err(no("it is not a directory".into()));
    }
    let dev = meta.dev();
    if device_of(Path::new("/")) == Some(dev) {
        return Err(no(
            "it is on the board's own root file system, not on a stick".into(),
        ));
    }
    if device_of(backup_dir) == Some(dev) {
        return Err(no(format!(
            "it is on the same file system as backup_dir {}",
            backup_dir.display()
        )));
    }
    let text = crate::fsutil::read_regular(
        Path::new("/proc/self/mountinfo"),
        MAX_MOUNTINFO_LEN,
        crate::fsutil::Follow::Yes,
    )
    .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
    .map_err(|e| no(format!("/proc/self/mountinfo cannot be read ({e})")))?;
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let candidates: Vec<MountEntry> = parse(&text)
        .into_iter()
        .filter(|m| m.major == major && m.minor == minor)
        .collect();
    // Bind mounts share a device: prefer the mount point that holds `dir`.
    let mount = candidates
        .iter()
        .filter(|m| real.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .or(candidates.last())
        .cloned()
        .ok_or_else(|| {
            no(format!(
                "no mounted file system has its device {major}:{minor}"
            ))
        })?;
    if !ALLOWED_FSTYPES.contains(&mount.fstype.as_str()) {
        return Err(StickError::WrongType {
            dir: dir.to_path_buf(),
            fstype: mount.fstype,
        });
    }
    if mount.read_only() {
        return Err(StickError::ReadOnly {
            dir: dir.to_path_buf(),
        });
    }
    Ok(Stick {
        dir: dir.to_path_buf(),
        dev,
        mount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_real_lines() {
        let m = parse_line(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!((m.major, m.minor), (98, 0));
        assert_eq!(m.mount_point, PathBuf::from("/mnt2"));
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert!(!m.read_only());
        let f = parse_line(
            "120 27 0:52 / /tmp/my\\040stick rw,nosuid,nodev,relatime - fuse.fusefat /dev/loop0 ro,user_id=0",
        )
        .unwrap();
        assert_eq!((f.major, f.minor), (0, 52));
        assert_eq!(f.mount_point, PathBuf::from("/tmp/my stick"));
        assert_eq!(f.fstype, "fuse.fusefat");
        assert!(f.read_only(), "ro in the super options counts");
        // No optional fields at all.
        let n = parse_line("1 0 8:1 / / ro - vfat /dev/sda1 rw").unwrap();
        assert!(n.read_only());
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\040b\\011c\\012d\\134e"), b"a b\tc\nd\\e");
        assert_eq!(unescape("\\"), b"\\");
        assert_eq!(unescape("x\\04"), b"x\\04");
        assert_eq!(unescape("\\777"), b"\\777", "does not fit a byte");
        assert_eq!(unescape("\\08x"), b"\\08x");
        assert_eq!(unescape("é\\040"), "é ".as_bytes());
    }

    #[test]
    fn hostile_lines_are_none() {
        for bad in [
            "",
            "-",
            "1 2 3",
            "1 2 8:1 / / rw -",
            "1 2 8:1 / / rw - vfat",
            "1 2 8:1 / / rw - vfat src",
            "1 2 x:1 / / rw - vfat src rw",
            "1 2 8:99999999999 / / rw - vfat src rw",
            "1 2 81 / / rw - vfat src rw",
            "- - - - - - - - - -",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_root_file_system_is_no_stick() {
        let d = std::env::temp_dir().join(format!("rvb-stick-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = check(&d, &d).unwrap_err();
        assert!(matches!(e, StickError::NoStick { .. }), "{e}");
        assert!(e.to_string().starts_with("no stick mounted at"), "{e}");
        let e = check(&d.join("missing"), &d).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
            let _ = unescape(&s);
        }

        #[test]
        fn parse_never_panics_on_near_lines(
            a in "[0-9:]{0,12}", b in "[ -~]{0,30}", c in "[ -~]{0,30}", d in "[a-z.]{0,10}"
        ) {
            let _ = parse_line(&format!("1 2 {a} / {b} rw - {d} {c} rw"));
            let _ = parse_line(&format!("{a} {b} - {c} {d}"));
        }
    }
}

//! A real FAT32 USB stick for the tests: an image file made with
//! `mkfs.vfat`, mounted read-write with `fusefat -o rw+` (FUSE, no kernel
//! vfat needed), unmounted with `fusermount -u` when dropped.
//!
//! The tools are required: under CI a missing tool fails the test (the CI
//! script installs `dosfstools` and `fusefat`); elsewhere `Stick::new`
//! returns `None` and the test says it was skipped. Note that fusefat
//! reports a total size of 0 for FAT32 in `statvfs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::TempDir;

pub struct Stick {
    pub tmp: TempDir,
    pub image: PathBuf,
    /// The mount point: what `export --to` and `disaster-restore --from` get.
    pub dir: PathBuf,
    mounted: bool,
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x /usr/sbin/{tool} || test -x /sbin/{tool}"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mkfs() -> &'static str {
    for p in ["/usr/sbin/mkfs.vfat", "/sbin/mkfs.vfat"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    "mkfs.vfat"
}

impl Stick {
    /// A fresh FAT32 stick of `mib` MiB (at least 33: FAT32's minimum
    /// cluster count), mounted. `None` (skipped) when the tools are
    /// missing outside CI.
    pub fn new(name: &str, mib: u64) -> Option<Stick> {
        let missing: Vec<&str> = ["mkfs.vfat", "fusefat", "fusermount"]
            .into_iter()
            .filter(|t| !have(t))
            .collect();
        if !missing.is_empty() || !Path::new("/dev/fuse").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name}: a FAT32 stick needs {missing:?} and /dev/fuse; CI installs them (dosfstools, fusefat)"
            );
            eprintln!("SKIPPED {name}: no mkfs.vfat/fusefat/FUSE here");
            return None;
        }
        let tmp = TempDir::new(&format!("stick-{name}"));
        let image = tmp.path().join("stick.img");
        let dir = tmp.path().join("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(mib.max(33) << 20).unwrap();
        drop(f);
        let out = Command::new(mkfs())
            .args(["-F", "32", "-n", "RVMBACKUP"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mkfs.vfat: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Stick {
            tmp,
            image,
            dir,
            mounted: false,
        };
        s.mount();
        Some(s)
    }

    /// Mount the image (again) read-write.
    pub fn mount(&mut self) {
        self.mount_with("rw+");
    }

    /// Mount the image read-only (`fusefat -o ro`).
    pub fn mount_read_only(&mut self) {
        self.mount_with("ro");
    }

    fn mount_with(&mut self, mode: &str) {
        assert!(!self.mounted);
        let out = Command::new("fusefat")
            .args(["-o", mode])
            .arg(&self.image)
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fusefat: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // fusefat daemonizes; wait until the mount is there.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.dir) {
            assert!(
                Instant::now() < deadline,
                "fusefat did not mount {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.mounted = true;
    }

    /// Unmount cleanly (everything written reaches the image).
    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("fusermount")
                .arg("-u")
                .arg(&self.dir)
                .output()
                .unwrap();
            if out.status.success() || !is_mounted(&self.dir) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "fusermount -u {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.mounted = false;
    }

    /// Pull the stick: detach the mount at once, even while files on it
    /// are open (`fusermount -u -z`), as when the stick is yanked out.
    pub fn pull(&mut self) {
        let _ = Command::new("fusermount")
            .args(["-u", "-z"])
            .arg(&self.dir)
            .output();
        let deadline = Instant::now() + Duration::from_secs(30);
        while is_mounted(&self.dir) {
            assert!(
                Instant::now() < deadline,
                "the stick at {} did not go",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.mounted = false;
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.dir)
    }
}

/// Whether `dir` is a mount point (per /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

impl Drop for Stick {
    fn drop(&mut self) {
        if self.mounted || is_mounted(&self.dir) {
            let _ = Command::new("fusermount")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .output();
        }
    }
}

/// The names of the `RESULT-*` files disaster-restore wrote on a stick, sorted.
pub fn results(stick: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(stick)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("RESULT-"))
        .collect();
    v.sort();
    v
}

/// The RESULT file a run wrote (the one not in `before`).
pub fn new_result(stick: &Path, before: &[String]) -> String {
    let new: Vec<String> = results(stick)
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    assert_eq!(new.len(), 1, "one new RESULT file: {new:?}");
    std::fs::read_to_string(stick.join(&new[0])).unwrap()
}

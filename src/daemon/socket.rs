//! Binding the control socket without ever removing what is not ours.
//!
//! The socket is created 0660 inside a 0750 directory, with no moment of
//! wider permissions (the umask covers the bind). An existing path is
//! replaced only when it is a socket that nobody answers on (a stale socket
//! of a dead daemon); a live daemon's socket is never taken over, and a
//! path that is not a socket at all (a mistyped `socket` key pointing at a
//! database, say) is refused and left exactly as it is.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::error::{msg, IoContext, Result};

pub(super) fn bind(path: &Path) -> Result<UnixListener> {
    let dir = crate::fsutil::parent(path);
    if !dir.exists() {
        std::fs::create_dir_all(dir).at("create runtime directory", dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .at("set mode of", dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(msg(format!(
                    "another rvm-backup daemon is listening on {}; stop it first",
                    path.display()
                )));
            }
            log::info!("replacing the stale socket {}", path.display());
            std::fs::remove_file(path).at("remove stale socket", path)?;
        }
        Ok(_) => {
            return Err(msg(format!(
                "socket = {} names an existing file that is not a socket; it was left alone: point `socket` at a free path (default {})",
                path.display(),
                crate::config::DEFAULT_SOCKET
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at("inspect", path),
    }
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o117));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.at("listen on", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .at("set mode of", path)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rvb-sock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_refused_and_kept() {
        let d = scratch("file");
        let precious = d.join("rvm.sqlite");
        std::fs::write(&precious, b"deposits").unwrap();
        let e = bind(&precious).unwrap_err().to_string();
        assert!(
            e.contains("not a socket") && e.contains("left alone"),
            "{e}"
        );
        assert_eq!(std::fs::read(&precious).unwrap(), b"deposits");
        std::fs::create_dir(d.join("dir")).unwrap();
        assert!(bind(&d.join("dir")).is_err());
        assert!(d.join("dir").is_dir());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_kept() {
        let d = scratch("stale");
        let p = d.join("control.sock");
        drop(UnixListener::bind(&p).unwrap()); // stale: nobody listens
        let live = bind(&p).unwrap();
        let e = bind(&p).unwrap_err().to_string();
        assert!(e.contains("another rvm-backup daemon"), "{e}");
        drop(live);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

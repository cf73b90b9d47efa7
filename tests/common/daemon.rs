//! The real daemon for the integration tests: started on a board's config
//! with its stderr in `daemon.log`, spoken to over its socket one line at a
//! time, killed when dropped.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{bin, Board};

/// How long to wait for the daemon or a job: emulated runs (qemu) are slow.
pub fn patience() -> Duration {
    if std::env::var_os("RVM_BACKUP_TEST_RUNNER").is_some() {
        Duration::from_secs(240)
    } else {
        Duration::from_secs(60)
    }
}

pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    /// Start `daemon` on `b`'s config and wait until it answers PING on
    /// `socket`.
    pub fn start(b: &Board, socket: &Path) -> Daemon {
        let log_path = b.tmp.path().join("daemon.log");
        let log = fs::File::create(&log_path).unwrap();
        let child = bin()
            .arg("--config")
            .arg(&b.config)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + patience();
        while !d.try_request("PING").is_some_and(|r| r.starts_with("OK")) {
            assert!(
                Instant::now() < deadline,
                "daemon did not start: {}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// One request line; the reply line (`None` if the socket failed).
    pub fn try_request(&self, line: &str) -> Option<String> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(patience())).ok()?;
        s.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).ok()?;
        Some(reply)
    }

    /// The JSON of an `OK` reply; anything else fails the test.
    pub fn json(&self, line: &str) -> serde_json::Value {
        let r = self.try_request(line).unwrap_or_default();
        let body = r
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("{line}: {r}"));
        serde_json::from_str(body).unwrap()
    }

    /// Poll `JOB id` until the job is neither queued nor running.
    pub fn wait_job(&self, id: u64) -> serde_json::Value {
        let deadline = Instant::now() + patience() * 3;
        loop {
            let j = self.json(&format!("JOB {id}"));
            if !matches!(j["state"].as_str(), Some("queued" | "running")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {j}");
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Daemon {
    /// Stop it the way systemd does (SIGTERM) and wait for it to exit.
    pub fn terminate(mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + patience();
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

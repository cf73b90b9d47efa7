//! Running one outside command to its end without ever blocking the
//! daemon's executor: the one place that knows how (recovery hooks and
//! the `exec` and `email` alert sinks use it).
//!
//! The command is an argv array (no shell, no `$PATH` search) run with a
//! cleared environment plus what the caller gives, in `/`, in a process
//! group of its own, bounded by a timeout. Its stdin gets the caller's
//! bytes (or `/dev/null`); its stdout and stderr are read as it writes them
//! (so a chatty command never blocks on a full pipe); the first
//! [`OUTPUT_LIMIT`] bytes of each are kept, the rest counted and dropped.
//!
//! Invariants: waiting never blocks the executor (the child is watched
//! through `smol::process`); on timeout, or when the future is dropped
//! (a cancelled job, a stopping daemon), the whole process group is
//! killed; after the command exits, output is read for at most
//! [`OUTPUT_GRACE`] more (a command that leaves a process behind holding
//! its stdout does not hold anyone up), and nothing left behind by a
//! command that exited is killed (a recovery `start` may legitimately fork
//! the platform).

use std::cell::RefCell;
use std::process::Stdio;
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Bytes of stdout and of stderr kept from one run.
pub const OUTPUT_LIMIT: usize = 64 << 10;
/// How long output is still read after the command exited.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The `PATH` every command gets.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run.
pub struct Spec<'a> {
    pub argv: &'a [String],
    /// Besides `PATH` and `LANG=C`, the only environment it gets.
    pub env: Vec<(String, String)>,
    /// Fed to its stdin (then closed); `None`: stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// The first [`OUTPUT_LIMIT`] bytes of a stream and how many there were.
#[derive(Debug, Default)]
pub struct Captured {
    pub kept: Vec<u8>,
    pub total: u64,
}

impl Captured {
    pub fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    /// The last `n` bytes kept, as one line (for error messages).
    pub fn tail_line(&self, n: usize) -> String {
        let from = self.kept.len().saturating_sub(n);
        String::from_utf8_lossy(&self.kept[from..])
            .trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Ending {
    /// It could not be started.
    NotStarted(std::io::Error),
    /// It exited (or was killed by a signal not ours).
    Exited(std::process::ExitStatus),
    /// It ran past the timeout; its group was killed.
    TimedOut,
    /// Waiting for it failed.
    Lost(String),
}

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub ending: Ending,
    pub stdout: Captured,
    pub stderr: Captured,
    pub seconds: f64,
}

impl Finished {
    pub fn success(&self) -> bool {
        matches!(&self.ending, Ending::Exited(s) if s.success())
    }

    /// "; it printed: …" (stderr's tail, else stdout's), or " (it printed
    /// nothing)": the end of an error message.
    pub fn printed(&self) -> String {
        let t = if self.stderr.kept.is_empty() {
            self.stdout.tail_line(1024)
        } else {
            self.stderr.tail_line(1024)
        };
        if t.is_empty() {
            " (it printed nothing)".to_string()
        } else {
            format!("; it printed: {t}")
        }
    }
}

/// Kills a process group when dropped while armed (a timeout, or the
/// future dropped).
pub struct GroupGuard {
    pub pgid: Option<rustix::process::Pid>,
}

impl GroupGuard {
    pub fn of(pid: u32) -> GroupGuard {
        GroupGuard {
            pgid: i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw),
        }
    }

    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // The group may be gone already; nothing to do then.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn pump(stream: Option<impl AsyncRead + Unpin>, into: &RefCell<Captured>) {
    let Some(mut stream) = stream else { return };
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.borrow_mut();
                let room = OUTPUT_LIMIT.saturating_sub(c.kept.len());
                c.kept.extend_from_slice(&buf[..n.min(room)]);
                c.total = c.total.saturating_add(n as u64);
            }
        }
    }
}

/// A `std::process::Command` for `argv` set up as the module doc says
/// (environment, directory, process group); stdio left to the caller.
pub fn command(argv: &[String], env: &[(String, String)]) -> Option<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let (program, args) = argv.split_first()?;
    let mut c = std::process::Command::new(program);
    c.args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LANG", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .process_group(0);
    Some(c)
}

/// Run `spec` to its end, at most its timeout.
pub async fn run(spec: Spec<'_>) -> Finished {
    let started = Instant::now();
    let finished = |ending| Finished {
        ending,
        stdout: Captured::default(),
        stderr: Captured::default(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let Some(std_cmd) = command(spec.argv, &spec.env) else {
        return finished(Ending::NotStarted(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the command is empty",
        )));
    };
    let mut command = smol::process::Command::from(std_cmd);
    // (The conversion forgets the std command's stdio: set it here.)
    command
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return finished(Ending::NotStarted(e)),
    };
    let mut group = GroupGuard::of(child.id());
    let out = RefCell::new(Captured::default());
    let err = RefCell::new(Captured::default());
    let pumps_done = std::cell::Cell::new(false);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let mut stdin = child.stdin.take();
    let input = spec.stdin;
    let feed = async {
        if let (Some(pipe), Some(bytes)) = (stdin.as_mut(), input.as_deref()) {
            // A command that does not read its input gets EPIPE here
            // (SIGPIPE is ignored in Rust programs): not an error.
            let _ = pipe.write_all(bytes).await;
            let _ = pipe.close().await;
        }
        drop(stdin.take());
    };
    let pumps = async {
        smol::future::zip(
            feed,
            smol::future::zip(pump(stdout, &out), pump(stderr, &err)),
        )
        .await;
        pumps_done.set(true);
    };
    let mut pumps = std::pin::pin!(pumps);
    let deadline = started + spec.timeout;
    // Wait for the exit while feeding and reading, up to the deadline.
    let status = smol::future::or(async { Some(child.status().await) }, async {
        smol::future::or(
            async {
                (&mut pumps).await;
                std::future::pending::<()>().await
            },
            async {
                smol::Timer::at(deadline).await;
            },
        )
        .await;
        None
    })
    .await;
    let timed_out = status.is_none();
    if timed_out {
        group.kill();
        let _ = child.kill();
        smol::future::or(
            async {
                let _ = child.status().await;
            },
            async {
                smol::Timer::after(Duration::from_secs(5)).await;
            },
        )
        .await;
    } else {
        // It exited: its group is left alone (a recovery start may fork
        // the platform); only the kill-on-timeout is disarmed.
        group.pgid = None;
    }
    if !pumps_done.get() {
        smol::future::or(
            async {
                (&mut pumps).await;
            },
            async {
                smol::Timer::after(OUTPUT_GRACE).await;
            },
        )
        .await;
    }
    let ending = match status {
        None => Ending::TimedOut,
        Some(Ok(s)) => Ending::Exited(s),
        Some(Err(e)) => Ending::Lost(e.to_string()),
    };
    Finished {
        ending,
        stdout: out.take(),
        stderr: err.take(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn stdin_and_environment_reach_the_command() {
        let argv = sh("read line; echo \"got=$line x=$X home=${HOME-unset}\"");
        let r = smol::block_on(run(Spec {
            argv: &argv,
            env: vec![("X".into(), "1".into())],
            stdin: Some(b"hello\n".to_vec()),
            timeout: Duration::from_secs(20),
        }));
        assert!(r.success(), "{r:?}");
        assert_eq!(r.stdout.kept, b"got=hello x=1 home=unset\n");
    }

    #[test]
    fn a_command_ignoring_big_input_does_not_hang() {
        let argv = sh("exit 0");
        let r = smol::block_on(run(Spec {
            argv: &argv,
            env: vec![],
            stdin: Some(vec![b'x'; 1 << 20]),
            timeout: Duration::from_secs(20),
        }));
        assert!(r.success(), "{r:?}");
    }
}

//! Recovery hooks: the commands that stop and start the platform around
//! an in-place restore (`[recovery] stop = [...]`, `start = [...]`).
//!
//! A hook is an argv array whose program is an absolute path (no shell, no
//! `$PATH` search). It runs with a cleared environment (only `PATH`,
//! `LANG=C` and `RVM_BACKUP_PHASE=stop|start`), in `/`, with stdin from
//! `/dev/null`, in a process group of its own, bounded by
//! `recovery_timeout`, through [`crate::child`] (which owns the
//! invariants: never blocking the executor, the group killed on timeout
//! or cancel, bounded output). The first [`OUTPUT_LIMIT`] bytes of stdout
//! and stderr are logged.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

pub use crate::child::OUTPUT_LIMIT;
use crate::child::{Ending, GroupGuard};
use crate::error::{msg, Result};

/// The `[recovery]` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecoveryHooks {
    /// Run before an in-place restore touches anything.
    pub stop: Option<HookCommand>,
    /// Run after an in-place restore was published.
    pub start: Option<HookCommand>,
}

impl RecoveryHooks {
    pub fn is_empty(&self) -> bool {
        self.stop.is_none() && self.start.is_none()
    }
}

/// One command as an argv array; checked when the config is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCommand(pub Vec<String>);

impl HookCommand {
    /// The command as a readable line (for logs and messages).
    pub fn shown(&self) -> String {
        self.0.join(" ")
    }
}

impl<'de> Deserialize<'de> for HookCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let argv = Vec::<String>::deserialize(d)?;
        check_argv(&argv).map_err(serde::de::Error::custom)?;
        Ok(HookCommand(argv))
    }
}

fn check_argv(argv: &[String]) -> std::result::Result<(), String> {
    let Some(program) = argv.first() else {
        return Err(
            "a command is an argv array naming a program, e.g. [\"/usr/bin/systemctl\", \"stop\", \"myrvm\"]"
                .into(),
        );
    };
    if !program.starts_with('/') {
        return Err(format!(
            "program {program:?} must be an absolute path (hooks run without a shell or $PATH search)"
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err("a command may not contain a NUL character".into());
    }
    Ok(())
}

/// Which hook runs (given to it as `RVM_BACKUP_PHASE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Stop,
    Start,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Stop => "stop",
            Phase::Start => "start",
        }
    }
}

/// What one successful run printed.
pub type Ran = crate::child::Finished;

/// Run one hook to its end, at most `timeout`. Exit status 0 is success;
/// a failure to start it, another status, a signal or the timeout is an
/// error naming the command and ending with the tail of what it printed.
pub async fn run(phase: Phase, cmd: &HookCommand, timeout: Duration) -> Result<Ran> {
    let shown = cmd.shown();
    let name = phase.name();
    log::info!("running the recovery {name} command: {shown}");
    let ran = crate::child::run(crate::child::Spec {
        argv: &cmd.0,
        env: vec![("RVM_BACKUP_PHASE".into(), name.into())],
        stdin: None,
        timeout,
    })
    .await;
    log_output(phase, &ran, !ran.success());
    let failure = match &ran.ending {
        Ending::Exited(s) if s.success() => None,
        Ending::Exited(s) => Some(format!(
            "the recovery {name} command {shown} failed ({s}){}",
            ran.printed()
        )),
        Ending::TimedOut => Some(format!(
            "the recovery {name} command {shown} did not finish within recovery_timeout ({}); it was killed with its process group{}",
            crate::config::format_secs(timeout.as_secs()),
            ran.printed()
        )),
        Ending::NotStarted(e) => Some(format!(
            "cannot run the recovery {name} command {shown}: {e}; check [recovery] {name} in the config"
        )),
        Ending::Lost(e) => Some(format!(
            "cannot wait for the recovery {name} command {shown}: {e}"
        )),
    };
    match failure {
        None => Ok(ran),
        Some(m) => Err(msg(m)),
    }
}

/// Start a hook without waiting for it (a cancelled restore owes the
/// platform its `start`, and a dropped future cannot wait): one small
/// thread reaps it, killing its process group after `timeout`.
pub fn spawn_detached(phase: Phase, cmd: &HookCommand, timeout: Duration) {
    let env = [("RVM_BACKUP_PHASE".to_string(), phase.name().to_string())];
    let Some(mut c) = crate::child::command(&cmd.0, &env) else {
        return;
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let shown = cmd.shown();
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(e) => {
            log::error!(
                "cannot run the recovery {} command {shown}: {e}",
                phase.name()
            );
            return;
        }
    };
    let name = phase.name();
    let reaper = move || {
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => {
                    log::info!("the recovery {name} command {shown} succeeded");
                    return;
                }
                Ok(Some(s)) => {
                    log::error!("the recovery {name} command {shown} failed ({s}); start the platform by hand");
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(None) | Err(_) => {
                    GroupGuard::of(child.id()).kill();
                    let _ = child.kill();
                    let _ = child.wait();
                    log::error!("the recovery {name} command {shown} did not finish in time and was killed; start the platform by hand");
                    return;
                }
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("rvm-hook-reaper".into())
        .spawn(reaper)
    {
        log::error!("cannot watch the recovery {name} command: {e}");
    }
}

fn log_output(phase: Phase, ran: &Ran, failed: bool) {
    let level = if failed {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    for (which, c) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
        if c.total == 0 {
            continue;
        }
        let more = if c.truncated() {
            format!(" [{} more bytes not kept]", c.total - c.kept.len() as u64)
        } else {
            String::new()
        };
        log::log!(
            level,
            "recovery {} command {which}: {}{more}",
            phase.name(),
            String::from_utf8_lossy(&c.kept).trim_end()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> HookCommand {
        HookCommand(vec!["/bin/sh".into(), "-c".into(), script.into()])
    }

    #[test]
    fn success_captures_output_and_sees_only_its_environment() {
        let r = smol::block_on(run(
            Phase::Start,
            &sh("echo phase=$RVM_BACKUP_PHASE home=${HOME-unset}; echo oops >&2"),
            Duration::from_secs(10),
        ))
        .unwrap();
        assert_eq!(r.stdout.kept, b"phase=start home=unset\n");
        assert_eq!(r.stderr.kept, b"oops\n");
    }

    #[test]
    fn failure_names_the_command_and_its_output() {
        let e = smol::block_on(run(
            Phase::Stop,
            &sh("echo cannot stop the platform >&2; exit 3"),
            Duration::from_secs(10),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("recovery stop command /bin/sh"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("cannot stop the platform"), "{e}");
        let e = smol::block_on(run(
            Phase::Stop,
            &HookCommand(vec!["/nonexistent/stop".into()]),
            Duration::from_secs(10),
        ))
        .unwrap_err()
        .to_string();
        // Natively the spawn itself fails; under qemu-user the emulated
        // exec fails in the child, which exits 127. Either names it.
        assert!(
            e.contains("cannot run the recovery stop command /nonexistent/stop")
                || e.contains("/nonexistent/stop failed (exit status: 127)"),
            "{e}"
        );
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("rvm-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("child-survived");
        let script = format!(
            "(sleep 2; touch {}) & echo started; sleep 30",
            marker.display()
        );
        let t = Instant::now();
        let e = smol::block_on(run(Phase::Stop, &sh(&script), Duration::from_secs(1)))
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(e.contains("did not finish within recovery_timeout"), "{e}");
        assert!(e.contains("started"), "{e}");
        std::thread::sleep(Duration::from_secs(3));
        assert!(!marker.exists(), "a process of the group outlived the kill");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn huge_output_is_bounded_and_never_blocks() {
        let r = smol::block_on(run(
            Phase::Start,
            &sh("head -c 10000000 /dev/zero; head -c 200000 /dev/zero >&2"),
            Duration::from_secs(30),
        ))
        .unwrap();
        assert_eq!(r.stdout.kept.len(), OUTPUT_LIMIT);
        assert_eq!(r.stdout.total, 10_000_000);
        assert_eq!(r.stderr.total, 200_000);
        assert!(r.stdout.truncated());
    }

    #[test]
    fn a_process_left_holding_stdout_does_not_hold_up_the_run() {
        let t = Instant::now();
        smol::block_on(run(
            Phase::Start,
            &sh("sleep 20 & echo forked"),
            Duration::from_secs(30),
        ))
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn commands_are_checked_when_parsed() {
        #[derive(Deserialize)]
        struct T {
            #[allow(dead_code)]
            recovery: RecoveryHooks,
        }
        for (bad, why) in [
            ("[recovery]\nstop = []\n", "argv array"),
            ("[recovery]\nstop = [\"systemctl\", \"stop\"]\n", "absolute"),
            ("[recovery]\nstart = \"/bin/true\"\n", "sequence"),
            ("[recovery]\nrestart = [\"/bin/true\"]\n", "restart"),
        ] {
            let e = toml::from_str::<T>(bad).err().unwrap().to_string();
            assert!(e.contains(why) && e.contains("line 2"), "{bad}: {e}");
        }
        let ok: T =
            toml::from_str("[recovery]\nstop = [\"/bin/systemctl\", \"stop\", \"x\"]\n").unwrap();
        assert_eq!(ok.recovery.stop.unwrap().shown(), "/bin/systemctl stop x");
    }
}

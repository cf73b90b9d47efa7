//! `ctl LINE…`: one request to the daemon's socket, its reply on stdout.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::error::{msg, Error, Result};
use crate::out::Out;

/// Longest reply read (replies are one line; LIST of many archives is the
/// largest).
const MAX_REPLY: u64 = 16 << 20;

/// `--socket PATH`, else the config's socket (or the default one when
/// no config was named and none can be read).
fn socket(config: Option<&Path>, args: &mut Vec<String>) -> Result<PathBuf> {
    Ok(match super::take_value(args, "--socket")? {
        Some(s) => PathBuf::from(s),
        // A platform service may not be allowed to read the config: then
        // the default socket, unless a config was named.
        None => match Config::load(&Config::locate(config)) {
            Ok(c) => c.socket,
            Err(e) if config.is_some() => return Err(e.into()),
            Err(_) => PathBuf::from(crate::config::DEFAULT_SOCKET),
        },
    })
}

pub(super) fn run(config: Option<&Path>, args: &[String], out: &mut Out) -> Result<i32> {
    let mut args = args.to_vec();
    let socket = socket(config, &mut args)?;
    let line = request_line(&args)?;
    let reply = exchange(&socket, &line)?;
    out.line(reply.trim_end_matches('\n'));
    Ok(if reply.starts_with("OK") { 0 } else { 1 })
}

/// `alert test [--severity S]`: the daemon sends a test alert to every
/// sink (through its outbox, so it is retried like any alert).
pub(super) fn alert(config: Option<&Path>, args: &[String], out: &mut Out) -> Result<i32> {
    let mut args = args.to_vec();
    let socket = socket(config, &mut args)?;
    let severity = super::take_value(&mut args, "--severity")?;
    super::no_unknown_flags(&args)?;
    if args.first().map(String::as_str) != Some("test") || args.len() != 1 {
        return Err(Error::Usage(
            "usage: rvm-backup alert test [--severity warning|critical|ok]".into(),
        ));
    }
    let severity =
        crate::alerting::parse_test_severity(severity.as_deref()).map_err(Error::Usage)?;
    let reply = exchange(&socket, &format!("TEST-ALERT {}", severity.name()))?;
    let Some(body) = reply.trim_end().strip_prefix("OK ") else {
        out.line(reply.trim_end());
        return Ok(1);
    };
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| msg(format!("unreadable reply from the daemon: {e}")))?;
    let sinks: Vec<&str> = v["sinks"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let id = v["alert"]["id"].as_str().unwrap_or("?");
    if sinks.is_empty() {
        out.line(&format!(
            "test alert {id} written to the journal (no [[alert]] tables are configured)"
        ));
    } else {
        out.line(&format!(
            "test alert {id} queued for {}; the daemon's log says when each took it",
            sinks.join(", ")
        ));
    }
    Ok(0)
}

/// The request words joined by spaces; refused if any holds a control
/// character or non-ASCII (a `\n` would smuggle in a second request).
fn request_line(args: &[String]) -> Result<String> {
    if args.is_empty() {
        return Err(Error::Usage(
            "ctl needs a request, e.g. `rvm-backup ctl STATUS`".into(),
        ));
    }
    if let Some(bad) = args
        .iter()
        .find(|a| a.bytes().any(|b| !(0x20..0x7f).contains(&b)))
    {
        return Err(Error::Usage(format!(
            "request word {bad:?} holds a control character or non-ASCII; requests are one line of printable ASCII"
        )));
    }
    Ok(args.join(" "))
}

fn exchange(socket: &Path, line: &str) -> Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        msg(format!(
            "cannot reach the daemon on {}: {e} (is `rvm-backup daemon` running?)",
            socket.display()
        ))
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| msg(format!("cannot set up the connection to the daemon: {e}")))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| msg(format!("cannot send to the daemon: {e}")))?;
    let mut reply = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_REPLY))
        .read_line(&mut reply)
        .map_err(|e| msg(format!("no reply from the daemon: {e}")))?;
    if reply.is_empty() {
        return Err(msg("the daemon closed the connection without a reply"));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            request_line(&words(&["BACKUP", "all"])).unwrap(),
            "BACKUP all"
        );
        for bad in ["PING\nRESTORE config", "a\rb", "tab\there", "é", "\u{7f}"] {
            assert!(
                matches!(request_line(&words(&["STATUS", bad])), Err(Error::Usage(_))),
                "{bad:?}"
            );
        }
        assert!(request_line(&[]).is_err());
    }
}

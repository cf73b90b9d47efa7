//! The control socket: accepting connections and reading request lines.
//!
//! Each connection is a task on the daemon's one thread. A connection holds
//! at most one request line (4 KiB) plus one read chunk; a longer line gets
//! `ERR 413` and the connection closes. A client silent for the idle
//! timeout, one that started a line and has not finished it within the
//! idle timeout of its first byte (however slowly it trickles), or one not
//! reading its replies within the write timeout, is dropped. Beyond
//! `MAX_CLIENTS` connections, or `MAX_PER_UID` from one non-root uid, a new
//! one gets `ERR 503` and is closed at once. So no client can block
//! another or grow our memory, and no unprivileged user can lock root out.

pub mod access;
pub mod protocol;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};

use self::access::Peer;
use self::protocol::MAX_LINE;

pub const MAX_CLIENTS: usize = 64;
/// Connections open at once from one non-root uid (root is never capped).
pub const MAX_PER_UID: usize = 8;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What answers a request line: the daemon.
pub trait Handler {
    fn handle_line(&self, peer: &Peer, line: &[u8]) -> String;
}

/// Accept connections forever, each served by its own task.
pub async fn serve<H: Handler + 'static>(
    listener: Async<std::os::unix::net::UnixListener>,
    handler: Rc<H>,
    ex: Rc<smol::LocalExecutor<'static>>,
) {
    let active = Rc::new(Cell::new(0usize));
    let per_uid: Rc<RefCell<HashMap<u32, usize>>> = Rc::new(RefCell::new(HashMap::new()));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("control socket accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.get() >= MAX_CLIENTS {
            let mut s = stream;
            let _ = with_timeout(
                Duration::from_millis(100),
                s.write_all(b"ERR 503 too many clients; try again\n"),
            )
            .await;
            continue;
        }
        let peer = match access::peer_of(stream.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("cannot read the credentials of a control socket peer: {e}");
                continue;
            }
        };
        let uid = peer.uid;
        if uid != 0 && per_uid.borrow().get(&uid).copied().unwrap_or(0) >= MAX_PER_UID {
            let mut s = stream;
            let reply = format!("ERR 503 too many connections from uid {uid}\n");
            let _ = with_timeout(Duration::from_millis(100), s.write_all(reply.as_bytes())).await;
            continue;
        }
        active.set(active.get() + 1);
        *per_uid.borrow_mut().entry(uid).or_insert(0) += 1;
        let (handler, active, per_uid) = (handler.clone(), active.clone(), per_uid.clone());
        ex.spawn(async move {
            connection(stream, peer, &*handler).await;
            active.set(active.get() - 1);
            let mut counts = per_uid.borrow_mut();
            if let Some(n) = counts.get_mut(&uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&uid);
                }
            }
        })
        .detach();
    }
}

async fn with_timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    smol::future::or(f, async {
        Timer::after(d).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ))
    })
    .await
}

/// Whether a request line whose first byte arrived at `first_byte_at` has
/// run out of time: it must be complete within [`IDLE_TIMEOUT`] of its
/// first byte, however the bytes trickle in. `None`: no line started.
pub fn line_expired(first_byte_at: Option<Instant>, now: Instant) -> bool {
    first_byte_at.is_some_and(|t| now.saturating_duration_since(t) >= IDLE_TIMEOUT)
}

/// How long the next read may wait: the idle timeout when no line is
/// started, else what is left of the started line's deadline.
fn read_timeout(first_byte_at: Option<Instant>, now: Instant) -> Duration {
    match first_byte_at {
        None => IDLE_TIMEOUT,
        Some(t) => IDLE_TIMEOUT.saturating_sub(now.saturating_duration_since(t)),
    }
}

async fn connection<H: Handler>(mut stream: Async<UnixStream>, peer: Peer, handler: &H) {
    // When the first byte of the pending (incomplete) line arrived.
    let mut line_started: Option<Instant> = None;
    let mut pending: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            if nl > MAX_LINE {
                break; // answered below: ERR 413 and close
            }
            let reply = handler.handle_line(&peer, &pending[..nl]);
            pending.drain(..=nl);
            line_started = None;
            if with_timeout(WRITE_TIMEOUT, stream.write_all(reply.as_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        if pending.len() > MAX_LINE && pending.iter().take(MAX_LINE + 1).all(|&b| b != b'\n') {
            let _ = with_timeout(
                WRITE_TIMEOUT,
                stream.write_all(b"ERR 413 line longer than 4096 bytes; closing\n"),
            )
            .await;
            return;
        }
        let now = Instant::now();
        if pending.is_empty() {
            line_started = None;
        } else if line_started.is_none() {
            line_started = Some(now);
        }
        if line_expired(line_started, now) {
            return;
        }
        match with_timeout(read_timeout(line_started, now), stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if pending.is_empty() {
                    line_started = Some(Instant::now());
                }
                pending.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_line_has_an_absolute_deadline() {
        let t0 = Instant::now();
        assert!(!line_expired(None, t0 + Duration::from_secs(3600)));
        assert!(!line_expired(Some(t0), t0));
        assert!(!line_expired(
            Some(t0),
            t0 + IDLE_TIMEOUT - Duration::from_millis(1)
        ));
        assert!(line_expired(Some(t0), t0 + IDLE_TIMEOUT));
        // A byte every 10 s does not move the deadline: it is counted from
        // the line's first byte, not from the last read.
        assert!(line_expired(Some(t0), t0 + Duration::from_secs(20)));
        assert_eq!(read_timeout(None, t0), IDLE_TIMEOUT);
        assert_eq!(
            read_timeout(Some(t0), t0 + Duration::from_secs(10)),
            IDLE_TIMEOUT - Duration::from_secs(10)
        );
        assert_eq!(
            read_timeout(Some(t0), t0 + Duration::from_secs(99)),
            Duration::ZERO
        );
    }
}

//! The control socket: accepting connections and reading request lines.
//!
//! Each connection is a task on the daemon's one thread. A connection holds
//! at most one request line (4 KiB) plus one read chunk; a longer line gets
//! `ERR 413` and the connection closes. A client silent for the idle
//! timeout, or not reading its replies within the write timeout, is
//! dropped. Beyond `MAX_CLIENTS` connections, a new one gets `ERR 503` and
//! is closed at once. So no client can block another or grow our memory.

pub mod access;
pub mod protocol;

use std::cell::Cell;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};

use self::access::Peer;
use self::protocol::MAX_LINE;

pub const MAX_CLIENTS: usize = 64;
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
        active.set(active.get() + 1);
        let (handler, active) = (handler.clone(), active.clone());
        ex.spawn(async move {
            connection(stream, &*handler).await;
            active.set(active.get() - 1);
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

async fn connection<H: Handler>(mut stream: Async<UnixStream>, handler: &H) {
    let peer = match access::peer_of(stream.get_ref()) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("cannot read the credentials of a control socket peer: {e}");
            return;
        }
    };
    let mut pending: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            if nl > MAX_LINE {
                break; // answered below: ERR 413 and close
            }
            let reply = handler.handle_line(&peer, &pending[..nl]);
            pending.drain(..=nl);
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
        match with_timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

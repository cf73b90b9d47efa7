//! The byte stream under an HTTP connection: resolving and connecting with
//! a timeout, then reading and writing.
//!
//! [`Transport`] is an enum so that a TLS stream (rustls over the same TCP
//! stream) can be added as a second variant without changing the HTTP
//! layer above it; until then an `https://` URL is refused here with a
//! message that says so.
//!
//! Invariants: connecting is bounded in time per address and tries at most
//! [`MAX_ADDRS`] addresses; name resolution runs on smol's blocking pool
//! (skipped for IP literals), so nothing here blocks the executor.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use super::url::HttpUrl;
use super::NetError;

/// Most resolved addresses tried.
pub const MAX_ADDRS: usize = 8;

/// One connection's byte stream.
pub enum Transport {
    Plain(TcpStream),
}

impl Transport {
    /// Resolve `url`'s host and connect to the first address that
    /// answers within `timeout`.
    pub async fn connect(url: &HttpUrl, timeout: Duration) -> Result<Transport, NetError> {
        if url.tls {
            return Err(NetError::Unsupported(format!(
                "{}: https:// is not supported by this build yet; use an http:// endpoint on a trusted network (or a local TLS proxy)",
                url.host_header()
            )));
        }
        let addrs: Vec<SocketAddr> = match url.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, url.port)],
            Err(_) => smol::net::resolve((url.host.as_str(), url.port))
                .await
                .map_err(|e| NetError::Connect(format!("cannot resolve {}: {e}", url.host)))?,
        };
        let mut last = NetError::Connect(format!("{} has no address", url.host));
        for addr in addrs.into_iter().take(MAX_ADDRS) {
            let attempt = smol::future::or(
                async { TcpStream::connect(addr).await.map_err(Some) },
                async {
                    smol::Timer::after(timeout).await;
                    Err(None)
                },
            )
            .await;
            match attempt {
                Ok(s) => {
                    // Small writes (a request head) go out at once.
                    let _ = s.set_nodelay(true);
                    return Ok(Transport::Plain(s));
                }
                Err(Some(e)) => last = NetError::Connect(format!("cannot connect to {addr}: {e}")),
                Err(None) => {
                    last = NetError::Timeout(format!(
                        "cannot connect to {addr}: no answer within {}s",
                        timeout.as_secs()
                    ))
                }
            }
        }
        Err(last)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
        }
    }
}

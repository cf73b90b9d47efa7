//! The byte stream under an HTTP connection: resolving and connecting with
//! a timeout, then reading and writing.
//!
//! [`Transport`] is plain TCP or TLS (rustls over the same TCP stream,
//! see [`super::tls`]); the HTTP layer above does not tell them apart. An
//! `https://` URL without a TLS config (the alert sinks) is refused.
//!
//! Invariants: connecting is bounded in time per address and tries at most
//! [`MAX_ADDRS`] addresses; name resolution runs on smol's blocking pool
//! (skipped for IP literals), so nothing here blocks the executor.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
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
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    /// Resolve `url`'s host and connect to the first address that
    /// answers within `timeout`.
    /// With `tls`, the TLS handshake (bounded by `timeout` too) follows.
    pub async fn connect(
        url: &HttpUrl,
        timeout: Duration,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Transport, NetError> {
        let tls = match (url.tls, tls) {
            (true, None) => {
                return Err(NetError::Unsupported(format!(
                    "{}: https:// is not supported here",
                    url.host_header()
                )))
            }
            (true, Some(c)) => Some(c),
            (false, _) => None,
        };
        let tcp = Self::connect_tcp(url, timeout).await?;
        let Some(cfg) = tls else {
            return Ok(Transport::Plain(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|_| NetError::Connect(format!("{}: not a TLS server name", url.host)))?;
        let hs = futures_rustls::TlsConnector::from(Arc::clone(cfg)).connect(name, tcp);
        let r = smol::future::or(async { Some(hs.await) }, async {
            smol::Timer::after(timeout).await;
            None
        })
        .await;
        match r {
            Some(Ok(s)) => Ok(Transport::Tls(Box::new(s))),
            Some(Err(e)) => Err(NetError::Tls(format!(
                "TLS with {} failed: {e}",
                url.host_header()
            ))),
            None => Err(NetError::Timeout(format!(
                "TLS with {}: no handshake within {}s",
                url.host_header(),
                timeout.as_secs()
            ))),
        }
    }

    async fn connect_tcp(url: &HttpUrl, timeout: Duration) -> Result<TcpStream, NetError> {
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
                    return Ok(s);
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
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

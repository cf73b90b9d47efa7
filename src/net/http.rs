//! A minimal HTTP/1.1 client on smol, shared by the alert sinks (one
//! request per connection, [`request`]) and the offsite store ([`Conn`]:
//! request bodies sent in pieces, response bodies streamed or read up to a
//! bound, `Content-Length`, chunked and close-delimited responses, and
//! keep-alive when the server allows it).
//!
//! Invariants: every exchange is bounded in time (a connect timeout per
//! address, an idle timeout on every read and write, a total deadline per
//! exchange); a response head is at most [`MAX_HEAD`] bytes with at most
//! [`MAX_HEADERS`] fields, a chunk-size line at most [`MAX_LINE`] bytes;
//! a buffered body is at most what the caller allows; memory is one
//! [`READ_BUF`] buffer per connection whatever the body size. Hostile
//! bytes give an error, never a panic (see the property tests). A
//! connection is offered for reuse only after its response was read to
//! its end and neither side asked to close it.

use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::transport::Transport;
use super::url::HttpUrl;
use super::NetError;

/// Most bytes of a response head (status line, fields, interim responses).
pub const MAX_HEAD: usize = 16 << 10;
/// Most header fields of a response.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line.
pub const MAX_LINE: usize = 1024;
/// The read buffer of a connection (a whole head must fit).
pub const READ_BUF: usize = MAX_HEAD;

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Per address tried.
    pub connect: Duration,
    /// Longest wait for one read or write to make progress.
    pub io: Duration,
    /// The whole exchange (connect, send, response head and body).
    pub total: Duration,
}

impl Timeouts {
    /// Connect and total bounds, idle bounded by the total.
    pub const fn new(connect: Duration, total: Duration) -> Timeouts {
        Timeouts {
            connect,
            io: total,
            total,
        }
    }
}

/// Send one request with a small body on a fresh connection
/// (`Connection: close`); the response's final status code.
pub async fn request(
    url: &HttpUrl,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    t: Timeouts,
) -> Result<u16, String> {
    let work = async {
        let mut c = Conn::open(url, t).await?;
        c.begin();
        c.send(request_head(url, method, headers, body.len()).as_bytes())
            .await?;
        c.send(body).await?;
        c.flush().await?;
        Ok::<u16, NetError>(c.read_head(method).await?.status)
    };
    smol::future::or(async { work.await.map_err(|e| e.to_string()) }, async {
        smol::Timer::after(t.total).await;
        Err(format!(
            "no answer from {} within {}s",
            url.host_header(),
            t.total.as_secs()
        ))
    })
    .await
}

/// The request line and headers for [`request`]. `url` and the header
/// values hold no CR or LF (URLs are checked when parsed; callers pass
/// fixed names and checked values, and any control character is dropped
/// here as well).
pub fn request_head(url: &HttpUrl, method: &str, headers: &[(&str, &str)], len: usize) -> String {
    head_text(
        method,
        &url.target,
        &url.host_header(),
        headers,
        Some(len as u64),
        false,
    )
}

/// A request head: `Host`, `User-Agent`, `Connection`, `Content-Length`
/// (when given), then `headers` with control characters dropped.
pub fn head_text(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    len: Option<u64>,
    keep_alive: bool,
) -> String {
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let mut h = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rvm-backup/{}\r\nConnection: {}\r\n",
        clean(method),
        clean(target),
        clean(host),
        env!("CARGO_PKG_VERSION"),
        if keep_alive { "keep-alive" } else { "close" }
    );
    if let Some(n) = len {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    for (k, v) in headers {
        h.push_str(&format!("{}: {}\r\n", clean(k), clean(v)));
    }
    h.push_str("\r\n");
    h
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// At the end of the connection.
    Close,
}

/// A parsed final response head.
#[derive(Clone, Debug)]
pub struct Head {
    pub status: u16,
    /// Field names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
}

impl Head {
    /// The first field named `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 connection with its read buffer and deadlines.
pub struct Conn {
    io: Transport,
    host: String,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    t: Timeouts,
    deadline: Instant,
    reusable: bool,
}

impl Conn {
    pub async fn open(url: &HttpUrl, t: Timeouts) -> Result<Conn, NetError> {
        Self::open_with(url, t, None).await
    }

    /// With a TLS config, `https://` URLs are spoken too.
    pub async fn open_with(
        url: &HttpUrl,
        t: Timeouts,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Conn, NetError> {
        let deadline = Instant::now() + t.total;
        let io = Transport::connect(url, t.connect, tls).await?;
        Ok(Conn {
            io,
            host: url.host_header(),
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            t,
            deadline,
            reusable: true,
        })
    }

    /// Start an exchange: its total deadline counts from now.
    pub fn begin(&mut self) {
        self.begin_with(Duration::ZERO);
    }

    /// Start an exchange that may take `extra` beyond the total bound
    /// (a large body on a slow link).
    pub fn begin_with(&mut self, extra: Duration) {
        self.deadline = Instant::now() + self.t.total.saturating_add(extra);
    }

    /// More time for the exchange under way (a long answer announced by
    /// its `Content-Length`); the idle bound still ends a stalled one.
    pub fn extend(&mut self, extra: Duration) {
        self.deadline = self.deadline.checked_add(extra).unwrap_or(self.deadline);
    }

    /// Whether the last response was read to its end and the connection
    /// may carry another request.
    pub fn reusable(&self) -> bool {
        self.reusable && self.start == self.end
    }

    /// The time one step may still take: the idle bound, cut at the deadline.
    fn budget(&self, what: &str) -> Result<Duration, NetError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetError::Timeout(format!(
                "{}: {what} did not finish within {}s",
                self.host,
                self.t.total.as_secs()
            )));
        }
        Ok(left.min(self.t.io))
    }

    fn timed_out(&self, what: &str, d: Duration) -> NetError {
        NetError::Timeout(if Instant::now() >= self.deadline {
            format!(
                "no answer from {} within {}s",
                self.host,
                self.t.total.as_secs()
            )
        } else {
            format!("{}: no progress {what} for {}s", self.host, d.as_secs())
        })
    }

    /// Send bytes (part of a request).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        self.reusable = false;
        let d = self.budget("sending")?;
        let host = self.host.clone();
        let io = &mut self.io;
        let r = smol::future::or(async { Some(io.write_all(bytes).await) }, async {
            smol::Timer::after(d).await;
            None
        })
        .await;
        match r {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(NetError::Io(format!("cannot send to {host}: {e}"))),
            None => Err(self.timed_out("sending", d)),
        }
    }

    pub async fn flush(&mut self) -> Result<(), NetError> {
        let d = self.budget("sending")?;
        let io = &mut self.io;
        let r = smol::future::or(async { Some(io.flush().await) }, async {
            smol::Timer::after(d).await;
            None
        })
        .await;
        match r {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(NetError::Io(format!("cannot send to {}: {e}", self.host))),
            None => Err(self.timed_out("sending", d)),
        }
    }

    /// Read more bytes into the buffer (moving unread bytes to its start
    /// first); `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> Result<usize, NetError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(NetError::Protocol(format!(
                "{}: a line of the answer is longer than {} bytes",
                self.host,
                self.buf.len()
            )));
        }
        let d = self.budget("reading the answer")?;
        let (io, room) = (&mut self.io, &mut self.buf[self.end..]);
        let r = smol::future::or(async { Some(io.read(room).await) }, async {
            smol::Timer::after(d).await;
            None
        })
        .await;
        match r {
            Some(Ok(n)) => {
                self.end += n;
                Ok(n)
            }
            Some(Err(e)) => Err(NetError::Io(format!(
                "cannot read the answer from {}: {e}",
                self.host
            ))),
            None => Err(self.timed_out("reading the answer", d)),
        }
    }

    /// Read the final response head (interim 1xx responses skipped).
    /// `method` decides whether a body follows (none after `HEAD`).
    pub async fn read_head(&mut self, method: &str) -> Result<Head, NetError> {
        loop {
            let have = &self.buf[self.start..self.end];
            // Fail early on garbage, before waiting for a whole head.
            status_line(have).map_err(NetError::Protocol)?;
            if let Some(len) = head_end(have) {
                let head = parse_head(&have[..len], method).map_err(NetError::Protocol)?;
                self.start += len;
                if (100..200).contains(&head.0) {
                    continue;
                }
                let (status, headers, framing, close) = head;
                self.reusable = !close && framing != Framing::Close;
                return Ok(Head {
                    status,
                    headers,
                    framing,
                });
            }
            if self.end - self.start >= MAX_HEAD {
                return Err(NetError::Protocol(format!(
                    "the response's head is longer than {MAX_HEAD} bytes"
                )));
            }
            if self.fill().await? == 0 {
                return Err(NetError::Io(if self.start == self.end {
                    format!("{} closed the connection without an answer", self.host)
                } else {
                    format!("{} sent an incomplete answer", self.host)
                }));
            }
        }
    }

    /// Hand the body to `sink` piece by piece (at most [`READ_BUF`] bytes
    /// each). Whatever `sink` returns as an error ends the read.
    pub async fn read_body(
        &mut self,
        framing: Framing,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), NetError>,
    ) -> Result<(), NetError> {
        match framing {
            Framing::Length(n) => self.copy_exact(n, sink).await,
            Framing::Close => {
                self.reusable = false;
                loop {
                    if self.start < self.end {
                        sink(&self.buf[self.start..self.end])?;
                        self.start = self.end;
                    }
                    if self.fill().await? == 0 {
                        return Ok(());
                    }
                }
            }
            Framing::Chunked => {
                loop {
                    let line = self.line().await?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    if size.is_empty()
                        || size.len() > 15
                        || !size.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(NetError::Protocol(format!(
                            "{}: bad chunk size {:?}",
                            self.host,
                            shown(line.as_bytes())
                        )));
                    }
                    let n = u64::from_str_radix(size, 16).map_err(|_| {
                        NetError::Protocol(format!("{}: bad chunk size", self.host))
                    })?;
                    if n == 0 {
                        break;
                    }
                    self.copy_exact(n, sink).await?;
                    if !self.line().await?.is_empty() {
                        return Err(NetError::Protocol(format!(
                            "{}: a chunk does not end where its size says",
                            self.host
                        )));
                    }
                }
                // Trailer fields, up to the empty line.
                let mut trailer = 0usize;
                loop {
                    let l = self.line().await?;
                    if l.is_empty() {
                        return Ok(());
                    }
                    trailer += l.len();
                    if trailer > MAX_HEAD {
                        return Err(NetError::Protocol(format!(
                            "{}: the chunked trailer is longer than {MAX_HEAD} bytes",
                            self.host
                        )));
                    }
                }
            }
        }
    }

    /// The body in memory, refused when longer than `max`.
    pub async fn read_body_bounded(
        &mut self,
        framing: Framing,
        max: usize,
    ) -> Result<Vec<u8>, NetError> {
        if let Framing::Length(n) = framing {
            if n > max as u64 {
                self.reusable = false;
                return Err(NetError::Protocol(format!(
                    "{}: the answer's body of {n} bytes is larger than the {max} expected",
                    self.host
                )));
            }
        }
        let mut out = Vec::new();
        let host = self.host.clone();
        self.read_body(framing, &mut |b| {
            if out.len() + b.len() > max {
                return Err(NetError::Protocol(format!(
                    "{host}: the answer's body is larger than the {max} bytes expected"
                )));
            }
            out.extend_from_slice(b);
            Ok(())
        })
        .await
        .inspect_err(|_| self.reusable = false)?;
        Ok(out)
    }

    async fn copy_exact(
        &mut self,
        mut n: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), NetError>,
    ) -> Result<(), NetError> {
        while n > 0 {
            if self.start == self.end && self.fill().await? == 0 {
                self.reusable = false;
                return Err(NetError::Io(format!(
                    "{} closed the connection in the middle of the answer's body",
                    self.host
                )));
            }
            let take = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            sink(&self.buf[self.start..self.start + take])?;
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// One line (CRLF or LF ended, at most [`MAX_LINE`] bytes), without its end.
    async fn line(&mut self) -> Result<String, NetError> {
        loop {
            let have = &self.buf[self.start..self.end];
            if let Some(i) = have.iter().position(|&b| b == b'\n') {
                let l = &have[..i];
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                let text = String::from_utf8_lossy(l).into_owned();
                self.start += i + 1;
                return Ok(text);
            }
            if have.len() > MAX_LINE {
                return Err(NetError::Protocol(format!(
                    "{}: a line of the answer is longer than {MAX_LINE} bytes",
                    self.host
                )));
            }
            if self.fill().await? == 0 {
                self.reusable = false;
                return Err(NetError::Io(format!(
                    "{} closed the connection in the middle of the answer",
                    self.host
                )));
            }
        }
    }
}

/// Parse one complete head (status line, fields, the empty line): status,
/// fields, framing, and whether the connection must close after it.
#[allow(clippy::type_complexity)]
pub fn parse_head(
    head: &[u8],
    method: &str,
) -> Result<(u16, Vec<(String, String)>, Framing, bool), String> {
    let status = status_line(head)?.ok_or("the status line is incomplete")?;
    let text =
        std::str::from_utf8(head).map_err(|_| "the response head is not text".to_string())?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let mut close = first.starts_with("HTTP/1.0");
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(format!(
                "the response has more than {MAX_HEADERS} header fields"
            ));
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("malformed header field {:?}", shown(l.as_bytes())))?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("malformed header name {:?}", shown(k.as_bytes())));
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |n: &'static str| {
        headers
            .iter()
            .filter(move |(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    for v in get("connection") {
        if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
            close = true;
        }
    }
    let no_body = method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    let framing = if no_body {
        Framing::Length(0)
    } else if get("transfer-encoding").any(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else {
        let mut len: Option<u64> = None;
        for v in get("content-length") {
            let n = (!v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| format!("bad Content-Length {:?}", shown(v.as_bytes())))?;
            if len.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length fields".into());
            }
            len = Some(n);
        }
        len.map_or(Framing::Close, Framing::Length)
    };
    Ok((status, headers, framing, close))
}

/// Where a head ends: after its first empty line (CRLF or bare LF line
/// ends, as lenient servers send them).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + i];
        if line.is_empty() || line == b"\r" {
            return Some(start + i + 1);
        }
        start += i + 1;
    }
    None
}

fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(60)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect()
}

/// The status of the final response in `buf`, skipping interim (1xx)
/// responses: `Ok(None)` while more bytes are needed.
pub fn final_status(buf: &[u8]) -> Result<Option<u16>, String> {
    let mut rest = buf;
    loop {
        let Some(code) = status_line(rest)? else {
            return Ok(None);
        };
        if !(100..200).contains(&code) {
            return Ok(Some(code));
        }
        // An interim response: its head ends at the first empty line.
        match find(rest, b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| find(rest, b"\n\n").map(|i| i + 2))
        {
            Some(end) => rest = &rest[end..],
            None => return Ok(None),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse `HTTP/1.x SSS[ reason]\r\n` at the start of `buf`: `Ok(None)`
/// until the line is complete.
pub fn status_line(buf: &[u8]) -> Result<Option<u16>, String> {
    let bad = |why: &str| {
        let shown: String = String::from_utf8_lossy(&buf[..buf.len().min(60)])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        Err(format!("not an HTTP response ({why}): {shown:?}"))
    };
    let prefix = b"HTTP/1.";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return bad("it does not start with HTTP/1.");
    }
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = &buf[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // "HTTP/1.x SSS" is 12 bytes; then nothing or a space and a reason.
    if line.len() < 12 || !line[7].is_ascii_digit() || line[8] != b' ' {
        return bad("malformed status line");
    }
    let digits = &line[9..12];
    if !digits.iter().all(u8::is_ascii_digit) || (line.len() > 12 && line[12] != b' ') {
        return bad("malformed status code");
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&code) {
        return bad("status code out of range");
    }
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_line(b"HTTP/1.1 200 OK\r\n"), Ok(Some(200)));
        assert_eq!(status_line(b"HTTP/1.0 503\n"), Ok(Some(503)));
        assert_eq!(
            status_line(b"HTTP/1.1 204 No Content\r\nX: y"),
            Ok(Some(204))
        );
        assert_eq!(status_line(b"HTTP/1.1 20"), Ok(None));
        assert_eq!(status_line(b"HT"), Ok(None));
        assert_eq!(status_line(b""), Ok(None));
        for bad in [
            &b"HTTP/2 200 OK\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 20x OK\r\n",
            b"HTTP/1.1  200 OK\r\n",
            b"HTTP/1.1 099 x\r\n",
            b"HTTP/1.1 600 x\r\n",
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1\r\n",
        ] {
            assert!(
                status_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn interim_responses_are_skipped() {
        assert_eq!(
            final_status(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"),
            Ok(Some(201))
        );
        assert_eq!(final_status(b"HTTP/1.1 100 Continue\r\nX: y\r\n"), Ok(None));
        assert_eq!(final_status(b"HTTP/1.1 100 Continue\r\n\r\n"), Ok(None));
    }

    #[test]
    fn request_heads_cannot_be_split() {
        let u = HttpUrl::parse("http://h:8080/x").unwrap();
        let h = request_head(&u, "POST", &[("X-RVM-Alert-Id", "ab\r\nEvil: 1")], 5);
        assert!(h.starts_with("POST /x HTTP/1.1\r\nHost: h:8080\r\n"), "{h}");
        assert!(h.contains("X-RVM-Alert-Id: abEvil: 1\r\n"), "{h}");
        assert!(h.contains("Content-Length: 5\r\n") && h.ends_with("\r\n\r\n"));
    }

    /// A one-connection server on the loopback that reads the request
    /// head and then sends `reply` (and keeps the connection open while
    /// `linger`).
    fn server(reply: Vec<u8>, linger: bool) -> (HttpUrl, std::thread::JoinHandle<Vec<u8>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
            let _ = c.write_all(&reply);
            if linger {
                std::thread::sleep(Duration::from_secs(3));
            }
            got
        });
        (
            HttpUrl::parse(&format!("http://127.0.0.1:{port}/in")).unwrap(),
            t,
        )
    }

    /// Generous (emulated runs are slow), except where a timeout is the
    /// point.
    const PATIENT: Timeouts = Timeouts::new(Duration::from_secs(30), Duration::from_secs(60));
    const QUICK: Timeouts = Timeouts::new(Duration::from_secs(30), Duration::from_secs(1));

    /// Read a whole body through a connection to a server sending `reply`.
    fn body_of(reply: &[u8], method: &str) -> Result<(Head, Vec<u8>), NetError> {
        let (u, t) = server(reply.to_vec(), false);
        let r = smol::block_on(async {
            let mut c = Conn::open(&u, PATIENT).await?;
            c.begin();
            c.send(head_text(method, "/x", "h", &[], Some(0), true).as_bytes())
                .await?;
            let h = c.read_head(method).await?;
            let b = c.read_body_bounded(h.framing, 1 << 20).await?;
            Ok((h, b))
        });
        t.join().unwrap();
        r
    }

    #[test]
    fn bodies_by_length_chunks_and_close() {
        let (h, b) = body_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhelloEXTRA",
            "GET",
        )
        .unwrap();
        assert_eq!(
            (h.status, b.as_slice(), h.get("etag")),
            (200, &b"hello"[..], Some("\"x\""))
        );
        let (_, b) = body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n", "GET").unwrap();
        assert_eq!(b, b"abcde");
        let (_, b) = body_of(b"HTTP/1.1 200 OK\r\n\r\nuntil close", "GET").unwrap();
        assert_eq!(b, b"until close");
        let (h, b) = body_of(b"HTTP/1.0 200 OK\nContent-Length: 2\n\nokEXTRA", "GET").unwrap();
        assert_eq!((h.status, b.as_slice()), (200, &b"ok"[..]));
        let (h, b) = body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD").unwrap();
        assert_eq!((h.framing, b.len()), (Framing::Length(0), 0));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                body_of(bad, "GET").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_client_against_real_and_hostile_servers() {
        let (u, t) = server(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false);
        assert_eq!(
            smol::block_on(request(&u, "POST", &[], b"{}", PATIENT)),
            Ok(204)
        );
        let head = String::from_utf8(t.join().unwrap()).unwrap();
        assert!(head.starts_with("POST /in HTTP/1.1\r\n"), "{head}");
        // Endless header bytes without a line end: bounded, an error.
        let (u, t) = server(vec![b'H'; 1 << 20], false);
        let e = smol::block_on(request(&u, "GET", &[], b"", PATIENT)).unwrap_err();
        assert!(e.contains("not an HTTP response"), "{e}");
        t.join().unwrap();
        let (u, t) = server(b"HTTP/1.1 200".to_vec(), false);
        let e = smol::block_on(request(&u, "GET", &[], b"", PATIENT)).unwrap_err();
        assert!(e.contains("incomplete"), "{e}");
        t.join().unwrap();
        // Silence: the total timeout ends it.
        let (u, t) = server(Vec::new(), true);
        let e = smol::block_on(request(&u, "GET", &[], b"", QUICK)).unwrap_err();
        assert!(e.contains("no answer"), "{e}");
        t.join().unwrap();
        // Nobody listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let u = HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = smol::block_on(request(&u, "GET", &[], b"", PATIENT)).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }

    proptest! {
        #[test]
        fn hostile_responses_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = final_status(&bytes);
            let mut prefixed = b"HTTP/1.1 ".to_vec();
            prefixed.extend_from_slice(&bytes);
            if let Ok(Some(c)) = final_status(&prefixed) {
                prop_assert!((100..=599).contains(&c));
            }
        }

        #[test]
        fn hostile_heads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
            h.extend_from_slice(&bytes);
            h.extend_from_slice(b"\r\n\r\n");
            let _ = parse_head(&h, "GET");
            let _ = parse_head(&bytes, "GET");
        }

        #[test]
        fn valid_status_lines_parse(code in 100u16..600, reason in "[ -~]{0,30}", minor in 0u8..2) {
            let line = format!("HTTP/1.{minor} {code} {reason}\r\n");
            prop_assert_eq!(status_line(line.as_bytes()), Ok(Some(code)));
            // Any prefix is either incomplete or (once the line is whole) parsed.
            for cut in 0..line.len() {
                prop_assert_eq!(status_line(&line.as_bytes()[..cut]), Ok(None));
            }
        }
    }
}

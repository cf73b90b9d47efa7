//! A minimal HTTP/1.1 client on smol: one request per connection
//! (`Connection: close`), for the webhook sink and the heartbeat.
//!
//! Invariants: every request is bounded in time (a connect timeout per
//! address, a total timeout over resolving, connecting, sending and
//! reading); at most [`MAX_HEAD`] bytes of the response are read, and only
//! its status line is interpreted (hostile bytes give an error, never a
//! panic: see the property tests); nothing here blocks the executor (name
//! resolution runs on smol's blocking pool, skipped for IP literals).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::url::HttpUrl;

/// Most bytes of a response read (status line plus interim responses).
pub const MAX_HEAD: usize = 16 << 10;

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub total: Duration,
}

/// Send one request; the response's final status code.
pub async fn request(
    url: &HttpUrl,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    t: Timeouts,
) -> Result<u16, String> {
    let work = exchange(url, method, headers, body, t.connect);
    smol::future::or(work, async {
        smol::Timer::after(t.total).await;
        Err(format!(
            "no answer from {} within {}s",
            url.host_header(),
            t.total.as_secs()
        ))
    })
    .await
}

async fn exchange(
    url: &HttpUrl,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    connect: Duration,
) -> Result<u16, String> {
    let addrs: Vec<SocketAddr> = match url.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port)],
        Err(_) => smol::net::resolve((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?,
    };
    let mut last = format!("{} has no address", url.host);
    let mut stream = None;
    for addr in addrs.into_iter().take(8) {
        let attempt = smol::future::or(
            async {
                smol::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())
            },
            async {
                smol::Timer::after(connect).await;
                Err(format!("timed out after {}s", connect.as_secs()))
            },
        )
        .await;
        match attempt {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let head = request_head(url, method, headers, body.len());
    let send = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await
    };
    send.await
        .map_err(|e| format!("cannot send to {}: {e}", url.host_header()))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match final_status(&buf)? {
            Some(code) => return Ok(code),
            None if buf.len() >= MAX_HEAD => {
                return Err(format!(
                    "the response's head is longer than {MAX_HEAD} bytes"
                ))
            }
            None => {}
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|e| format!("cannot read the answer from {}: {e}", url.host_header()))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                format!(
                    "{} closed the connection without an answer",
                    url.host_header()
                )
            } else {
                format!("{} sent an incomplete answer", url.host_header())
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The request line and headers. `url` and the header values hold no
/// CR or LF (URLs are checked when parsed; callers pass fixed names and
/// checked values, and any control character is dropped here as well).
pub fn request_head(url: &HttpUrl, method: &str, headers: &[(&str, &str)], len: usize) -> String {
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let mut h = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rvm-backup/{}\r\nConnection: close\r\nContent-Length: {len}\r\n",
        url.target,
        url.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        h.push_str(&format!("{}: {}\r\n", clean(k), clean(v)));
    }
    h.push_str("\r\n");
    h
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
    const PATIENT: Timeouts = Timeouts {
        connect: Duration::from_secs(30),
        total: Duration::from_secs(60),
    };
    const QUICK: Timeouts = Timeouts {
        connect: Duration::from_secs(30),
        total: Duration::from_secs(1),
    };

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

//! A TCP proxy between the binary and a test server that misbehaves on
//! demand: it cuts the link after a number of bytes (the connection
//! carrying them is reset mid-request, and every later connection is
//! dropped at once until [`Proxy::heal`]), throttles what goes up, stalls
//! completely (holds every connection open and forwards nothing), or
//! answers the next requests whose request line contains a pattern with
//! an HTTP error itself (the request's body is read first, as a server
//! would).
//!
//! Requests are told apart by their heads and `Content-Length` (the
//! client under test never pipelines and always sends a length). Threads
//! and std only; every socket is shut down when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BUF: usize = 64 << 10;
/// The receive buffer of the client's side (Linux doubles it).
const RECV_BUF: usize = 32 << 10;

#[derive(Default)]
struct State {
    stop: AtomicBool,
    /// Bytes forwarded to the server (heads and bodies).
    up: AtomicU64,
    /// Bytes forwarded to the client.
    down: AtomicU64,
    /// Cut the link once `up` passes this (0: never).
    cut_at: AtomicU64,
    /// The link is cut: every connection is dropped at once.
    down_link: AtomicBool,
    /// Upward bytes per second (0: unlimited).
    throttle: AtomicU64,
    /// Downward bytes per second (0: unlimited).
    throttle_down: AtomicU64,
    stalled: AtomicBool,
    /// Requests answered with an error by the proxy itself.
    failed: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    fail: Mutex<Option<Fail>>,
    socks: Mutex<Vec<TcpStream>>,
}

struct Fail {
    pattern: String,
    left: u32,
    reply: String,
}

pub struct Proxy {
    pub port: u16,
    st: Arc<State>,
}

impl Proxy {
    /// Listen on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&l, RECV_BUF);
        let port = l.local_addr().unwrap().port();
        let st = Arc::new(State::default());
        let s = st.clone();
        std::thread::spawn(move || accept_loop(l, upstream, s));
        Proxy { port, st }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn up_bytes(&self) -> u64 {
        self.st.up.load(Ordering::SeqCst)
    }

    pub fn down_bytes(&self) -> u64 {
        self.st.down.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.st.failed.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.st.accepted.load(Ordering::SeqCst)
    }

    /// Cut the link once `n` more bytes went up.
    pub fn cut_after(&self, n: u64) {
        self.st
            .cut_at
            .store(self.up_bytes().saturating_add(n.max(1)), Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.st.down_link.load(Ordering::SeqCst)
    }

    /// The link is back; no cut is armed.
    pub fn heal(&self) {
        self.st.cut_at.store(0, Ordering::SeqCst);
        self.st.down_link.store(false, Ordering::SeqCst);
    }

    /// Upward bytes per second; 0: unlimited.
    pub fn throttle(&self, rate: u64) {
        self.st.throttle.store(rate, Ordering::SeqCst);
    }

    /// Downward bytes per second (answers); 0: unlimited.
    pub fn throttle_down(&self, rate: u64) {
        self.st.throttle_down.store(rate, Ordering::SeqCst);
    }

    pub fn stall(&self, on: bool) {
        self.st.stalled.store(on, Ordering::SeqCst);
    }

    /// Answer the next `k` requests whose request line contains `pattern`
    /// with `status` (like "503 Slow Down") and an S3 error `code`.
    pub fn fail_next(&self, pattern: &str, k: u32, status: &str, code: &str) {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
        );
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        *self.st.fail.lock().unwrap() = Some(Fail {
            pattern: pattern.to_string(),
            left: k,
            reply,
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.st.stop.store(true, Ordering::SeqCst);
        for s in self.st.socks.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(l: TcpListener, upstream: u16, st: Arc<State>) {
    while !st.stop.load(Ordering::SeqCst) {
        let c = match l.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        st.accepted.fetch_add(1, Ordering::SeqCst);
        if st.down_link.load(Ordering::SeqCst) {
            drop(c);
            continue;
        }
        let _ = c.set_nonblocking(false);
        // A link without deep buffers: what the proxy holds back (stalled
        // or throttled) stays in the client's send queue, where the client
        // sees it as no progress, instead of being taken in here at once.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&c, RECV_BUF);
        let Ok(s) = TcpStream::connect(("127.0.0.1", upstream)) else {
            continue;
        };
        {
            let mut socks = st.socks.lock().unwrap();
            socks.retain(|x| x.peer_addr().is_ok());
            for x in [&c, &s] {
                if let Ok(x) = x.try_clone() {
                    socks.push(x);
                }
            }
        }
        let (c2, s2, st2) = (c.try_clone().unwrap(), s.try_clone().unwrap(), st.clone());
        std::thread::spawn(move || pump_down(s2, c2, st2));
        let st1 = st.clone();
        std::thread::spawn(move || pump_up(c, s, st1));
    }
}

fn wait_while_stalled(st: &State) {
    while st.stalled.load(Ordering::SeqCst) && !st.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Reset the client's connection (RST, not FIN): no lingering on close,
/// and every other descriptor of it dropped, so that the caller's return
/// closes the last one; the server's side is just closed.
fn reset(c: &TcpStream, s: &TcpStream, st: &State) {
    let _ = rustix::net::sockopt::set_socket_linger(c, Some(Duration::ZERO));
    let peer = c.peer_addr().ok();
    st.socks
        .lock()
        .unwrap()
        .retain(|x| x.peer_addr().ok() != peer);
    let _ = s.shutdown(Shutdown::Both);
}

/// Forward `bytes` up with the faults applied; `false`: the link was cut.
fn forward(bytes: &[u8], c: &TcpStream, mut s: &TcpStream, st: &State) -> bool {
    for piece in bytes.chunks(8 << 10) {
        wait_while_stalled(st);
        if st.down_link.load(Ordering::SeqCst) {
            close(c, s);
            return false;
        }
        let at = st.up.load(Ordering::SeqCst);
        let cut = st.cut_at.load(Ordering::SeqCst);
        let piece = if cut > 0 && at + piece.len() as u64 >= cut {
            let n = usize::try_from(cut - at).unwrap_or(0).min(piece.len());
            let _ = s.write_all(&piece[..n]);
            st.up.fetch_add(n as u64, Ordering::SeqCst);
            st.down_link.store(true, Ordering::SeqCst);
            reset(c, s, st);
            return false;
        } else {
            piece
        };
        let rate = st.throttle.load(Ordering::SeqCst);
        if rate > 0 {
            std::thread::sleep(Duration::from_secs_f64(piece.len() as f64 / rate as f64));
        }
        if s.write_all(piece).is_err() {
            close(c, s);
            return false;
        }
        st.up.fetch_add(piece.len() as u64, Ordering::SeqCst);
    }
    true
}

fn content_length(head: &[u8]) -> u64 {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Client to server, request by request.
fn pump_up(mut c: TcpStream, s: TcpStream, st: Arc<State>) {
    let mut buf = vec![0u8; BUF];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // The head.
        let end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match c.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = s.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head: Vec<u8> = pending.drain(..end).collect();
        let len = content_length(&head);
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let fail = {
            let mut f = st.fail.lock().unwrap();
            match f.as_mut() {
                Some(x) if x.left > 0 && line.contains(&x.pattern) => {
                    x.left -= 1;
                    Some(x.reply.clone())
                }
                _ => None,
            }
        };
        let have = (pending.len() as u64).min(len);
        let body_now: Vec<u8> = pending.drain(..have as usize).collect();
        let mut left = len - have;
        if let Some(reply) = fail {
            // Read the body like a server, then answer and close.
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(BUF));
                match c.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left -= n as u64,
                }
            }
            st.failed.fetch_add(1, Ordering::SeqCst);
            let _ = c.write_all(reply.as_bytes());
            close(&c, &s);
            return;
        }
        if !forward(&head, &c, &s, &st) || !forward(&body_now, &c, &s, &st) {
            return;
        }
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(BUF));
            match c.read(&mut buf[..want]) {
                Ok(0) | Err(_) => {
                    close(&c, &s);
                    return;
                }
                Ok(n) => {
                    left -= n as u64;
                    if !forward(&buf[..n], &c, &s, &st) {
                        return;
                    }
                }
            }
        }
    }
}

/// Server to client, as it comes (held while stalled).
fn pump_down(mut s: TcpStream, mut c: TcpStream, st: Arc<State>) {
    let mut buf = vec![0u8; BUF];
    loop {
        match s.read(&mut buf) {
            // A cut link ends with a reset of the client's side (see
            // `reset`), not with an orderly end.
            Ok(0) | Err(_) if st.down_link.load(Ordering::SeqCst) => return,
            Ok(0) | Err(_) => {
                let _ = c.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                for piece in buf[..n].chunks(8 << 10) {
                    wait_while_stalled(&st);
                    let rate = st.throttle_down.load(Ordering::SeqCst);
                    if rate > 0 {
                        std::thread::sleep(Duration::from_secs_f64(
                            piece.len() as f64 / rate as f64,
                        ));
                    }
                    if st.down_link.load(Ordering::SeqCst) || c.write_all(piece).is_err() {
                        close(&c, &s);
                        return;
                    }
                    st.down.fetch_add(piece.len() as u64, Ordering::SeqCst);
                }
            }
        }
    }
}

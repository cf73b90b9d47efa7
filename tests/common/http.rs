//! The receiving side of an HTTP/1.1 request, for the test receivers of
//! webhooks (`tests/alerting.rs`, `tests/monitor_rss.rs`).

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// One request read from `conn`: its head (request line and headers, up to
/// the blank line) and as many body bytes as its `Content-Length` says.
/// `None` if the connection ends or stalls for 30 s first.
pub fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, body))
}

//! The dead-man's switch: healthchecks-style pings of `heartbeat_url`
//! around each backup job — `URL/start` when it starts, `URL` when it
//! succeeded, `URL/fail` (a `POST` whose body is the error) when it
//! failed — so a board that stops entirely is noticed by what stops
//! hearing from it.
//!
//! Invariants: a job never waits for a ping (it is queued, at most
//! [`QUEUE`] of them; more are dropped with a debug line); pings are sent
//! one at a time by their own task, each bounded by [`TIMEOUTS`]; a
//! failure is only logged (the next ping is the retry).

use std::time::Duration;

use crate::net::http::{self, Timeouts};
use crate::net::url::HttpUrl;

/// Pings waiting at most.
pub const QUEUE: usize = 16;
pub const TIMEOUTS: Timeouts = Timeouts::new(Duration::from_secs(5), Duration::from_secs(10));

/// What a ping says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    /// With the error (sent as the body).
    Fail(String),
}

/// The request for `ping`: method, URL and body.
pub fn request(base: &HttpUrl, ping: &Ping) -> (&'static str, HttpUrl, Vec<u8>) {
    match ping {
        Ping::Start => ("GET", base.with_suffix("start"), Vec::new()),
        Ping::Success => ("GET", base.clone(), Vec::new()),
        Ping::Fail(e) => (
            "POST",
            base.with_suffix("fail"),
            e.chars().take(2000).collect::<String>().into_bytes(),
        ),
    }
}

/// Send one ping; errors are logged.
pub async fn send(base: &HttpUrl, ping: &Ping) {
    let (method, url, body) = request(base, ping);
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("Content-Type", "text/plain; charset=utf-8")]
    };
    match http::request(&url, method, headers, &body, TIMEOUTS).await {
        Ok(code) if (200..300).contains(&code) => log::debug!("heartbeat {url}: HTTP {code}"),
        Ok(code) => log::warn!("heartbeat {url}: HTTP {code}"),
        Err(e) => log::warn!("heartbeat {url}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_follow_healthchecks() {
        let u = HttpUrl::parse("http://hc.local/ping/abc").unwrap();
        assert_eq!(request(&u, &Ping::Start).1.target, "/ping/abc/start");
        assert_eq!(request(&u, &Ping::Success).1.target, "/ping/abc");
        let (m, f, body) = request(&u, &Ping::Fail("disk full".into()));
        assert_eq!(
            (m, f.target.as_str(), body.as_slice()),
            ("POST", "/ping/abc/fail", &b"disk full"[..])
        );
    }
}

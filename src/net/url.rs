//! `http://host[:port][/path][?query]` URLs: the only ones the webhook sink
//! and the heartbeat speak (HTTPS goes through an `exec` sink with curl);
//! the offsite store's endpoint may also be `https://` ([`HttpUrl::parse_endpoint`]).
//!
//! Invariants: a parsed URL holds only printable ASCII without spaces (so
//! nothing it holds can break a request line or a header); the host is a
//! DNS name, an IPv4 address or a bracketed IPv6 literal; the port is
//! 1–65535 (80, or 443 for https, when absent); user info (`user@`) and fragments are refused.

use std::fmt;

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// As written in the config (for messages).
    pub text: String,
    /// Without brackets for an IPv6 literal.
    pub host: String,
    pub ipv6: bool,
    pub port: u16,
    /// `https://`: the connection must be TLS.
    pub tls: bool,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl HttpUrl {
    /// An `http://` URL (alert sinks, the heartbeat).
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        Self::parse_with(text, false)
    }

    /// An `http://` or `https://` URL (the offsite store's endpoint).
    pub fn parse_endpoint(text: &str) -> Result<HttpUrl, String> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &str, https: bool) -> Result<HttpUrl, String> {
        let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
        let tls = https && lower.starts_with("https://");
        if lower.starts_with("https://") && !https {
            return Err(format!(
                "{text:?}: only http:// is spoken here; for HTTPS use an exec sink running curl, e.g. command = [\"/usr/bin/curl\", \"-fsS\", \"--max-time\", \"20\", \"-H\", \"Content-Type: application/json\", \"--data-binary\", \"@-\", \"https://…\"]"
            ));
        }
        let rest = if tls {
            text.get(8..)
        } else {
            lower
                .starts_with("http://")
                .then(|| text.get(7..))
                .flatten()
        };
        let Some(rest) = rest else {
            return Err(format!(
                "{text:?} is not an http:// URL (for HTTPS or any other scheme use an exec sink with curl)"
            ));
        };
        if text.len() > MAX_URL {
            return Err(format!("the URL is longer than {MAX_URL} bytes"));
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "{text:?} holds {c:?}; a URL here is printable ASCII without spaces (percent-encode the rest)"
            ));
        }
        if text.contains('#') {
            return Err(format!(
                "{text:?}: a fragment (#…) means nothing to a server; drop it"
            ));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target.strip_prefix('?') {
            Some(q) => format!("/?{q}"),
            None if target.is_empty() => "/".to_string(),
            None => target.to_string(),
        };
        if authority.contains('@') {
            return Err(format!(
                "{text:?}: user names and passwords in URLs are not supported"
            ));
        }
        let (host, ipv6, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: an IPv6 address needs its closing ']'"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{text:?}: {h:?} is not an IPv6 address"));
            }
            let port =
                match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| {
                        format!("{text:?}: expected ':PORT' after the IPv6 address")
                    })?),
                };
            (h.to_string(), true, port)
        } else {
            let (h, p) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if !valid_host(h) {
                return Err(format!(
                    "{text:?}: {h:?} is not a host name or IPv4 address"
                ));
            }
            (h.to_ascii_lowercase(), false, p)
        };
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{text:?}: port {p:?} must be from 1 to 65535")),
            },
        };
        Ok(HttpUrl {
            text: text.to_string(),
            host,
            ipv6,
            port,
            tls,
            target,
        })
    }

    /// The `Host` header's value.
    pub fn host_header(&self) -> String {
        let h = if self.ipv6 {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    /// The same URL with `/suffix` added to its path (before any query):
    /// the heartbeat's `/start` and `/fail`.
    pub fn with_suffix(&self, suffix: &str) -> HttpUrl {
        let (path, query) = match self.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.target.as_str(), None),
        };
        let mut target = path.trim_end_matches('/').to_string();
        target.push('/');
        target.push_str(suffix);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        HttpUrl {
            text: format!("{} (/{suffix})", self.text),
            target,
            ..self.clone()
        }
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl<'de> serde::Deserialize<'de> for HttpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HttpUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn good_urls() {
        let u = HttpUrl::parse("http://Example.com:8080/hook/x?a=1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("example.com", 8080));
        assert_eq!(u.target, "/hook/x?a=1");
        assert_eq!(u.host_header(), "example.com:8080");
        let u = HttpUrl::parse("http://10.0.0.7").unwrap();
        assert_eq!((u.port, u.target.as_str()), (80, "/"));
        assert_eq!(u.host_header(), "10.0.0.7");
        let u = HttpUrl::parse("http://[::1]:9/p").unwrap();
        assert!(u.ipv6);
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.host_header(), "[::1]:9");
        let u = HttpUrl::parse("HTTP://h?x").unwrap();
        assert_eq!(u.target, "/?x");
        let hb = HttpUrl::parse("http://hc.local/ping/abc/?k=v").unwrap();
        assert_eq!(hb.with_suffix("start").target, "/ping/abc/start?k=v");
        assert_eq!(
            HttpUrl::parse("http://h")
                .unwrap()
                .with_suffix("fail")
                .target,
            "/fail"
        );
    }

    #[test]
    fn endpoints_may_be_https() {
        let u = HttpUrl::parse_endpoint("https://s3.example.com").unwrap();
        assert!(u.tls);
        assert_eq!((u.port, u.host_header().as_str()), (443, "s3.example.com"));
        let u = HttpUrl::parse_endpoint("http://127.0.0.1:8333").unwrap();
        assert!(!u.tls);
        assert_eq!(u.host_header(), "127.0.0.1:8333");
        assert!(HttpUrl::parse_endpoint("ftp://x").is_err());
    }

    #[test]
    fn bad_urls_say_why() {
        for (bad, why) in [
            ("https://x/y", "exec sink running curl"),
            ("ftp://x", "not an http:// URL"),
            ("http://", "not a host name"),
            ("http://a b/", "printable ASCII"),
            ("http://x/\r\nHost: evil", "printable ASCII"),
            ("http://u:p@x/", "user names"),
            ("http://x:0/", "from 1 to 65535"),
            ("http://x:65536/", "from 1 to 65535"),
            ("http://x:+80/", "from 1 to 65535"),
            ("http://[::1/", "closing"),
            ("http://[zz]/", "not an IPv6"),
            ("http://-x-/", "not a host name"),
            ("http://x/#frag", "fragment"),
            ("http://x..y/", "not a host name"),
        ] {
            let e = HttpUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_keeps_targets_clean(s in "\\PC{0,80}", t in "http://[a-z0-9.:\\[\\]/?%-]{0,40}") {
            for text in [s, t] {
                if let Ok(u) = HttpUrl::parse(&text) {
                    prop_assert!(u.target.starts_with('/'));
                    prop_assert!(u.target.bytes().all(|b| b.is_ascii_graphic()));
                    prop_assert!(u.host_header().bytes().all(|b| b.is_ascii_graphic()));
                }
            }
        }
    }
}

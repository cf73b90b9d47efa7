//! The `[offsite]` config section: where the S3-compatible store is and
//! how to talk to it. Every key is checked while the config is parsed, so
//! an error names the key and its line.
//!
//! Invariants: the endpoint is `http://` or `https://` with no path (the
//! store is addressed path-style: `/<bucket>/<key>`); the bucket is a valid
//! S3 bucket name; the prefix, when given, is made of `[A-Za-z0-9._-]`
//! segments separated by `/` and ends with `/`; the access key id is
//! printable ASCII; the secret is not in the config but in
//! `secret_key_file` (mode 0600, read with the same checks as the key
//! file, see [`load_secret`]).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::config::{AbsPath, BoundedDuration, BoundedSize, ByteSize, IntervalDuration};
use crate::error::{msg, Result};
use crate::net::url::HttpUrl;

/// `interval` when absent: the daemon syncs every 15 minutes (besides after
/// each backup and WAL segment).
pub const DEFAULT_INTERVAL_S: u64 = 900;
/// S3's smallest multipart part (except the last).
pub const MIN_PART: u64 = 5 << 20;
/// `multipart_size` when absent.
pub const DEFAULT_PART: u64 = 8 << 20;
/// Largest `multipart_size`.
pub const MAX_PART: u64 = 512 << 20;
/// Longest secret key file read.
pub const MAX_SECRET_LEN: usize = 4096;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsiteSection {
    pub endpoint: Endpoint,
    pub bucket: Bucket,
    pub prefix: Option<Prefix>,
    pub region: Option<Token>,
    pub access_key_id: Token,
    pub secret_key_file: AbsPath,
    pub interval: Option<IntervalDuration>,
    /// Bytes per second, like "256K"; absent: as fast as the link goes.
    pub bandwidth_limit: Option<Rate>,
    pub ca_file: Option<AbsPath>,
    /// Part size of multipart uploads (objects larger than this are sent
    /// in parts); 5M to 512M, default 8M.
    pub multipart_size: Option<BoundedSize<MIN_PART, MAX_PART>>,
    /// Longest wait for the store to make progress (connect, send a
    /// piece, answer); default 60s. A stalled link fails after it.
    pub timeout: Option<OffsiteTimeout>,
}

/// `timeout`: 1s to 1h.
pub type OffsiteTimeout = BoundedDuration<1, 3600>;
/// `timeout` when absent.
pub const DEFAULT_TIMEOUT_S: u64 = 60;

impl OffsiteSection {
    pub fn region(&self) -> &str {
        self.region.as_ref().map_or("us-east-1", |t| t.0.as_str())
    }

    pub fn interval(&self) -> Duration {
        self.interval
            .map_or(Duration::from_secs(DEFAULT_INTERVAL_S), |d| d.0)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
            .map_or(Duration::from_secs(DEFAULT_TIMEOUT_S), |d| d.0)
    }

    pub fn part_size(&self) -> u64 {
        self.multipart_size.map_or(DEFAULT_PART, |b| b.0)
    }

    /// The key prefix: as configured, else `<hostname>/`.
    pub fn prefix(&self) -> Result<String> {
        if let Some(p) = &self.prefix {
            return Ok(p.0.clone());
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| {
            msg(format!(
                "cannot read the host name for the offsite prefix: {e}; set [offsite] prefix"
            ))
        })?;
        let host = host.trim();
        Prefix::check(&format!("{host}/"))
            .map(|p| p.0)
            .map_err(|e| {
                msg(format!(
                    "the host name cannot be the offsite prefix ({e}); set [offsite] prefix"
                ))
            })
    }
}

/// `endpoint`: an `http://` or `https://` URL without a path.
#[derive(Clone, Debug)]
pub struct Endpoint(pub HttpUrl);

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let u = HttpUrl::parse_endpoint(&s).map_err(serde::de::Error::custom)?;
        if u.target != "/" {
            return Err(serde::de::Error::custom(format!(
                "{s:?}: the endpoint is the server only (like \"https://s3.example.com\" or \"http://10.0.0.5:8333\"), without a path; the bucket goes in `bucket`"
            )));
        }
        Ok(Endpoint(u))
    }
}

/// `bucket`: 3 to 63 of `[a-z0-9.-]`, starting and ending with a letter
/// or digit.
#[derive(Clone, Debug)]
pub struct Bucket(pub String);

impl<'de> Deserialize<'de> for Bucket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = (3..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
            && !s.contains("..");
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "bucket {s:?} is not an S3 bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit"
            )));
        }
        Ok(Bucket(s))
    }
}

/// `prefix`: segments of `[A-Za-z0-9._-]` separated by `/`, ending with
/// `/` (added when missing); empty means the bucket's top.
#[derive(Clone, Debug)]
pub struct Prefix(pub String);

impl Prefix {
    pub fn check(s: &str) -> std::result::Result<Prefix, String> {
        if s.is_empty() {
            return Ok(Prefix(String::new()));
        }
        let t = s.strip_suffix('/').unwrap_or(s);
        if s.len() > 512
            || t.split('/').any(|seg| {
                seg.is_empty()
                    || seg == "."
                    || seg == ".."
                    || !seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            })
        {
            return Err(format!(
                "prefix {s:?} must be segments of letters, digits, '.', '_' and '-' separated by '/' (like \"fleet/board-0042/\"), at most 512 bytes"
            ));
        }
        Ok(Prefix(format!("{t}/")))
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Prefix::check(&s).map_err(serde::de::Error::custom)
    }
}

/// `region`, `access_key_id`: 1 to 128 printable ASCII characters, no spaces.
#[derive(Clone, Debug)]
pub struct Token(pub String);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(serde::de::Error::custom(format!(
                "{s:?} must be 1 to 128 printable ASCII characters without spaces"
            )));
        }
        Ok(Token(s))
    }
}

/// `bandwidth_limit`: bytes per second, like "256K" or "1M" (at least 1K).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(pub u64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = ByteSize::deserialize(d)?.0;
        if !(1024..=(1u64 << 40)).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "bandwidth_limit {n} is out of range: write bytes per second like \"256K\" or \"1M\" (at least \"1K\")"
            )));
        }
        Ok(Rate(n))
    }
}

/// Read `secret_key_file`: a small regular file, mode 0600 (the key
/// file's rules), holding the secret on one line.
pub fn load_secret(path: &Path) -> Result<Zeroizing<String>> {
    use crate::fsutil::{read_regular, Follow};
    let (meta, bytes) = read_regular(path, MAX_SECRET_LEN, Follow::Yes).map_err(|e| {
        msg(format!(
            "cannot read the offsite secret_key_file {}: {e} (it must be a regular file, mode 0600, holding the secret access key)",
            path.display()
        ))
    })?;
    let bytes = Zeroizing::new(bytes);
    crate::fsutil::check_secret_mode(path, &meta, "offsite secret_key_file")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        msg(format!(
            "offsite secret_key_file {} is not text",
            path.display()
        ))
    })?;
    let secret = Zeroizing::new(text.trim().to_string());
    if secret.is_empty()
        || secret.contains(char::is_whitespace)
        || !secret.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(msg(format!(
            "offsite secret_key_file {} must hold the secret access key on one line",
            path.display()
        )));
    }
    Ok(secret)
}

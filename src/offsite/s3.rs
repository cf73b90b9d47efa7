//! The S3 calls the offsite store needs, on the shared HTTP client:
//! put (never over an existing object: `If-None-Match: *`), head, get
//! (with a range, streamed), ListObjectsV2 with continuation, multipart
//! create / upload part / complete / abort / list parts, and delete (for
//! `offsite prune` only). Path-style
//! addressing: `<endpoint>/<bucket>/<key>`.
//!
//! Invariants: every request is signed (SigV4) with the hex SHA-256 of
//! its body, computed in a first pass over a file range in fixed memory;
//! request bodies are sent in [`CHUNK`]-byte pieces paced by the caller's
//! [`Pacer`]; a buffered answer is at most [`MAX_ANSWER`] bytes; a 503 (or
//! a 500, or `SlowDown`) is retried after a growing pause, at most
//! [`RETRIES`] times; one connection is kept alive between calls and
//! replaced when it cannot be reused. Errors an operator can act on are
//! typed ([`S3Error`]) and say what to do.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::md5::{self, Md5};
use super::pace::Pacer;
use super::sigv4::{self, Credentials};
use super::xml;
use crate::net::http::{head_text, Conn, Framing, Head, Timeouts};
use crate::net::url::HttpUrl;
use crate::net::NetError;

/// Piece size of bodies sent and of hashing passes.
pub const CHUNK: usize = 64 << 10;
/// Largest answer body kept in memory (listings, errors).
pub const MAX_ANSWER: usize = xml::MAX_DOC;
/// Retries after 503/500/SlowDown.
pub const RETRIES: u32 = 5;
/// The slowest average upload rate (bytes per second) an exchange's
/// total deadline allows for its body: 4 KiB/s, an 8 MiB part in 34 min.
pub const MIN_RATE: u64 = 4 << 10;
/// Most objects asked for per listing page.
pub const PAGE: &str = "1000";

/// Why an S3 call failed.
#[derive(Debug)]
pub enum S3Error {
    /// Cannot connect, or no answer in time.
    Unreachable(String),
    /// 403 with SignatureDoesNotMatch / InvalidAccessKeyId.
    Credentials(String),
    /// RequestTimeTooSkewed.
    ClockSkew(String),
    /// NoSuchBucket.
    NoBucket(String),
    /// Any other HTTP status.
    Http {
        status: u16,
        code: String,
        message: String,
        what: String,
    },
    /// A broken connection or an answer that makes no sense.
    Other(String),
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Error::Unreachable(m)
            | S3Error::Credentials(m)
            | S3Error::ClockSkew(m)
            | S3Error::NoBucket(m)
            | S3Error::Other(m) => f.write_str(m),
            S3Error::Http {
                status,
                code,
                message,
                what,
            } => {
                write!(f, "the offsite store answered {what} with HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// Where a streamed answer body goes, piece by piece.
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), NetError> + 'a;

/// What a request sends.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    /// The hex SHA-256 (for the signature) and the base64 MD5 (for
    /// `Content-MD5`, which the server checks) of the body: one pass over
    /// a file range, yielding to the executor after each chunk (the
    /// daemon answers its socket while a large part is hashed).
    async fn digests(&self) -> Result<(String, Option<String>), S3Error> {
        let mut h = Sha256::new();
        let mut m = Md5::new();
        match self {
            Body::Empty => return Ok((sigv4::EMPTY_SHA256.to_string(), None)),
            Body::Bytes(b) => {
                h.update(b);
                m.update(b);
            }
            Body::File { file, offset, len } => {
                let mut buf = vec![0u8; CHUNK];
                let mut done = 0u64;
                while done < *len {
                    let n = read_range(file, offset + done, len - done, &mut buf)?;
                    h.update(&buf[..n]);
                    m.update(&buf[..n]);
                    done += n as u64;
                    smol::future::yield_now().await;
                }
            }
        }
        Ok((sigv4::hex(&h.finalize()), Some(md5::base64(&m.finish()))))
    }
}

/// Read up to `buf.len()` (and at most `left`) bytes at `at`; an early end
/// of the file is an error (the file shrank under us).
fn read_range(file: &File, at: u64, left: u64, buf: &mut [u8]) -> Result<usize, S3Error> {
    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    let n = file
        .read_at(&mut buf[..want], at)
        .map_err(|e| S3Error::Other(format!("cannot read the local file to upload: {e}")))?;
    if n == 0 && want > 0 {
        return Err(S3Error::Other(
            "a local file became shorter while it was uploaded".into(),
        ));
    }
    Ok(n)
}

/// An answer: status, head, and the body unless it was streamed.
pub struct Reply {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub modified: String,
}

/// One uploaded part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub size: u64,
    pub etag: String,
}

/// A put's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Created,
    /// The object exists already (412 to `If-None-Match: *`).
    Exists,
}

/// A client for one bucket.
pub struct S3 {
    endpoint: HttpUrl,
    bucket: String,
    region: String,
    creds: Credentials,
    t: Timeouts,
    conn: Option<Conn>,
    /// The first pause after a 503 (1s; unit tests shorten it).
    backoff: Duration,
    /// For `https://` endpoints.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl S3 {
    pub fn new(
        endpoint: HttpUrl,
        bucket: &str,
        region: &str,
        creds: Credentials,
        t: Timeouts,
    ) -> S3 {
        S3 {
            endpoint,
            bucket: bucket.to_string(),
            region: region.to_string(),
            creds,
            t,
            conn: None,
            backoff: Duration::from_secs(1),
            tls: None,
        }
    }

    /// Speak TLS with this config to an `https://` endpoint.
    pub fn with_tls(mut self, cfg: std::sync::Arc<rustls::ClientConfig>) -> S3 {
        self.tls = Some(cfg);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> &HttpUrl {
        &self.endpoint
    }

    fn path(&self, key: Option<&str>) -> String {
        match key {
            Some(k) => format!("/{}/{}", self.bucket, sigv4::uri_encode(k, true)),
            None => format!("/{}", self.bucket),
        }
    }

    /// Send one request (retrying 503/500/SlowDown and a stale kept-alive
    /// connection); a 2xx body goes to `sink` when given, every other body
    /// is buffered (bounded).
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &mut self,
        method: &str,
        key: Option<&str>,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        body: Body<'_>,
        pacer: &mut Pacer,
        mut sink: Option<&mut Sink<'_>>,
        what: &str,
    ) -> Result<Reply, S3Error> {
        let (payload, content_md5) = body.digests().await?;
        let mut extra: Vec<(&str, &str)> = extra.to_vec();
        if let Some(m) = &content_md5 {
            extra.push(("content-md5", m));
        }
        let extra = &extra[..];
        let path = self.path(key);
        let target = {
            let q = sigv4::canonical_query(query);
            if q.is_empty() {
                path.clone()
            } else {
                format!("{path}?{q}")
            }
        };
        let mut pause = self.backoff;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let reused = self.conn.as_ref().is_some_and(Conn::reusable);
            let r = self
                .exchange(
                    method,
                    &path,
                    &target,
                    query,
                    extra,
                    &body,
                    &payload,
                    pacer,
                    sink.as_deref_mut(),
                    reused,
                )
                .await;
            let reply = match r {
                Ok(reply) => reply,
                Err((e, answered)) => {
                    self.conn = None;
                    // A kept-alive connection the server closed meanwhile
                    // (no answer began): once more on a fresh one.
                    if reused && !answered && matches!(e, NetError::Io(_)) && attempt == 1 {
                        continue;
                    }
                    return Err(match e {
                        NetError::Connect(m) | NetError::Timeout(m) => S3Error::Unreachable(format!(
                            "cannot reach the offsite store {}: {m}; check the network and [offsite] endpoint",
                            self.endpoint
                        )),
                        NetError::Unsupported(m) => S3Error::Other(m),
                        NetError::Tls(m) => S3Error::Other(format!(
                            "{m}; check the endpoint's certificate and [offsite] ca_file"
                        )),
                        NetError::Io(m) => S3Error::Other(format!(
                            "offsite store {}: {what}: {m}; the connection broke: sync again (what was confirmed is not sent again)",
                            self.endpoint
                        )),
                        NetError::Protocol(m) => {
                            S3Error::Other(format!("offsite store {}: {what}: {m}", self.endpoint))
                        }
                    });
                }
            };
            // Only 2xx: a 304 (from a confused proxy) would otherwise confirm
            // a PUT that stored nothing.
            if (200..300).contains(&reply.status) {
                return Ok(reply);
            }
            let events = xml::parse(&reply.body).unwrap_or_default();
            let code = xml::first(&events, "Code").unwrap_or_default();
            let message = xml::first(&events, "Message").unwrap_or_default();
            // BadDigest: the body was damaged on the way; send it again.
            let busy = reply.status == 503
                || code == "SlowDown"
                || code == "BadDigest"
                || (reply.status == 500 && code != "NotImplemented");
            if busy && attempt <= RETRIES {
                log::info!(
                    "offsite store busy ({} {code}), trying again in {}s",
                    reply.status,
                    pause.as_secs()
                );
                smol::Timer::after(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
                continue;
            }
            return Err(self.classify(reply, code, message, what));
        }
    }

    fn classify(&self, reply: Reply, code: String, message: String, what: &str) -> S3Error {
        let ep = &self.endpoint;
        match code.as_str() {
            "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AuthorizationHeaderMalformed" | "InvalidToken" => {
                S3Error::Credentials(format!(
                    "the offsite store {ep} rejected the credentials ({code}): check [offsite] access_key_id and the secret in secret_key_file"
                ))
            }
            "RequestTimeTooSkewed" => S3Error::ClockSkew(format!(
                "the offsite store {ep} refused the request because this board's clock is skewed (RequestTimeTooSkewed): set the clock (NTP) and sync again"
            )),
            "NoSuchBucket" => S3Error::NoBucket(format!(
                "the offsite bucket {:?} does not exist at {ep}: create it, or fix [offsite] bucket",
                self.bucket
            )),
            "AccessDenied" => S3Error::Credentials(format!(
                "the offsite store {ep} denied {what} (AccessDenied): the credentials in [offsite] lack that permission on bucket {:?}",
                self.bucket
            )),
            _ if reply.status == 403 && code.is_empty() => S3Error::Credentials(format!(
                "the offsite store {ep} answered {what} with 403 Forbidden: credentials rejected or not allowed; check [offsite] access_key_id and secret_key_file"
            )),
            _ => S3Error::Http {
                status: reply.status,
                code,
                message: message.chars().take(200).collect(),
                what: what.to_string(),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        target: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        body: &Body<'_>,
        payload: &str,
        pacer: &mut Pacer,
        sink: Option<&mut Sink<'_>>,
        reused: bool,
    ) -> Result<Reply, (NetError, bool)> {
        if !reused {
            self.conn = Some(
                Conn::open_with(&self.endpoint, self.t, self.tls.as_ref())
                    .await
                    .map_err(|e| (e, false))?,
            );
        }
        let host = self.endpoint.host_header();
        let amz_date = crate::timefmt::compact(crate::timefmt::now_unix());
        let mut headers: Vec<(&str, &str)> = vec![
            ("host", &host),
            ("x-amz-date", &amz_date),
            ("x-amz-content-sha256", payload),
        ];
        headers.extend_from_slice(extra);
        let auth = sigv4::authorization(
            &self.creds,
            &self.region,
            "s3",
            &sigv4::Request {
                method,
                path,
                query,
                headers: &headers,
                payload_sha256: payload,
                amz_date: &amz_date,
            },
        );
        let mut sent: Vec<(&str, &str)> = headers[1..].to_vec();
        sent.push(("Authorization", &auth));
        let head = head_text(method, target, &host, &sent, Some(body.len()), true);
        let Some(conn) = self.conn.as_mut() else {
            return Err((NetError::Io("no connection".into()), false));
        };
        // A body may take as long as the slowest link worth waiting for
        // needs for it (the idle bound still ends a stalled one).
        conn.begin_with(Duration::from_secs(body.len() / MIN_RATE));
        let sending = async {
            conn.send(head.as_bytes()).await?;
            match body {
                Body::Empty => {}
                Body::Bytes(b) => {
                    for piece in b.chunks(CHUNK) {
                        pacer.take(piece.len()).await;
                        conn.send(piece).await?;
                    }
                }
                Body::File { file, offset, len } => {
                    let mut buf = vec![0u8; CHUNK];
                    let mut done = 0u64;
                    while done < *len {
                        let n = read_range(file, offset + done, len - done, &mut buf)
                            .map_err(|e| NetError::Io(e.to_string()))?;
                        pacer.take(n).await;
                        conn.send(&buf[..n]).await?;
                        done += n as u64;
                        // A fast link never makes the send wait: let the
                        // daemon's other tasks in after each chunk.
                        smol::future::yield_now().await;
                    }
                }
            }
            conn.flush().await
        };
        let sent_ok = sending.await;
        // A server may answer (and close) before the whole body was sent:
        // its answer says more than the broken pipe.
        let head = match conn.read_head(method).await {
            Ok(h) => h,
            Err(e) => return Err((sent_ok.err().unwrap_or(e), false)),
        };
        let ok = (200..300).contains(&head.status);
        let body = match (ok, sink) {
            (true, Some(sink)) => {
                // A download may take as long as an upload of its size.
                if let Framing::Length(n) = head.framing {
                    conn.extend(Duration::from_secs(n / MIN_RATE));
                }
                conn.read_body(head.framing, sink)
                    .await
                    .map_err(|e| (e, true))?;
                Vec::new()
            }
            _ => conn
                .read_body_bounded(head.framing, MAX_ANSWER)
                .await
                .map_err(|e| (e, true))?,
        };
        if sent_ok.is_err() {
            self.conn = None;
        }
        Ok(Reply {
            status: head.status,
            head,
            body,
        })
    }

    /// HEAD: the object's size and ETag, or `None` when it does not exist.
    pub async fn head(&mut self, key: &str) -> Result<Option<Object>, S3Error> {
        let r = self
            .call(
                "HEAD",
                Some(key),
                &[],
                &[],
                Body::Empty,
                &mut Pacer::new(None),
                None,
                "HEAD",
            )
            .await;
        match r {
            Ok(r) => {
                let size = r
                    .head
                    .get("content-length")
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        S3Error::Other(format!("HEAD {key}: the answer has no Content-Length"))
                    })?;
                Ok(Some(Object {
                    key: key.to_string(),
                    size,
                    etag: r.head.get("etag").unwrap_or("").to_string(),
                    modified: r.head.get("last-modified").unwrap_or("").to_string(),
                }))
            }
            Err(S3Error::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PUT a whole object, refused by the server if it exists.
    pub async fn put_new(
        &mut self,
        key: &str,
        body: Body<'_>,
        pacer: &mut Pacer,
    ) -> Result<Put, S3Error> {
        let r = self
            .call(
                "PUT",
                Some(key),
                &[],
                &[("if-none-match", "*")],
                body,
                pacer,
                None,
                "PUT",
            )
            .await;
        match r {
            Ok(_) => Ok(Put::Created),
            Err(S3Error::Http { status: 412, .. }) => Ok(Put::Exists),
            Err(e) => Err(e),
        }
    }

    /// GET (a byte range `first..=last` of) an object into `sink`.
    pub async fn get(
        &mut self,
        key: &str,
        range: Option<(u64, u64)>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), NetError>,
    ) -> Result<(), S3Error> {
        let r = range.map(|(a, b)| format!("bytes={a}-{b}"));
        let extra: Vec<(&str, &str)> = r.iter().map(|v| ("range", v.as_str())).collect();
        self.call(
            "GET",
            Some(key),
            &[],
            &extra,
            Body::Empty,
            &mut Pacer::new(None),
            Some(sink),
            "GET",
        )
        .await
        .map(|_| ())
    }

    /// One page of ListObjectsV2 under `prefix`; the continuation token of
    /// the next page, if any.
    pub async fn list_page(
        &mut self,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<(Vec<Object>, Option<String>), S3Error> {
        self.list_keys(prefix, token, PAGE).await
    }

    /// Check credentials, clock and bucket with the smallest request that
    /// needs all three: a listing of at most one key (a sync may start
    /// every few seconds over a metered link; a full page is ~300 KB).
    pub async fn probe(&mut self, prefix: &str) -> Result<(), S3Error> {
        self.list_keys(prefix, None, "1").await.map(|_| ())
    }

    async fn list_keys(
        &mut self,
        prefix: &str,
        token: Option<&str>,
        max_keys: &str,
    ) -> Result<(Vec<Object>, Option<String>), S3Error> {
        let mut q: Vec<(&str, &str)> = vec![
            ("list-type", "2"),
            ("prefix", prefix),
            ("max-keys", max_keys),
        ];
        if let Some(t) = token {
            q.push(("continuation-token", t));
        }
        let r = self
            .call(
                "GET",
                None,
                &q,
                &[],
                Body::Empty,
                &mut Pacer::new(None),
                None,
                "a listing",
            )
            .await?;
        let ev = xml::parse(&r.body).map_err(|e| S3Error::Other(format!("listing: {e}")))?;
        let mut out = Vec::new();
        for rec in xml::records(&ev, "Contents", &["Key", "Size", "ETag", "LastModified"]) {
            let mut it = rec.into_iter();
            let (Some(Some(key)), Some(size)) = (it.next(), it.next()) else {
                return Err(S3Error::Other("listing: an entry without a key".into()));
            };
            let size = size
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| S3Error::Other(format!("listing: {key} has no size")))?;
            out.push(Object {
                key,
                size,
                etag: it.next().flatten().unwrap_or_default(),
                modified: it.next().flatten().unwrap_or_default(),
            });
        }
        let next = (xml::first(&ev, "IsTruncated").as_deref() == Some("true"))
            .then(|| xml::first(&ev, "NextContinuationToken"))
            .flatten()
            .filter(|t| !t.is_empty());
        if next.is_none() && xml::first(&ev, "IsTruncated").as_deref() == Some("true") {
            return Err(S3Error::Other(
                "listing: truncated without a continuation token".into(),
            ));
        }
        Ok((out, next))
    }

    /// Start a multipart upload; its id.
    pub async fn create_multipart(&mut self, key: &str) -> Result<String, S3Error> {
        let r = self
            .call(
                "POST",
                Some(key),
                &[("uploads", "")],
                &[],
                Body::Empty,
                &mut Pacer::new(None),
                None,
                "starting a multipart upload",
            )
            .await?;
        let ev =
            xml::parse(&r.body).map_err(|e| S3Error::Other(format!("multipart start: {e}")))?;
        xml::first(&ev, "UploadId")
            .filter(|u| !u.is_empty() && u.len() <= 1024 && u.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                S3Error::Other("multipart start: the answer has no usable UploadId".into())
            })
    }

    /// Upload part `number`; its ETag.
    pub async fn upload_part(
        &mut self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Body<'_>,
        pacer: &mut Pacer,
    ) -> Result<String, S3Error> {
        let n = number.to_string();
        let r = self
            .call(
                "PUT",
                Some(key),
                &[("partNumber", &n), ("uploadId", upload_id)],
                &[],
                body,
                pacer,
                None,
                "a part upload",
            )
            .await?;
        r.head.get("etag").map(str::to_string).ok_or_else(|| {
            S3Error::Other(format!("part {number} of {key}: the answer has no ETag"))
        })
    }

    /// The parts uploaded so far, or `None` when the upload is unknown
    /// (completed, aborted or expired).
    pub async fn list_parts(
        &mut self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<Part>>, S3Error> {
        let mut out = Vec::new();
        let mut marker = String::from("0");
        for _ in 0..100 {
            let r = self
                .call(
                    "GET",
                    Some(key),
                    &[("uploadId", upload_id), ("part-number-marker", &marker)],
                    &[],
                    Body::Empty,
                    &mut Pacer::new(None),
                    None,
                    "a parts listing",
                )
                .await;
            let r = match r {
                Ok(r) => r,
                Err(S3Error::Http { status: 404, .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let ev =
                xml::parse(&r.body).map_err(|e| S3Error::Other(format!("parts listing: {e}")))?;
            for rec in xml::records(&ev, "Part", &["PartNumber", "Size", "ETag"]) {
                let mut it = rec.into_iter();
                let number = it.next().flatten().and_then(|s| s.parse::<u32>().ok());
                let size = it.next().flatten().and_then(|s| s.parse::<u64>().ok());
                let (Some(number), Some(size)) = (number, size) else {
                    return Err(S3Error::Other(
                        "parts listing: a part without number or size".into(),
                    ));
                };
                out.push(Part {
                    number,
                    size,
                    etag: it.next().flatten().unwrap_or_default(),
                });
            }
            if xml::first(&ev, "IsTruncated").as_deref() != Some("true") {
                return Ok(Some(out));
            }
            match xml::first(&ev, "NextPartNumberMarker") {
                Some(m) if m != marker && !m.is_empty() => marker = m,
                _ => {
                    return Err(S3Error::Other(
                        "parts listing: truncated without a next marker".into(),
                    ))
                }
            }
        }
        Err(S3Error::Other("parts listing: more than 100 pages".into()))
    }

    /// Complete a multipart upload from its parts (ascending numbers).
    pub async fn complete(
        &mut self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<Put, S3Error> {
        let mut doc = String::from("<CompleteMultipartUpload>");
        for p in parts {
            let etag = p
                .etag
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            doc.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>",
                p.number
            ));
        }
        doc.push_str("</CompleteMultipartUpload>");
        let r = self
            .call(
                "POST",
                Some(key),
                &[("uploadId", upload_id)],
                &[("if-none-match", "*"), ("content-type", "application/xml")],
                Body::Bytes(doc.as_bytes()),
                &mut Pacer::new(None),
                None,
                "completing a multipart upload",
            )
            .await;
        let r = match r {
            Ok(r) => r,
            Err(S3Error::Http { status: 412, .. }) => return Ok(Put::Exists),
            Err(e) => return Err(e),
        };
        // A 200 may still carry an error document.
        let ev = xml::parse(&r.body)
            .map_err(|e| S3Error::Other(format!("multipart completion: {e}")))?;
        if let Some(code) = xml::first(&ev, "Code") {
            let message = xml::first(&ev, "Message").unwrap_or_default();
            return Err(S3Error::Http {
                status: r.status,
                code,
                message,
                what: "completing a multipart upload".into(),
            });
        }
        Ok(Put::Created)
    }

    /// DELETE an object (`offsite prune`, with its own credentials); an
    /// object already gone counts as deleted.
    pub async fn delete(&mut self, key: &str) -> Result<(), S3Error> {
        self.delete_gone_ok(key, &[], "a DELETE").await
    }

    /// Abort a multipart upload (its parts are dropped by the server).
    pub async fn abort(&mut self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.delete_gone_ok(
            key,
            &[("uploadId", upload_id)],
            "aborting a multipart upload",
        )
        .await
    }

    /// A DELETE for which 404 (already gone) is success.
    async fn delete_gone_ok(
        &mut self,
        key: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<(), S3Error> {
        match self
            .call(
                "DELETE",
                Some(key),
                query,
                &[],
                Body::Empty,
                &mut Pacer::new(None),
                None,
                what,
            )
            .await
        {
            Ok(_) | Err(S3Error::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback server answering one scripted reply per connection
    /// (each request's head and body are read first); the requests seen.
    fn server(replies: Vec<&'static str>) -> (HttpUrl, std::thread::JoinHandle<Vec<String>>) {
        server_with(replies, false)
    }

    /// With `keep`, every reply goes over the first connection.
    fn server_with(
        replies: Vec<&'static str>,
        keep: bool,
    ) -> (HttpUrl, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut conn: Option<std::net::TcpStream> = None;
            for reply in replies {
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => l.accept().unwrap().0,
                };
                let mut got = Vec::new();
                let mut b = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
                seen.push(String::from_utf8_lossy(&got).into_owned());
                let _ = c.write_all(reply.as_bytes());
                if keep {
                    conn = Some(c);
                }
            }
            seen
        });
        (
            HttpUrl::parse_endpoint(&format!("http://127.0.0.1:{port}")).unwrap(),
            t,
        )
    }

    fn client(u: HttpUrl) -> S3 {
        let mut s = S3::new(
            u,
            "bkt",
            "us-east-1",
            Credentials {
                access_key_id: "AK".into(),
                secret: zeroize::Zeroizing::new("SK".into()),
            },
            Timeouts::new(Duration::from_secs(30), Duration::from_secs(60)),
        );
        s.backoff = Duration::from_millis(10);
        s
    }

    fn error(status: &str, code: &str) -> String {
        let body = format!(
            "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
        );
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn slow_down_is_retried_then_succeeds() {
        let (u, t) = server(vec![
            leak(error("503 Slow Down", "SlowDown")),
            leak(error("500 Internal Server Error", "InternalError")),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let mut c = client(u);
        let r = smol::block_on(c.put_new("k/a b", Body::Bytes(b"hello"), &mut Pacer::new(None)));
        assert_eq!(r.unwrap(), Put::Created);
        let seen = t.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(
            seen[2].starts_with("PUT /bkt/k/a%20b HTTP/1.1\r\n"),
            "{}",
            seen[2]
        );
        assert!(
            seen[2].contains("if-none-match: *\r\n")
                && seen[2].contains("Authorization: AWS4-HMAC-SHA256 Credential=AK/"),
            "{}",
            seen[2]
        );
        assert!(seen[2].contains(&format!(
            "x-amz-content-sha256: {}\r\n",
            sigv4::sha256_hex(b"hello")
        )));
        assert!(
            seen[2].contains("content-md5: XUFAKrxLKna5cZ2REBfFkg==\r\n"),
            "{}",
            seen[2]
        );
    }

    #[test]
    fn errors_are_told_apart() {
        for (reply, says) in [
            (
                error("403 Forbidden", "SignatureDoesNotMatch"),
                "rejected the credentials",
            ),
            (
                error("403 Forbidden", "InvalidAccessKeyId"),
                "rejected the credentials",
            ),
            (
                error("403 Forbidden", "RequestTimeTooSkewed"),
                "clock is skewed",
            ),
            (
                error("404 Not Found", "NoSuchBucket"),
                "bucket \"bkt\" does not exist",
            ),
            (
                error("400 Bad Request", "InvalidArgument"),
                "HTTP 400 InvalidArgument: m",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<a></b>".to_string(),
                "listing",
            ),
            ("garbage\r\n\r\n".to_string(), "not an HTTP response"),
        ] {
            let (u, t) = server(vec![leak(reply)]);
            let e = smol::block_on(client(u).list_page("p/", None))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{says}: {e}");
            t.join().unwrap();
        }
        // 503 for ever: given up after the retries, with the status.
        let (u, t) = server(vec![
            leak(error("503 Slow Down", "SlowDown"));
            RETRIES as usize + 1
        ]);
        let e = smol::block_on(client(u).head("k")).unwrap_err().to_string();
        assert!(e.contains("HTTP 503"), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn listings_and_parts_parse() {
        let list = "<ListBucketResult><Contents><Key>p/a</Key><Size>3</Size><ETag>\"e\"</ETag></Contents><IsTruncated>true</IsTruncated><NextContinuationToken>n1</NextContinuationToken></ListBucketResult>";
        let parts = "<ListPartsResult><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag><Size>5</Size></Part><IsTruncated>false</IsTruncated></ListPartsResult>";
        let ok = |b: &str| {
            leak(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ))
        };
        let (u, t) = server_with(vec![ok(list), ok(parts)], true);
        let mut c = client(u);
        let (objs, next) = smol::block_on(c.list_page("p/", None)).unwrap();
        assert_eq!(
            (objs.len(), objs[0].size, next.as_deref()),
            (1, 3, Some("n1"))
        );
        let p = smol::block_on(c.list_parts("p/a", "u1")).unwrap().unwrap();
        assert_eq!(
            p,
            vec![Part {
                number: 1,
                size: 5,
                etag: "\"x\"".into()
            }]
        );
        // Both requests went over one kept-alive connection (the server
        // accepts only one).
        assert_eq!(t.join().unwrap().len(), 2);
        // A server that closes kept-alive connections silently: the second
        // call finds its connection dead and goes again on a fresh one.
        let (u, t) = server(vec![ok(list), ok(parts)]);
        let mut c = client(u);
        smol::block_on(c.list_page("p/", None)).unwrap();
        assert_eq!(
            smol::block_on(c.list_parts("p/a", "u1"))
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(t.join().unwrap().len(), 2);
    }
}

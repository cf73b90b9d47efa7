//! AWS Signature Version 4 for S3 requests, in the `Authorization` header.
//!
//! What is signed: the method, the URI-encoded path, the query sorted by
//! encoded name and value, every header the caller passes (names in lower
//! case, values trimmed with inner runs of spaces collapsed), and the
//! payload's hex SHA-256 (or `UNSIGNED-PAYLOAD`), under a key derived from
//! the secret, the date, the region and the service.
//!
//! Invariants: the secret and the derived keys live in `Zeroizing` buffers;
//! the functions here are pure (the caller passes the time), so they are
//! checked against AWS's published example signatures.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The hex SHA-256 of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key id and its secret.
pub struct Credentials {
    pub access_key_id: String,
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.access_key_id)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// Percent-encode everything but `A-Z a-z 0-9 - . _ ~` (and `/` when
/// `keep_slash`, for paths), as SigV4 and S3 want it.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical (and sent) query string: each name and value encoded,
/// pairs sorted.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Zeroizing<[u8; 32]> {
    let k0 = Zeroizing::new(format!("AWS4{secret}"));
    let k1 = hmac(k0.as_bytes(), date.as_bytes());
    let k2 = hmac(&*k1, region.as_bytes());
    let k3 = hmac(&*k2, service.as_bytes());
    hmac(&*k3, b"aws4_request")
}

/// One request to sign.
pub struct Request<'a> {
    pub method: &'a str,
    /// Already URI-encoded, starting with `/`.
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    /// Every header to sign (must include `host`, `x-amz-date` and
    /// `x-amz-content-sha256`); names in any case.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

/// The canonical request and the signed header list.
pub fn canonical_request(r: &Request<'_>) -> (String, String) {
    let mut hs: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    hs.sort();
    let signed = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut c = format!("{}\n{}\n{}\n", r.method, r.path, canonical_query(r.query));
    for (k, v) in &hs {
        c.push_str(&format!("{k}:{v}\n"));
    }
    c.push('\n');
    c.push_str(&signed);
    c.push('\n');
    c.push_str(r.payload_sha256);
    (c, signed)
}

/// The `Authorization` header's value.
pub fn authorization(creds: &Credentials, region: &str, service: &str, r: &Request<'_>) -> String {
    let (canonical, signed) = canonical_request(r);
    let date = r.amz_date.get(..8).unwrap_or(r.amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        r.amz_date,
        sha256_hex(canonical.as_bytes())
    );
    let key = signing_key(&creds.secret, date, region, service);
    let sig = hmac(&*key, to_sign.as_bytes());
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={}",
        creds.access_key_id,
        hex(&*sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example credentials and values of AWS's SigV4 documentation for
    // S3 ("Signature Calculations for the Authorization Header").
    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret: Zeroizing::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
        }
    }
    const HOST: &str = "examplebucket.s3.amazonaws.com";
    const DATE: &str = "20130524T000000Z";

    fn sig(auth: &str) -> &str {
        auth.rsplit("Signature=").next().unwrap()
    }

    #[test]
    fn aws_example_get_object_with_range() {
        let r = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &[
                ("Host", HOST),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", DATE),
            ],
            payload_sha256: EMPTY_SHA256,
            amz_date: DATE,
        };
        let a = authorization(&example(), "us-east-1", "s3", &r);
        assert!(a.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "), "{a}");
        assert_eq!(
            sig(&a),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_example_put_object() {
        let body_hash = sha256_hex(b"Welcome to Amazon S3.");
        assert_eq!(
            body_hash,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let path = format!("/{}", uri_encode("test$file.text", true));
        assert_eq!(path, "/test%24file.text");
        let r = Request {
            method: "PUT",
            path: &path,
            query: &[],
            headers: &[
                ("Host", HOST),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", DATE),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", &body_hash),
            ],
            payload_sha256: &body_hash,
            amz_date: DATE,
        };
        let a = authorization(&example(), "us-east-1", "s3", &r);
        assert_eq!(
            sig(&a),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn aws_example_list_objects_and_lifecycle() {
        let headers = [
            ("Host", HOST),
            ("x-amz-date", DATE),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ];
        let mut r = Request {
            method: "GET",
            path: "/",
            query: &[("prefix", "J"), ("max-keys", "2")],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
            amz_date: DATE,
        };
        let a = authorization(&example(), "us-east-1", "s3", &r);
        assert_eq!(
            sig(&a),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
        r.query = &[("lifecycle", "")];
        let a = authorization(&example(), "us-east-1", "s3", &r);
        assert_eq!(
            sig(&a),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn aws_example_signing_key() {
        // The derived-key example of the SigV4 general reference.
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&*k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a/b=", false), "a%2Fb%3D");
        assert_eq!(
            canonical_query(&[("uploadId", "x y"), ("partNumber", "2")]),
            "partNumber=2&uploadId=x%20y"
        );
    }
}

//! Networking shared by the alert sinks and the offsite store: URLs
//! ([`url`]), the byte stream under a connection ([`transport`], with
//! [`tls`]) and a
//! small HTTP/1.1 client ([`http`]).

pub mod http;
pub mod tls;
pub mod transport;
pub mod url;

/// Why a network exchange failed; the kind lets a caller tell "cannot
/// reach it" from "it answered nonsense".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    /// Name resolution failed or the connection was refused.
    Connect(String),
    /// No progress within a timeout.
    Timeout(String),
    /// The connection broke while sending or reading.
    Io(String),
    /// The answer is not HTTP as expected (or larger than allowed).
    Protocol(String),
    /// Something this client cannot do (https for the alert sinks).
    Unsupported(String),
    /// The TLS handshake failed (certificate, protocol).
    Tls(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Connect(m)
            | NetError::Timeout(m)
            | NetError::Io(m)
            | NetError::Protocol(m)
            | NetError::Unsupported(m)
            | NetError::Tls(m) => f.write_str(m),
        }
    }
}

//! The daemon's view of its offsite syncs, shown by `STATUS`, judged by
//! the monitor's offsite rules and written as metrics.
//!
//! Invariants: `consecutive_failures` counts syncs that failed since the
//! last one that succeeded (0 after a success); `credentials_rejected` is
//! true exactly while the last sync failed because the store refused the
//! credentials; `bytes_shipped`/`objects_shipped` only grow while the
//! daemon runs (counters); `pending` is `None` while it cannot be known
//! (no record or secret readable yet).

use serde::{Deserialize, Serialize};

use super::pending::Pending;
use super::s3::S3Error;

/// Why the last sync failed, as far as monitoring cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The store refused the credentials (403 SignatureDoesNotMatch,
    /// InvalidAccessKeyId, AccessDenied).
    Credentials,
    /// No connection or no answer in time.
    Unreachable,
    ClockSkew,
    NoBucket,
    /// Anything else (a server error, a local file, a conflict).
    Other,
}

impl FailureKind {
    /// The kind of a failed sync's error.
    pub fn of(e: &crate::error::Error) -> FailureKind {
        match e {
            crate::error::Error::Offsite(s) => match s {
                S3Error::Credentials(_) => FailureKind::Credentials,
                S3Error::Unreachable(_) => FailureKind::Unreachable,
                S3Error::ClockSkew(_) => FailureKind::ClockSkew,
                S3Error::NoBucket(_) => FailureKind::NoBucket,
                S3Error::Http { status: 403, .. } => FailureKind::Credentials,
                S3Error::Http { .. } | S3Error::Other(_) => FailureKind::Other,
            },
            _ => FailureKind::Other,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OffsiteStatus {
    /// `[offsite]` is configured.
    pub enabled: bool,
    /// A sync is running now.
    pub running: bool,
    /// Unix time the last sync ended, and how.
    pub last_sync: Option<i64>,
    pub last_result: Option<String>,
    /// Unix time of the last sync that succeeded.
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<FailureKind>,
    pub consecutive_failures: u32,
    /// Shipped by this daemon since it started.
    pub bytes_shipped: u64,
    pub objects_shipped: u64,
    /// Not yet confirmed remotely, as of `pending_at` (Unix time).
    pub pending: Option<Pending>,
    pub pending_at: Option<i64>,
    /// Seconds until a sync after a failure may start (backoff).
    pub retry_in_s: Option<u64>,
}

impl OffsiteStatus {
    /// Whether the store refused the credentials at the last sync.
    pub fn credentials_rejected(&self) -> bool {
        self.last_error_kind == Some(FailureKind::Credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_errors() {
        let k = |e: S3Error| FailureKind::of(&crate::error::Error::Offsite(e));
        assert_eq!(
            k(S3Error::Credentials("x".into())),
            FailureKind::Credentials
        );
        assert_eq!(
            k(S3Error::Http {
                status: 403,
                code: "Forbidden".into(),
                message: String::new(),
                what: "PUT".into()
            }),
            FailureKind::Credentials
        );
        assert_eq!(
            k(S3Error::Unreachable("x".into())),
            FailureKind::Unreachable
        );
        assert_eq!(
            k(S3Error::Http {
                status: 500,
                code: String::new(),
                message: String::new(),
                what: "PUT".into()
            }),
            FailureKind::Other
        );
        assert_eq!(
            FailureKind::of(&crate::error::msg("disk")),
            FailureKind::Other
        );
    }
}

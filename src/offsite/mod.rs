//! The offsite store (issue 10): archives, sidecars and WAL segments
//! shipped to S3-compatible object storage.
//!
//! - [`config`]: the `[offsite]` section;
//! - [`sigv4`]: request signing; [`md5`]: `Content-MD5` of bodies; [`xml`]: the bounded reader of S3's
//!   answers; [`s3`]: the calls, on the shared HTTP client (`crate::net`);
//! - [`pace`], `bandwidth_limit`;
//! - [`record`]: the local, crash-safe record of what is confirmed remotely
//!   and of an unfinished multipart upload;
//! - [`local`]: what there is to ship, oldest first; [`pending`]: what of
//!   it is not confirmed yet (the monitor's offsite lag, the metrics);
//! - [`status`]: the daemon's view of its syncs (STATUS, rules, metrics).
//!
//! The operations (`offsite sync`, `list`, `verify`) are in `ops::offsite`.

pub mod config;
pub mod local;
pub mod md5;
pub mod pace;
pub mod pending;
pub mod record;
pub mod s3;
pub mod sigv4;
pub mod status;
pub mod xml;

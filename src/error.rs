//! The command-level error: what went wrong, said so an operator can act.
//!
//! Lower layers have their own errors (`ConfigError`, `FormatError`); this
//! type adds which archive or path they concern.

use std::path::Path;

use crate::config::ConfigError;
use crate::format::FormatError;

#[derive(Debug)]
pub enum Error {
    Config(ConfigError),
    /// A problem with one archive's bytes or key.
    Archive {
        id: String,
        source: FormatError,
    },
    /// An I/O failure while doing `what`.
    Io {
        what: String,
        source: std::io::Error,
    },
    /// Bad command-line use.
    Usage(String),
    /// Anything else, already phrased for the operator.
    Msg(String),
    /// The offsite store refused or could not be reached; the kind lets
    /// the daemon's monitor tell rejected credentials from the rest.
    Offsite(crate::offsite::s3::S3Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Archive { id, source } => write!(f, "archive {id}: {source}"),
            Error::Io { what, source } => {
                write!(f, "{what}: {source}")?;
                match source.kind() {
                    std::io::ErrorKind::StorageFull => write!(
                        f,
                        " (the disk is full: free space or run `rvm-backup prune`)"
                    ),
                    std::io::ErrorKind::ReadOnlyFilesystem => {
                        write!(f, " (the file system is read-only)")
                    }
                    _ => Ok(()),
                }
            }
            Error::Usage(m) => write!(f, "{m} (see `rvm-backup help`)"),
            Error::Msg(m) => f.write_str(m),
            Error::Offsite(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Archive { source, .. } => Some(source),
            Error::Io { source, .. } => Some(source),
            Error::Usage(_) | Error::Msg(_) | Error::Offsite(_) => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

/// Attach "what we were doing" to an I/O error.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
    fn at(self, action: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }

    fn at(self, action: &str, path: &Path) -> Result<T> {
        self.ctx(|| format!("cannot {action} {}", path.display()))
    }
}

pub fn msg(m: impl Into<String>) -> Error {
    Error::Msg(m.into())
}

//! TLS for `https://` endpoints: rustls with the ring provider (no
//! aws-lc, no OS library), TLS 1.2 and 1.3, server certificates checked
//! against trust roots read from files: the system bundle, if there is
//! one, and the operator's `ca_file`.
//!
//! Invariants: trust files are read with a size bound ([`MAX_BUNDLE`]) as
//! regular files; a config with no root at all is refused before any
//! connection is tried (nothing is ever accepted unverified).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// System bundles tried, first found wins.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Largest trust file read.
pub const MAX_BUNDLE: usize = 4 << 20;

fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, String> {
    let (_, bytes) = crate::fsutil::read_regular(path, MAX_BUNDLE, crate::fsutil::Follow::Yes)
        .map_err(|e| format!("cannot read trust roots {}: {e}", path.display()))?;
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(&bytes) {
        let c = c.map_err(|e| format!("{}: not a PEM certificate bundle ({e})", path.display()))?;
        if roots.add(c).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// The client config: system roots plus `ca_file` (whose errors are
/// fatal; a missing system bundle is not).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    if let Some(p) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.exists()) {
        if let Err(e) = add_file(&mut roots, p) {
            log::warn!("{e}");
        }
    }
    if let Some(ca) = ca_file {
        if add_file(&mut roots, ca)? == 0 {
            return Err(format!(
                "ca_file {} holds no usable certificate",
                ca.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err(
            "no trust roots for https: install the CA bundle (ca-certificates) or set [offsite] ca_file".into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("rvm-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, b"not a certificate\n").unwrap();
        let e = client_config(Some(&junk)).unwrap_err();
        assert!(e.contains("no usable certificate"), "{e}");
        let e = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(e.contains("cannot read trust roots"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! TLS set-up from PEM files (rustls with *ring*): the API's and SIP's server side, and the
//! router's client side when it asks the servers' APIs over HTTPS.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS set-up problem, naming the file.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::error::Error for TlsError {}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("`{}`: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("`{}`: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "`{}` holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A server configuration for HTTPS (ALPN h2, http/1.1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut c = base_server(cert, key)?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// A server configuration for SIP over TLS (RFC 5630; no ALPN).
pub fn sip_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(Arc::new(base_server(cert, key)?))
}

/// A server configuration from a PEM certificate chain and its private key.
fn base_server(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("`{}`: {e}", key.display())))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("`{}`: {e}", cert.display())))
}

/// A client configuration trusting the system's CA certificates (webhook receivers on the
/// public Internet), or only `ca` when one is given.
pub fn public_client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    if let Some(ca) = ca {
        return client_config(ca);
    }
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for c in found.certs {
        // A system certificate rustls cannot use is skipped, as browsers do.
        let _ = roots.add(c);
    }
    let c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(c))
}

/// A client configuration that trusts the certificates in `ca` (a CA, or a server's own
/// self-signed certificate) and nothing else.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| TlsError(format!("`{}`: {e}", ca.display())))?;
    }
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

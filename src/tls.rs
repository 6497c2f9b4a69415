//! TLS set-up (L1): PEM files into rustls configurations, for the client port and for the peer protocol.
//!
//! The client port is ordinary server-side TLS: clients check the node's certificate, the node asks for none (clients
//! authenticate with AUTH). The peer protocol is mutual TLS under a cluster CA: each node presents its certificate
//! both when it accepts and when it dials, and accepts only certificates the CA signed; a dialling node also checks
//! that the certificate names the host it dialled. The cluster-secret handshake still runs inside the TLS session,
//! so a node needs both a CA-signed certificate and the secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why a certificate, key or CA could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read or parsed.
    #[error("cannot read certificates from {}: {reason}", path.display())]
    Certificates {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate file held no certificate.
    #[error("no certificate in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The private key could not be read or parsed.
    #[error("cannot read a private key from {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Certificate and key were read but rustls refused them (e.g. the key is not the certificate's).
    #[error("certificate {} and key {} do not work together: {reason}", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA bundle held a certificate that cannot be a trust anchor.
    #[error("CA certificates in {} are unusable: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key { path: path.to_path_buf(), reason: e.to_string() })
}

fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::Ca { path: path.to_path_buf(), reason: e.to_string() })?;
    }
    Ok(Arc::new(roots))
}

/// The acceptor of the client TLS port: the certificate chain and private key in PEM files, no client certificates.
pub fn client_port_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = (certificates(cert_file)?, private_key(key_file)?);
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| mismatch(cert_file, key_file, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn mismatch(cert: &Path, key: &Path, e: rustls::Error) -> TlsError {
    TlsError::Mismatch { cert: cert.to_path_buf(), key: key.to_path_buf(), reason: e.to_string() }
}

/// Both halves of mutual TLS on the peer protocol: one node certificate (valid for server and client use), and the
/// cluster CA that must have signed every peer's.
#[derive(Clone)]
pub struct PeerTls {
    /// Accepts peers that present a certificate the CA signed.
    pub acceptor: TlsAcceptor,
    /// Dials peers, presenting our certificate and checking theirs against the CA and the dialled host.
    pub connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// Loads the node's certificate chain and key and the cluster CA bundle (all PEM).
    pub fn from_pem_files(cert_file: &Path, key_file: &Path, ca_file: &Path) -> Result<PeerTls, TlsError> {
        let (certs, key, roots) = (certificates(cert_file)?, private_key(key_file)?, roots(ca_file)?);
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| TlsError::Ca { path: ca_file.to_path_buf(), reason: e.to_string() })?;
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| mismatch(cert_file, key_file, e))?;
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| mismatch(cert_file, key_file, e))?;
        Ok(PeerTls { acceptor: TlsAcceptor::from(Arc::new(server)), connector: TlsConnector::from(Arc::new(client)) })
    }
}

/// A TLS configuration that can be replaced while connections use it: each new connection takes the one current
/// when it starts (certificate rotation on SIGHUP); established connections keep theirs.
pub struct Current<T: Clone>(RwLock<T>);

impl<T: Clone> Current<T> {
    /// Shares `value` as the current configuration.
    pub fn shared(value: T) -> Arc<Current<T>> {
        Arc::new(Current(RwLock::new(value)))
    }

    /// The configuration for a connection starting now.
    pub fn get(&self) -> T {
        self.0.read().expect("TLS configuration lock").clone()
    }

    /// Replaces the configuration for connections that start from now on.
    pub fn set(&self, value: T) {
        *self.0.write().expect("TLS configuration lock") = value;
    }
}

impl<T: Clone> std::fmt::Debug for Current<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Current(TLS configuration)")
    }
}

/// The name a peer's certificate must carry when dialled at `addr` (`HOST:PORT`, `[V6]:PORT`): its host, as an IP
/// address or a DNS name.
pub fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialled_host_is_the_name_to_verify() {
        assert_eq!(server_name("127.0.0.1:7000").unwrap().to_str(), "127.0.0.1");
        assert_eq!(server_name("[::1]:7000").unwrap().to_str(), "::1");
        assert_eq!(server_name("n1.example:7000").unwrap().to_str(), "n1.example");
        assert!(server_name("bad host:1").is_none());
    }
}

//! A TLS client for tests, on the edge's crypto provider. Included with `#[path]` by the
//! edge's unit tests, its hostile-input suite and the workspace's integration tests, which
//! share no other test code.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// A connector that trusts only `ca` and offers `alpn` (empty: no ALPN).
pub fn connector(ca: CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("the test CA is a valid certificate");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

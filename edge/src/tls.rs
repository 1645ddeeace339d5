//! TLS termination with rustls (the aws-lc-rs provider, the workspace's one TLS stack).
//!
//! Certificates and keys are PEM files, read when the edge starts. Each names the hosts it
//! serves; the client's SNI picks one: an exact name first, then a `*.` wildcard for one
//! label, then the certificate listed without hosts (the default). A client whose name
//! matches nothing and with no default gets a handshake failure. ALPN offers `h2` and
//! `http/1.1`, so HTTP/2 over TLS needs no prior knowledge. Behind TLS the request is
//! routed exactly as over plain HTTP, with `X-Forwarded-Proto: https`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::EdgeError;

/// Where the edge serves TLS, and with which certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The TLS traffic address; port 0 picks a free port (reported by `/status`).
    pub listen: SocketAddr,
    pub certificates: Vec<CertificateFiles>,
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// Host names it serves (`*.example.com` for one label of wildcard). Empty: the
    /// default, for clients whose name matches no other certificate.
    pub hosts: Vec<String>,
    /// The chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads the certificates and builds the acceptor for the TLS listener.
pub(crate) fn acceptor(options: &TlsOptions) -> Result<TlsAcceptor, EdgeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut resolver = SniResolver::default();
    for files in &options.certificates {
        let key = Arc::new(load(files, &provider)?);
        if files.hosts.is_empty() {
            if resolver.default.is_some() {
                return Err(tls_error(
                    &files.cert,
                    "a second certificate without hosts; only one may be the default",
                ));
            }
            resolver.default = Some(Arc::clone(&key));
        }
        for host in &files.hosts {
            let host = host.to_ascii_lowercase();
            let table = match host.strip_prefix("*.") {
                Some(suffix) => (&mut resolver.wildcard, suffix.to_string()),
                None => (&mut resolver.exact, host.clone()),
            };
            if table.0.insert(table.1, Arc::clone(&key)).is_some() {
                return Err(tls_error(
                    &files.cert,
                    &format!("host {host} is already served by another certificate"),
                ));
            }
        }
    }
    if options.certificates.is_empty() {
        return Err(EdgeError::Tls {
            path: PathBuf::new(),
            reason: "TLS is on but no certificate is configured".into(),
        });
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(Path::new(""), &e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load(files: &CertificateFiles, provider: &CryptoProvider) -> Result<CertifiedKey, EdgeError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(&files.cert, &format!("cannot read the certificates: {e}")))?;
    if chain.is_empty() {
        return Err(tls_error(&files.cert, "no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error(&files.key, &format!("cannot read the private key: {e}")))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        tls_error(
            &files.key,
            &format!(
                "the key does not fit the certificate `{}`: {e}",
                files.cert.display()
            ),
        )
    })
}

fn tls_error(path: &Path, reason: &str) -> EdgeError {
    EdgeError::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Picks the certificate for the client's SNI name.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` kept as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn find(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        by_name.or(self.default.as_ref()).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(client_hello.server_name())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use bytes::Bytes;
    use http::{Request, StatusCode, Version};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::ServerName;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    use crate::Slot;
    use crate::test_backend::{SIGNAL_TIMEOUT, TestBackend};

    /// A test CA and certificates it signs, written as PEM files.
    pub(crate) struct TestPki {
        pub dir: tempfile::TempDir,
        ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    }

    impl TestPki {
        pub(crate) fn new() -> TestPki {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "shipit test CA");
            let ca =
                rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                    .unwrap();
            TestPki {
                dir: tempfile::tempdir().unwrap(),
                ca,
            }
        }

        /// Files for a certificate valid for `names`, served for `hosts`.
        pub(crate) fn certificate(
            &self,
            file: &str,
            names: &[&str],
            hosts: &[&str],
        ) -> CertificateFiles {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(names).unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let cert_path = self.dir.path().join(format!("{file}.crt"));
            let key_path = self.dir.path().join(format!("{file}.key"));
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            CertificateFiles {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                cert: cert_path,
                key: key_path,
            }
        }

        /// A client that trusts this CA and offers `alpn`.
        pub(crate) fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        }
    }

    type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

    async fn handshake(
        pki: &TestPki,
        addr: SocketAddr,
        name: &str,
        alpn: &[&[u8]],
    ) -> Result<TlsStream, std::io::Error> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        pki.connector(alpn).connect(name, tcp).await
    }

    fn request(host: &str, path: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .uri(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    struct TlsEdge {
        _dir: tempfile::TempDir,
        handle: crate::EdgeHandle,
    }

    async fn tls_edge(certificates: Vec<CertificateFiles>) -> TlsEdge {
        let dir = tempfile::tempdir().unwrap();
        let handle = crate::server::start_with_tls(
            crate::EdgeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                dir: dir.path().to_path_buf(),
            },
            crate::Tuning::default(),
            TlsOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                certificates,
            },
        )
        .await
        .unwrap();
        TlsEdge { _dir: dir, handle }
    }

    #[tokio::test]
    async fn tls_terminates_per_host_and_forwards_https() {
        let pki = TestPki::new();
        let edge = tls_edge(vec![
            pki.certificate("shop", &["shop.test"], &["shop.test"]),
            pki.certificate("api", &["*.api.test"], &["*.api.test"]),
        ])
        .await;
        let tls_addr = edge.handle.tls_addr().unwrap();
        let shop = TestBackend::start("shop").await;
        let api = TestBackend::start("api").await;
        let client = edge.handle.client();
        let hosts = |h: &str| crate::Routing {
            hosts: Some(vec![h.to_string()]),
            paths: None,
        };
        client
            .switch_with("shop", &shop.backend(Slot::Blue, "s1"), &hosts("shop.test"))
            .await
            .unwrap();
        client
            .switch_with("api", &api.backend(Slot::Blue, "a1"), &hosts("v1.api.test"))
            .await
            .unwrap();
        assert_eq!(client.status().await.unwrap().tls_listen, Some(tls_addr));

        for (name, backend) in [("shop.test", "shop"), ("v1.api.test", "api")] {
            // The handshake verifies the certificate against the name: the right one was
            // picked for the SNI name.
            let stream = handshake(&pki, tls_addr, name, &[b"http/1.1"])
                .await
                .unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let response = sender
                .send_request(request(name, "/headers"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["x-backend"], backend);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let seen: std::collections::BTreeMap<String, Vec<String>> =
                serde_json::from_slice(&body).unwrap();
            assert_eq!(seen["x-forwarded-proto"], vec!["https".to_string()]);
        }

        // No certificate for this name, and no default: the handshake fails.
        let unknown = handshake(&pki, tls_addr, "other.test", &[b"http/1.1"]).await;
        assert!(unknown.is_err());
        edge.handle.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn http2_is_negotiated_by_alpn_over_tls() {
        let pki = TestPki::new();
        let edge = tls_edge(vec![pki.certificate("default", &["app.test"], &[])]).await;
        let blue = TestBackend::start("blue").await;
        edge.handle
            .client()
            .switch("web", &blue.backend(Slot::Blue, "r1"))
            .await
            .unwrap();
        let stream = handshake(
            &pki,
            edge.handle.tls_addr().unwrap(),
            "app.test",
            &[b"h2", b"http/1.1"],
        )
        .await
        .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let req = Request::builder()
            .uri("https://app.test/")
            .version(Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(SIGNAL_TIMEOUT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.headers()["x-backend"], "blue");
        edge.handle.shutdown().await.unwrap();
    }

    #[test]
    fn sni_prefers_exact_then_wildcard_then_default() {
        let pki = TestPki::new();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = |file: &str| {
            Arc::new(load(&pki.certificate(file, &["x.test"], &[]), &provider).unwrap())
        };
        let (exact, wild, default) = (key("a"), key("b"), key("c"));
        let resolver = SniResolver {
            exact: HashMap::from([("www.shop.test".to_string(), Arc::clone(&exact))]),
            wildcard: HashMap::from([("shop.test".to_string(), Arc::clone(&wild))]),
            default: Some(Arc::clone(&default)),
        };
        let pick = |name| resolver.find(name).unwrap();
        assert!(Arc::ptr_eq(&pick(Some("WWW.shop.test")), &exact));
        assert!(Arc::ptr_eq(&pick(Some("img.shop.test")), &wild));
        assert!(Arc::ptr_eq(&pick(Some("a.b.shop.test")), &default));
        assert!(Arc::ptr_eq(&pick(None), &default));
    }

    #[test]
    fn bad_files_are_refused_with_the_path() {
        let pki = TestPki::new();
        let good = pki.certificate("good", &["a.test"], &["a.test"]);
        let other = pki.certificate("other", &["b.test"], &["b.test"]);
        let options = |certificates| TlsOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            certificates,
        };
        let mismatched = CertificateFiles {
            key: other.key.clone(),
            ..good.clone()
        };
        let missing = CertificateFiles {
            cert: pki.dir.path().join("nope.crt"),
            ..good.clone()
        };
        for (files, text) in [
            (vec![mismatched], "does not fit"),
            (vec![missing], "nope.crt"),
            (vec![good.clone(), good.clone()], "already served"),
            (vec![], "no certificate"),
        ] {
            let Err(err) = acceptor(&options(files)) else {
                panic!("{text}: the files were accepted");
            };
            let err = err.to_string();
            assert!(err.contains(text), "{err}");
        }
    }
}

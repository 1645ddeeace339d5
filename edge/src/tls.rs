//! TLS termination with rustls (the aws-lc-rs provider, the workspace's one TLS stack).
//!
//! Certificates and keys are PEM files, read when the edge starts and again on
//! `POST /tls/reload` (`shipit edge reload`), which swaps the whole set at once: a
//! handshake sees the old set or the new one, and a reload that fails (a missing file, a
//! key that does not fit) changes nothing. Each certificate names the hosts it serves; the
//! client's SNI picks one: an exact name first, then a `*.` wildcard for one label, then
//! the certificate listed without hosts (the default). A client whose name matches
//! nothing and with no default gets a handshake failure. A name may have two certificates,
//! one ECDSA and one of another kind (RSA): a client that can verify ECDSA gets the ECDSA
//! one, the cheaper handshake. Sessions resume by stateless tickets. ALPN offers `h2` and
//! `http/1.1`, so HTTP/2 over TLS needs no prior knowledge; an HTTP/1.1 connection goes
//! through the relay ([`crate::relay`]) as a plain one does. Behind TLS the request is
//! routed exactly as over plain HTTP, with `X-Forwarded-Proto: https`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureAlgorithm, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

use crate::EdgeError;

/// Where the edge serves TLS, and with which certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsOptions {
    /// The TLS traffic address; port 0 picks a free port (reported by `/status`).
    pub listen: SocketAddr,
    pub certificates: Vec<CertificateFiles>,
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFiles {
    /// Host names it serves (`*.example.com` for one label of wildcard). Empty: the
    /// default, for clients whose name matches no other certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS side of a running edge: the acceptor of its listener and the certificate set
/// behind it, which [`TlsState::reload`] replaces.
pub(crate) struct TlsState {
    acceptor: TlsAcceptor,
    store: Arc<CertStore>,
    /// The files of the current set, read again by a reload that names none.
    files: Mutex<Vec<CertificateFiles>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsState {
    /// Reads the certificates and builds the acceptor for the TLS listener.
    pub(crate) fn new(options: &TlsOptions) -> Result<TlsState, EdgeError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certificates = Certificates::load(&options.certificates, &provider)?;
        let store = Arc::new(CertStore {
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(certificates)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(Path::new(""), &e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Resumption by stateless tickets: a returning client skips the certificate and
        // the key exchange's signature, and the edge keeps nothing per session. The ticket
        // key lives in this process (rotated by rustls every few hours); after an upgrade,
        // clients make one full handshake again.
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| tls_error(Path::new(""), &format!("cannot make a ticket key: {e}")))?;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(TlsState {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            files: Mutex::new(options.certificates.clone()),
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads `certificates` (or, with `None`, the current files again) and, when all of them
    /// load, serves them from the next handshake on. Returns the set now served.
    pub(crate) fn reload(
        &self,
        certificates: Option<Vec<CertificateFiles>>,
    ) -> Result<Vec<CertificateFiles>, EdgeError> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted = certificates.unwrap_or_else(|| files.clone());
        let loaded = Certificates::load(&wanted, &self.store.provider)?;
        *self
            .store
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        *files = wanted.clone();
        Ok(wanted)
    }

    /// The files of the set now served.
    pub(crate) fn files(&self) -> Vec<CertificateFiles> {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Reads the certificates and builds the acceptor for the TLS listener.
#[cfg(test)]
pub(crate) fn acceptor(options: &TlsOptions) -> Result<TlsAcceptor, EdgeError> {
    TlsState::new(options).map(|state| state.acceptor())
}

/// One loaded certificate set, by the names it serves.
#[derive(Debug, Default)]
struct Certificates {
    exact: HashMap<String, Choice>,
    /// `*.example.com` kept as `example.com`.
    wildcard: HashMap<String, Choice>,
    default: Option<Choice>,
}

/// What one name is served with: an ECDSA certificate, another (RSA, Ed25519), or both.
/// With both, a client that can verify ECDSA gets the ECDSA one: its handshake costs the
/// edge a fraction of an RSA signature.
#[derive(Debug, Default, Clone)]
struct Choice {
    ecdsa: Option<Arc<CertifiedKey>>,
    other: Option<Arc<CertifiedKey>>,
}

impl Choice {
    /// Adds `key`; `Err` when the name already has a certificate of its kind.
    fn add(&mut self, key: &Arc<CertifiedKey>) -> Result<(), ()> {
        let place = if is_ecdsa(key) {
            &mut self.ecdsa
        } else {
            &mut self.other
        };
        if place.is_some() {
            return Err(());
        }
        *place = Some(Arc::clone(key));
        Ok(())
    }

    /// The certificate for a client that can verify `schemes`.
    fn pick(&self, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let ecdsa_ok = schemes.iter().any(|s| {
            matches!(
                s,
                SignatureScheme::ECDSA_NISTP256_SHA256
                    | SignatureScheme::ECDSA_NISTP384_SHA384
                    | SignatureScheme::ECDSA_NISTP521_SHA512
            )
        });
        let first = if ecdsa_ok { &self.ecdsa } else { &self.other };
        first
            .as_ref()
            .or(self.ecdsa.as_ref())
            .or(self.other.as_ref())
            .cloned()
    }
}

fn is_ecdsa(key: &CertifiedKey) -> bool {
    key.key.algorithm() == SignatureAlgorithm::ECDSA
}

fn kind(key: &CertifiedKey) -> &'static str {
    if is_ecdsa(key) { "ECDSA" } else { "non-ECDSA" }
}

impl Certificates {
    fn load(
        files: &[CertificateFiles],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Certificates, EdgeError> {
        if files.is_empty() {
            return Err(EdgeError::Tls {
                path: PathBuf::new(),
                reason: "TLS is on but no certificate is configured".into(),
            });
        }
        let mut set = Certificates::default();
        for file in files {
            let key = Arc::new(load(file, provider)?);
            if file.hosts.is_empty() && set.default.get_or_insert_default().add(&key).is_err() {
                return Err(tls_error(
                    &file.cert,
                    &format!(
                        "a second {} certificate without hosts; only one of each kind (ECDSA, other) may be the default",
                        kind(&key)
                    ),
                ));
            }
            for host in &file.hosts {
                let host = host.to_ascii_lowercase();
                let (table, name) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut set.wildcard, suffix.to_string()),
                    None => (&mut set.exact, host.clone()),
                };
                if table.entry(name).or_default().add(&key).is_err() {
                    return Err(tls_error(
                        &file.cert,
                        &format!(
                            "host {host} is already served by another {} certificate (one ECDSA and one other may share a host)",
                            kind(&key)
                        ),
                    ));
                }
            }
        }
        Ok(set)
    }

    fn find(&self, name: Option<&str>, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let by_name = name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        by_name.or(self.default.as_ref())?.pick(schemes)
    }
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

/// Picks the certificate for the client's SNI name from the current set. A handshake
/// takes the set under a read lock held only to clone an `Arc`.
#[derive(Debug)]
struct CertStore {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Certificates>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner));
        current.find(client_hello.server_name(), client_hello.signature_schemes())
    }
}

/// The tests' TLS client, shared with the hostile-input suite and the integration tests.
#[cfg(test)]
#[path = "../tests/support/tls_client.rs"]
mod tls_client;

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
    use crate::test_backend::{SIGNAL_TIMEOUT, TestBackend, TestEdge};

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

        /// Files for an ECDSA P-256 certificate valid for `names`, served for `hosts`.
        pub(crate) fn certificate(
            &self,
            file: &str,
            names: &[&str],
            hosts: &[&str],
        ) -> CertificateFiles {
            self.certificate_with(rcgen::KeyPair::generate().unwrap(), file, names, hosts)
        }

        /// The same with an RSA 2048 key.
        pub(crate) fn rsa_certificate(
            &self,
            file: &str,
            names: &[&str],
            hosts: &[&str],
        ) -> CertificateFiles {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            self.certificate_with(key, file, names, hosts)
        }

        fn certificate_with(
            &self,
            key: rcgen::KeyPair,
            file: &str,
            names: &[&str],
            hosts: &[&str],
        ) -> CertificateFiles {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
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
            tls_client::connector(self.ca.der().clone(), alpn)
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

    /// `GET /` over TLS to `host` (SNI and Host); the answering backend's name.
    pub(crate) async fn https_get(
        pki: &TestPki,
        addr: SocketAddr,
        host: &str,
    ) -> Result<String, String> {
        let stream = handshake(pki, addr, host, &[b"http/1.1"])
            .await
            .map_err(|e| format!("handshake for {host}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake for {host}: {e}"))?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request(host, "/"))
            .await
            .map_err(|e| format!("GET / on {host}: {e}"))?;
        Ok(response
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }

    #[tokio::test]
    async fn tls_terminates_per_host_and_forwards_https() {
        let pki = TestPki::new();
        let edge = TestEdge::start_tls(vec![
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
        let edge = TestEdge::start_tls(vec![pki.certificate("default", &["app.test"], &[])]).await;
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

    #[tokio::test]
    async fn reload_swaps_the_certificates_and_keeps_them_when_a_file_is_bad() {
        let pki = TestPki::new();
        let edge = TestEdge::start_tls(vec![pki.certificate("a", &["a.test"], &["a.test"])]).await;
        let addr = edge.handle.tls_addr().unwrap();
        let blue = TestBackend::start("blue").await;
        let client = edge.handle.client();
        client
            .switch("web", &blue.backend(Slot::Blue, "r1"))
            .await
            .unwrap();
        assert_eq!(https_get(&pki, addr, "a.test").await.unwrap(), "blue");
        assert!(https_get(&pki, addr, "b.test").await.is_err());

        // A default certificate (no hosts) valid for b.test replaces the set.
        let b = pki.certificate("b", &["b.test"], &[]);
        let answer = client.reload_tls(Some(vec![b.clone()])).await.unwrap();
        assert_eq!(answer.certificates, vec![b.clone()]);
        assert_eq!(https_get(&pki, addr, "b.test").await.unwrap(), "blue");
        assert!(https_get(&pki, addr, "a.test").await.is_err());

        // A file that does not load changes nothing.
        let missing = CertificateFiles {
            cert: pki.dir.path().join("nope.crt"),
            ..b.clone()
        };
        let err = client.reload_tls(Some(vec![missing])).await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains("nope.crt"), "{message}");
        assert!(message.contains("still served"), "{message}");
        assert_eq!(https_get(&pki, addr, "b.test").await.unwrap(), "blue");

        // Without files, the current ones are read again: renewed, now for c.test.
        pki.certificate("b", &["c.test"], &[]);
        let answer = client.reload_tls(None).await.unwrap();
        assert_eq!(answer.certificates, vec![b]);
        assert_eq!(https_get(&pki, addr, "c.test").await.unwrap(), "blue");
        assert!(https_get(&pki, addr, "b.test").await.is_err());
        edge.handle.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn reload_on_an_edge_without_tls_says_how_to_turn_it_on() {
        let edge = crate::test_backend::TestEdge::start().await;
        let err = edge.client().reload_tls(None).await.unwrap_err();
        assert!(
            matches!(err, EdgeError::AdminRejected { status: 409, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("tls_listen"), "{err}");
    }

    #[test]
    fn sni_prefers_exact_then_wildcard_then_default() {
        let pki = TestPki::new();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = |file: &str| {
            Arc::new(load(&pki.certificate(file, &["x.test"], &[]), &provider).unwrap())
        };
        let (exact, wild, default) = (key("a"), key("b"), key("c"));
        let only = |key: &Arc<CertifiedKey>| Choice {
            ecdsa: Some(Arc::clone(key)),
            other: None,
        };
        let resolver = Certificates {
            exact: HashMap::from([("www.shop.test".to_string(), only(&exact))]),
            wildcard: HashMap::from([("shop.test".to_string(), only(&wild))]),
            default: Some(only(&default)),
        };
        let pick = |name| resolver.find(name, &[]).unwrap();
        assert!(Arc::ptr_eq(&pick(Some("WWW.shop.test")), &exact));
        assert!(Arc::ptr_eq(&pick(Some("img.shop.test")), &wild));
        assert!(Arc::ptr_eq(&pick(Some("a.b.shop.test")), &default));
        assert!(Arc::ptr_eq(&pick(None), &default));
    }

    #[test]
    fn a_name_with_ecdsa_and_rsa_certificates_gives_ecdsa_to_the_clients_that_verify_it() {
        let pki = TestPki::new();
        let ecdsa = pki.certificate("ec", &["shop.test"], &["shop.test"]);
        let rsa = pki.rsa_certificate("rsa", &["shop.test"], &["shop.test"]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // Either order in the config.
        for files in [
            vec![rsa.clone(), ecdsa.clone()],
            vec![ecdsa.clone(), rsa.clone()],
        ] {
            let set = Certificates::load(&files, &provider).unwrap();
            let pick = |schemes: &[SignatureScheme]| {
                let key = set.find(Some("shop.test"), schemes).unwrap();
                key.key.algorithm()
            };
            assert_eq!(
                pick(&[
                    SignatureScheme::RSA_PSS_SHA256,
                    SignatureScheme::ECDSA_NISTP256_SHA256
                ]),
                SignatureAlgorithm::ECDSA
            );
            assert_eq!(
                pick(&[
                    SignatureScheme::RSA_PSS_SHA256,
                    SignatureScheme::RSA_PKCS1_SHA256
                ]),
                SignatureAlgorithm::RSA
            );
        }
        // With one kind only, every client gets it.
        let set = Certificates::load(std::slice::from_ref(&rsa), &provider).unwrap();
        let key = set
            .find(Some("shop.test"), &[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        assert_eq!(key.key.algorithm(), SignatureAlgorithm::RSA);
        // Two of one kind for a name is still a mistake.
        let second = pki.rsa_certificate("rsa2", &["shop.test"], &["shop.test"]);
        let err = Certificates::load(&[rsa, ecdsa, second], &provider).unwrap_err();
        assert!(
            err.to_string()
                .contains("already served by another non-ECDSA certificate"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_client_gets_the_ecdsa_certificate_and_resumes_its_session_by_ticket() {
        let pki = TestPki::new();
        let ecdsa = pki.certificate("ec", &["app.test"], &[]);
        let rsa = pki.rsa_certificate("rsa", &["app.test"], &[]);
        let ecdsa_der = CertificateDer::pem_file_iter(&ecdsa.cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let edge = TestEdge::start_tls(vec![rsa, ecdsa]).await;
        let blue = TestBackend::start("blue").await;
        edge.handle
            .client()
            .switch("web", &blue.backend(Slot::Blue, "r1"))
            .await
            .unwrap();
        let addr = edge.handle.tls_addr().unwrap();
        // One client (one session cache) connecting twice. The edge keeps no session cache:
        // the second handshake can only resume by the ticket.
        let connector = pki.connector(&[b"http/1.1"]);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("app.test").unwrap();
            let stream = connector.connect(name, tcp).await.unwrap();
            let (_, session) = stream.get_ref();
            kinds.push(session.handshake_kind());
            if kinds.len() == 1 {
                assert_eq!(
                    session.peer_certificates().unwrap()[0],
                    ecdsa_der,
                    "the client verifies ECDSA: it gets the ECDSA certificate"
                );
            }
            // An exchange, so that the client reads the tickets sent after the handshake.
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            let connection = tokio::spawn(connection);
            let response = sender.send_request(request("app.test", "/")).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().collect().await.unwrap();
            drop(sender);
            tokio::time::timeout(SIGNAL_TIMEOUT, connection)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        use rustls::HandshakeKind;
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]
        );
        edge.handle.shutdown().await.unwrap();
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

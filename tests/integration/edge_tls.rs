//! The edge run from a config's `[targets.<name>.edge]` table: HTTPS with the configured
//! certificate for its host, the configured limits, a certificate reload without a restart,
//! and an upgrade that keeps TLS. The client trusts only a test CA made here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use shipit_edge::{AdminClient, Slot};
use tokio_rustls::TlsConnector;

use crate::edge_upgrade::TestServer;
use crate::harness::{SHIPIT, assert_success, free_port, json, stderr};
use crate::tls_client;

/// A test CA, and the certificates it signs, written as PEM files.
struct TestCa {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shipit integration test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        TestCa { ca }
    }

    /// Writes `<dir>/<name>.pem` and `<dir>/<name>.key`, valid for `names`.
    fn certificate(&self, dir: &Path, name: &str, names: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn connector(&self) -> TlsConnector {
        tls_client::connector(self.ca.der().clone(), &[])
    }

    /// A request over TLS with `host` as SNI name and Host: the status and body. The
    /// handshake checks the edge's certificate against the CA and the name.
    async fn https(
        &self,
        addr: SocketAddr,
        host: &str,
        method: &str,
        body: Bytes,
    ) -> Result<(u16, String), String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(host.to_string()).unwrap();
        let tls = self
            .connector()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake for {host}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri("/")
            .header("host", host)
            .body(Full::new(body))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn get(&self, addr: SocketAddr, host: &str) -> Result<(u16, String), String> {
        self.https(addr, host, "GET", Bytes::new()).await
    }
}

fn shipit(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(SHIPIT);
    command
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("SHIPIT_STATE_DIR")
        .env_remove("GITHUB_ACTIONS")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    command
}

async fn run(config: &Path, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), shipit(config, args).output())
        .await
        .unwrap_or_else(|_| panic!("`shipit {}` did not finish in time", args.join(" ")))
        .unwrap()
}

fn write_config(
    dir: &Path,
    listen: SocketAddr,
    tls_listen: SocketAddr,
    certificates: &str,
) -> PathBuf {
    let path = dir.join("shipit.toml");
    std::fs::write(
        &path,
        format!(
            r#"state_dir = "state"

[services.web]
port = 8080

[targets.local]
listen = "{listen}"
drain_timeout = "5s"

[targets.local.edge]
tls_listen = "{tls_listen}"
certificates = [{certificates}]
max_request_body = "1KiB"
"#
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_edge_from_the_config_serves_the_host_certificate() {
    let folder = tempfile::Builder::new()
        .prefix("shipit-it-tls-")
        .tempdir()
        .unwrap();
    let ca = TestCa::new();
    std::fs::create_dir_all(folder.path().join("certs")).unwrap();
    ca.certificate(&folder.path().join("certs"), "app", &["app.test"]);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls_listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let app = r#"{ host = "app.test", cert = "certs/app.pem", key = "certs/app.key" }"#;
    let config = write_config(folder.path(), listen, tls_listen, app);

    let mut edge = shipit(&config, &["edge", "run"])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = AdminClient::new(folder.path().join("state/edge/local/admin.sock"));
    let started = Instant::now();
    let started_edge = loop {
        if let Ok(status) = client.status().await {
            break status;
        }
        assert!(
            edge.try_wait().unwrap().is_none(),
            "the edge exited at start"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the edge did not answer its admin socket in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(started_edge.listen, listen);
    assert_eq!(started_edge.tls_listen, Some(tls_listen));
    let backend = TestServer::start("r1").await;
    client
        .switch("web", &backend.backend(Slot::Blue, "r1"))
        .await
        .unwrap();

    // HTTPS with the configured certificate for app.test; no certificate for other names.
    assert_eq!(
        ca.get(tls_listen, "app.test").await.unwrap(),
        (200, "release=r1\n".to_string())
    );
    let other = ca.get(tls_listen, "other.test").await.unwrap_err();
    assert!(other.contains("TLS handshake"), "{other}");
    // The config's limit applies: a body over 1KiB is refused.
    let (status, body) = ca
        .https(
            tls_listen,
            "app.test",
            "POST",
            Bytes::from(vec![b'x'; 2048]),
        )
        .await
        .unwrap();
    assert_eq!(status, 413, "{body}");

    // A certificate added to the config is served after `edge reload`, without a restart.
    ca.certificate(&folder.path().join("certs"), "www", &["www.app.test"]);
    let www = r#"{ host = "www.app.test", cert = "certs/www.pem", key = "certs/www.key" }"#;
    write_config(folder.path(), listen, tls_listen, &format!("{app}, {www}"));
    assert!(ca.get(tls_listen, "www.app.test").await.is_err());
    let out = run(&config, &["edge", "reload", "--json"]).await;
    assert_success(&out, "shipit edge reload");
    let reloaded = json(&out);
    assert_eq!(
        reloaded["certificates"].as_array().unwrap().len(),
        2,
        "{reloaded}"
    );
    assert_eq!(ca.get(tls_listen, "www.app.test").await.unwrap().0, 200);
    assert_eq!(client.status().await.unwrap().pid, started_edge.pid);

    // A reload that cannot read a file changes nothing, and says which file.
    let missing = r#"{ host = "api.test", cert = "certs/app.pem", key = "certs/app.key" }"#;
    write_config(
        folder.path(),
        listen,
        tls_listen,
        &format!("{app}, {www}, {missing}"),
    );
    std::fs::write(folder.path().join("certs/app.key"), "garbage\n").unwrap();
    let out = run(&config, &["edge", "reload"]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("app.key"), "{}", stderr(&out));
    assert_eq!(ca.get(tls_listen, "app.test").await.unwrap().0, 200);
    ca.certificate(&folder.path().join("certs"), "app", &["app.test"]);
    write_config(folder.path(), listen, tls_listen, &format!("{app}, {www}"));

    // An upgrade keeps TLS on the same address, with the config's certificates.
    let out = run(&config, &["edge", "upgrade", "--json"]).await;
    assert_success(&out, "shipit edge upgrade");
    let upgraded = json(&out);
    assert_eq!(
        upgraded["old_pid"].as_u64(),
        Some(u64::from(started_edge.pid))
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), edge.wait())
        .await
        .expect("the old edge exits after the upgrade")
        .unwrap();
    assert!(exit.success(), "the old edge exited with {exit}");
    let new = client.status().await.unwrap();
    assert_eq!(Some(u64::from(new.pid)), upgraded["new_pid"].as_u64());
    assert_eq!(new.tls_listen, Some(tls_listen));
    for host in ["app.test", "www.app.test"] {
        assert_eq!(ca.get(tls_listen, host).await.unwrap().0, 200, "{host}");
    }

    let out = run(&config, &["edge", "stop"]).await;
    assert_success(&out, "shipit edge stop");
}

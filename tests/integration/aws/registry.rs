//! A real local registry for the push tests.

use super::*;

/// A real `docker-registry` (Debian's package of the CNCF distribution registry) on a free
/// port of 127.0.0.1, storing in a temp dir, shared by the tests of this process. The Docker
/// Engine pushes to 127.0.0.0/8 over plain HTTP without configuration.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// The user and password, for the registry started with [`Registry::start_with_auth`].
    pub credentials: Option<(String, String)>,
    _daemon: Daemon,
}

impl Registry {
    /// The open registry (no authentication).
    pub fn start() -> &'static Registry {
        static OPEN: OnceLock<Registry> = OnceLock::new();
        OPEN.get_or_init(|| Registry::launch(false))
    }

    /// A registry that wants basic authentication. The registry provisions its own htpasswd
    /// file with a user `docker` and a random password when the file is missing, and logs
    /// them; that is where they are read from.
    pub fn start_with_auth() -> &'static Registry {
        static AUTH: OnceLock<Registry> = OnceLock::new();
        AUTH.get_or_init(|| Registry::launch(true))
    }

    fn binary() -> PathBuf {
        if let Ok(path) = std::env::var(REGISTRY_BIN_ENV)
            && !path.is_empty()
        {
            return PathBuf::from(path);
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("docker-registry"))
                .find(|p| p.is_file())
        });
        on_path.unwrap_or_else(|| {
            panic!("docker-registry is not installed (not on PATH, {REGISTRY_BIN_ENV} not set)\nhint: {HINT_REGISTRY}")
        })
    }

    fn launch(auth: bool) -> Registry {
        let binary = Registry::binary();
        let dir = tempfile::Builder::new()
            .prefix("shipit-registry-")
            .tempdir()
            .unwrap()
            .keep();
        let auth_section = if auth {
            format!(
                "auth:\n  htpasswd:\n    realm: shipit-tests\n    path: {}\n",
                dir.join("htpasswd").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\n  secret: shipit-tests\n{auth_section}",
            dir.join("data").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::File::create(&config_path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .unwrap();
        let config_arg = config_path.to_string_lossy().into_owned();
        let daemon = Daemon::spawn(&binary, &["serve", &config_arg], &[], dir);
        let host = daemon.wait_for_log("the registry to listen", |log| {
            let rest = &log[log.find("listening on 127.0.0.1:")? + "listening on ".len()..];
            let addr: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            addr.rsplit(':').next()?.parse::<u16>().ok()?;
            Some(addr)
        });
        let credentials = auth.then(|| {
            daemon.wait_for_log("the registry's provisioned password", |log| {
                let line = log
                    .lines()
                    .find(|l| l.contains("provisioning with default user"))?;
                let field = |name: &str| {
                    let start = line.find(&format!(" {name}="))? + name.len() + 2;
                    line[start..].split_whitespace().next().map(str::to_string)
                };
                Some((field("user")?, field("password")?))
            })
        });
        // /v2/ answers 200 (open) or 401 (auth): either way it serves.
        let url = format!("http://{host}/v2/");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match blocking_http("GET", &url) {
                Ok(r) if r.status == 200 || r.status == 401 => break,
                other => assert!(
                    Instant::now() < deadline,
                    "the registry at {host} does not answer: {:?}\nlog:\n{}",
                    other.map(|r| r.status),
                    daemon.log_text()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            host,
            credentials,
            _daemon: daemon,
        }
    }

    /// A repository name on this registry: `127.0.0.1:<port>/<name>`.
    pub fn repository(&self, name: &str) -> String {
        format!("{}/{name}", self.host)
    }

    fn authorization(&self) -> Option<String> {
        use base64::Engine as _;
        self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// The tags of a repository (its name without the host), through the v2 API.
    pub async fn tags(&self, name: &str) -> Vec<String> {
        let auth = self.authorization();
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let answer = http(
            "GET",
            &format!("http://{}/v2/{name}/tags/list", self.host),
            &headers,
            Bytes::new(),
        )
        .await
        .unwrap();
        if answer.status == 404 {
            return Vec::new();
        }
        assert_eq!(answer.status, 200, "tags/list: {}", answer.body);
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        json["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The digest the registry serves for `name:reference` (`Docker-Content-Digest`), or
    /// `None` when it has no such manifest.
    pub async fn manifest_digest(&self, name: &str, reference: &str) -> Option<String> {
        let auth = self.authorization();
        let mut headers = vec![(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.manifest.v1+json",
        )];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        let answer = http(
            "HEAD",
            &format!("http://{}/v2/{name}/manifests/{reference}", self.host),
            &headers,
            Bytes::new(),
        )
        .await
        .unwrap();
        if answer.status == 404 {
            return None;
        }
        assert_eq!(answer.status, 200, "manifest {name}:{reference}");
        answer
            .headers
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_string())
    }
}

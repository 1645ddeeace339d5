//! The moto server the tests share, and the plain HTTP and EC2 Query calls the setup makes
//! to it and to the registry.

use super::*;

/// The moto server the tests share.
pub struct Moto;

impl Moto {
    /// The endpoint: `SHIPIT_TEST_AWS_ENDPOINT` (tests/run), or a `.venv/bin/moto_server`
    /// started once for this test process on a free port and stopped when it exits.
    pub fn endpoint() -> String {
        static ENDPOINT: OnceLock<(String, Option<Daemon>)> = OnceLock::new();
        ENDPOINT
            .get_or_init(|| {
                if let Ok(url) = std::env::var(ENDPOINT_ENV)
                    && !url.is_empty()
                {
                    return (url.trim_end_matches('/').to_string(), None);
                }
                let server = repo_root().join(".venv/bin/moto_server");
                assert!(
                    server.exists(),
                    "no moto server: {} does not exist and {ENDPOINT_ENV} is not set\nhint: {HINT_MOTO}",
                    server.display()
                );
                let dir = tempfile::Builder::new()
                    .prefix("shipit-moto-")
                    .tempdir()
                    .unwrap()
                    .keep();
                let daemon = Daemon::spawn(
                    &server,
                    &["-H", "127.0.0.1", "-p", "0"],
                    &[("MOTO_ECS_SERVICE_RUNNING", "1")],
                    dir,
                );
                let port: u16 = daemon.wait_for_log("moto to listen", |log| {
                    let rest = &log[log.find("Running on http://127.0.0.1:")? + 28..];
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                });
                let url = format!("http://127.0.0.1:{port}");
                wait_http_ok(&format!("{url}/moto-api/data.json"), "moto to answer");
                (url, Some(daemon))
            })
            .0
            .clone()
    }

    /// An SDK config for moto: fixed test credentials, [`REGION`].
    pub async fn sdk_config() -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(Moto::endpoint())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "shipit-tests",
            ))
            .load()
            .await
    }

    /// The environment a child `shipit` needs to talk to moto (and nothing else).
    pub fn env() -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", Moto::endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Points `cmd` at moto: sets [`Moto::env`] and removes what could send it elsewhere.
    pub fn apply_env(cmd: &mut Command) -> &mut Command {
        for var in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(Moto::env())
    }
}

/// Runs `request` to completion on a thread of its own, so that the sync setup code above can
/// be called from inside a test's async runtime.
pub(super) fn blocking_http(method: &str, url: &str) -> Result<HttpAnswer, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(http(method, url, &[], Bytes::new()))
            })
            .join()
            .unwrap()
    })
}

/// A GET that must answer 2xx within 30 s (polled).
pub(super) fn wait_http_ok(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match blocking_http("GET", url) {
            Ok(r) if (200..300).contains(&r.status) => return,
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after 30s waiting for {what} ({url}); last: {last}");
}

/// An HTTP answer.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// One plain-HTTP request to a loopback server (moto, the registry).
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpAnswer, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| format!("{method} {url}: no answer in 30s"))?
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An EC2 Query API call to moto. The tests need only a VPC, subnets and a security group,
/// which do not justify the EC2 SDK crate's build time.
pub(super) async fn ec2(action: &str, params: &[(&str, &str)]) -> String {
    let mut form = format!("Action={action}&Version=2016-11-15");
    for (k, v) in params {
        form.push_str(&format!("&{k}={}", form_encode(v)));
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/ec2/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let answer = http(
        "POST",
        &format!("{}/", Moto::endpoint()),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &auth),
        ],
        Bytes::from(form),
    )
    .await
    .unwrap_or_else(|e| panic!("EC2 {action}: {e}"));
    assert_eq!(answer.status, 200, "EC2 {action} failed: {}", answer.body);
    answer.body
}

pub(super) fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<tag>…</tag>` in an XML answer.
pub(super) fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find("</").unwrap() + start;
    xml[start..end].to_string()
}

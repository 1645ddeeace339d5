//! A bounded load generator for the tests: N keep-alive clients, each on its own connection,
//! sending GET / through the edge until told to stop or until their request budget runs out.
//! Every response is counted: a connection error, a reset or a non-2xx is a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Connection { sender, addr })
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let host = self.addr.to_string();
        self.get_as(&host, path).await
    }

    /// GET `path` with `host` as the Host header.
    pub async fn get_as(&mut self, host: &str, path: &str) -> Result<(u16, String), String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let request = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let response = self
            .sender
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
}

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub started: Instant,
    /// When its answer (or its failure) came.
    pub finished: Instant,
    /// The release id the body reports, for 2xx answers.
    pub release: Option<String>,
    pub failure: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub reconnects: usize,
}

impl Report {
    pub fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.failure.is_none()).count()
    }

    pub fn failures(&self) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.failure.is_some())
            .collect()
    }

    pub fn assert_no_failures(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed; first ones: {:#?}",
            failures.len(),
            self.samples.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(self.ok() > 0, "the load sent no successful request at all");
    }
}

/// Running load; [`Load::stop`] ends it and returns the report.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// 2xx answers so far, all clients together: what a test can wait on while it runs.
    answered: Arc<std::sync::atomic::AtomicUsize>,
    clients: usize,
    tasks: Vec<tokio::task::JoinHandle<(Vec<Sample>, usize)>>,
}

/// Hard bounds on any load: the most requests per client and the longest run.
pub const MAX_REQUESTS_PER_CLIENT: usize = 200_000;
pub const MAX_DURATION: Duration = Duration::from_secs(240);

pub fn release_of(body: &str) -> Option<String> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("release="))
        .map(str::to_string)
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        Load::start_at(addr, clients, None, "/")
    }

    /// Load on `path`, with `host` as the Host header (`None`: the address).
    pub fn start_at(addr: SocketAddr, clients: usize, host: Option<&str>, path: &str) -> Load {
        Load::start_with(addr, clients, host, path, None)
    }

    /// Load whose clients each wait `pace` after every answer: for a test that runs longer
    /// than [`MAX_REQUESTS_PER_CLIENT`] unpaced requests last, so that its clients are still
    /// sending at its end.
    pub fn start_paced(addr: SocketAddr, clients: usize, pace: Duration) -> Load {
        Load::start_with(addr, clients, None, "/", Some(pace))
    }

    fn start_with(
        addr: SocketAddr,
        clients: usize,
        host: Option<&str>,
        path: &str,
        pace: Option<Duration>,
    ) -> Load {
        let host = host.map_or_else(|| addr.to_string(), str::to_string);
        let path = path.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                let answered = answered.clone();
                let (host, path) = (host.clone(), path.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut reconnects = 0;
                    let mut conn: Option<Connection> = None;
                    while !stop.load(Ordering::Relaxed)
                        && samples.len() < MAX_REQUESTS_PER_CLIENT
                        && started.elapsed() < MAX_DURATION
                    {
                        let t = Instant::now();
                        if conn.is_none() {
                            match Connection::open(addr).await {
                                Ok(c) => conn = Some(c),
                                Err(e) => {
                                    samples.push(Sample {
                                        started: t,
                                        finished: Instant::now(),
                                        release: None,
                                        failure: Some(e),
                                    });
                                    // Back off a little so a dead edge is not spun on.
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            }
                            reconnects += 1;
                        }
                        let result = conn.as_mut().unwrap().get_as(&host, &path).await;
                        let sample = match result {
                            Ok((status, body)) if (200..300).contains(&status) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                                Sample {
                                    started: t,
                                    finished: Instant::now(),
                                    release: release_of(&body),
                                    failure: None,
                                }
                            }
                            Ok((status, body)) => Sample {
                                started: t,
                                finished: Instant::now(),
                                release: None,
                                failure: Some(format!("HTTP {status}: {}", body.trim())),
                            },
                            Err(e) => {
                                conn = None;
                                Sample {
                                    started: t,
                                    finished: Instant::now(),
                                    release: None,
                                    failure: Some(e),
                                }
                            }
                        };
                        samples.push(sample);
                        if let Some(pace) = pace {
                            tokio::time::sleep(pace).await;
                        }
                    }
                    (samples, reconnects)
                })
            })
            .collect();
        Load {
            stop,
            answered,
            clients,
            tasks,
        }
    }

    /// Waits (up to `deadline`) until the clients have been answered with a 2xx more than
    /// once each since this call, so at least one of those requests started after it (each
    /// client has at most one in flight). False at the deadline.
    pub async fn answered_after_now(&self, deadline: Duration) -> bool {
        let wanted = self.answered.load(Ordering::Relaxed) + self.clients + 1;
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if self.answered.load(Ordering::Relaxed) >= wanted {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = Report::default();
        for task in self.tasks {
            let (samples, reconnects) = task.await.expect("load task");
            report.samples.extend(samples);
            report.reconnects += reconnects;
        }
        report.samples.sort_by_key(|s| s.started);
        report
    }
}

/// Checks that every request started in `[from, until)` was answered by `release`.
pub fn assert_served_by(report: &Report, from: Instant, until: Instant, release: &str) {
    let wrong: Vec<&Sample> = report
        .samples
        .iter()
        .filter(|s| s.started >= from && s.started < until)
        .filter(|s| s.release.as_deref() != Some(release))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} requests after the switch to {release} were answered by another release: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

//! The floor: the least an HTTP/1.1 keep-alive reverse proxy can do.
//!
//! `floor-proxy LISTEN UPSTREAM` forwards each request to one upstream over pooled
//! keep-alive connections, on tokio's multi-thread runtime (one worker per core), with one
//! read and one write each way per request when the bytes fit. It does nothing else: no
//! routing, no header rewriting beyond `X-Forwarded-For`, no timeouts, no metrics, no
//! chunked bodies (only `Content-Length`), no error answers (a problem closes the
//! connection). It is not a product; `bench/edge_compare.sh` runs it beside the other
//! proxies to show how much of a proxied request's cost is the operating system's, which
//! no proxy can avoid.
//!
//! `floor-proxy LISTEN UPSTREAM per-core` runs it on one current-thread runtime per core
//! instead, as nginx and HAProxy run one event loop per worker: one thread accepts and
//! hands each connection to the runtimes in turn, and each runtime keeps its own pool.
//! It shows what the runtime's shape alone costs or gains (`FLOOR_RUNTIME=per-core
//! bench/edge_compare.sh`).

use std::io;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err(usage());
    };
    match args.next().as_deref() {
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .build()?
            .block_on(multi_thread(listen, upstream)),
        Some("per-core") => per_core(&listen, upstream),
        Some(_) => Err(usage()),
    }
}

fn usage() -> io::Error {
    io::Error::other("usage: floor-proxy LISTEN_ADDR UPSTREAM_ADDR [per-core]")
}

/// One current-thread runtime per core, each with its own epoll and its own pool; this
/// thread accepts and deals the connections out in turn.
fn per_core(listen: &str, upstream: String) -> io::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runtimes = Vec::with_capacity(cores);
    for _ in 0..cores {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
        runtimes.push((handle, Pool::new(upstream.clone())));
    }
    let listener = std::net::TcpListener::bind(listen)?;
    for (stream, (handle, pool)) in listener.incoming().zip(runtimes.iter().cycle()) {
        let stream = stream?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let pool = Arc::clone(pool);
        handle.spawn(async move {
            // Registered with the epoll of the runtime that serves it.
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            let _ = serve(stream, &pool).await;
        });
    }
    Ok(())
}

async fn multi_thread(listen: String, upstream: String) -> io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    let pool = Pool::new(upstream);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            // A connection ends at the first problem; there is nothing to report it to.
            let _ = serve(stream, &pool).await;
        });
    }
}

struct Pool {
    addr: String,
    idle: Mutex<Vec<TcpStream>>,
}

impl Pool {
    fn new(addr: String) -> Arc<Self> {
        Arc::new(Self {
            addr,
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn take(&self) -> io::Result<TcpStream> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(stream) => Ok(stream),
            None => {
                let stream = TcpStream::connect(&self.addr).await?;
                stream.set_nodelay(true)?;
                Ok(stream)
            }
        }
    }

    fn put(&self, stream: TcpStream) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stream);
    }
}

fn content_length(headers: &[httparse::Header<'_>]) -> io::Result<usize> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map_or(Ok(0), |h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::other("bad Content-Length"))
        })
}

fn invalid(e: httparse::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn serve(mut client: TcpStream, pool: &Pool) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    let mut answer = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(1024);
    let forwarded_for = format!("X-Forwarded-For: {}\r\n\r\n", client.peer_addr()?.ip());
    loop {
        // One whole request: head, then its Content-Length body.
        let (head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(len) = req.parse(&buf).map_err(invalid)? {
                out.clear();
                out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                out.push(b' ');
                out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\n");
                for h in req.headers.iter() {
                    if !h.name.eq_ignore_ascii_case("connection") {
                        out.extend_from_slice(h.name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(h.value);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                out.extend_from_slice(forwarded_for.as_bytes());
                break (len, content_length(req.headers)?);
            }
            if client.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        while buf.len() < head_len + body_len {
            if client.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        out.extend_from_slice(&buf[head_len..head_len + body_len]);
        buf.drain(..head_len + body_len);

        let mut upstream = pool.take().await?;
        upstream.write_all(&out).await?;
        answer.clear();
        let end = loop {
            if upstream.read_buf(&mut answer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = res.parse(&answer).map_err(invalid)? {
                break len + content_length(res.headers)?;
            }
        };
        while answer.len() < end {
            if upstream.read_buf(&mut answer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        client.write_all(&answer[..end]).await?;
        pool.put(upstream);
    }
}

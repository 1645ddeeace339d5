//! How the edge connects to a slot: TCP with `TCP_NODELAY` and a connect timeout, and one
//! more try when a connect fails for an idempotent request.
//!
//! A failed connect has sent no byte of the request, so trying again cannot run it twice.
//! The retry stays on the same backend: the route already chose the slot, and the other
//! slot is either draining or not verified. A connect that timed out is not tried again:
//! the timeout already spent the request's connect budget.
//!
//! The connection pool calls the connector with only the address, so the request's
//! method reaches it through a task-local that [`with_retry`] sets around the request:
//! the pool starts the connect from within the request's own task.
//!
//! A switch opens its connection to the new slot with [`connect_at_once`], which does not
//! wait for a turn of the runtime when the handshake completed within the connect call (to
//! a slot on the same host it does): the switch takes effect that much sooner.
//!
//! Each pooled connection can be cut ([`SlotStream`], [`cut`]): after a framing surprise on
//! the slot's side the general path closes that connection at once, rather than leave it
//! to hyper's pool, which would keep it open (unused) until it goes idle.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri};
use hyper_util::client::legacy::connect::{
    CaptureConnection, Connected, Connection, HttpConnector,
};
use hyper_util::rt::TokioIo;
use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, connect, socket};
use tokio::net::TcpStream;

use crate::metrics::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

tokio::task_local! {
    /// Set while an idempotent request waits for its connection.
    static RETRY_CONNECT: ();
}

/// Whether a request with this method may be sent again after a failed connect.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Runs `request` (a send through the pool) so that a connect it starts is tried twice.
pub(crate) async fn with_retry<F: Future>(request: F) -> F::Output {
    RETRY_CONNECT.scope((), request).await
}

/// The pool's connector.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    metrics: Arc<Metrics>,
}

impl Connector {
    pub(crate) fn new(connect_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        Connector { http, metrics }
    }
}

/// A pooled connection to a slot that can be cut from outside the pool.
#[derive(Debug)]
pub(crate) struct SlotStream {
    io: TokioIo<TcpStream>,
    cut: Arc<Cut>,
}

/// Cuts one [`SlotStream`]: its next read or write fails, and hyper closes it.
#[derive(Debug, Default)]
pub(crate) struct Cut {
    done: AtomicBool,
    /// The read waiting on the connection, woken by the cut.
    reader: AtomicWaker,
}

/// How a [`SlotStream`]'s cut travels in hyper-util's connection metadata.
#[derive(Debug, Clone)]
struct CutHandle(Arc<Cut>);

impl SlotStream {
    fn check(&self) -> std::io::Result<()> {
        if self.cut.done.load(Ordering::Acquire) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the edge cut this slot connection after a framing surprise",
            ));
        }
        Ok(())
    }
}

impl hyper::rt::Read for SlotStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.cut.reader.register(cx.waker());
        self.check()?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SlotStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for SlotStream {
    fn connected(&self) -> Connected {
        self.io.connected().extra(CutHandle(Arc::clone(&self.cut)))
    }
}

/// Marks the slot connection a request went out on as never to carry another request
/// (it closes once its answer is over and hyper lets it go; [`cut`] closes it at once).
pub(crate) fn poison(captured: &CaptureConnection) {
    if let Some(connected) = captured.connection_metadata().as_ref() {
        connected.poison();
    }
}

/// Whether a connect failed because the edge is out of file descriptors: the edge's own
/// trouble, not the slot's.
pub(crate) fn is_out_of_descriptors(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(code) if code == EMFILE || code == ENFILE)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// "Too many open files" (the process's limit, and the system's).
const EMFILE: i32 = nix::errno::Errno::EMFILE as i32;
const ENFILE: i32 = nix::errno::Errno::ENFILE as i32;

/// Cuts the slot connection a request went out on, if it had one: it is closed at once
/// and never carries another request.
pub(crate) fn cut(captured: &CaptureConnection) {
    let mut extensions = http::Extensions::new();
    {
        let metadata = captured.connection_metadata();
        let Some(connected) = metadata.as_ref() else {
            return;
        };
        connected.poison();
        connected.get_extras(&mut extensions);
    }
    if let Some(CutHandle(cut)) = extensions.get::<CutHandle>() {
        cut.done.store(true, Ordering::Release);
        cut.reader.wake();
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = SlotStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let retry = RETRY_CONNECT.try_with(|()| Arc::clone(&self.metrics)).ok();
        let mut again = self.http.clone();
        let first = self.http.call(dst.clone());
        Box::pin(async move {
            let io = match first.await {
                Err(e) if !is_timeout(&e) && retry.is_some() => {
                    tracing::debug!(%dst, "connect failed ({e}); trying once more");
                    if let Some(metrics) = retry {
                        metrics.count_connect_retry();
                    }
                    again.call(dst).await?
                }
                result => result?,
            };
            Ok(SlotStream {
                io,
                cut: Arc::default(),
            })
        })
    }
}

impl Connector {
    /// A connection to `authority`, outside the pool: for the relay's own pools
    /// ([`crate::pool`]). Inside [`with_retry`], a failed connect is tried once more, as
    /// for the pool's.
    pub(crate) async fn connect(&self, authority: &Authority) -> Result<TcpStream, BoxError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(parts)?;
        let mut connector = self.clone();
        Ok(tower_service::Service::call(&mut connector, uri)
            .await?
            .io
            .into_inner())
    }
}

/// A TCP connection to `addr` with `TCP_NODELAY`, as [`Connector::connect`] opens, for a
/// switch's connection ahead. When the handshake completed within the connect call (to a
/// slot on the same host, the kernel runs it to the end before the call returns) this
/// returns at its first poll: there is nothing to wait for, so it does not wait for the
/// runtime to report the socket writable, which costs a turn of the runtime and often a
/// wake-up of another worker thread. Otherwise it waits for the handshake, at most `limit`.
pub(crate) async fn connect_at_once(
    addr: SocketAddr,
    limit: Duration,
) -> std::io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = std::net::TcpStream::from(fd);
    stream.set_nodelay(true)?;
    // The peer is known once the handshake is over; until then this fails (ENOTCONN).
    let established = stream.peer_addr().is_ok();
    let stream = TcpStream::from_std(stream)?;
    if !established {
        tokio::time::timeout(limit, stream.writable())
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} took longer than {limit:?}"),
                )
            })??;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        // Writable without an error, yet not connected, would be a socket that gave up.
        stream.peer_addr()?;
    }
    Ok(stream)
}

/// Whether an error, or one of its causes, is a timeout.
pub(crate) fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_are_those_of_rfc_9110() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method), "{method}");
        }
    }

    #[tokio::test]
    async fn a_connection_at_once_to_a_local_slot_is_ready_at_its_first_poll() {
        use futures_util::FutureExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut at_once = 0;
        for _ in 0..20 {
            let mut connect = std::pin::pin!(connect_at_once(addr, Duration::from_secs(5)));
            let mut stream = match connect.as_mut().now_or_never() {
                Some(stream) => {
                    at_once += 1;
                    stream.unwrap()
                }
                // The handshake did not finish within the call (the kernel deferred it):
                // the connection still comes, after a wait.
                None => connect.await.unwrap(),
            };
            assert!(stream.nodelay().unwrap());
            let (mut accepted, _) = listener.accept().await.unwrap();
            stream.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            accepted.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        }
        // tokio's own connect is never ready at its first poll: it waits for the runtime.
        assert!(
            at_once > 0,
            "no connect of 20 to 127.0.0.1 finished within the call"
        );
    }

    #[tokio::test]
    async fn a_connection_at_once_to_a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = connect_at_once(addr, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[test]
    fn timeout_is_found_in_the_error_chain() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "elapsed");
        assert!(is_timeout(&timed_out));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_timeout(&refused));
    }
}

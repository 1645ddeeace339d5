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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
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

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
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
            match first.await {
                Err(e) if !is_timeout(&e) && retry.is_some() => {
                    tracing::debug!(%dst, "connect failed ({e}); trying once more");
                    if let Some(metrics) = retry {
                        metrics.count_connect_retry();
                    }
                    again.call(dst).await.map_err(Into::into)
                }
                result => result.map_err(Into::into),
            }
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
            .into_inner())
    }
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

    #[test]
    fn timeout_is_found_in_the_error_chain() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "elapsed");
        assert!(is_timeout(&timed_out));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_timeout(&refused));
    }
}

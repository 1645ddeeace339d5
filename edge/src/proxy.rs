//! The hyper service that forwards a client's request to its service's slot.
//!
//! The request is first held to the edge's framing rules ([`crate::framing`], the same ones
//! the relay applies), then claims its backend from the route table (which counts it in
//! flight), is rewritten for the upstream (hop-by-hop headers out, `X-Forwarded-*` in) and
//! sent over a pooled keep-alive HTTP/1.1 client, whatever the client spoke. The in-flight
//! guard then moves into the response body, so a streaming response counts until its last
//! byte, or until the client goes away and hyper drops the body. Bodies stream both ways;
//! nothing is buffered. An `Upgrade` request that the slot answers with 101 becomes a tunnel
//! ([`crate::tunnel`]).
//!
//! Every failure is an answer from the edge with a short, generic body (its status and a
//! request id, [`crate::answer`]); the detail goes to the log under that id. The client's
//! errors are the client's: 400 (a head that breaks the framing rules, a malformed or
//! aborted body), 408 (a body that stopped arriving), 413 (a body over the limit), 431 (a
//! head over the limits); they count as 4xx, never as a slot's 5xx. The slot's failures
//! are 502 (it refused or broke the connection) and 504 (connect or response-header
//! timeout); 404 and 503 are for requests no slot can take.
//!
//! A request of a paused route waits here for its route to be resumed before it claims a
//! backend ([`crate::pause`]); one of a route under maintenance, or paused past its
//! deadline, is answered 503 by the edge ([`answer::unavailable`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::capture_connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admission::Admission;
use crate::answer::{self, Failure, LogBudget, RequestId, Unavailable};
use crate::backend::{ActiveBackend, InFlightGuard, Member};
pub use crate::body::ProxyBody;
use crate::body::{BodyTooLarge, ClientBodyError, RequestBody, Upload};
use crate::connection::{ClientConn, Stop, stopped};
use crate::connector::{self, Connector};
use crate::framing::{
    self, HeadLimits, MAX_ANSWER_HEAD, MAX_INTERIM_ANSWERS, Refusal, RequestCheck,
};
use crate::metrics::SlotFailure;
use crate::pause::{Held, MAX_HOLDS};
use crate::route::{Claim, Closed, RequestInfo, RouteTable, Unclaimed, Unrouted};
use crate::settings::Tuning;
use crate::split::SLOT_HEADER;
use crate::tunnel::{self, Tunnels};
use crate::upstream;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Forwards requests to the backends of a [`RouteTable`].
#[derive(Debug)]
pub struct Proxy {
    pub(crate) table: Arc<RouteTable>,
    client: Client<Connector, RequestBody>,
    /// The client's connector, also used by the relay.
    connector: Connector,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) max_body: Option<u64>,
    pub(crate) head_limits: HeadLimits,
    pub(crate) write_timeout: Duration,
    /// How long a stopping edge lets requests finish (also what a closing connection with
    /// requests in flight gets).
    pub(crate) shutdown_grace: Duration,
    body_idle_timeout: Duration,
    pub(crate) h2_max_resets_per_second: u32,
    /// Plaintext HTTP/1.1 starts in the relay ([`crate::relay`]); off: hyper serves all.
    pub(crate) relay: bool,
    /// The client connection limits, shared by the plaintext and TLS listeners.
    pub(crate) admission: Arc<Admission>,
    tunnels: Tunnels,
    /// The log lines of slots' failures, rate-limited per edge.
    slot_failures: LogBudget,
    /// Turns when the edge stops: the requests it holds for a paused route are answered.
    stop: watch::Receiver<Stop>,
}

/// Why no answer came from the slot (general path).
enum Failed {
    /// The client's request (hyper's pool gives the cause).
    Upstream(hyper_util::client::legacy::Error),
    /// No response head within the response-header timeout after the body was sent.
    NoAnswer,
    /// A 101 to a request that did not ask to upgrade.
    UnaskedUpgrade,
    /// More than [`MAX_INTERIM_ANSWERS`] interim answers.
    TooManyInterim,
}

/// The interim (1xx) answers hyper's client saw for one request. hyper reads them and
/// passes none on; past the limit, the request gives up ([`Failed::TooManyInterim`]).
#[derive(Debug, Default)]
struct Interim {
    seen: std::sync::atomic::AtomicUsize,
    over: tokio::sync::Notify,
}

impl Proxy {
    pub(crate) fn new(
        table: Arc<RouteTable>,
        tuning: &Tuning,
        stop: watch::Receiver<Stop>,
    ) -> Self {
        let connector = Connector::new(tuning.connect_timeout, Arc::clone(table.metrics()));
        let client = Client::builder(TokioExecutor::new())
            // An answer head that does not fit is a broken slot (502), as on the relay.
            .http1_max_buf_size(MAX_ANSWER_HEAD)
            .pool_idle_timeout(tuning.pool_idle_timeout)
            // As many idle connections per slot as the relay keeps, not without bound.
            .pool_max_idle_per_host(crate::pool::MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        Proxy {
            table,
            client,
            connector,
            connect_timeout: tuning.connect_timeout,
            response_timeout: tuning.response_header_timeout,
            header_read_timeout: tuning.header_read_timeout,
            pool_idle_timeout: tuning.pool_idle_timeout,
            max_body: tuning.max_request_body,
            head_limits: HeadLimits {
                max_bytes: tuning.max_header_bytes,
                max_headers: tuning.max_headers,
            },
            write_timeout: tuning.write_timeout,
            shutdown_grace: tuning.shutdown_grace,
            body_idle_timeout: tuning.body_idle_timeout,
            h2_max_resets_per_second: tuning.h2_max_resets_per_second,
            relay: tuning.relay,
            admission: Admission::new(tuning.max_connections, tuning.max_connections_per_ip),
            tunnels: Tunnels::default(),
            slot_failures: LogBudget::new(),
            stop,
        }
    }

    /// A future that resolves once the edge stops (or hands over).
    pub(crate) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            stopped(&mut stop).await;
        }
    }

    /// Waits for the open upgraded connections, at most `grace`, then closes them.
    /// Closes the open upgraded connections now (see [`Tunnels::cut`]).
    pub(crate) fn cut_tunnels(&self) {
        self.tunnels.cut();
    }

    pub(crate) async fn finish_tunnels(&self, grace: Duration) {
        self.tunnels.finish(grace).await;
    }

    /// Serves one request from `conn`. Never fails: problems become answers from the edge.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ClientConn>,
    ) -> Response<ProxyBody> {
        let head_method = req.method() == Method::HEAD;
        let mut response = self.respond(req, conn).await;
        if head_method {
            // An answer of the edge's own to a HEAD names its body's length and sends none
            // of it: hyper leaves the body out on HTTP/1.1, not on HTTP/2.
            if let Some(length) = response.body_mut().take_message() {
                response
                    .headers_mut()
                    .entry(header::CONTENT_LENGTH)
                    .or_insert_with(|| HeaderValue::from(length));
            }
        }
        response
    }

    async fn respond(&self, req: Request<Incoming>, conn: &Arc<ClientConn>) -> Response<ProxyBody> {
        let host = match self.check(&req) {
            Ok(host) => host,
            Err(refusal) => return self.refuse(refusal, conn, req.version() < Version::HTTP_2),
        };
        let info = RequestInfo {
            host: host.to_str().ok(),
            path: req.uri().path(),
            headers: req.headers(),
        };
        let claimed = self.claim_when_open(&info).await;
        let Claim {
            guard,
            set_cookie,
            pinned,
        } = match claimed {
            Ok(claim) => claim,
            Err(Unclaimed::Unrouted(unrouted)) => {
                let (status, id) = self.unrouted(&unrouted, &conn.remote);
                return message(status, id);
            }
            Err(Unclaimed::Closed(closed)) => {
                let unavailable = answer::unavailable(&closed, self.table.metrics(), &conn.remote);
                return unavailable_answer(unavailable, req.method() == Method::HEAD);
            }
            Err(Unclaimed::Held(_)) => unreachable!("claim_when_open waits out every hold"),
        };
        let active = Arc::clone(guard.active());
        let mut response = self.forward(req, host, guard, conn).await;
        // What the edge answered itself for the client's error, or when it could not
        // reach any slot, is not the slot's answer: counting it would let a client dilute
        // (or inflate) a canary's error rate.
        if response.extensions().get::<NotTheSlots>().is_none() {
            active.metrics().count_status(response.status());
        }
        if let Some(cookie) = set_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        if pinned {
            response.headers_mut().insert(
                SLOT_HEADER,
                HeaderValue::from_static(active.backend().slot.as_str()),
            );
        }
        response
    }

    /// Claims a backend for the request; while its route is paused, waits for the resume
    /// (then claims again), the pause's deadline, or the edge's stop. A client that goes
    /// away drops this future, and with it the hold. Never `Unclaimed::Held`.
    async fn claim_when_open(&self, info: &RequestInfo<'_>) -> Result<Claim, Unclaimed> {
        let mut holds = 0;
        loop {
            let hold = match self.table.claim(info) {
                Err(Unclaimed::Held(hold)) => hold,
                claimed => return claimed,
            };
            holds += 1;
            if holds > MAX_HOLDS {
                return Err(Unclaimed::Closed(hold.gave_up()));
            }
            // Resumed or past the deadline, the route says what comes next.
            if hold.wait(self.stopping()).await == Held::Stopping {
                return Err(Unclaimed::Closed(Closed::Stopping));
            }
        }
    }

    /// Holds the request's head to the framing rules ([`crate::framing`]): the host to
    /// route and pass on, or why the request is refused.
    fn check(&self, req: &Request<Incoming>) -> Result<HeaderValue, Refusal> {
        if req.method() == Method::CONNECT {
            // A reverse proxy is no tunnel to anywhere; the slot would be told to connect
            // to itself.
            return Err(Refusal::MethodNotAllowed);
        }
        let http1 = req.version() < Version::HTTP_2;
        let uri = req.uri();
        let line = req.method().as_str().len()
            + uri.path_and_query().map_or(1, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len() + 7)
            + 10;
        let mut check =
            RequestCheck::new(req.version() == Version::HTTP_11, line, self.head_limits);
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(Refusal::BadRequest("the request has several Host headers"));
        }
        if http1 {
            for (name, value) in req.headers() {
                check.header(name.as_str(), value.as_bytes())?;
            }
            check.finish()?;
        } else {
            // HTTP/2 frames the body itself; the slot, reading HTTP/1.1, goes by the
            // `Content-Length`. h2 resets a stream whose lengths differ; this holds
            // whatever it lets through to the same rule as HTTP/1.1 (copies of one plain
            // number), so no other length can reach the slot.
            let mut lengths = req.headers().get_all(header::CONTENT_LENGTH).iter();
            if let Some(first) = lengths.next()
                && (framing::parse_length(first.as_bytes()).is_none()
                    || lengths.any(|other| other != first))
            {
                return Err(Refusal::BadRequest(
                    "the request has an invalid Content-Length, or several different ones",
                ));
            }
        }
        // The authority of an absolute-form target (HTTP/1.1) or `:authority` (HTTP/2)
        // and `Host` must name the same thing; either may stand alone in HTTP/2.
        let authority = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let host = match (host, authority) {
            (Some(host), Some(authority)) => {
                if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) {
                    return Err(Refusal::BadRequest(
                        "the request's Host disagrees with its target's authority",
                    ));
                }
                host.clone()
            }
            (Some(host), None) => host.clone(),
            (None, Some(authority)) if !http1 => authority,
            (None, _) => return Err(Refusal::BadRequest("the request has no Host header")),
        };
        if !framing::valid_authority(host.as_bytes()) {
            return Err(Refusal::BadRequest(
                "the request's Host is not a valid authority",
            ));
        }
        Ok(host)
    }

    /// The answer to a request the client got wrong. HTTP/1.x: the connection closes after
    /// it, since where the refused request ends is not known.
    fn refuse(&self, refusal: Refusal, conn: &ClientConn, http1: bool) -> Response<ProxyBody> {
        let id = RequestId::new();
        let status = refusal.status();
        answer::log_refusal(id, status, &conn.remote, refusal.reason());
        self.table.metrics().count_refused();
        edge_refusal(status, id, http1)
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        host: HeaderValue,
        mut guard: InFlightGuard,
        conn: &Arc<ClientConn>,
    ) -> Response<ProxyBody> {
        let declared = declared_length(req.headers());
        let head_method = req.method() == Method::HEAD;
        let http1 = req.version() < Version::HTTP_2;
        if let (Some(limit), Some(length)) = (self.max_body, declared)
            && length > limit
        {
            return self.too_large(guard.active(), limit, Some(length), http1);
        }
        // The `Upgrade` value to pass on, and the client's side of the upgrade.
        let upgrade = tunnel::is_upgrade(&req)
            .then(|| req.headers().get(header::UPGRADE).cloned())
            .flatten()
            .map(|value| (value, hyper::upgrade::on(&mut req)));
        let (upgrade, client_upgrade) = upgrade.unzip();
        if self.relay
            && !http1
            && upgrade.is_none()
            && req.body().is_end_stream()
            && declared.is_none_or(|length| length == 0)
            && req.uri().path().starts_with('/')
        {
            return self.forward_direct(req, host, guard, conn).await;
        }
        let idempotent = connector::is_idempotent(req.method());
        let active = guard.active();
        let (mut upstream, upload) =
            self.upstream_request(req, active, host, conn, declared, upgrade);
        let slot_connection = capture_connection(&mut upstream);
        let interim = Arc::new(Interim::default());
        {
            let interim = Arc::clone(&interim);
            hyper::ext::on_informational(&mut upstream, move |_| {
                let seen = interim.seen.fetch_add(1, Ordering::Relaxed) + 1;
                if seen > MAX_INTERIM_ANSWERS {
                    interim.over.notify_one();
                }
            });
        }
        let sent = self
            .send(upstream, upload.clone(), idempotent, &interim)
            .await;
        // After any framing surprise the slot's connection carries no other request.
        let poison = || connector::cut(&slot_connection);
        let mut response = match sent {
            Ok(response) => response,
            Err(failed) => {
                poison();
                // A body that broke on the client's side is the client's error, whatever
                // the upstream request then reported; so is an upload that had stalled
                // when the slot gave up on it.
                if let Some(upload) = &upload {
                    if let Some(error) = upload.client_error() {
                        return self.client_body_error(error, conn, http1);
                    }
                    if !upload.finished() && upload.idle_for() >= STALLED_UPLOAD {
                        return self.client_body_error(ClientBodyError::Stalled, conn, http1);
                    }
                }
                return self.upstream_failure(active, &failed, http1);
            }
        };
        // hyper's limit on its read buffer bounds a head that arrives in pieces; one that
        // arrives whole is measured here, as the relay measures it.
        if answer_head_size(&response) > MAX_ANSWER_HEAD {
            poison();
            let failure = Failure::Broken(format!(
                "its answer's head is larger than {MAX_ANSWER_HEAD} bytes"
            ));
            let (status, id) = self.failure(active, &failure);
            return message(status, id);
        }
        let framing = AnswerFraming::of(response.headers());
        // An answer that came before the request was sent whole, one framed both ways, or
        // a body-less answer (HEAD, 204, 304) that names a body the slot may still send:
        // the answer goes to the client, the connection is not reused, and it is cut once
        // the answer is over.
        let status = response.status();
        let bodyless =
            head_method || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let surprise = upload.as_ref().is_some_and(|u| !u.finished())
            || framing.both
            || bodyless && names_a_body(response.headers());
        if surprise {
            connector::poison(&slot_connection);
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return self.upstream_failure(active, &Failed::UnaskedUpgrade, http1);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let (mut parts, _) = response.into_parts();
            let upgrade = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(upgrade) = upgrade {
                tunnel::restore_upgrade(&mut parts.headers, upgrade);
            }
            guard.finish_timing();
            self.tunnels
                .open(client_upgrade, upstream_upgrade, guard, Arc::clone(conn));
            return Response::from_parts(parts, ProxyBody::empty());
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        framing.restore(&mut parts.headers);
        let mut body = ProxyBody::upstream(body, guard);
        if surprise {
            body.cut_after(slot_connection);
        }
        Response::from_parts(parts, body)
    }

    /// An HTTP/2 request without a body: sent over the slot's pooled connections, on this
    /// stream's task ([`crate::upstream`]), not through hyper's client.
    async fn forward_direct(
        &self,
        req: Request<Incoming>,
        host: HeaderValue,
        guard: InFlightGuard,
        conn: &ClientConn,
    ) -> Response<ProxyBody> {
        let head_method = req.method() == Method::HEAD;
        let idempotent = connector::is_idempotent(req.method());
        let (mut parts, _) = req.into_parts();
        self.upstream_headers(&mut parts.headers, parts.version, host, conn, None);
        let head = upstream_head(&parts);
        let active = Arc::clone(guard.active());
        match upstream::send(self, &active, &head, idempotent, head_method).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                Response::from_parts(parts, ProxyBody::upstream(body, guard))
            }
            Err(failure) => self.failure_answer(&active, &failure),
        }
    }

    /// Sends `upstream` through the pool. The response-header timeout counts from the end
    /// of the request body: while an upload is still going, it starts again.
    async fn send(
        &self,
        upstream: Request<RequestBody>,
        upload: Option<Arc<Upload>>,
        idempotent: bool,
        interim: &Interim,
    ) -> Result<Response<Incoming>, Failed> {
        let request = self.client.request(upstream);
        let request = async {
            if idempotent {
                connector::with_retry(request).await
            } else {
                request.await
            }
        };
        tokio::pin!(request);
        let deadline = tokio::time::sleep(self.response_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                sent = &mut request => {
                    // The interim answers may have come with the final one, in one read.
                    if interim.seen.load(Ordering::Relaxed) > MAX_INTERIM_ANSWERS {
                        return Err(Failed::TooManyInterim);
                    }
                    return sent.map_err(Failed::Upstream);
                }
                () = interim.over.notified() => return Err(Failed::TooManyInterim),
                () = &mut deadline => {
                    if upload.as_ref().is_some_and(|u| u.busy()) {
                        deadline.as_mut().reset(Instant::now() + self.response_timeout);
                    } else {
                        return Err(Failed::NoAnswer);
                    }
                }
            }
        }
    }

    fn upstream_request(
        &self,
        req: Request<Incoming>,
        active: &ActiveBackend,
        host: HeaderValue,
        conn: &ClientConn,
        declared: Option<u64>,
        upgrade: Option<HeaderValue>,
    ) -> (Request<RequestBody>, Option<Arc<Upload>>) {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(active.authority().clone());
        uri.path_and_query = Some(path);
        parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        let client_version = parts.version;
        // The upstream pool speaks HTTP/1.1 keep-alive whatever the client spoke.
        parts.version = Version::HTTP_11;
        self.upstream_headers(&mut parts.headers, client_version, host, conn, upgrade);

        // A declared length within the limit is held to by hyper; only an undeclared one
        // is counted as it streams.
        let remaining = self.max_body.filter(|_| declared.is_none());
        let upload = (!body.is_end_stream()).then(|| Arc::new(Upload::default()));
        let body = RequestBody::new(body, remaining, upload.clone(), self.body_idle_timeout);
        (Request::from_parts(parts, body), upload)
    }

    /// Rewrites a request's headers for the slot: the hop-by-hop and spoofable ones out, an
    /// HTTP/2 request's cookies joined into one header, `Host` and `X-Forwarded-*` in.
    fn upstream_headers(
        &self,
        headers: &mut HeaderMap,
        client_version: Version,
        host: HeaderValue,
        conn: &ClientConn,
        upgrade: Option<HeaderValue>,
    ) {
        strip_hop_by_hop(headers);
        strip_spoofable(headers);
        if client_version == Version::HTTP_2 {
            join_cookies(headers);
            // Copies of one length (`check` refused different ones) go on as one.
            if let Some(length) = headers.get(header::CONTENT_LENGTH).cloned() {
                headers.insert(header::CONTENT_LENGTH, length);
            }
        }
        if let Some(upgrade) = upgrade {
            tunnel::restore_upgrade(headers, upgrade);
        }
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
        headers.insert(X_FORWARDED_HOST, host);
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if conn.https { "https" } else { "http" }),
        );
        append_forwarded_for(headers, &conn.client_ip);
    }

    /// The edge's answer when the slot gave none. `http1`: the client speaks HTTP/1.x.
    fn upstream_failure(
        &self,
        active: &ActiveBackend,
        failed: &Failed,
        http1: bool,
    ) -> Response<ProxyBody> {
        let failure = match failed {
            Failed::Upstream(err) if source_is::<BodyTooLarge>(err) => {
                let limit = self.max_body.unwrap_or(u64::MAX);
                return self.too_large(active, limit, None, http1);
            }
            Failed::Upstream(err) if err.is_connect() && connector::is_timeout(err) => {
                Failure::ConnectTimeout
            }
            Failed::Upstream(err) if err.is_connect() && connector::is_out_of_descriptors(err) => {
                Failure::Overloaded(error_chain(err))
            }
            Failed::Upstream(err) if err.is_connect() => Failure::Connect(error_chain(err)),
            Failed::Upstream(err) => Failure::Broken(error_chain(err)),
            Failed::NoAnswer => Failure::NoAnswer,
            Failed::UnaskedUpgrade => Failure::UnaskedUpgrade,
            Failed::TooManyInterim => Failure::Broken(format!(
                "it sent more than {MAX_INTERIM_ANSWERS} interim answers"
            )),
        };
        self.failure_answer(active, &failure)
    }

    /// The edge's answer for `failure`, logged under a new request id.
    fn failure_answer(&self, active: &ActiveBackend, failure: &Failure) -> Response<ProxyBody> {
        let (status, id) = self.failure(active, failure);
        let mut response = message(status, id);
        if failure.is_the_edges() {
            response.extensions_mut().insert(NotTheSlots);
        }
        response
    }

    /// The answer when the client's body broke (malformed, cut off, or stalled): the
    /// client's error, and the end of an HTTP/1.x connection whose framing is now unknown.
    fn client_body_error(
        &self,
        error: ClientBodyError,
        conn: &ClientConn,
        http1: bool,
    ) -> Response<ProxyBody> {
        let refusal = match error {
            ClientBodyError::Broken => {
                Refusal::BadRequest("the request body broke off or is malformed")
            }
            ClientBodyError::Stalled => Refusal::Timeout,
        };
        self.refuse(refusal, conn, http1)
    }

    /// Counts a request that no route takes, and logs why under a new request id: the
    /// status and id of the edge's answer, on either path.
    pub(crate) fn unrouted(
        &self,
        unrouted: &Unrouted,
        remote: &SocketAddr,
    ) -> (StatusCode, RequestId) {
        self.table.metrics().count_unrouted();
        let id = RequestId::new();
        if let Some(suppressed) = answer::CLIENT_ERRORS.admit() {
            tracing::warn!(request_id = %id, %remote, suppressed, "{unrouted}");
        }
        (unrouted.status(), id)
    }

    /// The status of the edge's answer when the slot gave none, and the id under which
    /// the detail is logged (within the edge's budget of such lines, `slot_failures`).
    pub(crate) fn failure(
        &self,
        active: &ActiveBackend,
        failure: &Failure,
    ) -> (StatusCode, RequestId) {
        let backend = active.backend();
        let service = active.service();
        let (status, text) = match failure {
            Failure::ConnectTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "timed out after {} connecting to the slot",
                    humantime::format_duration(self.connect_timeout)
                ),
            ),
            Failure::Connect(cause) => (
                StatusCode::BAD_GATEWAY,
                format!("cannot connect to the slot: {cause}"),
            ),
            Failure::Broken(cause) => (
                StatusCode::BAD_GATEWAY,
                format!("the slot failed before answering: {cause}"),
            ),
            Failure::NoAnswer => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the slot did not answer within {} of receiving the request",
                    humantime::format_duration(self.response_timeout)
                ),
            ),
            Failure::UnaskedUpgrade => (
                StatusCode::BAD_GATEWAY,
                "the slot answered 101 Switching Protocols to a request that did not ask to \
                 upgrade"
                    .to_string(),
            ),
            Failure::Overloaded(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the edge cannot open a connection to the slot: {cause}"),
            ),
        };
        let counted = match failure {
            Failure::Connect(_) => Some(SlotFailure::Connect),
            Failure::ConnectTimeout => Some(SlotFailure::ConnectTimeout),
            Failure::Broken(_) | Failure::UnaskedUpgrade => Some(SlotFailure::Broken),
            Failure::NoAnswer => Some(SlotFailure::NoAnswer),
            Failure::Overloaded(_) => None,
        };
        if let Some(counted) = counted {
            active.metrics().count_failure(counted);
        }
        let id = RequestId::new();
        if let Some(suppressed) = self.slot_failures.admit() {
            tracing::warn!(
                request_id = %id,
                %service,
                slot = %backend.slot,
                release = %backend.release,
                addr = %backend.addr,
                status = status.as_u16(),
                suppressed,
                "{text}"
            );
        }
        (status, id)
    }

    /// A new connection to `member` (one address of a slot), for the relay, made by the same connector as
    /// the general path's (connect timeout, `TCP_NODELAY`, and one more try when a connect
    /// for an idempotent request fails without timing out).
    pub(crate) async fn connect(
        &self,
        member: &Member,
        idempotent: bool,
    ) -> Result<TcpStream, Failure> {
        let connecting = self.connector.connect(member.authority());
        let connected = if idempotent {
            connector::with_retry(connecting).await
        } else {
            connecting.await
        };
        connected.map_err(|e| {
            if connector::is_timeout(&*e) {
                Failure::ConnectTimeout
            } else if connector::is_out_of_descriptors(&*e) {
                Failure::Overloaded(error_chain(&*e))
            } else {
                Failure::Connect(error_chain(&*e))
            }
        })
    }
}

/// The HTTP/1.1 head of a request without a body, from its parts (headers already
/// rewritten for the slot). A method that usually has a body says it has none.
fn upstream_head(parts: &http::request::Parts) -> Vec<u8> {
    let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let bodyless_method = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if !bodyless_method && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        head.extend_from_slice(b"content-length: 0\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The request's `Content-Length`, when it has one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Appends the client's address to `X-Forwarded-For`.
fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if prior.is_empty() {
        // The common case: the connection's own value, shared, with no allocation.
        headers.insert(X_FORWARDED_FOR, client_ip.clone());
        return;
    }
    let client_ip = client_ip.to_str().unwrap_or_default();
    if let Ok(value) = HeaderValue::try_from(format!("{}, {client_ip}", prior.join(", "))) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// About how many bytes the head of `response` took on the wire.
fn answer_head_size<B>(response: &Response<B>) -> usize {
    let reason = response.status().canonical_reason().map_or(0, str::len);
    let lines: usize = response
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    "HTTP/1.1 200 \r\n".len() + reason + lines + 2
}

/// How the slot framed its answer, which hyper's client has already decoded: what the
/// client's answer keeps of it.
#[derive(Debug, Default)]
struct AnswerFraming {
    /// The codings to pass on: `Transfer-Encoding` without a final `chunked` (hyper's
    /// client took that off; the client side adds its own).
    codings: Option<HeaderValue>,
    /// A `Transfer-Encoding` was there: its `Content-Length`, if any, does not frame it.
    transfer_encoded: bool,
    /// Framed both ways: the connection is not to be trusted with another request.
    both: bool,
}

impl AnswerFraming {
    fn of(headers: &HeaderMap) -> Self {
        let codings: Vec<&[u8]> = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| framing::tokens(v.as_bytes()))
            .collect();
        if codings.is_empty() {
            return AnswerFraming::default();
        }
        let kept = match codings.split_last() {
            Some((last, rest)) if last.eq_ignore_ascii_case(b"chunked") => rest,
            _ => &codings[..],
        };
        AnswerFraming {
            codings: (!kept.is_empty())
                .then(|| HeaderValue::from_bytes(&kept.join(&b", "[..])).ok())
                .flatten(),
            transfer_encoded: true,
            both: headers.contains_key(header::CONTENT_LENGTH),
        }
    }

    /// Puts the framing back on the client's answer headers (after the hop-by-hop
    /// headers went): the codings still applied to the body, never a `Content-Length`
    /// that did not frame it.
    fn restore(self, headers: &mut HeaderMap) {
        if self.transfer_encoded {
            headers.remove(header::CONTENT_LENGTH);
        }
        if let Some(codings) = self.codings {
            headers.insert(header::TRANSFER_ENCODING, codings);
        }
    }
}

/// Removes the headers that only concern one connection: those [`framing::is_hop_by_hop`]
/// names, and those the message's `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| framing::tokens(v.as_bytes()))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    remove_where(headers, framing::is_hop_by_hop);
}

/// Whether `err` or one of its causes is an `E`.
fn source_is<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `tcp connect error: Connection refused (os error 111)`, without hyper's outer layer.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// Marks an answer the edge made itself that is not the slot's to count: the client's
/// error, or the edge's own failure to reach the slot.
#[derive(Debug, Clone, Copy)]
struct NotTheSlots;

/// How long an unfinished upload must have gone without a byte for a slot's failure to be
/// the client's (the slot gave up waiting for it).
const STALLED_UPLOAD: Duration = Duration::from_millis(500);

/// Whether an answer's headers announce a body: `Content-Length` above zero, or a
/// `Transfer-Encoding`.
fn names_a_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| framing::parse_length(v.as_bytes()) != Some(0))
}

/// Removes the client's headers that look like the ones the edge sets, or like framing
/// headers, to a slot that reads `_` as `-` ([`framing::is_spoofable`]).
fn strip_spoofable(headers: &mut HeaderMap) {
    remove_where(headers, framing::is_spoofable);
}

/// Removes every header whose name `rule` matches; allocates only when one does, which is
/// the rare case on the hot path.
fn remove_where(headers: &mut HeaderMap, rule: fn(&str) -> bool) {
    if headers.keys().any(|k| rule(k.as_str())) {
        let matched: Vec<HeaderName> = headers
            .keys()
            .filter(|k| rule(k.as_str()))
            .cloned()
            .collect();
        for name in matched {
            headers.remove(name);
        }
    }
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for more in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(more.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

impl Proxy {
    /// The 413 for a body over the limit: the client's error, counted as refused.
    fn too_large(
        &self,
        active: &ActiveBackend,
        limit: u64,
        declared: Option<u64>,
        http1: bool,
    ) -> Response<ProxyBody> {
        let id = RequestId::new();
        self.table.metrics().count_refused();
        if let Some(suppressed) = answer::CLIENT_ERRORS.admit() {
            tracing::warn!(
                request_id = %id,
                service = %active.service(),
                slot = %active.backend().slot,
                declared,
                limit,
                suppressed,
                "refused a request body over the limit"
            );
        }
        // The rest of the body is not read: the connection cannot carry another request.
        edge_refusal(StatusCode::PAYLOAD_TOO_LARGE, id, http1)
    }
}

/// The edge's own answer refusing a request: never counted as the slot's, and on HTTP/1.1
/// the end of the connection (HTTP/2 resets just the stream, and forbids the header).
fn edge_refusal(status: StatusCode, id: RequestId, http1: bool) -> Response<ProxyBody> {
    let mut response = message(status, id);
    response.extensions_mut().insert(NotTheSlots);
    if http1 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The edge's 503 for a request of a closed route; to a HEAD, without the body (its length
/// is named all the same).
fn unavailable_answer(unavailable: Unavailable, head_method: bool) -> Response<ProxyBody> {
    let Unavailable {
        content_type,
        body,
        retry_after,
    } = unavailable;
    let length = HeaderValue::from(body.len());
    let mut response = Response::new(if head_method {
        ProxyBody::empty()
    } else {
        ProxyBody::bytes(body)
    });
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, length);
    headers.insert(header::RETRY_AFTER, retry_after);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(NotTheSlots);
    response
}

/// An answer from the edge itself: the generic text of [`answer::body`].
fn message(status: StatusCode, id: RequestId) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::message(answer::body(status, id)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests;

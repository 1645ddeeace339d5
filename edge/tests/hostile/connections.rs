//! Connections the edge must let go of, and count while they are open: an HTTP/2
//! connection it asked to close (GOAWAY) closes even if the client never answers the
//! `PING` that comes with it, an HTTP/2 client that opens no flow-control window is cut
//! off by the write timeout like one that stops reading, and an upgraded connection
//! (WebSocket) counts against the connection limits for as long as it is open.

use std::sync::Arc;
use std::time::Duration;

use shipit_edge::Tuning;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::case::{HOST, get, seen};
use crate::client::RawClient;
use crate::h2c::{self, Acks, Conn, Event, Frame};
use crate::harness::{ClientIo, Edge, Path, SERVICE, check, on_every_path, on_plain_paths};
use crate::upstream::{Reply, Script, Upstream};
use crate::wire::escape;

/// How long past its deadline a connection the edge gave up on may stay open.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long a freed connection share may take to be taken again.
const FREED_TIMEOUT: Duration = Duration::from_secs(2);

/// An edge on `path` with `tuning`, `web` live on `upstream`.
async fn edge_with(path: Path, tuning: Tuning, upstream: &Upstream) -> Edge {
    let edge = Edge::start_with(path, tuning).await;
    edge.route(upstream.addr, "rel-1").await;
    edge
}

/// An upstream that answers `prefix…` with `reply`, everything else with an echo.
async fn answering_prefix(prefix: &'static str, reply: Reply) -> Upstream {
    let script: Script = Arc::new(move |asked| {
        if asked.target.starts_with(prefix) {
            reply.clone()
        } else {
            Reply::Echo
        }
    });
    Upstream::scripted(script).await
}

/// `GET path` on an HTTP/2 stream.
fn h2_get(path: &[u8]) -> Vec<(&[u8], &[u8])> {
    vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", HOST.as_bytes()),
    ]
}

/// A new h2c connection to the edge from 127.0.0.1.
async fn h2_open(edge: &Edge, settings: &[(u16, u32)], acks: Acks) -> Result<Conn, String> {
    let tcp = TcpStream::connect(edge.addr())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Conn::open(tcp, settings, acks)
        .await
        .map_err(|e| format!("the preface: {e}"))
}

/// A GET from 127.0.0.1 is refused now (503): the client's one connection share is taken.
async fn share_taken(edge: &Edge) -> Result<(), String> {
    let got = edge
        .client()
        .await
        .exchange(get("/share", "").as_bytes(), false, 1)
        .await;
    let finals = got.finals();
    check(finals.len() == 1 && finals[0].status == 503, || {
        format!(
            "with its one connection open, another from the same address got {} instead of 503",
            got.describe()
        )
    })
}

/// A new connection from 127.0.0.1 is served (200) within [`FREED_TIMEOUT`]: the
/// connection that held the client's share no longer counts.
async fn share_freed(edge: &Edge) -> Result<(), String> {
    let deadline = Instant::now() + FREED_TIMEOUT;
    loop {
        let got = edge
            .client()
            .await
            .exchange(get("/again", "").as_bytes(), false, 1)
            .await;
        let finals = got.finals();
        if finals.len() == 1 && finals[0].status == 200 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "a new connection from the same address still got {} {FREED_TIMEOUT:?} after \
                 the old one closed: the closed connection still counts against \
                 max_connections_per_ip",
                got.describe()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the edge closes the connection, at most until `deadline`; fails saying
/// what came (after `earlier`) when it stays open.
async fn closes_by(
    conn: &mut Conn,
    deadline: Instant,
    what: &str,
    earlier: Vec<Frame>,
) -> Result<(), String> {
    let (closed, later) = conn.until_closed(deadline).await;
    let mut frames = earlier;
    frames.extend(later);
    check(closed, || {
        let goaway = frames.iter().any(|f| f.kind == h2c::GOAWAY);
        format!(
            "{what}: the connection was still open at its deadline{}; the edge sent {}",
            if goaway {
                " although the edge had sent GOAWAY (it waits for the PING's answer)"
            } else {
                ""
            },
            h2c::describe(&frames)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_a_request_closes_at_the_header_read_timeout() {
    const HEADER_READ: Duration = Duration::from_secs(1);
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    on_plain_paths("h2_quiet_after_its_preface", async |path: Path| {
        let upstream = Upstream::start().await;
        let tuning = Tuning {
            header_read_timeout: HEADER_READ,
            max_connections_per_ip: 1,
            ..Tuning::default()
        };
        let edge = edge_with(path, tuning, &upstream).await;
        let opened = Instant::now();
        // The preface and an empty SETTINGS, then nothing: no SETTINGS ack, no PING ack.
        let mut conn = h2_open(&edge, &[], Acks::Nothing).await?;
        share_taken(&edge).await?;
        closes_by(
            &mut conn,
            opened + HEADER_READ + CLOSE_GRACE,
            "a client silent after its preface (header_read_timeout 1 s, waited 4 s)",
            Vec::new(),
        )
        .await?;
        share_freed(&edge).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_closes_even_if_its_client_never_answers_the_ping() {
    const IDLE: Duration = Duration::from_secs(1);
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    on_plain_paths("h2_idle_without_ping_answers", async |path: Path| {
        let upstream = Upstream::start().await;
        let tuning = Tuning {
            idle_timeout: IDLE,
            max_connections_per_ip: 1,
            ..Tuning::default()
        };
        let edge = edge_with(path, tuning, &upstream).await;
        let mut conn = h2_open(&edge, &[], Acks::Settings).await?;
        conn.headers(1, &h2_get(b"/idle"), true)
            .await
            .map_err(|e| format!("the request: {e}"))?;
        let mut frames: Vec<Frame> = Vec::new();
        let answered = loop {
            match conn.next(Instant::now() + Duration::from_secs(4)).await {
                Event::Frame(f) if f.stream == 1 && f.ends_stream() => break true,
                Event::Frame(f) => frames.push(f),
                Event::Closed | Event::TimedOut => break false,
            }
        };
        check(answered, || {
            format!(
                "GET /idle got no whole answer: {}; the upstream parsed {}",
                h2c::describe(&frames),
                seen(&upstream)
            )
        })?;
        let done = Instant::now();
        share_taken(&edge).await?;
        // The idle check runs once per idle period, so the GOAWAY comes between one and
        // two periods after the last request ends; the close follows within the grace.
        closes_by(
            &mut conn,
            done + 2 * IDLE + CLOSE_GRACE,
            "a client idle after one request (idle_timeout 1 s, waited 5 s)",
            frames,
        )
        .await?;
        share_freed(&edge).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_ended_for_resets_closes_even_if_its_client_never_answers_the_ping() {
    const ATTEMPTS: u32 = 20;
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    on_plain_paths("h2_reset_flood_without_ping_answers", async |path: Path| {
        // Requests the slot holds, so that each reset comes after the edge took it up.
        let upstream = answering_prefix("/hold", Reply::Silent).await;
        let tuning = Tuning {
            h2_max_resets_per_second: 2,
            max_connections_per_ip: 1,
            ..Tuning::default()
        };
        let edge = edge_with(path, tuning, &upstream).await;
        let mut conn = h2_open(&edge, &[], Acks::Settings).await?;
        let mut frames: Vec<Frame> = Vec::new();
        let mut goaway = None;
        let mut closed = false;
        'flood: for i in 0..ATTEMPTS {
            let stream = 2 * i + 1;
            let path = format!("/hold-{i}");
            if conn
                .headers(stream, &h2_get(path.as_bytes()), true)
                .await
                .is_err()
            {
                closed = true;
                break;
            }
            let wanted = i as usize + 1;
            upstream
                .wait_for(Duration::from_secs(2), |conns| {
                    conns.iter().map(|c| c.requests.len()).sum::<usize>() >= wanted
                })
                .await;
            if conn.reset(stream, h2c::CANCEL).await.is_err() {
                closed = true;
                break;
            }
            // What the edge said meanwhile.
            loop {
                match conn.next(Instant::now() + Duration::from_millis(20)).await {
                    Event::Frame(f) => {
                        let is_goaway = f.kind == h2c::GOAWAY;
                        frames.push(f);
                        if is_goaway {
                            goaway = Some(Instant::now());
                            break 'flood;
                        }
                    }
                    Event::Closed => {
                        closed = true;
                        break 'flood;
                    }
                    Event::TimedOut => break,
                }
            }
        }
        if !closed {
            let Some(at) = goaway else {
                return Err(format!(
                    "no GOAWAY after {ATTEMPTS} requests reset at once \
                     (h2_max_resets_per_second 2): {}",
                    h2c::describe(&frames)
                ));
            };
            closes_by(
                &mut conn,
                at + CLOSE_GRACE,
                "a client that reset requests too fast, 3 s after its GOAWAY",
                frames,
            )
            .await?;
        }
        share_freed(&edge).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_opens_no_window_is_cut_off_by_the_write_timeout() {
    const WRITE: Duration = Duration::from_secs(1);
    const DRAIN_DEADLINE: Duration = Duration::from_secs(8);
    const STREAMS: [u32; 3] = [1, 3, 5];
    // h2c with prior knowledge needs a plain TCP client; HTTP/2 over TLS never meets the
    // relay.
    on_plain_paths("h2_zero_flow_control_window", async |path: Path| {
        let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        big.resize(big.len() + 1024 * 1024, b'x');
        let upstream = answering_prefix("/big", Reply::Raw(big)).await;
        let tuning = Tuning {
            write_timeout: WRITE,
            ..Tuning::default()
        };
        let edge = edge_with(path, tuning, &upstream).await;
        // A window of 0 for every stream; the client reads all the edge sends and
        // acknowledges it, but never opens the window (no WINDOW_UPDATE).
        let mut conn = h2_open(&edge, &[(h2c::SETTINGS_INITIAL_WINDOW_SIZE, 0)], Acks::All).await?;
        for stream in STREAMS {
            let path = format!("/big-{stream}");
            conn.headers(stream, &h2_get(path.as_bytes()), true)
                .await
                .map_err(|e| format!("the request: {e}"))?;
        }
        let reached = upstream
            .wait_for(Duration::from_secs(3), |conns| {
                conns.iter().map(|c| c.requests.len()).sum::<usize>() == STREAMS.len()
            })
            .await;
        check(reached, || {
            format!(
                "the requests did not all reach the slot: {}",
                seen(&upstream)
            )
        })?;
        let began = Instant::now();
        // Another release takes the traffic; the old one drains.
        edge.route(upstream.addr, "rel-2").await;
        let admin = edge.admin();
        let drain = admin.drain(SERVICE, "rel-1", DRAIN_DEADLINE);
        let cut = async {
            let deadline = began + WRITE + CLOSE_GRACE;
            let mut frames = Vec::new();
            loop {
                let reset: Vec<u32> = frames
                    .iter()
                    .filter(|f: &&Frame| f.kind == h2c::RST_STREAM)
                    .map(|f| f.stream)
                    .collect();
                if STREAMS.iter().all(|s| reset.contains(s)) {
                    break (true, frames);
                }
                match conn.next(deadline).await {
                    Event::Frame(f) => frames.push(f),
                    Event::Closed => break (true, frames),
                    Event::TimedOut => break (false, frames),
                }
            }
        };
        let (drained, (cut, frames)) = tokio::join!(drain, cut);
        let drained = drained.map_err(|e| format!("the drain failed: {e}"))?;
        let mut problems = Vec::new();
        if !cut {
            problems.push(format!(
                "the edge neither closed the connection nor reset its streams within the \
                 write timeout (1 s) + 3 s; it sent {}",
                h2c::describe(&frames)
            ));
        }
        if !drained.drained || drained.waited > WRITE + CLOSE_GRACE {
            problems.push(format!(
                "the drain of the old release ended {drained:?} (deadline {DRAIN_DEADLINE:?}): \
                 it waited for a client that opens no window"
            ));
        }
        check(problems.is_empty(), || problems.join("; "))
    })
    .await;
}

/// A WebSocket upgrade request.
const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
/// The slot's answer to it.
const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// Opens a tunnel from `local` through the edge to the echoing slot: the 101, then `n`
/// echoed back. The head of the answer when it is not a 101, or what went wrong.
async fn open_tunnel(edge: &Edge, local: &str, n: usize) -> Result<ClientIo, String> {
    let mut stream = edge
        .connect_from(local)
        .await
        .map_err(|e| format!("tunnel {n}: {e}"))?;
    stream
        .write_all(UPGRADE.as_bytes())
        .await
        .map_err(|e| format!("tunnel {n}: writing the upgrade: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => return Err(format!("tunnel {n}: no answer head: {}", escape(&got))),
        }
    };
    if !got.starts_with(b"HTTP/1.1 101 ") {
        return Err(format!("tunnel {n}: the edge answered {}", escape(&got)));
    }
    let message = format!("ping-{n}");
    stream
        .write_all(message.as_bytes())
        .await
        .map_err(|e| format!("tunnel {n}: writing through it: {e}"))?;
    let mut echoed = got[head_end..].to_vec();
    while echoed.len() < message.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => echoed.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    check(echoed == message.as_bytes(), || {
        format!(
            "tunnel {n}: sent {message:?}, got back {:?}",
            escape(&echoed)
        )
    })?;
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_count_against_the_connection_limits() {
    const PER_IP: usize = 5;
    on_every_path("websocket_tunnels_per_ip", async |path: Path| {
        let script: Script = Arc::new(|asked| {
            if asked.target == "/ws" {
                Reply::Switch(SWITCHED.to_vec())
            } else {
                Reply::Echo
            }
        });
        let upstream = Upstream::scripted(script).await;
        let tuning = Tuning {
            max_connections_per_ip: PER_IP,
            ..Tuning::default()
        };
        let edge = edge_with(path, tuning, &upstream).await;
        let mut tunnels = Vec::new();
        for n in 0..PER_IP {
            tunnels.push(open_tunnel(&edge, "127.0.0.1", n).await?);
        }
        // The five tunnels are the client's five connections: a sixth is refused, with a
        // 503 on plain TCP, before its handshake behind TLS (no HTTP to answer in yet).
        let sixth = match edge.connect().await {
            Ok(io) => {
                let got = RawClient::new(io)
                    .exchange(get("/sixth", "").as_bytes(), false, 1)
                    .await;
                let finals = got.finals();
                let refused = !path.tls()
                    && finals.len() == 1
                    && finals[0].status == 503
                    && finals[0].text().contains("too many connections");
                (!refused).then(|| got.describe())
            }
            Err(_) if path.tls() => None,
            Err(e) => Some(e),
        };
        if let Some(got) = sixth {
            return Err(format!(
                "with {PER_IP} tunnels open from 127.0.0.1 (max_connections_per_ip {PER_IP}), \
                 a 6th connection got {got}: tunnels do not count"
            ));
        }
        // Another client is served meanwhile.
        let other = edge
            .client_from("127.0.0.2")
            .await
            .exchange(get("/other", "").as_bytes(), false, 1)
            .await;
        let finals = other.finals();
        check(
            finals.len() == 1 && finals[0].status == 200 && finals[0].text() == "GET /other 0",
            || format!("a client from 127.0.0.2 got {}", other.describe()),
        )?;
        // One tunnel closes: its share is taken again.
        let mut closing = tunnels.pop().expect("five tunnels");
        let _ = closing.shutdown().await;
        drop(closing);
        let deadline = Instant::now() + FREED_TIMEOUT;
        let mut n = PER_IP;
        loop {
            match open_tunnel(&edge, "127.0.0.1", n).await {
                Ok(tunnel) => {
                    tunnels.push(tunnel);
                    break;
                }
                Err(why) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{FREED_TIMEOUT:?} after a tunnel closed, a new one still failed: {why}"
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            n += 1;
        }
        Ok(())
    })
    .await;
}

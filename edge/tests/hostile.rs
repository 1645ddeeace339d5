//! The edge against hostile input: request smuggling, answers that reach the
//! wrong client, a slot's malformed answers, and a client's errors counted as the slot's.
//!
//! Every case runs three times: through the relay on plain TCP, through the relay behind
//! the edge's TLS listener (ALPN `http/1.1`), and through the general (hyper) path
//! (`Tuning::relay = false`), each time on a fresh in-process edge in front of a raw
//! upstream that records every byte it receives and parses it with its own strict RFC 9112
//! parser. Cases that need a plain TCP client (h2c with prior knowledge) run on the two
//! plaintext paths only, and say so. The checks are those of ARCHITECTURE.md, invariant 7:
//! the upstream parses exactly the requests the client sent, with the same boundaries (or
//! nothing at all when the edge refuses), each client gets answers only to its own
//! requests, and a client's error is never the slot's 5xx. A table-driven test runs all its
//! cases and then fails listing every failing case with its path (`[relay]`, `[relay-tls]`
//! or `[general]`), not just the first.
//!
//! Modules: `wire` (the strict parsers), `upstream` (the recording, scriptable upstream),
//! `client` (the raw client), `h2c` (a raw HTTP/2 client), `harness` (the edge, its TLS
//! certificate and the runner), `case` (request-side cases and their checks); then the
//! cases: `requests`, `bodies`, `poisoning`, `answers`, `bodyless` (late bytes after HEAD,
//! 204 and 304 answers), `http2`, `forwarding` (CONNECT, lookalike headers, `Connection`
//! tokens, `Upgrade: h2c`), `connections` (connections the edge must close, and count while
//! they are open), `counting` (whose error a request is, in the metrics), `messages`,
//! `pause` (held requests whose clients leave); and `differential`, the relay (plain and
//! TLS) against hyper on generated streams.

#[path = "hostile/answers.rs"]
mod answers;
#[path = "hostile/bodies.rs"]
mod bodies;
#[path = "hostile/bodyless.rs"]
mod bodyless;
#[path = "hostile/case.rs"]
mod case;
#[path = "hostile/client.rs"]
mod client;
#[path = "hostile/connections.rs"]
mod connections;
#[path = "hostile/counting.rs"]
mod counting;
#[path = "hostile/differential.rs"]
mod differential;
#[path = "hostile/forwarding.rs"]
mod forwarding;
#[path = "hostile/h2c.rs"]
mod h2c;
#[path = "hostile/harness.rs"]
mod harness;
#[path = "hostile/http2.rs"]
mod http2;
#[path = "hostile/messages.rs"]
mod messages;
#[path = "hostile/pause.rs"]
mod pause;
#[path = "hostile/poisoning.rs"]
mod poisoning;
#[path = "hostile/requests.rs"]
mod requests;
#[path = "support/tls_client.rs"]
mod tls_client;
#[path = "hostile/upstream.rs"]
mod upstream;
#[path = "hostile/wire.rs"]
mod wire;

/// Settings saved (or handed over) before `Tuning::relay` existed keep the relay on.
#[test]
fn tuning_saved_without_the_relay_switch_loads_with_the_relay_on() {
    let mut saved = serde_json::to_value(shipit_edge::Tuning::default()).unwrap();
    saved.as_object_mut().unwrap().remove("relay").unwrap();
    let tuning: shipit_edge::Tuning = serde_json::from_value(saved).unwrap();
    assert!(tuning.relay);
}

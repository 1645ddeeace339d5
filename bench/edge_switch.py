"""Switches one proxy between the blue and green backends and measures how long each switch
takes to reach a client, for bench/edge_compare.sh.

Usage:
  edge_switch.py switch TARGETS_JSON PROXY COUNT INTERVAL_MS OUT_JSON [--new-release]
  edge_switch.py set TARGETS_JSON PROXY SLOT   (one switch, unmeasured: the initial route)
  edge_switch.py poll URL OUT_BIN              (started by `switch`; not run by hand)

`switch` starts a poller (a separate process, so it never waits on this one), then makes
COUNT switches of PROXY, one every INTERVAL_MS, alternating the slot, and writes the
measurements to OUT_JSON. The poller sends `GET /version` through the proxy on one
keep-alive connection, one request after the other, as fast as the proxy answers, and
records for each response when it was sent, when it arrived and which slot answered
(hello's `/version` names its release, and blue and green run with different ones).

With `--new-release` (shipit only), each switch names a release the edge has not seen
(`bench-green-3`, `bench-blue-4`, ...) at the same two addresses: what `shipit release` does
every time. As the release does once the new slot is verified, the backend is first named
to `PUT /routes/bench/next` (the edge opens a connection to it and holds it for the switch);
that call is made before the switch's issue time, and is not measured. Without it, the switches alternate between the same two releases: a rollback, for
which the edge takes the idle connections of the instance it replaced. Either way, the poller
tells the slots apart by what hello answers, which does not change.

Both processes read CLOCK_MONOTONIC (`time.monotonic_ns`), which is one clock for the whole
machine, so a switch's issue time and the poller's response times can be compared:

- switch latency = the first response from the new slot that arrived after the switch was
  issued, minus the issue time. The issue time is taken before anything the switch does (for
  nginx: before the config file is rewritten). Its resolution is one poll round trip, which
  the output reports.
- stale responses = answers from the old slot to requests sent after the switch command had
  returned. An atomic switch has none; a proxy whose command returns before the switch takes
  effect (`nginx -s reload` only signals the master) has some.
- poller errors = requests that got no answer (the connection closed or reset under them) or
  a status other than 200; the poller then reconnects.

How each proxy is switched (the same way an operator or a deploy tool would):
- shipit: `PUT /routes/bench/switch` on the edge's admin socket, a fresh connection per call
  as the pipeline's AdminClient does; it returns once the route table points at the slot.
- nginx: the config for the slot is renamed over nginx.conf, then `nginx -s reload`, which
  returns once the master has been signalled; new workers start with the new upstream and
  the old ones finish their requests.
- haproxy: one line on the runtime API socket, `set server app/<new> state ready; set server
  app/<old> state maint` (ready first, so there is never a moment with no server).
- caddy: `POST /load` of the whole JSON config for the slot on the admin endpoint; it
  returns once the new config is running.
"""

import http.client
import bisect
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path

# Codes the poller stores per response.
BLUE, GREEN, BAD_STATUS, NO_ANSWER = 0, 1, 2, 3
SLOTS = ("blue", "green")
# The poller gives up on a silent proxy after this long per request, and its whole life is
# bounded too, so a hung proxy cannot hang the benchmark.
POLL_TIMEOUT_S = 5
POLL_MAX_LIFE_S = 600
# How long `switch` waits for the poller's first answer, and after the last switch before it
# stops the poller (so the last switch's first new response is seen).
POLL_READY_TIMEOUT_S = 10
TAIL_S = 0.5


def exchange(family, address, method, path, host, body=b""):
    """One HTTP/1.1 request on a fresh connection, written and read with plain socket calls,
    the same for every proxy's admin API, so that no client library's overhead lands on one
    proxy's switch time and not another's. Returns (status, body)."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(address)
        s.sendall(head + body)
        status, answer, _ = read_response(s)
    return status, answer


# --- The poller ------------------------------------------------------------------------


def poll(url, out_path):
    """Polls until SIGTERM (or POLL_MAX_LIFE_S), then writes the triples (sent ns, received
    ns, code) as native int64s to out_path."""
    assert url.startswith("http://")
    hostport, _, path = url[len("http://"):].partition("/")
    host, port = hostport.rsplit(":", 1)
    request = f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode()
    records = array("q")
    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + POLL_MAX_LIFE_S
    sock = None
    ready = False
    now = time.monotonic_ns
    while not stop and time.monotonic() < deadline:
        if sock is None:
            try:
                sock = socket.create_connection((host, int(port)), timeout=POLL_TIMEOUT_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                records.extend((now(), now(), NO_ANSWER))
                sock = None
                time.sleep(0.001)
                continue
        sent = now()
        try:
            sock.sendall(request)
            status, body, close = read_response(sock)
        except (OSError, ValueError):
            records.extend((sent, now(), NO_ANSWER))
            sock.close()
            sock = None
            continue
        received = now()
        if status != 200:
            code = BAD_STATUS
        elif b"release=bench-blue" in body:
            code = BLUE
        elif b"release=bench-green" in body:
            code = GREEN
        else:
            code = BAD_STATUS
        records.extend((sent, received, code))
        if not ready and code in (BLUE, GREEN):
            ready = True
            print("ready", flush=True)
        if close:
            sock.close()
            sock = None
    with open(out_path, "wb") as out:
        records.tofile(out)


def read_response(sock):
    """One HTTP/1.1 response with a Content-Length body: (status, body, server closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed in the response body")
        body += chunk
    return status, body, close


# --- Switching -------------------------------------------------------------------------


def switcher(targets, name, new_release=False):
    """A function slot -> None that switches proxy `name` to that slot, returning when the
    proxy's own command returns. `new_release` (shipit only): each switch names a release the
    edge has not seen, and the function has a `prepare(slot)` attribute, to call before the
    switch's issue time, that names that release to the edge's `next` call."""
    spec = targets["proxies"][name]
    backends = targets["backends"]
    if new_release and name != "shipit":
        raise SystemExit(f"--new-release is for shipit only; {name} has no releases")

    if name == "shipit":
        switched = 0

        def body(slot, k):
            backend = backends[slot]
            release = f"{backend['release']}-{k}" if new_release else backend["release"]
            return json.dumps({"slot": slot, "release": release, "addr": backend["addr"]}).encode()

        def call(what, slot, payload):
            status, text = exchange(socket.AF_UNIX, spec["admin_socket"], "PUT",
                                    f"/routes/{spec['service']}/{what}", "edge", payload)
            if status != 200:
                raise RuntimeError(f"shipit edge {what} to {slot}: {status} {text!r}")

        def switch(slot):
            nonlocal switched
            switched += 1
            call("switch", slot, body(slot, switched))

        if new_release:
            # Called before the switch's issue time: the release the next switch names.
            switch.prepare = lambda slot: call("next", slot, body(slot, switched + 1))
        return switch

    if name == "nginx":
        def switch(slot):
            staged = spec["conf"] + ".next"
            shutil.copyfile(spec["confs"][slot], staged)
            os.replace(staged, spec["conf"])
            subprocess.run(
                ["nginx", "-q", "-p", spec["prefix"], "-c", spec["conf"], "-e", spec["error_log"],
                 "-s", "reload"],
                check=True,
            )
        return switch

    if name == "haproxy":
        def switch(slot):
            other = "green" if slot == "blue" else "blue"
            line = f"set server app/{slot} state ready; set server app/{other} state maint\n"
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(spec["socket"])
                s.sendall(line.encode())
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            # Both commands print nothing when they succeed.
            if answer.strip():
                raise RuntimeError(f"haproxy runtime API: {line.strip()!r} answered {answer!r}")
        return switch

    if name == "caddy":
        configs = {slot: Path(spec["configs"][slot]).read_bytes() for slot in SLOTS}
        host, port = spec["admin"].rsplit(":", 1)

        def switch(slot):
            status, text = exchange(socket.AF_INET, (host, int(port)), "POST", "/load",
                                    spec["admin"], configs[slot])
            if status != 200:
                raise RuntimeError(f"caddy POST /load ({slot}): {status} {text!r}")
        return switch

    raise SystemExit(f"unknown proxy {name}")


def current_slot(url):
    hostport, _, path = url[len("http://"):].partition("/")
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/" + path)
        body = conn.getresponse().read()
    finally:
        conn.close()
    for slot in SLOTS:
        if f"release=bench-{slot}".encode() in body:
            return slot
    raise SystemExit(f"{url} answered {body!r}, which names neither bench-blue nor bench-green")


def run_switches(targets_path, name, count, interval_ms, out_path, new_release=False):
    targets = json.loads(Path(targets_path).read_text())
    url = targets["proxies"][name]["url"] + "version"
    switch = switcher(targets, name, new_release)
    live = current_slot(url)
    raw = Path(out_path).with_suffix(".bin")
    poller = subprocess.Popen(
        [sys.executable, __file__, "poll", url, str(raw)], stdout=subprocess.PIPE, text=True
    )
    try:
        readable, _, _ = select.select([poller.stdout], [], [], POLL_READY_TIMEOUT_S)
        if not readable or poller.stdout.readline().strip() != "ready":
            raise SystemExit(f"the poller got no answer from {url} within {POLL_READY_TIMEOUT_S} s")
        time.sleep(0.2)
        switches = []
        start = time.monotonic_ns()
        for k in range(count):
            # On a fixed schedule, so a slow switch does not stretch the run.
            due = start + (k + 1) * interval_ms * 1_000_000
            target = "green" if live == "blue" else "blue"
            if hasattr(switch, "prepare"):
                switch.prepare(target)
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            issued = time.monotonic_ns()
            switch(target)
            returned = time.monotonic_ns()
            switches.append({"to": target, "issued_ns": issued, "returned_ns": returned})
            live = target
        time.sleep(max(TAIL_S, interval_ms / 1000))
    finally:
        poller.send_signal(signal.SIGTERM)
        try:
            poller.wait(timeout=30)
        except subprocess.TimeoutExpired:
            poller.kill()
            poller.wait()
    records = array("q")
    with open(raw, "rb") as f:
        records.frombytes(f.read())
    raw.unlink()
    result = analyse(name, switches, records)
    Path(out_path).write_text(json.dumps(result, indent=1) + "\n")


def analyse(name, switches, records):
    # The poller is sequential, so its responses are in the order they arrived.
    responses = [tuple(records[i:i + 3]) for i in range(0, len(records), 3)]
    arrivals = [r[1] for r in responses]
    per_switch = []
    for k, sw in enumerate(switches):
        new = SLOTS.index(sw["to"])
        old = 1 - new
        end = switches[k + 1]["issued_ns"] if k + 1 < len(switches) else arrivals[-1] + 1
        window = responses[bisect.bisect_left(arrivals, sw["issued_ns"]):bisect.bisect_left(arrivals, end)]
        first_new = next((r for r in window if r[2] == new), None)
        last_old = next((r for r in reversed(window) if r[2] == old), None)
        since = lambda t: (t - sw["issued_ns"]) / 1e6
        per_switch.append({
            "to": sw["to"],
            "command_ms": since(sw["returned_ns"]),
            # None: no answer from the new slot before the next switch.
            "first_new_ms": since(first_new[1]) if first_new else None,
            # When that request left, and when the last one the old slot answered left: the
            # proxy switched between the two (for nginx, per worker).
            "first_new_sent_ms": since(first_new[0]) if first_new else None,
            "last_old_sent_ms": since(last_old[0]) if last_old else None,
            "stale": sum(1 for r in window if r[2] == old and r[0] > sw["returned_ns"]),
        })
    answered = [r for r in responses if r[2] in (BLUE, GREEN)]
    gaps = [(b[1] - a[1]) / 1e6 for a, b in zip(answered, answered[1:])]
    return {
        "proxy": name,
        "switches": per_switch,
        "poll": {
            "responses": len(answered),
            "bad_status": sum(1 for r in responses if r[2] == BAD_STATUS),
            "no_answer": sum(1 for r in responses if r[2] == NO_ANSWER),
            "median_round_trip_ms": statistics.median((r[1] - r[0]) / 1e6 for r in answered)
            if answered else None,
            "median_interval_ms": statistics.median(gaps) if gaps else None,
        },
    }


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "poll":
        poll(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "set":
        _, _, targets, name, slot = sys.argv
        switcher(json.loads(Path(targets).read_text()), name)(slot)
    elif len(sys.argv) in (7, 8) and sys.argv[1] == "switch":
        _, _, targets, name, count, interval_ms, out, *flags = sys.argv
        if flags not in ([], ["--new-release"]):
            raise SystemExit(f"unknown option {flags[0]}\n{__doc__}")
        run_switches(targets, name, int(count), int(interval_ms), out, new_release=bool(flags))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()

"""New TLS connections per second through a proxy, for bench/edge_compare.sh: full
handshakes, or resumed ones.

Usage: edge_tls_handshake.py HOST:PORT {full,resumed} CLIENTS SECONDS OUT_JSON
       edge_tls_handshake.py HOST:PORT probe    (one connection with the same request:
                                                 exits 0 when it gets 200 and the close)

Runs CLIENTS `openssl s_time` processes side by side for SECONDS. Each makes one connection
at a time: TCP connect, TLS handshake, one request through the proxy to the backend, read
to the end (the request asks for `Connection: close`: the proxy closes), close; then the
next. The rate is every process's connections over the wall time of the whole group, taken
here (s_time's own "real seconds" are whole seconds).

s_time's `-www PAGE` sends `GET PAGE HTTP/1.0` and no header; some proxies (the shipit edge
among them) refuse a request without Host. So PAGE carries the rest of the head: the request
is `GET / HTTP/1.1`, `Host`, `Connection: close`, and a last header that takes s_time's
trailing " HTTP/1.0" as its value, the request a one-shot HTTP/1.1 client sends.

- full: `s_time -new`, a new session on every connection: each is a full handshake (the
  server signs with its certificate's key). s_time prints an `r` for a connection that
  resumed; they are counted, and must be 0.
- resumed: `s_time -reuse`, each process resumes the session of its first connection on
  every later one (TLS 1.3: a PSK from the server's ticket or cache, still with an ECDHE
  exchange; TLS 1.2: the session id or ticket). The share that really resumed is counted
  too: a server that refuses it does full handshakes instead.

wrk and h2load are not used for this: both keep the session of a closed connection and
resume it on the next (wrk through SSL_clear), so with `Connection: close` they measure
resumed handshakes.

Writes {"mode", "command", "clients", "seconds", "wall_s", "connections", "resumed",
"rate", "bytes_per_connection", "failed_processes", "processes": [...]}. Every process is
bounded: SECONDS + 30 s, then killed.
"""

import json
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 30
PROBE_TIMEOUT_S = 5


def page(hostport):
    """The -www argument: the path, then the headers s_time does not send."""
    return f"/ HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nX-Bench: s_time"


def probe(hostport):
    """One connection with s_time's exact request: the status line, and whether the proxy
    closed after the answer (s_time reads to the close, so one that keeps the connection
    open would hold every s_time connection until its idle timeout)."""
    host, port = hostport.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = f"GET {page(hostport)} HTTP/1.0\r\n\r\n".encode()
    answer = b""
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S) as raw:
            with context.wrap_socket(raw) as s:
                s.sendall(request)
                while True:
                    try:
                        chunk = s.recv(65536)
                    except ssl.SSLEOFError:
                        break  # closed without close_notify: a close all the same, to s_time
                    if not chunk:
                        break
                    answer += chunk
    except (OSError, ssl.SSLError) as e:
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        if isinstance(e, TimeoutError) and answer:
            print(f"answered '{status}' but kept the connection open after it (asked for Connection: close)")
        else:
            print(f"{type(e).__name__}: {e}" + (f" after '{status}'" if answer else ""))
        return 1
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    if not re.fullmatch(r"HTTP/1\.[01] 200.*", status):
        print(f"answered '{status}' to GET / with Connection: close")
        return 1
    return 0


def parse(output):
    """s_time prints one character per connection on its progress lines (`r` for one that
    resumed, `*` or a protocol digit for a full one), then its summary lines."""
    marks = "".join(line for line in output.splitlines() if re.fullmatch(r"[*r0-9]+", line))
    m = re.search(r"^(\d+) connections in [\d.]+s;", output, re.M)
    connections = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) bytes read per connection", output)
    per = int(m.group(1)) if m else None
    # -reuse makes one untimed connection first; only the timed ones are counted.
    timed = marks[-connections:] if connections else ""
    return {"connections": connections, "resumed": timed.count("r"), "bytes_per_connection": per}


def main():
    if len(sys.argv) == 3 and sys.argv[2] == "probe":
        sys.exit(probe(sys.argv[1]))
    if len(sys.argv) != 6 or sys.argv[2] not in ("full", "resumed"):
        raise SystemExit(__doc__)
    target, mode, clients, seconds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    # s_time stops at the first whole second of the wall clock past its start + -time, so
    # the processes start together just after a second begins and are given one second
    # less: they all run for about SECONDS and stop together.
    command = ["openssl", "s_time", "-connect", target, "-www", page(target),
               "-time", str(max(1, seconds - 1)), "-new" if mode == "full" else "-reuse"]
    time.sleep(1.02 - time.time() % 1)
    started = time.monotonic()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(clients)]
    results = []
    for proc in procs:
        left = max(1.0, started + seconds + GRACE_S - time.monotonic())
        try:
            output, _ = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        results.append({**parse(output), "rc": proc.returncode, "tail": output[-300:]})
    wall = time.monotonic() - started
    connections = sum(r["connections"] for r in results)
    sizes = {r["bytes_per_connection"] for r in results if r["bytes_per_connection"] is not None}
    Path(out).write_text(json.dumps({
        "mode": mode,
        "command": " ".join(command).replace("\r\n", "\\r\\n"),
        "clients": clients,
        "seconds": seconds,
        "wall_s": round(wall, 3),
        "connections": connections,
        "resumed": sum(r["resumed"] for r in results),
        "rate": connections / wall,
        "bytes_per_connection": sorted(sizes),
        "failed_processes": sum(1 for r in results if r["rc"] != 0),
        "processes": results,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""A proxy's memory, idle and while it holds many open idle keep-alive connections, for
bench/edge_compare.sh. The connections are plain HTTP/1.1, or TLS for an https:// URL.

Usage: edge_memory.py PID URL COUNT OUT_JSON
       edge_memory.py --cpu-ticks PID    (prints the CPU time, in clock ticks, that PID and
                                          its descendants have used: utime + stime)

PID is the proxy's main process; its memory is summed over it and all its descendants
(nginx's master and workers; haproxy, caddy and the shipit edge are one process each).
Two sums are read from /proc: VmRSS (what `ps` and `top` show; pages shared between nginx's
forked workers count once per process) and Pss from smaps_rollup (shared pages divided
among the processes that share them, so the sum is the tree's real footprint).

It reads the idle memory first, then opens COUNT connections to URL, sends one `GET` on each
and reads its answer (so the proxy has set the connection up and served it, as it would a
real client's), keeps them all open, waits SETTLE_S, reads the memory again, and closes
them with a reset (SO_LINGER 0, so no TIME_WAIT is left to crowd the ephemeral ports of the
next run). Connections are opened OPEN_CONCURRENCY at a time, so the listen backlog never
overflows. With an https:// URL each connection first completes a full TLS handshake (a
new session each, certificate not verified, ALPN http/1.1), so what the proxy holds is an
idle TLS connection with its session state and buffers; the reset skips the close_notify.
The whole run is bounded by DEADLINE_S. Needs a file limit above COUNT
(`ulimit -n`); the shell script raises it.

Writes {"idle": {"rss_kib", "pss_kib", "processes"}, "open": {...}, "tls", "connections": {
"asked", "opened", "still_open", "failed", "first_error", "open_seconds"}}.
"""

import asyncio
import json
import os
import socket
import ssl
import struct
import sys
import time
from pathlib import Path

OPEN_CONCURRENCY = 200
SETTLE_S = 1.0
DEADLINE_S = 120
ANSWER_TIMEOUT_S = 10


def tree(root):
    """root and all its descendants, from the parent pids in /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the ppid follows it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_ticks(root):
    """utime + stime of root and its descendants (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def field_kib(path, name):
    for line in Path(path).read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {name} in {path}")


def memory(root):
    rss = pss = 0
    pids = tree(root)
    for pid in pids:
        rss += field_kib(f"/proc/{pid}/status", "VmRSS")
        pss += field_kib(f"/proc/{pid}/smaps_rollup", "Pss")
    return {"rss_kib": rss, "pss_kib": pss, "processes": len(pids)}


def client_tls():
    """A client context that takes the bench's self-signed certificate unverified and
    offers only http/1.1 by ALPN, so every proxy holds an HTTP/1.1 connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


async def open_one(host, port, tls, request, gate, held):
    async with gate:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls), ANSWER_TIMEOUT_S)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_TIMEOUT_S)
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await asyncio.wait_for(reader.readexactly(length), ANSWER_TIMEOUT_S)
        if not head.startswith(b"HTTP/1.1 200"):
            raise ValueError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        held.append((reader, writer))


async def run(root, url, count):
    scheme, _, rest = url.partition("://")
    hostport, _, path = rest.partition("/")
    host, port = hostport.rsplit(":", 1)
    tls = client_tls() if scheme == "https" else None
    request = f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode()
    idle = memory(root)
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    held = []
    started = time.monotonic()
    results = await asyncio.gather(
        *(open_one(host, int(port), tls, request, gate, held) for _ in range(count)),
        return_exceptions=True,
    )
    open_seconds = time.monotonic() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    await asyncio.sleep(SETTLE_S)
    # A connection the proxy closed meanwhile has its reader at EOF.
    still_open = sum(1 for reader, _ in held if not reader.at_eof())
    loaded = memory(root)
    for _, writer in held:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # abort, not close: a TLS transport's close would first send close_notify and
        # wait for the peer's.
        writer.transport.abort()
    return {
        "idle": idle,
        "open": loaded,
        "tls": tls is not None,
        "connections": {
            "asked": count,
            "opened": len(held),
            "still_open": still_open,
            "failed": len(errors),
            "first_error": repr(errors[0]) if errors else None,
            "open_seconds": round(open_seconds, 2),
        },
    }


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--cpu-ticks":
        print(cpu_ticks(int(sys.argv[2])))
        return
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    root, url, count, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    result = asyncio.run(asyncio.wait_for(run(root, url, count), DEADLINE_S))
    Path(out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

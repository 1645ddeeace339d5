"""The engine's own floor: what create, start, stop and remove of the example's image cost
when called directly, so the release tables can be read against it.

Usage: engine_floor.py IMAGE_ID COUNT NAME OUT_JSON

Talks to the Engine API over its unix socket (DOCKER_HOST when it is unix://, else
/var/run/docker.sock), the way shipit does through bollard, so no CLI process start is
counted. The container is published on 127.0.0.1 like a shipit slot and is always removed.
Writes {"create": [ms...], "start": [...], "inspect": [...], "stop": [...], "remove": [...]}.
"""

import http.client
import json
import os
import socket
import sys
import time
import urllib.parse


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


def socket_path():
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return "/var/run/docker.sock"


def call(conn, method, path, body=None, ok=(200, 201, 204, 304)):
    """One API call on a kept-alive connection; returns (ms, parsed body or None)."""
    payload = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if payload else {}
    t0 = time.perf_counter()
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    ms = (time.perf_counter() - t0) * 1000
    if response.status not in ok:
        raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
    return ms, (json.loads(data) if data else None)


def main():
    image, count, name, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    conn = UnixConnection(socket_path())
    body = {
        "Image": image,
        "Env": ["PORT=8080"],
        "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}},
    }
    times = {k: [] for k in ("create", "start", "inspect", "stop", "remove")}
    quoted = urllib.parse.quote(name)
    try:
        for _ in range(count):
            ms, created = call(conn, "POST", f"/containers/create?name={quoted}", body)
            times["create"].append(ms)
            cid = created["Id"]
            times["start"].append(call(conn, "POST", f"/containers/{cid}/start")[0])
            times["inspect"].append(call(conn, "GET", f"/containers/{cid}/json")[0])
            # t=10 like the example's stop_timeout; hello exits on SIGTERM at once.
            times["stop"].append(call(conn, "POST", f"/containers/{cid}/stop?t=10")[0])
            times["remove"].append(call(conn, "DELETE", f"/containers/{cid}?force=true")[0])
    finally:
        # Never leave the probe container behind, whatever failed above.
        try:
            call(UnixConnection(socket_path()), "DELETE", f"/containers/{quoted}?force=true",
                 ok=(200, 204, 404))
        except OSError:
            pass
    with open(out, "w") as f:
        json.dump(times, f)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The soak benchmark's operations, and its census of what is left on the engine.

    soak_ops.py run ...      a seeded random sequence of releases, rollbacks and failing
                             candidates, each checked; one JSON line per operation
    soak_ops.py census ...   the project's containers and images on the engine, and its edge

bench/soak.sh runs both; bench/README.md describes the method. Every command has a deadline
(OP_TIMEOUT for shipit, a few seconds for docker and the /version probe).

The script keeps its own model of what must be live, so that it never takes shipit's word for
it: a release that succeeds makes its release live, and remembers what was live before it; a
rollback brings back what was live before the live release (exit 7 when there is nothing);
a failing candidate changes nothing. After every operation the exit code, `shipit status`,
the answer of `GET /version` through the edge and the containers on the engine are checked
against the model.
"""

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time

# Exit codes of the shipit CLI (cli/src/args.rs, "Exit codes").
EXIT_OK = 0
EXIT_VERIFY_FAILED = 5
EXIT_NOTHING_TO_ROLL_BACK = 7

# What makes each kind of failing candidate fail (the config's env reads these).
CANDIDATE_ENV = {
    "release": {},
    # /healthz answers 503: verification waits for its deadline, then fails.
    "unhealthy": {"HELLO_HEALTH": "fail"},
    # The process exits on boot: verification must fail fast.
    "crash": {"SOAK_HELLO_EXIT": "3"},
}
EXPECTED_EXIT = {"release": EXIT_OK, "unhealthy": EXIT_VERIFY_FAILED, "crash": EXIT_VERIFY_FAILED}
DOCKER_TIMEOUT = 30


def say(text):
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def docker(*args):
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def containers(service, sandbox_id=None):
    """The service's containers in any state: id, state, release label, slot label, image.
    With `sandbox_id` (an ecs target on `shipit sandbox`): the sandbox's task containers,
    whose release and slot are in their env (SHIPIT_RELEASE, SHIPIT_SLOT)."""
    if sandbox_id:
        rows = []
        for line in docker("ps", "-a", "--no-trunc", "--filter", f"label=shipit.sandbox={sandbox_id}",
                           "--format", "{{.ID}}\t{{.State}}").splitlines():
            cid, state = (line.split("\t") + [""])[:2]
            try:
                env = docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", cid)
            except RuntimeError:
                continue  # removed since the listing: a task the agent just stopped
            values = dict(e.split("=", 1) for e in env.splitlines() if "=" in e)
            rows.append({"id": cid, "state": state, "release": values.get("SHIPIT_RELEASE", ""),
                         "slot": values.get("SHIPIT_SLOT", "")})
        return rows
    fmt = '{{.ID}}\t{{.State}}\t{{.Label "shipit.release"}}\t{{.Label "shipit.slot"}}'
    rows = []
    for line in docker("ps", "-a", "--no-trunc", "--filter", f"label=shipit.service={service}",
                       "--format", fmt).splitlines():
        cid, state, release, slot = (line.split("\t") + ["", "", "", ""])[:4]
        rows.append({"id": cid, "state": state, "release": release, "slot": slot})
    return rows


def images(label):
    """The top-level images built from this soak's context (its Dockerfile sets `label`)."""
    ids = docker("images", "-q", "--no-trunc", "--filter", f"label={label}").split()
    return sorted(set(ids))


def version_through_edge(edge):
    """The release that answers `GET /version` through the edge now, or an error text."""
    host, port = edge.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/version")
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
    except OSError as e:
        return None, f"GET /version: {e}"
    if response.status != 200:
        return None, f"GET /version: {response.status} {body.strip()[:200]}"
    for word in body.split():
        if word.startswith("release="):
            return word[len("release="):], None
    return None, f"GET /version: no release in {body.strip()[:200]!r}"


def run_shipit(shipit, config, args, env, timeout, log_path):
    """Runs shipit with a deadline: SIGINT at the deadline (shipit removes its candidate),
    SIGKILL 30 s later. Returns (exit code or None on timeout, stdout, stderr tail)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([shipit, "-c", config, *args], stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL, env=env, text=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                stdout, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, _ = proc.communicate()
            code = None
    with open(log_path) as log:
        tail = log.read().strip().splitlines()[-15:]
    return code, stdout, tail


def status_live(shipit, config, env):
    out = subprocess.run([shipit, "-c", config, "status", "--json"], capture_output=True, text=True,
                         env=env, timeout=60, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        return None, f"shipit status exited {out.returncode}: {out.stderr.strip()[-300:]}"
    live = json.loads(out.stdout).get("live")
    return (live or {}).get("release"), None


def pick(rng, mix):
    total = sum(mix.values())
    roll = rng.uniform(0, total)
    for kind, weight in mix.items():
        roll -= weight
        if roll < 0:
            return kind
    return next(iter(mix))


def parse_mix(text):
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in ("release", "rollback", "unhealthy", "crash"):
            raise SystemExit(f"MIX: unknown operation {kind!r} (release, rollback, unhealthy, crash)")
        mix[kind] = float(weight)
    if sum(mix.values()) <= 0:
        raise SystemExit("MIX: the weights add up to nothing")
    return mix


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_run(a):
    mix = parse_mix(a.mix)
    rng = random.Random(a.seed)
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("HELLO_HEALTH", "SOAK_HELLO_EXIT", "SOAK_HEALTH_TIMEOUT")}
    first = json.load(open(a.first))
    live = first["serves"]
    # What was live before each release went live: where a rollback from it goes.
    previous = {live: first.get("previous")}
    went_live = [live]
    stamp = os.path.join(a.context, "soak-stamp")
    os.makedirs(a.log_dir, exist_ok=True)
    out = open(a.out, "w")
    started = time.monotonic()
    for i in range(1, a.ops + 1):
        if a.load_pid and not alive(a.load_pid):
            say(f"the load generator (pid {a.load_pid}) is gone: stopping after {i - 1} operations")
            break
        kind = pick(rng, mix)
        env = dict(base_env)
        if kind == "rollback":
            args = ["rollback", "--json"]
            target = previous.get(live)
            expected = EXIT_OK if target else EXIT_NOTHING_TO_ROLL_BACK
        else:
            args = ["release", "--json"]
            env.update(CANDIDATE_ENV[kind])
            if kind == "unhealthy":
                env["SOAK_HEALTH_TIMEOUT"] = a.fail_health_timeout
            expected = EXPECTED_EXIT[kind]
            # New code for every release and candidate: a new context, so a new image.
            with open(stamp, "w") as f:
                f.write(f"seed {a.seed} operation {i} {kind}\n")
        record = {"op": i, "kind": kind, "expected_exit": expected, "live_before": live,
                  "started_unix_ms": now_ms()}
        t0 = time.monotonic()
        code, stdout, tail = run_shipit(a.shipit, a.config, args, env, a.op_timeout,
                                        os.path.join(a.log_dir, f"op-{i:04d}-{kind}.log"))
        record["wall_s"] = round(time.monotonic() - t0, 3)
        record["finished_unix_ms"] = now_ms()
        record["exit"] = code
        try:
            result = json.loads(stdout) if stdout.strip() else {}
        except json.JSONDecodeError:
            result = {}
        problems = []
        if code is None:
            problems.append(f"shipit {args[0]} did not end within {a.op_timeout} s (interrupted)")
        elif code != expected:
            problems.append(f"exit {code}, expected {expected}")
        # The model moves only on what was expected to happen.
        if code == EXIT_OK and expected == EXIT_OK:
            serves = result.get("serves")
            record["release"] = result.get("id")
            if kind == "rollback":
                if serves != target:
                    problems.append(f"rolled back to {serves}, expected {target}")
            else:
                previous[serves] = live
                if result.get("previous") != live:
                    problems.append(f"its record's previous is {result.get('previous')}, expected {live}")
            if serves:
                live = serves
                if serves not in went_live:
                    went_live.append(serves)
        elif code is not None and code != EXIT_OK:
            record["cause"] = (result.get("error") or {}).get("cause", "")[:500]
        record["live_expected"] = live

        # Checks against the model: status, the edge, the engine.
        status, error = status_live(a.shipit, a.config, base_env)
        record["live_status"] = status
        if error:
            problems.append(error)
        elif status != live:
            problems.append(f"shipit status says {status} is live, expected {live}")
        answered, error = version_through_edge(a.edge)
        record["live_edge"] = answered
        if error:
            problems.append(error)
        elif answered != live:
            problems.append(f"GET /version through the edge answered {answered}, expected {live}")
        boxes = containers(a.service, a.sandbox_id)
        if a.sandbox_id:
            # On the ecs target the old slot's task keeps its in-flight requests for the target
            # group's deregistration delay (5 s in the sandbox) after the release returned, as
            # on AWS; then it stops. The count is taken once it had the time to.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and sum(c["state"] == "running" for c in boxes) > a.per_slot:
                time.sleep(0.2)
                boxes = containers(a.service, a.sandbox_id)
        running = [c for c in boxes if c["state"] == "running"]
        record["containers"] = len(boxes)
        record["running"] = len(running)
        record["per_slot"] = a.per_slot
        if len(boxes) > 2 * a.per_slot or len(running) != a.per_slot:
            problems.append(f"{len(boxes)} containers, {len(running)} running (expected at most "
                            f"{2 * a.per_slot}, {a.per_slot} running): "
                            + ", ".join(f"{c['slot']} {c['state']} {c['release']}" for c in boxes))
        elif any(c["release"] != live for c in running):
            wrong = sorted({c["release"] for c in running if c["release"] != live})
            problems.append(f"a running container is release {', '.join(wrong)}, expected {live}")
        record["images"] = len(images(a.image_label))
        record["problems"] = problems
        if problems and tail:
            record["log_tail"] = tail
        out.write(json.dumps(record) + "\n")
        out.flush()
        note = "" if not problems else "  PROBLEM: " + "; ".join(problems)
        say(f"op {i}/{a.ops} {kind}: exit {code} (expected {expected}) in {record['wall_s']:.1f} s; "
            f"live {live}; {record['containers']} containers, {record['images']} images{note}")
        if problems and tail and code != expected:
            for line in tail[-5:]:
                say(f"    {line}")
    out.close()
    with open(a.went_live, "w") as f:
        json.dump(went_live, f)
    say(f"{a.ops} operations done in {time.monotonic() - started:.0f} s")


def command_census(a):
    """What this project left on the engine, and whether its edge still runs."""
    boxes = containers(a.service, a.sandbox_id)
    for box in boxes:
        box["image"] = docker("inspect", "--format", "{{.Image}}", box["id"]).strip()
    ids = images(a.image_label)
    created = {}
    for image_id in ids:
        created[image_id] = docker("image", "inspect", "--format", "{{.Created}}", image_id).strip()
    in_use = sorted({b["image"] for b in boxes if b["image"] in created})
    newest = sorted(ids, key=lambda i: created[i], reverse=True)[:a.keep_images]
    allowed = set(in_use) | set(newest)
    edge_pid = None
    try:
        with open(os.path.join(a.state_dir, "edge", "local", "edge.pid")) as f:
            pid = int(f.read().strip())
        if alive(pid):
            edge_pid = pid
    except (OSError, ValueError):
        pass
    json.dump({
        "containers": boxes,
        "running": sum(1 for b in boxes if b["state"] == "running"),
        "images": ids,
        "images_in_use": in_use,
        "keep_images": a.keep_images,
        "per_slot": a.per_slot,
        "images_leaked": [i for i in ids if i not in allowed],
        "edge_pid": edge_pid,
    }, sys.stdout, indent=1)
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--shipit", required=True)
    run.add_argument("--config", required=True)
    run.add_argument("--context", required=True, help="the build context: gets a new stamp per release")
    run.add_argument("--service", required=True)
    run.add_argument("--edge", required=True, help="host:port of the edge")
    run.add_argument("--image-label", required=True, help="key=value that the soak's images carry")
    run.add_argument("--first", required=True, help="the first release's record (JSON)")
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--ops", type=int, required=True)
    run.add_argument("--mix", required=True)
    run.add_argument("--fail-health-timeout", required=True)
    run.add_argument("--op-timeout", type=int, required=True)
    run.add_argument("--load-pid", type=int)
    run.add_argument("--log-dir", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--went-live", required=True, help="where to write the releases that went live")
    run.add_argument("--sandbox-id", help="count the task containers of this `shipit sandbox` instead")
    run.add_argument("--per-slot", type=int, default=1,
                     help="the containers a slot runs (an ecs target's desired_count)")
    census = sub.add_parser("census")
    census.add_argument("--service", required=True)
    census.add_argument("--image-label", required=True)
    census.add_argument("--state-dir", required=True)
    census.add_argument("--keep-images", type=int, default=0)
    census.add_argument("--sandbox-id", help="count the task containers of this `shipit sandbox` instead")
    census.add_argument("--per-slot", type=int, default=1,
                        help="the containers a slot runs (an ecs target's desired_count)")
    a = parser.parse_args()
    {"run": command_run, "census": command_census}[a.command](a)


if __name__ == "__main__":
    main()

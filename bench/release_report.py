"""Turns the raw output of bench/release.sh into the tables it prints.

Usage: release_report.py RAW_DIR SATURATION_CMD SINGLE_CMD

RAW_DIR holds `index` (lines of "<kind> <wall ms> <record.json>"), the wrk outputs
`wrk-{sat,one}-{direct,edge}.txt` and the edge's RSS in KiB (`edge-rss-idle`,
`edge-rss-after`). Kept apart from the shell script so the arithmetic is readable.
"""

import json
import math
import re
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

# ARCHITECTURE.md, "Performance goals".
GOAL_RELEASE_MS = 1000
GOAL_ROLLBACK_MS = 1000
GOAL_EDGE_P99_ADDED_MS = 0.5
GOAL_EDGE_IDLE_RSS_MIB = 15

RELEASE_PHASES = ["version", "build", "push", "launch", "verify", "shift", "retire", "record"]
ROLLBACK_PHASES = ["launch", "verify", "shift", "retire", "record"]


def timestamp(text):
    """RFC 3339 with up to nanoseconds (jiff prints 9 digits; Python reads 6)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text}")
    base, frac, zone = m.groups()
    zone = "+00:00" if zone == "Z" else zone
    t = datetime.fromisoformat(base + zone).astimezone(timezone.utc)
    return t.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)


def ms_between(start, end):
    return (timestamp(end) - timestamp(start)) * 1000


def p90(values):
    """Nearest rank: with 10 samples this is the 9th smallest, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def row(label, values):
    return f"| {label} | {statistics.median(values):.0f} | {p90(values):.0f} | {max(values):.0f} |"


def timing_table(kind, runs, phases):
    """runs: [(wall_ms, record)]. One row per phase, then the totals."""
    n = len(runs)
    lines = [
        f"| {kind} (n={n}) | median ms | p90 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for phase in phases:
        values = []
        for _, record in runs:
            spans = [p for p in record["phases"] if p["phase"] == phase and p["finished_at"]]
            values.append(sum(ms_between(p["started_at"], p["finished_at"]) for p in spans))
        lines.append(row(phase, values))
    sums = [
        sum(ms_between(p["started_at"], p["finished_at"]) for p in r["phases"] if p["finished_at"])
        for _, r in runs
    ]
    inside = [ms_between(r["started_at"], r["finished_at"]) for _, r in runs]
    walls = [wall for wall, _ in runs]
    outside = [w - i for w, i in zip(walls, inside)]
    lines.append(row("sum of phases", sums))
    lines.append(row("record: started_at → finished_at", inside))
    lines.append(row("process start/exit, config, git, engine connect (wall − record)", outside))
    lines.append(row(f"**wall time, exec → exit**", walls))
    return "\n".join(lines), walls


def wrk_result(path):
    text = Path(path).read_text()

    def duration_ms(value, unit):
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]

    def percentile(p):
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return duration_ms(*m.groups())

    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
        "p50": percentile(50),
        "p99": percentile(99),
        "errors": errors,
    }


def load_table(raw, profile, command):
    """Rounds alternate direct and edge; each edge run is compared with the direct run of
    its own round, and the table shows medians over the rounds."""
    rounds = sorted(
        int(p.stem.rsplit("-", 1)[1]) for p in raw.glob(f"wrk-{profile}-direct-*.txt")
    )
    runs = {
        path: [wrk_result(raw / f"wrk-{profile}-{path}-{n}.txt") for n in rounds]
        for path in ("direct", "edge")
    }
    med = statistics.median
    lines = [
        f"`{command}`, {len(rounds)} rounds (medians over the rounds; requests/s range in brackets)",
        "",
        "| path | requests/s | p50 ms | p99 ms | requests | failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, path in (("direct to the container", "direct"), ("through the edge", "edge")):
        rs = runs[path]
        rps = [r["rps"] for r in rs]
        lines.append(
            f"| {label} | {med(rps):.0f} [{min(rps):.0f}–{max(rps):.0f}] "
            f"| {med(r['p50'] for r in rs):.3f} | {med(r['p99'] for r in rs):.3f} "
            f"| {sum(r['requests'] for r in rs)} | {sum(r['errors'] for r in rs)} |"
        )
    pairs = list(zip(runs["direct"], runs["edge"]))
    ratio = med(e["rps"] / d["rps"] for d, e in pairs)
    added50 = med(e["p50"] - d["p50"] for d, e in pairs)
    added99s = [e["p99"] - d["p99"] for d, e in pairs]
    added99 = med(added99s)
    lines.append(f"| **edge − direct**, paired by round | {ratio:.2f}× | {added50:+.3f} | {added99:+.3f} | | |")
    lines.append("")
    lines.append("Added p99 by round: " + ", ".join(f"{a:+.3f} ms" for a in added99s) + ".")
    failed = sum(r["errors"] for rs in runs.values() for r in rs)
    return "\n".join(lines), added99, failed


def verdict(met):
    return "met" if met else "NOT met"


def time_verdict(values, goal):
    """A wall-time goal holds when every run meets it; say so when only the median does."""
    if max(values) <= goal:
        return "met"
    if statistics.median(values) <= goal:
        return f"met at the median only ({sum(v > goal for v in values)} of {len(values)} runs over)"
    return "NOT met"


def main():
    raw = Path(sys.argv[1])
    saturation_cmd, single_cmd = sys.argv[2], sys.argv[3]
    runs = {}
    for line in (raw / "index").read_text().splitlines():
        kind, wall, path = line.split(" ", 2)
        runs.setdefault(kind, []).append((float(wall), json.loads(Path(path).read_text())))

    releases = runs["release"]
    rollbacks = runs.get("rollback", [])
    reused = sum(1 for _, r in releases if r.get("image_reused"))
    outcomes = {r["outcome"]["status"] for _, r in releases + rollbacks}

    warm_wall, warm = runs["warmup"][0]
    print(f"Warm-up release (not in the tables: starts the edge, runs pre_build, image "
          f"{'reused' if warm.get('image_reused') else 'built'}): {warm_wall:.0f} ms.")
    print()
    release_table, release_walls = timing_table("release", releases, RELEASE_PHASES)
    print(f"## Release, image reused ({reused} of {len(releases)} reused the image)")
    print()
    print(release_table)
    print()
    if rollbacks:
        rollback_table, rollback_walls = timing_table("rollback", rollbacks, ROLLBACK_PHASES)
        print("## Rollback, previous slot's container stopped but kept")
        print()
        print(rollback_table)
        print()

    floor = json.loads((raw / "engine-floor.json").read_text())
    n = len(floor["create"])
    print(f"## Engine floor: the same image through the Engine API, no shipit (n={n})")
    print()
    print("| engine call | median ms | p90 ms | max ms |")
    print("|---|---:|---:|---:|")
    for call in ("create", "start", "inspect", "stop", "remove"):
        print(row(call, floor[call]))
    launch_floor = [c + s + i for c, s, i in zip(floor["create"], floor["start"], floor["inspect"])]
    print(row("create + start + inspect (what launch does)", launch_floor))
    print()

    print("## Load: direct to the live container vs. through the edge")
    print()
    sat_table, sat_added99, sat_failed = load_table(raw, "sat", saturation_cmd)
    print(sat_table)
    print()
    one_table, one_added99, one_failed = load_table(raw, "one", single_cmd)
    print(one_table)
    print()
    idle = int((raw / "edge-rss-idle").read_text()) / 1024
    after = int((raw / "edge-rss-after").read_text()) / 1024
    print(f"Edge RSS: {idle:.1f} MiB idle (after the releases), {after:.1f} MiB after the load runs.")
    proxies = (raw / "docker-proxies").read_text().strip() or "0"
    print(f"docker-proxy processes running during the load runs: {proxies} "
          "(when > 0, both paths go through the engine's userland proxy).")
    print(f"Load average (1/5/15 min) before the releases: {(raw / 'loadavg-releases').read_text().strip()}; "
          f"before the load runs: {(raw / 'loadavg-load').read_text().strip()}.")
    print()

    print("## Against the performance goals (ARCHITECTURE.md)")
    print()
    med = statistics.median(release_walls)
    print(f"- release, image reused, ≤ {GOAL_RELEASE_MS} ms end to end: median {med:.0f} ms, "
          f"p90 {p90(release_walls):.0f} ms, max {max(release_walls):.0f} ms: "
          f"{time_verdict(release_walls, GOAL_RELEASE_MS)}")
    if rollbacks:
        print(f"- rollback ≤ {GOAL_ROLLBACK_MS} ms while the old slot is warm: median "
              f"{statistics.median(rollback_walls):.0f} ms, p90 {p90(rollback_walls):.0f} ms, "
              f"max {max(rollback_walls):.0f} ms: {time_verdict(rollback_walls, GOAL_ROLLBACK_MS)}")
    print(f"- edge p99 added latency ≤ {GOAL_EDGE_P99_ADDED_MS} ms: {one_added99:+.3f} ms on one "
          f"connection, {sat_added99:+.3f} ms at saturation: "
          f"{verdict(one_added99 <= GOAL_EDGE_P99_ADDED_MS and sat_added99 <= GOAL_EDGE_P99_ADDED_MS)}")
    print(f"- edge memory ≤ {GOAL_EDGE_IDLE_RSS_MIB} MiB idle: {idle:.1f} MiB: "
          f"{verdict(idle <= GOAL_EDGE_IDLE_RSS_MIB)}")
    print(f"- failed requests in the load runs: {sat_failed + one_failed}")
    print(f"- outcomes of the timed runs: {', '.join(sorted(outcomes))}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turns a bench/soak.sh run's raw output into its tables and its JSON.

    soak_report.py RAW_DIR OUT_JSON REPRODUCE MIN_REQUESTS KEEP_IMAGES

Reads RAW_DIR/{versions, first.json, ops.jsonl, went-live.json, load.json, census-end.json,
down.exit, census-down.json}. Prints Markdown tables; exits 1 when a goal is missed, so a
run that leaks or fails a request says so in its exit code too.
"""

import json
import math
import os
import sys


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return default


def nearest_rank(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def seconds(v):
    return "-" if v is None else f"{v:.1f}"


def count(n):
    return f"{n:,}"


OPERATION_NAMES = {
    "release": "release (new image)",
    "rollback": "rollback",
    "rollback-none": "rollback, nothing to roll back (exit 7)",
    "unhealthy": "unhealthy candidate (/healthz 503)",
    "crash": "crashing candidate (exits on boot)",
}


def main():
    raw, out_path, reproduce, min_requests, keep_images = sys.argv[1:6]
    min_requests, keep_images = int(min_requests), int(keep_images)
    versions = dict(line.split(" ", 1) for line in open(os.path.join(raw, "versions")).read().splitlines() if " " in line)
    ops = [json.loads(line) for line in open(os.path.join(raw, "ops.jsonl")) if line.strip()] \
        if os.path.exists(os.path.join(raw, "ops.jsonl")) else []
    went_live = set(load(os.path.join(raw, "went-live.json"), []))
    load_report = load(os.path.join(raw, "load.json"), {})
    end = load(os.path.join(raw, "census-end.json"), {})
    after_down = load(os.path.join(raw, "census-down.json"), {})
    down_exit = open(os.path.join(raw, "down.exit")).read().strip() if os.path.exists(os.path.join(raw, "down.exit")) else "?"

    print(f"Soak: {len(ops)} operations under load; {versions.get('shipit', '?')}; "
          f"{versions.get('machine', '?')}; docker {versions.get('docker', '?')}; "
          f"{versions.get('date', '?')}; load average at start {versions.get('loadavg', '?')}")
    print()

    # Operations by kind.
    groups = {}
    for op in ops:
        key = op["kind"]
        if key == "rollback" and op["expected_exit"] == 7:
            key = "rollback-none"
        groups.setdefault(key, []).append(op)
    print("| operation | n | exit as expected | other problems | median s | p90 s | max s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key in OPERATION_NAMES:
        group = groups.get(key, [])
        if not group:
            continue
        walls = [op["wall_s"] for op in group]
        as_expected = sum(1 for op in group if op["exit"] == op["expected_exit"])
        other = sum(1 for op in group if op["exit"] == op["expected_exit"] and op["problems"])
        print(f"| {OPERATION_NAMES[key]} | {len(group)} | {as_expected} | {other} | "
              f"{seconds(nearest_rank(walls, 0.5))} | {seconds(nearest_rank(walls, 0.9))} | {seconds(max(walls))} |")
    ops_s = sum(op["wall_s"] for op in ops)
    print(f"| **all** | {len(ops)} | {sum(1 for op in ops if op['exit'] == op['expected_exit'])} | "
          f"{sum(1 for op in ops if op['exit'] == op['expected_exit'] and op['problems'])} | "
          f"{seconds(nearest_rank([op['wall_s'] for op in ops], 0.5))} | "
          f"{seconds(nearest_rank([op['wall_s'] for op in ops], 0.9))} | "
          f"{seconds(max([op['wall_s'] for op in ops], default=None))} |")
    print()

    # The load.
    total = load_report.get("total", {})
    kinds = load_report.get("kinds", [])
    print(f"Load for {load_report.get('load_s', 0):.0f} s (stopped by: {load_report.get('stop_reason')}), "
          f"seed {load_report.get('seed')}, through the edge at {load_report.get('addr')}:")
    print()
    print("| kind | concurrency | requests | failed | reconnects | req/s | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in kinds + ([total] if total else []):
        def ms(v):
            return "-" if v is None else f"{v:.1f}"
        name = "**total**" if row["kind"] == "total" else row["kind"]
        print(f"| {name} | {row['concurrency']} | {count(row['requests'])} | {count(row['failed'])} | "
              f"{count(row['reconnects'])} | {row['rate_per_s']:.0f} | {ms(row.get('p50_ms'))} | "
              f"{ms(row.get('p99_ms'))} | {ms(row.get('max_ms'))} |")
    print()

    # Which operation each early failure fell in (by wall clock).
    def op_at(unix_ms):
        for op in ops:
            if op["started_unix_ms"] <= unix_ms <= op["finished_unix_ms"] + 1000:
                return f"op {op['op']} ({op['kind']})"
        return "between operations"

    failure_lines = []
    for row in kinds:
        for failure in row.get("first_failures", [])[:5]:
            failure_lines.append(f"- {row['kind']}, {op_at(failure['at_unix_ms'])}: "
                                 f"{failure['cause']}: {failure['detail'][:300]}")
    if failure_lines:
        print("First failed requests:")
        print()
        print("\n".join(failure_lines))
        print()

    # Goals.
    unexpected = [op for op in ops if op["exit"] != op["expected_exit"]]
    problem_ops = [op for op in ops if op["problems"]]
    edge_wrong = [op for op in ops if op.get("live_edge") != op.get("live_expected")]
    per_slot = max([op.get("per_slot", 1) for op in ops], default=1)
    crowded = [op for op in ops if op["containers"] > 2 * per_slot or op["running"] != per_slot]
    never_live = {r: n for r, n in load_report.get("releases_seen", {}).items() if r not in went_live}
    end_containers = end.get("containers", [])
    leaked_containers = (max(0, len(end_containers) - 2 * per_slot)
                         + (0 if end.get("running") == per_slot else 1))
    leaked_images = end.get("images_leaked", [])
    down_containers = after_down.get("containers", [])
    down_edge = after_down.get("edge_pid")
    failed = total.get("failed", 0)
    requests = total.get("requests", 0)
    abandoned = load_report.get("abandoned_workers", 0)

    goals = [
        ("failed requests", f"{count(failed)} of {count(requests)}", "0", failed == 0 and requests > 0),
        ("requests", count(requests), f"≥ {count(min_requests)}" if min_requests else "none (MIN_REQUESTS=0)",
         requests >= min_requests),
        ("load workers stuck at the stop", str(abandoned), "0", abandoned == 0),
        ("operations with an unexpected exit code", str(len(unexpected)), "0", not unexpected),
        ("operations with any other problem (status, /version, containers)",
         str(sum(1 for op in problem_ops if op["exit"] == op["expected_exit"])), "0",
         not [op for op in problem_ops if op["exit"] == op["expected_exit"]]),
        ("`GET /version` after an operation ≠ the release that must be live", str(len(edge_wrong)), "0",
         not edge_wrong),
        ("answers from a release that never went live", count(sum(never_live.values())), "0", not never_live),
        (f"after an operation: most containers / operations without exactly {per_slot} running",
         f"{max([op['containers'] for op in ops], default=0)} / "
         f"{sum(1 for op in ops if op['running'] != per_slot)}",
         f"≤ {2 * per_slot} / 0", not crowded),
        ("containers at the end (live + warm slot), running",
         f"{len(end_containers)}, {end.get('running', 0)} running",
         f"≤ {2 * per_slot}, {per_slot} running", leaked_containers == 0),
        ("images at the end beyond the live and warm slot's" +
         (f" and the {keep_images} newest (KEEP_IMAGES)" if keep_images else ""),
         f"{len(leaked_images)} leaked of {len(end.get('images', []))} "
         f"({len(end.get('images_in_use', []))} in use)", "0", not leaked_images),
        ("`shipit down`: exit code / containers left / edge still running",
         f"{down_exit} / {len(down_containers)} / {'yes, pid ' + str(down_edge) if down_edge else 'no'}",
         "0 / 0 / no", down_exit == "0" and not down_containers and not down_edge),
    ]
    print("| check | result | goal | met |")
    print("|---|---|---|---|")
    for name, result, goal, met in goals:
        print(f"| {name} | {result} | {goal} | {'yes' if met else '**no**'} |")
    print()
    if unexpected or problem_ops:
        print("Operations with problems (first 10):")
        print()
        for op in problem_ops[:10]:
            cause = f" — {op['cause'][:200]}" if op.get("cause") else ""
            print(f"- op {op['op']} {op['kind']}: {'; '.join(op['problems'])}{cause}")
        print()
    if never_live:
        print("Releases that answered without ever going live: " +
              ", ".join(f"{r} ({n})" for r, n in sorted(never_live.items())))
        print()
    print(f"The shipit commands took {ops_s:.0f} s ({ops_s / max(1, len(ops)):.1f} s per operation); with the "
          f"checks after each, the load ran {load_report.get('load_s', 0) / max(1, len(ops)):.1f} s per operation.")

    result = {
        "reproduce": reproduce,
        "versions": versions,
        "operations": {key: {"n": len(group),
                             "as_expected": sum(1 for op in group if op["exit"] == op["expected_exit"]),
                             "median_s": nearest_rank([op["wall_s"] for op in group], 0.5),
                             "p90_s": nearest_rank([op["wall_s"] for op in group], 0.9),
                             "max_s": max(op["wall_s"] for op in group)}
                       for key, group in groups.items()},
        "operation_problems": [{"op": op["op"], "kind": op["kind"], "exit": op["exit"],
                                "expected_exit": op["expected_exit"], "problems": op["problems"],
                                "cause": op.get("cause")} for op in problem_ops],
        "load": load_report,
        "releases_never_live_that_answered": never_live,
        "end": end,
        "after_down": {"exit": down_exit, **after_down},
        "goals": [{"check": name, "result": result, "goal": goal, "met": met} for name, result, goal, met in goals],
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return 0 if all(met for *_, met in goals) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Reads the records of bench/ecs_overhead.sh's releases and prints where their time went:
the wall time of each `shipit release` process, the pauses it spent waiting on AWS
conditions (the records' `waited_ms`), the Docker engine's build and push, and what is left:
shipit's own time, against its 1 s goal.

    python bench/ecs_report.py <walls.txt> <record.json>... -- <reproduce command>
"""
import json
import statistics
import sys
from datetime import datetime


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def phase_seconds(record: dict, name: str) -> float:
    return sum(
        ts(p["finished_at"]) - ts(p["started_at"])
        for p in record["phases"]
        if p["phase"] == name and p.get("finished_at")
    )


def main() -> None:
    args = sys.argv[1:]
    cut = args.index("--")
    walls_path, records, reproduce = args[0], args[1:cut], " ".join(args[cut + 1 :])
    walls = [float(line.split()[1]) for line in open(walls_path) if line.strip()]
    rows = []
    for wall, path in zip(walls, records):
        record = json.load(open(path))
        waited = sum(p.get("waited_ms", 0) for p in record["phases"]) / 1000
        engine = phase_seconds(record, "build") + phase_seconds(record, "push")
        rows.append(
            {
                "wall": wall,
                "waited": waited,
                "engine": engine,
                "own": wall - waited - engine,
                "phases": {
                    p: phase_seconds(record, p)
                    for p in ["version", "build", "push", "launch", "verify", "shift", "retire", "record"]
                },
                "reused": record.get("image_reused", False),
            }
        )

    def stats(values):
        values = sorted(values)
        p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
        return statistics.median(values), p90, values[-1]

    print(f"releases measured: {len(rows)} (images reused: {sum(r['reused'] for r in rows)})")
    print()
    print("| time per release | median s | p90 s | max s |")
    print("|---|---:|---:|---:|")
    for key, label in [
        ("wall", "wall (the `shipit release` process)"),
        ("waited", "waiting on AWS conditions (pauses between polls)"),
        ("engine", "Docker engine: build + push"),
        ("own", "**shipit's own time** (wall − waits − engine)"),
    ]:
        m, p, x = stats([r[key] for r in rows])
        print(f"| {label} | {m:.3f} | {p:.3f} | {x:.3f} |")
    print()
    print("| phase | median s |")
    print("|---|---:|")
    for name in rows[0]["phases"]:
        print(f"| {name} | {statistics.median(r['phases'][name] for r in rows):.3f} |")
    own = statistics.median(r["own"] for r in rows)
    print()
    print(f"goal: shipit's own time ≤ 1 s (median): {'met' if own <= 1.0 else 'NOT met'} ({own:.3f} s)")
    print(f"reproduce: {reproduce}")


if __name__ == "__main__":
    main()

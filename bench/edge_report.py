"""Turns the raw output of bench/edge_compare.sh into its tables and its JSON file.

Usage: edge_report.py RAW_DIR OUT_JSON REPRODUCE TARGETS SATURATION_CMD SINGLE_CMD
                      SWITCH_INTERVAL_MS IDLE_CONNECTIONS

RAW_DIR holds the wrk outputs `wrk-{sat,one}-<target>-<round>.txt` and
`wrk-switch-<proxy>.txt`, the switch measurements `switch-{quiet,loaded}-<proxy>.json`
(bench/edge_switch.py), the memory readings `memory-{start,conns}-<proxy>.json`
(bench/edge_memory.py), `loadavg-*` files and `versions`. TARGETS is "direct" followed by
the proxies. Prints Markdown; writes every number it read, and the summaries, to OUT_JSON.
Kept apart from the shell script so the arithmetic stays readable.
"""

import json
import math
import re
import statistics
import sys
from pathlib import Path

# ARCHITECTURE.md, "Performance goals".
GOAL_VS_NGINX = 1.1
GOAL_P99_ADDED_MS = 0.5
GOAL_SWITCH_MS = 1.0
GOAL_IDLE_RSS_MIB = 15

med = statistics.median


def wrk_result(path):
    """wrk's summary: requests/s, requests, p50/p99 in ms, and the failures split by kind
    (wrk counts a non-2xx/3xx answer and each socket error once)."""
    text = Path(path).read_text()

    def duration_ms(value, unit):
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]

    def percentile(p):
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return duration_ms(*m.groups())

    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        socket_errors = dict(zip(socket_errors, map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_2xx = int(m.group(1)) if m else 0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
        "p50_ms": percentile(50),
        "p99_ms": percentile(99),
        "socket_errors": socket_errors,
        "non_2xx": non_2xx,
        "failed": sum(socket_errors.values()) + non_2xx,
    }


def nearest_rank(values, q):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def load_profile(raw, profile, targets):
    """Per target: its runs by round, and medians; each proxy is compared with the direct
    run of its own round."""
    rounds = sorted(int(p.stem.rsplit("-", 1)[1]) for p in raw.glob(f"wrk-{profile}-direct-*.txt"))
    runs = {t: [wrk_result(raw / f"wrk-{profile}-{t}-{n}.txt") for n in rounds] for t in targets}
    for t in targets:
        for n, run in zip(rounds, runs[t]):
            # CPU time of the proxy (of hello, for direct) over the run, per request served.
            before, after, hz = map(int, (raw / f"cpu-{profile}-{t}-{n}").read_text().split())
            run["cpu_us_per_request"] = (after - before) / hz * 1e6 / max(run["requests"], 1)
    loadavg = [float((raw / f"loadavg-{profile}-{t}-{n}").read_text()) for t in targets for n in rounds]
    summary = {}
    for t in targets:
        rs = runs[t]
        s = {
            "rps": med(r["rps"] for r in rs),
            "rps_min": min(r["rps"] for r in rs),
            "rps_max": max(r["rps"] for r in rs),
            "p50_ms": med(r["p50_ms"] for r in rs),
            "p99_ms": med(r["p99_ms"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "failed": sum(r["failed"] for r in rs),
            "cpu_us_per_request": med(r["cpu_us_per_request"] for r in rs),
        }
        if t != "direct":
            pairs = list(zip(runs["direct"], rs))
            s["vs_direct"] = med(p["rps"] / d["rps"] for d, p in pairs)
            s["added_p50_ms"] = med(p["p50_ms"] - d["p50_ms"] for d, p in pairs)
            s["added_p99_ms"] = med(p["p99_ms"] - d["p99_ms"] for d, p in pairs)
            s["added_p99_by_round_ms"] = [p["p99_ms"] - d["p99_ms"] for d, p in pairs]
        summary[t] = s
    if "nginx" in runs:
        for t in targets:
            if t != "direct":
                pairs = list(zip(runs["nginx"], runs[t]))
                summary[t]["vs_nginx"] = med(p["rps"] / n["rps"] for n, p in pairs)
    if "haproxy" in runs:
        for t in targets:
            if t != "direct":
                pairs = list(zip(runs["haproxy"], runs[t]))
                summary[t]["vs_haproxy"] = med(p["rps"] / h["rps"] for h, p in pairs)
    return {"rounds": len(rounds), "runs": runs, "summary": summary,
            "loadavg_1min": [min(loadavg), max(loadavg)]}


def load_table(profile, command):
    s = profile["summary"]
    lines = [
        f"`{command}`, {profile['rounds']} round(s), every target in turn each round "
        "(medians over the rounds; requests/s range in brackets; ratios and added latency "
        "paired by round; CPU = the proxy's own CPU time, all its processes, per request; "
        "for direct, hello's)",
        "",
        "| target | requests/s | × nginx | × HAProxy | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU µs/request | requests | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, r in s.items():
        label = {"direct": "direct to hello (no proxy)",
                 "floor": "floor (bench/floor: forwarding only)"}.get(t, t)
        ratio = lambda key: f"{r[key]:.2f}" if key in r else ""
        added = lambda key: f"{r[key]:+.3f}" if key in r else ""
        lines.append(
            f"| {label} | {r['rps']:.0f} [{r['rps_min']:.0f}–{r['rps_max']:.0f}] | {ratio('vs_nginx')} "
            f"| {ratio('vs_haproxy')} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {added('added_p50_ms')} "
            f"| {added('added_p99_ms')} | {r['cpu_us_per_request']:.1f} | {r['requests']} | {r['failed']} |"
        )
    lo, hi = profile["loadavg_1min"]
    lines.append("")
    lines.append(f"1-minute load average before these runs: {lo:.2f}–{hi:.2f}.")
    return "\n".join(lines)


def switch_summary(raw, proxy, kind):
    data = json.loads((raw / f"switch-{kind}-{proxy}.json").read_text())
    seen = [s["first_new_ms"] for s in data["switches"] if s["first_new_ms"] is not None]
    command = [s["command_ms"] for s in data["switches"]]
    return {
        "switches": len(data["switches"]),
        "missed": len(data["switches"]) - len(seen),
        "first_new_ms_median": med(seen) if seen else None,
        "first_new_ms_p90": nearest_rank(seen, 0.9) if seen else None,
        "first_new_ms_max": max(seen) if seen else None,
        "command_ms_median": med(command),
        "stale": sum(s["stale"] for s in data["switches"]),
        "poll": data["poll"],
        "raw": data,
    }


def ms(value):
    return "–" if value is None else f"{value:.2f}"


def main():
    raw, out = Path(sys.argv[1]), Path(sys.argv[2])
    reproduce, targets = sys.argv[3], sys.argv[4].split()
    sat_cmd, one_cmd = sys.argv[5], sys.argv[6]
    interval_ms, idle_connections = int(sys.argv[7]), int(sys.argv[8])
    proxies = [t for t in targets if t not in ("direct", "floor")]
    facts = dict(line.split(" ", 1) for line in (raw / "versions").read_text().splitlines())

    print(f"Date: {facts['date']}. Machine: {facts['machine']}.")
    print(f"Versions: shipit {facts['shipit']}, nginx {facts['nginx']}, HAProxy {facts['haproxy']}, "
          f"Caddy {facts['caddy']}, wrk {facts['wrk']}.")
    print()

    sat = load_profile(raw, "sat", targets)
    one = load_profile(raw, "one", targets)
    print("### Throughput and latency at saturation")
    print()
    print(load_table(sat, sat_cmd))
    print()
    print("### Latency on one connection (no queueing)")
    print()
    print(load_table(one, one_cmd))
    print()

    switches = {}
    for p in proxies:
        quiet = switch_summary(raw, p, "quiet")
        loaded = switch_summary(raw, p, "loaded")
        wrk = wrk_result(raw / f"wrk-switch-{p}.txt")
        loadavg = float((raw / f"loadavg-switch-{p}").read_text())
        switches[p] = {"quiet": quiet, "loaded": loaded, "wrk": wrk, "loadavg_1min": loadavg}
    n_quiet = switches[proxies[0]]["quiet"]["switches"] if proxies else 0
    n_loaded = switches[proxies[0]]["loaded"]["switches"] if proxies else 0
    print("### Switches")
    print()
    print(f"Switch latency: from the switch being issued to the first response from the new "
          f"slot seen by a client polling `/version` on one keep-alive connection; "
          f"{n_quiet} switches with only the poller running, one every {interval_ms} ms. "
          f"Its resolution is one poll round trip (column \"poll\"). \"Stale\" counts answers "
          f"from the old slot to requests sent after the switch command returned.")
    print()
    print("| proxy | switch median ms | p90 ms | max ms | command ms | stale | poll ms | poller errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for p in proxies:
        q = switches[p]["quiet"]
        errors = q["poll"]["no_answer"] + q["poll"]["bad_status"]
        missed = f" ({q['missed']} never seen)" if q["missed"] else ""
        print(f"| {p} | {ms(q['first_new_ms_median'])}{missed} | {ms(q['first_new_ms_p90'])} "
              f"| {ms(q['first_new_ms_max'])} | {ms(q['command_ms_median'])} | {q['stale']} "
              f"| {ms(q['poll']['median_round_trip_ms'])} | {errors} |")
    print()
    print(f"Failed requests during {n_loaded} switches under load (`{sat_cmd.split(' -d')[0]}` "
          f"for the whole span, one switch every {interval_ms} ms): wrk's socket errors "
          f"(connect/read/write/timeout) and non-2xx answers, and the poller's requests without "
          f"an answer or with a non-200 status.")
    print()
    print("| proxy | requests | failed | connect/read/write/timeout | non-2xx | poller errors | switch median ms (under load) | max ms | stale | load avg |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for p in proxies:
        w, l = switches[p]["wrk"], switches[p]["loaded"]
        e = w["socket_errors"]
        errors = l["poll"]["no_answer"] + l["poll"]["bad_status"]
        missed = f" ({l['missed']} never seen)" if l["missed"] else ""
        print(f"| {p} | {w['requests']} | **{w['failed'] + errors}** | {e['connect']}/{e['read']}/"
              f"{e['write']}/{e['timeout']} | {w['non_2xx']} | {errors} "
              f"| {ms(l['first_new_ms_median'])}{missed} | {ms(l['first_new_ms_max'])} | {l['stale']} "
              f"| {switches[p]['loadavg_1min']:.2f} |")
    print()

    memory = {}
    for p in proxies:
        start = json.loads((raw / f"memory-start-{p}.json").read_text())
        conns = json.loads((raw / f"memory-conns-{p}.json").read_text())
        memory[p] = {"start": start["idle"], "after_load": conns["idle"], "open": conns["open"],
                     "connections": conns["connections"]}
    mib = lambda kib: kib / 1024
    print(f"### Memory (MiB; RSS summed over the process tree, PSS in brackets)")
    print()
    print(f"\"Idle\": started, route set, a few requests served, before any load. \"After "
          f"load\": at rest after every run above. Then {idle_connections} idle keep-alive "
          f"connections, each having served one request, held open together.")
    print()
    print(f"| proxy | processes | idle | after load | with {idle_connections} connections | KiB per connection | held / asked |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for p in proxies:
        m = memory[p]
        c = m["connections"]
        per = (m["open"]["rss_kib"] - m["after_load"]["rss_kib"]) / c["still_open"] if c["still_open"] else None
        print(f"| {p} | {m['open']['processes']} | {mib(m['start']['rss_kib']):.1f} ({mib(m['start']['pss_kib']):.1f}) "
              f"| {mib(m['after_load']['rss_kib']):.1f} ({mib(m['after_load']['pss_kib']):.1f}) "
              f"| {mib(m['open']['rss_kib']):.1f} ({mib(m['open']['pss_kib']):.1f}) "
              f"| {'–' if per is None else f'{per:.1f}'} | {c['still_open']} / {c['asked']}"
              f"{'' if not c['failed'] else ' (' + str(c['failed']) + ' failed: ' + c['first_error'] + ')'} |")
    print()

    goals = []
    if "shipit" in proxies:
        s_sat, s_one = sat["summary"]["shipit"], one["summary"]["shipit"]
        verdict = lambda ok: "met" if ok else "NOT met"
        if "vs_nginx" in s_sat:
            goals.append(f"throughput ≥ {GOAL_VS_NGINX}× nginx: {s_sat['vs_nginx']:.2f}× "
                         f"({s_sat['rps']:.0f} vs {sat['summary']['nginx']['rps']:.0f} requests/s): "
                         f"{verdict(s_sat['vs_nginx'] >= GOAL_VS_NGINX)}")
        if "vs_haproxy" in s_sat:
            goals.append(f"throughput ≥ HAProxy: {s_sat['vs_haproxy']:.2f}× "
                         f"({sat['summary']['haproxy']['rps']:.0f} requests/s): "
                         f"{verdict(s_sat['vs_haproxy'] >= 1)}")
        # When the direct path's own p99 on one connection is over the goal, the box's noise
        # (other work on these cores) is larger than the difference to be measured. At
        # saturation the added p99 is mostly queueing: it restates the throughput gap.
        direct_p99 = one["summary"]["direct"]["p99_ms"]
        if direct_p99 > GOAL_P99_ADDED_MS:
            one_verdict = (f"not measurable in this run: direct to hello had a p99 of "
                           f"{direct_p99:.3f} ms, so the box's own tail hides the difference")
        else:
            one_verdict = verdict(s_one["added_p99_ms"] <= GOAL_P99_ADDED_MS)
        goals.append(f"p99 added ≤ {GOAL_P99_ADDED_MS} ms: {s_one['added_p99_ms']:+.3f} ms on one "
                     f"connection ({one_verdict}); {s_sat['added_p99_ms']:+.3f} ms at saturation "
                     f"({verdict(s_sat['added_p99_ms'] <= GOAL_P99_ADDED_MS)})")
        w, l = switches["shipit"]["wrk"], switches["shipit"]["loaded"]
        failed = w["failed"] + l["poll"]["no_answer"] + l["poll"]["bad_status"]
        goals.append(f"zero failed requests during {n_loaded} switches under load: {failed}: "
                     f"{verdict(failed == 0)}")
        q = switches["shipit"]["quiet"]
        if q["first_new_ms_max"] is not None:
            goals.append(f"switch ≤ {GOAL_SWITCH_MS} ms from the admin call to the first response "
                         f"from the new slot: median {q['first_new_ms_median']:.2f} ms, max "
                         f"{q['first_new_ms_max']:.2f} ms (poll round trip "
                         f"{q['poll']['median_round_trip_ms']:.2f} ms): "
                         f"{verdict(q['first_new_ms_max'] <= GOAL_SWITCH_MS and not q['missed'])}")
        idle = mib(memory["shipit"]["start"]["rss_kib"])
        goals.append(f"memory ≤ {GOAL_IDLE_RSS_MIB} MiB idle: {idle:.1f} MiB: {verdict(idle <= GOAL_IDLE_RSS_MIB)}")
        print("### The shipit edge against the performance goals (ARCHITECTURE.md)")
        print()
        for g in goals:
            print(f"- {g}")

    out.write_text(json.dumps({
        "reproduce": reproduce,
        "facts": facts,
        "commands": {"saturation": sat_cmd, "one_connection": one_cmd},
        "switch_interval_ms": interval_ms,
        "idle_connections": idle_connections,
        "load": {"saturation": sat, "one_connection": one},
        "switches": switches,
        "memory": memory,
        "goals": goals,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()

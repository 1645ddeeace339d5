#!/usr/bin/env python3
"""The action's outputs and job summary, from what `shipit release --json` printed.

Usage: report.py EXIT_CODE STARTED_EPOCH RESULT_JSON HISTORY_JSON

RESULT_JSON is shipit's stdout: the release record plus `url` on success, or
`{"error": {exit_code, cause, hint}}` on failure. HISTORY_JSON is `shipit history --json -n 1`
after a failure: the failed attempt's record (phases, outcome), if the attempt got that far.
Writes `name=value` lines to $GITHUB_OUTPUT and Markdown to $GITHUB_STEP_SUMMARY.
"""

import datetime
import json
import os
import re
import sys
import uuid

TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$")


def parse_time(text):
    """An RFC 3339 UTC timestamp as shipit writes it (up to nanoseconds) -> epoch seconds."""
    match = TIMESTAMP.match(text or "")
    if not match:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    moment = datetime.datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second),
        tzinfo=datetime.timezone.utc,
    )
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def took(start, end):
    begin, finish = parse_time(start), parse_time(end)
    if begin is None or finish is None:
        return "-"
    ms = max(0, round((finish - begin) * 1000))
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def set_output(out, name, value):
    value = "" if value is None else str(value)
    if "\n" in value:
        marker = f"SHIPIT_{uuid.uuid4().hex}"
        out.write(f"{name}<<{marker}\n{value}\n{marker}\n")
    else:
        out.write(f"{name}={value}\n")


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary(code, record, url, error):
    outcome = (record or {}).get("outcome", {})
    status = outcome.get("status") or ("succeeded" if code == 0 else "failed")
    mark = {"succeeded": "✅", "failed": "❌", "interrupted": "⚠️"}.get(status, "❔")
    lines = [f"## {mark} shipit release {status}", ""]
    if record:
        kind = record.get("kind", "release")
        lines += ["| | |", "|---|---|"]
        lines.append(f"| service | `{cell(record.get('service'))}` on target `{cell(record.get('target'))}` |")
        lines.append(f"| {kind} | `{cell(record.get('id'))}` |")
        if record.get("slot"):
            lines.append(f"| slot | {cell(record['slot'])} |")
        if record.get("image"):
            reused = " (reused)" if record.get("image_reused") else ""
            lines.append(f"| image | `{cell(record['image'])}`{reused} |")
        if record.get("image_id"):
            lines.append(f"| digest | `{cell(record['image_id'])}` |")
        lines.append(f"| version | `{cell(record.get('version'))}` |")
        if url:
            lines.append(f"| url | {cell(url)} |")
        if record.get("previous"):
            lines.append(f"| previous | `{cell(record['previous'])}` |")
        lines.append(f"| took | {took(record.get('started_at'), record.get('finished_at'))} |")
        lines.append("")
        phases = record.get("phases") or []
        if phases:
            lines += ["### Phases", "", "| phase | took | |", "|---|---:|---|"]
            for phase in phases:
                ok = {True: "✓", False: "✗"}.get(phase.get("ok"), "…")
                lines.append(
                    f"| {cell(phase.get('phase'))} | "
                    f"{took(phase.get('started_at'), phase.get('finished_at'))} | {ok} |"
                )
            lines.append("")
        modules = record.get("modules") or {}
        if modules:
            lines += ["### Versions", "", "| module | version |", "|---|---|"]
            for name, version in sorted(modules.items()):
                lines.append(f"| {cell(name)} | {cell(version)} |")
            lines.append("")
    cause = outcome.get("cause") or (error or {}).get("cause")
    hint = outcome.get("hint") or (error or {}).get("hint")
    if status != "succeeded":
        lines += ["### Cause", "", "```", cause or f"shipit exited with code {code}", "```", ""]
        if hint:
            lines += [f"**hint:** {hint}", ""]
        lines += [f"Exit code {code}; the previously live release keeps serving.", ""]
    return "\n".join(lines) + "\n"


def main():
    code = int(sys.argv[1])
    started = float(sys.argv[2])
    result = load(sys.argv[3])
    history = load(sys.argv[4]) or []

    error = result.get("error") if isinstance(result, dict) else None
    record = result if isinstance(result, dict) and "id" in result else None
    if record is None and history:
        latest = history[0]
        begun = parse_time(latest.get("started_at"))
        # Only this run's attempt: an older record says nothing about this failure.
        if begun is not None and begun >= started - 1:
            record = latest
    url = result.get("url") if isinstance(result, dict) else None

    if code != 0 and error is None:
        # shipit did not get as far as reporting (it crashed, or is not installed).
        print(f"::error title=shipit::shipit release exited with code {code}; see the step's log")

    outcome = ((record or {}).get("outcome") or {}).get("status")
    if outcome is None:
        outcome = "succeeded" if code == 0 else ("interrupted" if code == 130 else "failed")
    outputs = {
        "release-id": (record or {}).get("serves") if code == 0 else (record or {}).get("id"),
        "image": (record or {}).get("image"),
        "digest": (record or {}).get("image_id"),
        "slot": (record or {}).get("slot"),
        "url": url,
        "modules": json.dumps((record or {}).get("modules") or {}, sort_keys=True, separators=(",", ":")),
        "outcome": outcome,
        "exit-code": code,
    }
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
        for name, value in outputs.items():
            set_output(out, name, value)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8") as out:
            out.write(summary(code, record, url, error))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Step 5 of the action: `shipit release --json`, then the outputs and the job summary
# (report.py). Exits with shipit's exit code. On failure shipit itself prints the cause as an
# `::error::` annotation (it sees GITHUB_ACTIONS=true).
set -uo pipefail

selection=()
[ -n "$SHIPIT_INPUT_TARGET" ] && selection+=(--target "$SHIPIT_INPUT_TARGET")
[ -n "$SHIPIT_INPUT_SERVICE" ] && selection+=(--service "$SHIPIT_INPUT_SERVICE")
extra=()
[ -n "$SHIPIT_INPUT_ARGS" ] && read -r -a extra <<< "$SHIPIT_INPUT_ARGS"

work=$(mktemp -d)
started=$(date -u +%s)
shipit -c "$SHIPIT_INPUT_CONFIG" release --json "${selection[@]}" "${extra[@]}" > "$work/result.json"
code=$?
if [ "$code" -ne 0 ]; then
  # A failed attempt is recorded too: its phases go into the summary.
  shipit -q -c "$SHIPIT_INPUT_CONFIG" history --json -n 1 "${selection[@]}" \
    > "$work/history.json" 2>/dev/null || echo "[]" > "$work/history.json"
else
  echo "[]" > "$work/history.json"
fi
python3 "$GITHUB_ACTION_PATH/report.py" "$code" "$started" "$work/result.json" "$work/history.json" ||
  echo "::warning title=shipit::could not write the outputs and the summary"
rm -rf "$work"
exit "$code"

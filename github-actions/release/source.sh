#!/usr/bin/env bash
# Step 2 of the action, when download.sh installed no release binary: which shipit source to
# build, the key its build is cached under (a hash of the sources), and the folder it is
# installed into. Outputs: dir, hash, root.
set -euo pipefail

if [ -n "${SHIPIT_SOURCE:-}" ]; then
  case "$SHIPIT_SOURCE" in
    /*) dir=$SHIPIT_SOURCE ;;
    *) dir="${GITHUB_WORKSPACE:-$PWD}/$SHIPIT_SOURCE" ;;
  esac
else
  # The action lives in <checkout>/github-actions/release.
  dir="$GITHUB_ACTION_PATH/../.."
fi
if [ ! -f "$dir/cli/Cargo.toml" ]; then
  echo "::error title=shipit::$dir is not a shipit checkout (it has no cli/Cargo.toml); check the shipit-source input"
  exit 1
fi
dir=$(cd "$dir" && pwd)

# Everything the binary is built from; the same sources always give the same key.
hash=$(
  cd "$dir" &&
    find Cargo.toml Cargo.lock cli pipeline edge templates -type f \
      \( -name '*.rs' -o -name '*.toml' -o -name '*.lock' -o -name '*.hbs' \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-20
)
root="${RUNNER_TOOL_CACHE:-$HOME/.cache}/shipit/$hash"

{
  echo "dir=$dir"
  echo "hash=$hash"
  echo "root=$root"
} >> "$GITHUB_OUTPUT"
echo "shipit source: $dir (build key $hash)"

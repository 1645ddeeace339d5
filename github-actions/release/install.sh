#!/usr/bin/env bash
# Step 4 of the action, when download.sh installed no release binary: install shipit into
# $SHIPIT_ROOT unless the cache restored it there, and put it on the PATH of the steps that
# follow.
set -euo pipefail

if [ -x "$SHIPIT_ROOT/bin/shipit" ]; then
  echo "shipit restored from the cache: $SHIPIT_ROOT/bin/shipit"
else
  if ! command -v cargo >/dev/null 2>&1; then
    echo "::error title=shipit::cargo is not installed on this runner; with no release binary downloaded (the Download shipit step says why), shipit is built from source with cargo install (add a Rust toolchain step before this action)"
    exit 1
  fi
  echo "::group::cargo install shipit"
  cargo install --locked --path "$SHIPIT_SOURCE_DIR/cli" --root "$SHIPIT_ROOT"
  echo "::endgroup::"
fi
echo "$SHIPIT_ROOT/bin" >> "$GITHUB_PATH"
"$SHIPIT_ROOT/bin/shipit" --version

#!/usr/bin/env bash
# Step 1 of the action: install the release binary of this action's own shipit version (the
# one in its checkout's cli/Cargo.toml) for this runner, checked against its .sha256 asset,
# so a job does not spend minutes on `cargo install`. Output: installed=true, or
# installed=false when there is no such binary to get (shipit-source set, a runner with no
# release binary, a version not released, no network): the steps after it then build from
# source. A binary that does not match its checksum fails the step: it is never installed,
# and a build from source would only hide a broken release. (The checksum comes from the same
# release as the binary: it catches a damaged or partial download, not a replaced release.)
set -euo pipefail

source_build() {
  echo "$1; shipit is built from source instead"
  echo "installed=false" >> "$GITHUB_OUTPUT"
  exit 0
}

if [ -n "${SHIPIT_SOURCE:-}" ]; then
  source_build "shipit-source is set"
fi
base=${SHIPIT_DOWNLOAD_URL%/}
if [ -z "$base" ]; then
  source_build "download-url is empty"
fi
# The default URL is built from the action's repository, which is empty when a workflow uses
# the action by its path (`uses: ./github-actions/release`): there is no release to ask.
case "$base" in
  *//releases/download) source_build "this action is used by its path, not from a repository with releases" ;;
esac
# What the release workflow (.github/workflows/release.yml) builds.
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) target=x86_64-unknown-linux-gnu ;;
  Linux/aarch64 | Linux/arm64) target=aarch64-unknown-linux-gnu ;;
  *) source_build "there is no release binary for $(uname -s)/$(uname -m)" ;;
esac

# The action lives in <checkout>/github-actions/release; the CLI's version may be inherited
# from the workspace.
checkout="$GITHUB_ACTION_PATH/../.."
version=$(
  python3 - "$checkout" 2>/dev/null <<'PY'
import pathlib, sys, tomllib
root = pathlib.Path(sys.argv[1])
version = tomllib.loads((root / "cli/Cargo.toml").read_text())["package"]["version"]
if isinstance(version, dict):
    version = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["package"]["version"]
print(version)
PY
) || source_build "could not read shipit's version from $checkout/cli/Cargo.toml (python3 3.11+ reads it)"

# Pinned to a branch or a commit, the action is that code; the release binary is the tag's.
# (An empty ref is a runner that did not say: the version's binary is used.)
if [ -n "${SHIPIT_ACTION_REF:-}" ] && [ "$SHIPIT_ACTION_REF" != "v$version" ]; then
  source_build "the action runs at ${SHIPIT_ACTION_REF}, not at its release tag v$version, whose binary may be other code"
fi

asset="shipit-$target"
url="$base/v$version/$asset"
# A mirror's URL may carry credentials; the log shows it without them.
shown=$(printf '%s' "$url" | sed -E 's#^([a-z]+://)[^/@]*@#\1#')
work=$(mktemp -d "${RUNNER_TEMP:-/tmp}/shipit-download.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --fail: a 404 is an error, not a saved error page. The timeouts bound a runner with no
# network to seconds; --retry covers transient 5xx and timeouts but never a 404. Redirects
# (GitHub serves assets from another host) may only go to https.
fetch() {
  curl --fail --silent --show-error --location --proto-redir '=https' \
    --connect-timeout 10 --max-time 300 --retry 2 --retry-delay 2 \
    --output "$2" "$1"
}
echo "::group::download shipit $version for $target"
echo "$shown"
if ! fetch "$url" "$work/$asset" || ! fetch "$url.sha256" "$work/$asset.sha256"; then
  echo "::endgroup::"
  source_build "shipit $version for $target could not be downloaded from $shown"
fi
echo "::endgroup::"

# The .sha256 asset is sha256sum's format: the hex digest, then the file name.
read -r expected _ < "$work/$asset.sha256" || true
expected=$(printf '%s' "$expected" | tr 'A-F' 'a-f')
actual=$(sha256sum "$work/$asset" | cut -d' ' -f1)
if [ "$expected" != "$actual" ]; then
  echo "::error title=shipit::checksum mismatch for $shown: its SHA-256 is $actual, but $asset.sha256 says ${expected:-nothing}. The file is not installed. Retry the job; if it fails again, the release asset is damaged: report it, or set shipit-source to build from source"
  exit 1
fi
echo "SHA-256 $actual matches $asset.sha256"

root="${RUNNER_TOOL_CACHE:-$HOME/.cache}/shipit/v$version-$target"
mkdir -p "$root/bin"
install -m 755 "$work/$asset" "$root/bin/shipit"
if ! "$root/bin/shipit" --version; then
  rm -f "$root/bin/shipit"
  echo "::warning title=shipit::the release binary $shown does not run on this runner"
  source_build "the release binary does not run"
fi
echo "$root/bin" >> "$GITHUB_PATH"
echo "installed=true" >> "$GITHUB_OUTPUT"

#!/bin/sh
# Install Debian's Chromium and chromedriver for the report's browser test (tests/test_report.py).
# Idempotent and quiet: does nothing when /usr/bin/chromium exists; prints apt's log only on failure.
set -eu

[ -x /usr/bin/chromium ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_chromium.sh: apt-get failed" >&2
    exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "install_chromium.sh: /usr/bin/chromium still missing after apt-get install" >&2
    exit 1
fi

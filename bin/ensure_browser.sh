#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through ChromeDriver (tests/support/browser.py).
# Install both when this user can (root with apt-get, as on this project's machines and CI);
# otherwise stop at once with the exact command to run, before any test starts.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
install="apt-get update && apt-get install -y chromium chromium-driver"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[make test] installing Chromium and ChromeDriver for the browser tests: $install"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  exit 0
fi
echo "[make test] the browser tests need Chromium and ChromeDriver; install them first:" >&2
echo "    sudo sh -c '$install'" >&2
exit 1

#!/usr/bin/env bash
# What the browser tests need: Debian's chromium and chromium-driver (apt, when missing) and
# selenium (pip, into the project's venv). Nothing downloads a browser of its own: the tests drive
# /usr/bin/chromium through /usr/bin/chromedriver, and Selenium Manager is kept offline (SE_OFFLINE).
# apt needs root (CI runs as root); elsewhere install the two packages by hand, or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: /usr/bin/chromium or /usr/bin/chromedriver is missing; as root run:" >&2
    echo "  apt-get update && apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
  echo "install_browser: installing Debian's chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if ! "$VENV/bin/python" -c "import selenium" 2>/dev/null; then
  echo "install_browser: installing selenium into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -c constraints.txt selenium
fi

/usr/bin/chromium --version 2>/dev/null | head -1
/usr/bin/chromedriver --version | head -1

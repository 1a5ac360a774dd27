#!/bin/sh
# Installs the Debian packages that `make fuzz` and `make bench` need on
# top of scripts/deps.sh's, and only those that are missing: clang with
# its libFuzzer and sanitizer runtimes, and the zone files the targets
# load. Given package names as arguments it installs those instead, so
# `make bench` asks for tzdata alone and never pulls in clang.
# Non-interactive; uses sudo when not root. Safe to run again.
set -eu

PACKAGES="${*:-clang libclang-rt-14-dev tzdata}"

missing=""
for pkg in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
    grep -q "install ok installed"; then
    missing="$missing $pkg"
  fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "fuzz-deps: missing packages:$missing" \
    "(install them; this script knows only apt)" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "fuzz-deps: missing packages:$missing and no sudo to install them" >&2
    exit 1
  fi
fi

echo "fuzz-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2

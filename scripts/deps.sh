#!/bin/sh
# Installs the Debian packages moonbeat needs to build, run and test,
# and only those that are missing. Given package names as arguments it
# ensures those instead (`make fuzz` asks for clang this way).
# Non-interactive; uses sudo when not root. Safe to run again: with
# everything present it does nothing.
set -eu

PACKAGES="${*:-gcc make pkg-config liblua5.4-dev lua5.4 libuv1-dev libsqlite3-dev lua-busted
  lua-cjson python3-apscheduler sqlite3 libreadline-dev libcurl4-openssl-dev
  libmimalloc-dev openssl}"

missing=""
for pkg in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $pkg"
  fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing packages:$missing (install them; this script knows only apt)" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "deps: missing packages:$missing and no sudo to install them" >&2
    exit 1
  fi
fi

echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2

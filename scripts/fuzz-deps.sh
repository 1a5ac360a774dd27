#!/bin/sh
# What `make fuzz` needs on top of the build's packages: clang with its
# libFuzzer and sanitizer runtimes, and the zone files the targets load.
# Given package names, those instead (`make bench` asks for tzdata).
set -eu
exec "$(dirname "$0")/deps.sh" ${*:-clang libclang-rt-14-dev tzdata}

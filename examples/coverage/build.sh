#!/usr/bin/env bash
# Builds the coverage example's program with gcov instrumentation, static so it runs in any guest,
# into out/coverage-example/ (its .gcno files stay there: the merge finds them by the path the
# guest's .gcda files carry). Prints the program's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$PWD/out/coverage-example"
mkdir -p "$out"
rm -f "$out"/*.gcno "$out"/*.gcda
gcc --coverage -static -O0 -o "$out/greet" examples/coverage/greet.c
echo "$out/greet"

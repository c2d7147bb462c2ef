#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds every test guest (cached outside the
# repository), runs every test. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for guest in tiny systemd x11 nixos; do
  start=$(date +%s)
  dir=$(bash guests/build.sh "$guest")
  echo "test: guest $guest ready in $(($(date +%s) - start)) s: $dir" >&2
done
cargo test --workspace --no-fail-fast

#!/usr/bin/env bash
# The demo: installs what is missing, builds the tiny guest (cached), boots it under QEMU and runs a
# few commands in it through the driver. Usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
tiny=$(bash guests/build.sh tiny)
cargo build --release -q -p driver-cli
exec target/release/vm-test-driver exec "$tiny/run-tiny-vm" -- \
  'uname -a' \
  'echo "hello from $(hostname), up $(cut -d" " -f1 /proc/uptime) s"' \
  'ls /sys/class/net' \
  'cat <<EOF
a here-document, $((6 * 7)) and all
EOF'

#!/usr/bin/env bash
# The demo: installs what is missing, builds the tiny guest (cached), and runs the hello test script on
# it: the log on the terminal, log files and a JUnit report under out/demo. Usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
tiny=$(bash guests/build.sh tiny)
cargo build --release -q -p driver-cli
exec target/release/vm-test-driver --start-scripts "$tiny/run-tiny-vm" \
  --output-dir out/demo --junit out/demo/junit.xml -- examples/hello.rhai

#!/usr/bin/env bash
# CI check: examples/failing.rhai must exit 1 and its JUnit report must name the failing subtest
# ("fails on purpose") and only it. Leaves the log and report in out/failing-example for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
tiny=$(bash guests/build.sh tiny)
cargo build -q -p driver-cli
out=out/failing-example
rm -rf "$out"
status=0
target/debug/vm-test-driver --start-scripts "$tiny/run-tiny-vm" --output-dir "$out" \
  --junit "$out/junit.xml" -- examples/failing.rhai || status=$?
if [ "$status" != 1 ]; then
  echo "check-failing-example: exit status $status, expected 1" >&2
  exit 1
fi
python3 - "$out/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
failed = [c.get("name") for c in cases if c.find("failure") is not None]
if failed != ["fails on purpose"]:
    sys.exit(f"check-failing-example: failing test cases {failed}, expected ['fails on purpose']")
print("check-failing-example: exit 1, JUnit names the failing subtest 'fails on purpose'")
PY

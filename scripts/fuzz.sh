#!/usr/bin/env bash
# Fuzzes the sans-IO decoders (fuzz/fuzz_targets/) for a bounded time, one target after the other.
# Usage: bash scripts/fuzz.sh [SECONDS]   (default 60 per target, plus the build)
#
# Works on stable Rust: cargo-fuzz passes nightly-only -Z flags (sanitizer, coverage), which
# RUSTC_BOOTSTRAP=1 lets a stable rustc accept. Installs cargo-fuzz if it is missing. The corpus each
# run grows is kept in target/fuzz-corpus/<target> (not committed), seeded from fuzz/seeds/<target>;
# a crashing input is written to fuzz/artifacts/<target>/, the full log to target/fuzz-logs/<target>.log.
# Prints one summary line per target; exits non-zero if any target crashed, hung or ran out of memory.
# FUZZ_SANITIZER=none skips AddressSanitizer (faster; the decoders have no unsafe code of their own).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bash scripts/fuzz.sh [SECONDS]" >&2
  exit 2
fi
targets=(monitor_decoder shell_decoder)
cargo_fuzz_version=0.13.2
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
# ASan holds freed memory in a 256 MB quarantine by default, which alone nears the RSS limit below.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=32}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

fuzz=(cargo fuzz)
opts=(--fuzz-dir fuzz --sanitizer "$sanitizer")
"${fuzz[@]}" build "${opts[@]}"

mkdir -p target/fuzz-logs
failed=0
for t in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$t"
  log="target/fuzz-logs/$t.log"
  mkdir -p "$corpus"
  start=$(date +%s)
  rc=0
  # libFuzzer stops itself after $secs; the outer timeout only guards against a wedged run.
  timeout --kill-after=30 $((secs + 120)) "${fuzz[@]}" run "${opts[@]}" "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb=256 \
    -print_final_stats=1 -dict="fuzz/dicts/$t.dict" >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  files=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ] && [ -n "$execs" ]; then
    echo "fuzz: $t: ok, ${execs} executions in ${took}s (${rate:-?}/s), corpus ${files} inputs, peak RSS ${rss:-?} MB"
  else
    failed=1
    # The assertion that failed, then libFuzzer's end of the story (its stack traces are long).
    grep -m 1 -A 3 'panicked at' "$log" >&2 || true
    tail -n 40 "$log" >&2
    input=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
    echo "fuzz: $t: FAILED (exit $rc) after ${execs:-unknown} executions in ${took}s;" \
      "full log in $log; reproduce with:" \
      "RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $t ${input:-fuzz/artifacts/$t/<input>}" >&2
  fi
done
exit "$failed"
